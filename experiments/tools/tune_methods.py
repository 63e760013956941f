"""Equal tuning: every trained method's own hyper-parameters, chosen on **meta-val**, same effort.

    python experiments/tools/tune_methods.py --preset quick --out experiments/results/tuning_quick.json

Each method gets the same number of trials (``TRIALS``: a 2 x 2 grid, or 4 values of its one
knob) over the settings that matter for it: learning rates, the task mix, the meta step size,
the alignment weight, the confusion weight. A trial trains the method under the preset's budget
of optimiser steps and scores it as ``croma benchmark`` selects: for each k the best meta-val
accuracy over the preset's meta-test fine-tuning grid, averaged over k. Meta-test classes are
never evaluated. The output JSON holds every trial, the chosen values and this command; the
chosen values go into ``PRESETS[preset]["method_hp"]`` in ``croma/benchmark.py``. Runs are a
function of the seed (step budgets), so rerunning prints the same scores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace

import torch

TRIALS = 4

# {method: {hyper-parameter: [values]}}; each grid has exactly TRIALS points.
SPACES: dict[str, dict[str, list]] = {
    "croma": {"inner_lr": [1e-3, 3e-3], "task_mix": [0.5, 0.75]},
    "oracle": {"inner_lr": [1e-3, 3e-3], "meta_lr": [0.5, 1.0]},
    "unsup-meta": {"inner_lr": [1e-3, 3e-3], "meta_lr": [0.5, 1.0]},
    "align-classify": {"ordinary_lr": [1e-3, 3e-3], "align_weight": [0.5, 1.0]},
    "align-meta-classify": {"ordinary_lr": [1e-3, 3e-3], "inner_lr": [1e-3, 3e-3]},
    "shared": {"ordinary_lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "shared-align": {"ordinary_lr": [1e-3, 3e-3], "align_weight": [0.5, 1.0]},
    "shared-confusion": {"ordinary_lr": [1e-3, 3e-3], "confusion_weight": [0.01, 0.1]},
    "shared-target-labels": {"ordinary_lr": [3e-4, 1e-3, 3e-3, 1e-2]},
}


def trials(space: dict[str, list], check: bool = True) -> list[dict]:
    keys = sorted(space)
    out = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if check and len(out) != TRIALS:
        raise SystemExit(f"every method must get {TRIALS} trials (got {len(out)} for {space})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="udhr-speech")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method in SPACES that applies)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the trials and choices to this JSON file")
    ap.add_argument("--space", default=None,
                    help='JSON {method: {hp: [values]}} replacing SPACES for a design check (e.g. the objective: '
                    '\'{"croma": {"loss": ["nce", "clip", "cwcl"]}}\'); not the equal-effort tuning')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from croma.baselines import get_method, methods_for
    from croma.baselines.common import MethodContext
    from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, load_for_benchmark
    from croma.factory import bench_to

    cfg = BenchmarkConfig(benchmark=args.benchmark, preset=args.preset, seed=args.seed, shots=args.shots,
                          progress=False, device="cpu", out=None)
    bench = bench_to(load_for_benchmark(cfg), "cpu")
    preset = PRESETS[args.preset]
    train, ev, _ = _contexts(cfg, bench, preset)
    train = replace(train, device="cpu")
    applicable = methods_for(bench)
    spaces = json.loads(args.space) if args.space else SPACES
    names = args.methods.split(",") if args.methods else [m for m in spaces if m in applicable]
    report: dict = {"command": "python experiments/tools/tune_methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "benchmark": args.benchmark, "preset": args.preset, "seed": args.seed,
                    "budget_steps": preset["budget_steps"], "trials_per_method": TRIALS, "split": "meta_val",
                    "score": "mean over k of the best meta-val accuracy over the fine-tuning grid",
                    "methods": {}, "chosen": {}}
    for name in names:
        rows = []
        for hp in trials(spaces[name], check=args.space is None):
            base_hp = dict(preset.get("method_hp", {}).get(name, {})) if args.space else {}
            ctx = MethodContext(bench=bench, train=train, eval=ev, budget_steps=int(preset["budget_steps"]),
                                knobs=dict(preset["knobs"]), hp={**base_hp, **hp})
            t0 = time.perf_counter()
            out = get_method(name).fn(ctx)
            val = {int(k): c["meta_val"] for k, c in out.eval_choice.items()}
            score = sum(val.values()) / len(val)
            rows.append({"hp": hp, "meta_val": val, "score": score, "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps({"method": name, **rows[-1]}), flush=True)
        best = max(rows, key=lambda r: r["score"])  # ties: the first trial
        report["methods"][name] = rows
        report["chosen"][name] = best["hp"]
    print(json.dumps({"chosen": report["chosen"]}, indent=1))
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
