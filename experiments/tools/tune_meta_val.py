"""Tune a method's training settings on **meta-val** classes only (never meta-test).

    python experiments/tools/tune_meta_val.py --method croma --budget 15 \
        --grid '{"inner_lr": [0.001, 0.003, 0.01], "task_mix": [0.5]}'

Prints, for each setting, the meta-val accuracy per k of the meta-test settings chosen on
meta-val (the same selection `croma benchmark` does). Meta-test classes are not evaluated.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--benchmark", default="udhr-speech")
    ap.add_argument("--method", default="croma")
    ap.add_argument("--budget", type=float, default=15.0)
    ap.add_argument("--grid", default="{}", help="JSON {TrainConfig field: [values]}")
    ap.add_argument("--knobs", default="{}", help="JSON knob overrides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    args = ap.parse_args()

    from croma.baselines import get_method
    from croma.baselines.common import MethodContext
    from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, load_for_benchmark
    from croma.meta.trainer import bench_to

    cfg = BenchmarkConfig(benchmark=args.benchmark, seed=args.seed, shots=args.shots, progress=False, device="cpu", out=None)
    bench = bench_to(load_for_benchmark(cfg), "cpu")
    preset = PRESETS[cfg.preset]
    train, ev, _ = _contexts(cfg, bench, preset)
    train = replace(train, device="cpu")
    grid = json.loads(args.grid)
    knobs = {**preset["knobs"], **json.loads(args.knobs)}
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
        over = dict(zip(keys, values))
        model_over = over.pop("model", None)
        tr = replace(train, **over)
        if model_over:
            tr = replace(tr, model={**tr.model, **model_over})
        ctx = MethodContext(bench=bench, train=tr, eval=ev, budget_seconds=args.budget, knobs=knobs)
        t0 = time.perf_counter()
        out = get_method(args.method).fn(ctx)
        val = {k: round(c["meta_val"], 1) for k, c in out.eval_choice.items()}
        mean = sum(val.values()) / len(val)
        print(json.dumps({"setting": dict(zip(keys, values)), "meta_val": val, "mean": round(mean, 2),
                          "optimizer_steps": out.optimizer_steps, "outer_steps": out.outer_steps,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    raise SystemExit(main())
