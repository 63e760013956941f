"""Two runs of one `croma benchmark` command on different CPUs (or CPU kernels): how far apart are
the tables, and does any conclusion change?

    python experiments/tools/compare_machines.py A_DIR B_DIR [--label-a intel-avx512 --label-b avx2]
        [--out experiments/results/machines_main_quick.json] [--markdown]

A_DIR and B_DIR are `croma benchmark --out` folders of the same settings (checked: benchmark,
preset, seeds, methods, shots, episodes; the episode hashes of episodes.csv must agree). It prints
and writes, per (method, k): both means, their difference, whether each mean lies inside the
other run's 95% interval; per comparison of croma against a method: both paired differences
with their intervals and both marks (`+` croma above, `-` below, blank: interval covers 0), and
whether the mark flips; per-episode agreement (fraction of (seed, episode) accuracies that are
bitwise equal, mean absolute difference); and a summary (largest row and comparison shifts,
marks that flip). Nothing here is rerun: the numbers are the two folders' files.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def _load(folder: Path) -> tuple[dict, dict]:
    res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    eps: dict[tuple[str, int, int, int], tuple[str, float]] = {}
    with open(folder / "episodes.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            eps[(row["method"], int(row["shots"]), int(row["seed"]), int(row["episode"]))] = (row["hash"], float(row["accuracy"]))
    return res, eps


def _mark(c: dict) -> str:
    return "+" if c["ci95_low"] > 0 else "-" if c["ci95_high"] < 0 else ""


def compare(a_dir: Path, b_dir: Path, label_a: str, label_b: str) -> dict:
    a, ea = _load(a_dir)
    b, eb = _load(b_dir)
    for key in ("benchmark", "preset", "train_seeds", "ways", "label_noise", "seed", "budget_steps"):
        if a.get(key) != b.get(key):
            raise SystemExit(f"error: the runs differ in {key} ({a.get(key)!r} vs {b.get(key)!r}); compare runs of one command")
    if set(ea) != set(eb) or any(ea[k][0] != eb[k][0] for k in ea):
        raise SystemExit("error: the runs' episodes differ (episodes.csv keys or hashes); compare runs of one command")
    rows_b = {(r["method"], r["shots"]): r for r in b["rows"]}
    rows = []
    for ra in a["rows"]:
        rb = rows_b[(ra["method"], ra["shots"])]
        rows.append({
            "method": ra["method"], "shots": ra["shots"], "mean_a": ra["accuracy_mean"], "mean_b": rb["accuracy_mean"],
            "diff": rb["accuracy_mean"] - ra["accuracy_mean"], "ci95_a": ra["accuracy_ci95"], "ci95_b": rb["accuracy_ci95"],
            "b_in_a": ra["accuracy_ci95_low"] <= rb["accuracy_mean"] <= ra["accuracy_ci95_high"],
            "a_in_b": rb["accuracy_ci95_low"] <= ra["accuracy_mean"] <= rb["accuracy_ci95_high"],
            "per_seed_a": ra.get("accuracy_per_seed"), "per_seed_b": rb.get("accuracy_per_seed"),
        })
    comps_b = {(c["baseline"], c["shots"]): c for c in b["comparisons"]}
    comps = []
    for ca in a["comparisons"]:
        cb = comps_b[(ca["baseline"], ca["shots"])]
        comps.append({
            "method": ca["method"], "baseline": ca["baseline"], "shots": ca["shots"],
            "diff_a": ca["mean_diff"], "ci_a": [ca["ci95_low"], ca["ci95_high"]], "mark_a": _mark(ca),
            "diff_b": cb["mean_diff"], "ci_b": [cb["ci95_low"], cb["ci95_high"]], "mark_b": _mark(cb),
            "flips": _mark(ca) != _mark(cb),
            "b_in_a": ca["ci95_low"] <= cb["mean_diff"] <= ca["ci95_high"],
        })
    per_method: dict[str, dict] = {}
    for key, (_, acc_a) in ea.items():
        d = per_method.setdefault(key[0], {"episodes": 0, "equal": 0, "abs_diff_sum": 0.0})
        d["episodes"] += 1
        d["equal"] += acc_a == eb[key][1]
        d["abs_diff_sum"] += abs(acc_a - eb[key][1])
    agreement = {m: {"episodes": d["episodes"], "equal_fraction": d["equal"] / d["episodes"],
                     "mean_abs_diff": d["abs_diff_sum"] / d["episodes"]} for m, d in per_method.items()}
    flips = [c for c in comps if c["flips"]]
    return {
        "a": {"label": label_a, "folder": a_dir.as_posix(), "machine": a.get("machine"), "wall_seconds": a.get("wall_seconds")},
        "b": {"label": label_b, "folder": b_dir.as_posix(), "machine": b.get("machine"), "wall_seconds": b.get("wall_seconds")},
        "rows": rows, "comparisons": comps, "episode_agreement": agreement,
        "summary": {
            "cells": len(rows), "max_abs_row_diff": max(abs(r["diff"]) for r in rows),
            "mean_abs_row_diff": sum(abs(r["diff"]) for r in rows) / len(rows),
            "rows_outside_other_interval": sum(not (r["b_in_a"] and r["a_in_b"]) for r in rows),
            "comparisons": len(comps), "max_abs_comparison_diff": max(abs(c["diff_b"] - c["diff_a"]) for c in comps),
            "marks_that_flip": [f"{c['method']} - {c['baseline']} {c['shots']}-shot: '{c['mark_a']}' -> '{c['mark_b']}'"
                                for c in flips],
            "comparisons_outside_other_interval": sum(not c["b_in_a"] for c in comps),
        },
    }


def _n(x: float, fmt: str = ".1f") -> str:
    """A number with a typographic minus sign."""
    return format(x, fmt).replace("-", "\u2212")


def _n_mark(mark: str) -> str:
    return mark.replace("-", "\u2212")


def markdown(doc: dict) -> str:
    la, lb = doc["a"]["label"], doc["b"]["label"]
    out = [f"| method | k | {la} | {lb} | difference |", "|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(f"| `{r['method']}` | {r['shots']} | {_n(r['mean_a'])} ± {_n(r['ci95_a'])} | "
                   f"{_n(r['mean_b'])} ± {_n(r['ci95_b'])} | {_n(r['diff'], '+.2f')} |")
    out += ["", f"| croma \u2212 method | k | {la} | {lb} | mark flips |", "|---|---|---|---|---|"]
    for c in doc["comparisons"]:
        ia = f"{_n(c['diff_a'], '+.1f')} [{_n(c['ci_a'][0])}, {_n(c['ci_a'][1])}] {_n_mark(c['mark_a'])}"
        ib = f"{_n(c['diff_b'], '+.1f')} [{_n(c['ci_b'][0])}, {_n(c['ci_b'][1])}] {_n_mark(c['mark_b'])}"
        out.append(f"| `{c['baseline']}` | {c['shots']} | {ia} | {ib} | {'yes' if c['flips'] else ''} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--env-b", default=None, help="how run B's CPU kernels were chosen (recorded in the file)")
    ap.add_argument("--out", type=Path, default=None, help="write the comparison as JSON")
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = ap.parse_args(argv)
    doc = compare(args.a, args.b, args.label_a, args.label_b)
    if args.env_b:
        doc["b"]["kernels"] = args.env_b
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        print(markdown(doc))
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
