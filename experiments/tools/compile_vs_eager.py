"""Compiled against eager inner steps of ``croma train``, compared on meta-val.

The runs and their evaluations (one pair per training seed; each seed draws its own class split)::

    for s in 0 1 2; do
      croma train udhr-speech --seed $s --no-compile-inner --checkpoint-dir runs/ab_eager_s$s
      croma train udhr-speech --seed $s --compile-inner --checkpoint-dir runs/ab_compiled_s$s
      for m in eager compiled; do
        croma evaluate runs/ab_${m}_s$s --split meta_val --seed 7 --repeats 5 --eval-tasks 60 \\
            --shots 1 5 10 --json > runs/ab_${m}_s$s.eval.json
      done
    done
    python experiments/tools/compile_vs_eager.py --runs runs --out experiments/results/compile_vs_eager_udhr_meta_val.json

(each ``croma train`` output also saved as ``runs/ab_<mode>_s<seed>.log``, ending with the
``/usr/bin/time -f "%e s wall %M KB"`` line the wall seconds are read from). Prints, per k, both
modes' meta-val accuracy and compiled - eager: per seed paired by episode, pooled over seeds with
the nested two-level bootstrap (seeds have different episodes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from croma.stats import paired_two_level, two_level_interval

RULE = ("compiled stays croma train's own choice if the pooled paired interval (compiled - eager) includes 0 "
        "or is above 0 at every k")


def _evaluation(path: Path) -> dict:
    """The JSON object ``croma evaluate --json`` prints after its table."""
    text = path.read_text(encoding="utf-8")
    return json.loads(text[text.index("\n{") + 1:])


def _train(path: Path) -> dict:
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    return {"wall_seconds": float(lines[-1].split()[0]),
            "summary": next(line for line in lines if line.startswith("trained "))}


def compare(runs: Path, seeds: list[int]) -> dict:
    names = {s: (f"ab_eager_s{s}", f"ab_compiled_s{s}") for s in seeds}
    evals = {n: _evaluation(runs / f"{n}.eval.json") for pair in names.values() for n in pair}
    out = {"what": "croma train udhr-speech (defaults: sequence features, cnn1d, 1000 iterations), eager "
                   "(--no-compile-inner) against compiled (--compile-inner), training seeds "
                   f"{', '.join(map(str, seeds))} (each seed its own class split); croma evaluate RUN --split meta_val "
                   "--seed 7 --repeats 5 --eval-tasks 60 --shots 1 5 10 (300 episodes per k, the same episodes for "
                   "both modes of a seed); accuracy in %",
           "decision_rule": RULE, "train": {n: _train(runs / f"{n}.log") for n in evals}, "rows": []}
    first = evals[names[seeds[0]][0]]
    for i, k in enumerate(r["shots"] for r in first["rows"]):
        row: dict = {"shots": k, "per_seed": []}
        eager, compiled = [], []
        for s in seeds:
            e = evals[names[s][0]]["rows"][i]
            c = evals[names[s][1]]["rows"][i]
            if not e["shots"] == c["shots"] == k or len(e["episode_accuracies"]) != len(c["episode_accuracies"]):
                raise SystemExit(f"seed {s}: the two evaluations are not the same episodes at k={k}")
            d = paired_two_level([c["episode_accuracies"]], [e["episode_accuracies"]])
            row["per_seed"].append({"seed": s, "eager": two_level_interval([e["episode_accuracies"]])["mean"],
                                    "compiled": two_level_interval([c["episode_accuracies"]])["mean"],
                                    "diff": d["mean_diff"], "ci95": [d["ci95_low"], d["ci95_high"]],
                                    "episodes": len(e["episode_accuracies"])})
            eager.append(e["episode_accuracies"])
            compiled.append(c["episode_accuracies"])
        d = paired_two_level(compiled, eager, mode="nested")
        ie, ic = two_level_interval(eager, mode="nested"), two_level_interval(compiled, mode="nested")
        row.update({"eager": [ie["mean"], ie["ci95"]], "compiled": [ic["mean"], ic["ci95"]], "diff": d["mean_diff"],
                    "ci95": [d["ci95_low"], d["ci95_high"]]})
        out["rows"].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="folder holding the runs' logs and evaluations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=None, help="write the comparison as JSON")
    args = p.parse_args(argv)
    out = compare(Path(args.runs), args.seeds)
    for row in out["rows"]:
        print(f"{row['shots']:>2}-shot: eager {row['eager'][0]:.2f} ± {row['eager'][1]:.2f}, compiled "
              f"{row['compiled'][0]:.2f} ± {row['compiled'][1]:.2f}, compiled - eager {row['diff']:+.2f} "
              f"[{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}]; per seed "
              + "; ".join(f"{p['diff']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]" for p in row["per_seed"]))
    for name, t in out["train"].items():
        print(f"{name}: {t['wall_seconds']:.0f} s wall; {t['summary']}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
