"""Collect results.json files under a directory into one table: python collect.py DIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str) -> int:
    rows = []
    for p in sorted(Path(root).glob("*/results.json")):
        res = json.loads(p.read_text())
        for r in res["rows"]:
            rows.append((res["loss"], r["method"], r["shots"], r["accuracy_mean"], r["accuracy_std"]))
    if not rows:
        print(f"error: no */results.json under {root}", file=sys.stderr)
        return 2
    shots = sorted({r[2] for r in rows})
    keys = sorted({(r[0], r[1]) for r in rows})
    print("loss    method    " + "  ".join(f"{k:>2}-shot     " for k in shots))
    for loss, method in keys:
        cells = []
        for k in shots:
            m = [r for r in rows if r[0] == loss and r[1] == method and r[2] == k]
            cells.append(f"{m[0][3]:5.1f} ± {m[0][4]:4.1f}" if m else "      -      ")
        print(f"{loss:<7} {method:<9} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/experiments/objectives"))
