"""The Python API tour's example (docs/guide/python.md, the first ``python`` block; the README links
there) runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "docs" / "guide" / "python.md").read_text(encoding="utf-8")
    section = text.split("## Paired records", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "import croma" in code and "croma.train(" in code and "croma.evaluate(" in code
    env = {"OMP_NUM_THREADS": "1", "CROMA_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+) ±\s+([\d.]+)", proc.stdout, re.M)
    assert [int(k) for k, _, _ in rows] == [1, 5], proc.stdout
    acc5, ci5 = float(rows[1][1]), float(rows[1][2])
    assert acc5 - ci5 > 100 / 3, proc.stdout  # above 3-way chance with its interval
    assert "methods:" in proc.stdout
