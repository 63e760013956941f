"""Plugins of installed packages: entry points of the group ``croma.plugins`` are imported as
``$CROMA_PLUGINS`` modules are, before the command line is built, and one that fails stops it with
one line naming the entry point, its package and the module. The installed package is a hand-made
``*.dist-info`` (METADATA + entry_points.txt) in a folder on ``sys.path``, as pip would leave it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import torch.nn.functional as F

from croma.losses.registry import LossModule, register_loss


@register_loss("ep-cos", paper="(test)", hyper={"scale": 1.0}, formula="-scale * mean cos(s_i, t_i)")
class EpCos(LossModule):
    def forward(self, z_source, z_target, **context):
        return -self.hparams["scale"] * F.cosine_similarity(z_source, z_target, dim=-1).mean()
'''


def _dist(site: Path, name: str, entry_points: str) -> None:
    """A distribution ``name`` 0.1 installed in ``site`` with these ``[croma.plugins]`` lines."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[croma.plugins]\n{entry_points}\n")


SCRIPT = r"""
import contextlib, io, sys
from croma.cli import load_plugins, main
from croma.losses import list_losses

good, bad = sys.argv[1:3]
sys.path.insert(0, good)
assert "ep-cos" not in list_losses()
print("LOADED", load_plugins())
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["losses"])
print("LOSSES", rc, "ep-cos" in out.getvalue())
sys.path.insert(0, bad)  # a second package whose entry point does not import
err = io.StringIO()
with contextlib.redirect_stderr(err):
    rc = main(["losses"])
print("BAD", rc, repr(err.getvalue()))
"""


def test_entry_point_plugins_load_and_a_broken_one_is_one_line(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    (good / "mylab_ep").mkdir(parents=True)
    (good / "mylab_ep" / "__init__.py").touch()
    (good / "mylab_ep" / "objectives.py").write_text(PLUGIN)
    _dist(good, "mylab-ep", "objectives = mylab_ep.objectives")
    bad.mkdir()
    _dist(bad, "broken-plugin", "losses = broken_plugin.nowhere")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(good), str(bad)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.split(" ")[0].isupper())
    assert lines["LOADED"] == "['mylab_ep.objectives']"
    assert lines["LOSSES"] == "0 True"
    rc, err = lines["BAD"].split(" ", 1)
    err = eval(err)  # noqa: S307 - the repr the script printed
    assert rc == "2" and err.count("\n") == 1, err
    assert err.startswith("error: entry point 'losses' of broken-plugin (group croma.plugins): cannot import "
                          "'broken_plugin.nowhere' (ModuleNotFoundError: "), err


def test_setup_cfg_documents_the_group_and_docs_show_it():
    """The group name is the one load_plugins reads, and the extending guide shows how to declare it."""
    from croma.cli import PLUGIN_GROUP

    assert PLUGIN_GROUP == "croma.plugins"
    guide = (ROOT / "docs" / "guide" / "extending.md").read_text(encoding="utf-8")
    assert '[project.entry-points."croma.plugins"]' in guide
