"""Notebook-safe plots: writing results never switches matplotlib's backend nor touches pyplot's
figures, and the plots are available as figure objects."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RESULT = {
    "benchmark": "synthetic", "ways": 5, "loss": "cwcl", "label_noise": 0.0,
    "rows": [
        {"method": m, "shots": k, "accuracy_mean": acc + k, "accuracy_std": 1.0, "repeats": 2,
         "target_samples": 10, "target_labels": 5}
        for m, acc in (("croma", 40.0), ("pretrain", 30.0)) for k in (1, 5)
    ],
}

SCRIPT = r"""
import json, sys
import matplotlib
matplotlib.use("svg")                 # the user's backend (a notebook's inline backend, say)
import matplotlib.pyplot as plt
mine = plt.figure()                   # and the user's open figure
from croma.report import figures, write_noise_sweep, write_results
result = json.loads(sys.argv[1])
out = sys.argv[2]
write_results(result, out)
sweep = [dict(result, label_noise=r) for r in (0.0, 0.2)]
write_noise_sweep(sweep, out, [1, 5])
figs = figures(result)
sweep_figs = figures(sweep)
print(json.dumps({
    "backend": matplotlib.get_backend(),
    "fignums": plt.get_fignums(),
    "mine": mine.number,
    "figs": {k: type(v).__module__ + "." + type(v).__name__ for k, v in {**figs, **sweep_figs}.items()},
    "lines": len(figs["results"].axes[0].lines),
    "labels": [t.get_text() for t in figs["results"].axes[0].get_legend().get_texts()],
}))
"""


def test_plots_leave_backend_and_open_figures_alone(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(RESULT), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["backend"] == "svg"
    assert got["fignums"] == [got["mine"]]  # no figure registered with pyplot, the user's still open
    assert got["figs"] == {
        "results": "matplotlib.figure.Figure",
        "noise_sweep_1shot": "matplotlib.figure.Figure",
        "noise_sweep_5shot": "matplotlib.figure.Figure",
    }
    assert sorted(got["labels"]) == ["chance", "croma", "pretrain"]
    for name in ("results.png", "noise_sweep_1shot.png", "noise_sweep_5shot.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_library_never_selects_a_backend_or_uses_pyplot():
    offenders = []
    for path in sorted((ROOT / "croma").rglob("*.py")) + sorted((ROOT / "episodes").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
