"""Training seconds per method of the main job (``croma benchmark udhr-speech --preset quick``),
median of N runs, one thread; the training phase only (``MethodOutcome.train_seconds``, which
includes the meta-val checks made during training), not the meta-val choice of the meta-test
setting nor meta-test.

    OMP_NUM_THREADS=1 python experiments/tools/train_speed.py --methods align-classify,croma --runs 3
    OMP_NUM_THREADS=1 python experiments/tools/train_speed.py --methods align-classify --profile 25

Methods are run round-robin (method A, B, ..., then again), so a busy machine slows them alike.
The meta-test setting choice that every method ends with (``select_eval``) is skipped (it is
replaced by a stub) unless ``--with-select``; it is not training. ``--no-val`` turns the meta-val
checks of ordinary training off (``knobs['select'] = False``) to see the loop alone.
``--profile N``: one cProfile'd run per method, the top N entries by cumulative and own time.
glibc's malloc thresholds are raised as ``croma benchmark`` raises them (``--no-malloc-tuning``: not).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from dataclasses import replace

import torch

import croma.baselines.common as common
from croma.baselines import get_method
from croma.baselines.common import MethodContext
from croma.benchmark import PRESETS, BenchmarkConfig, _budget, _contexts, _knobs, _method_hp, load_for_benchmark
from croma.factory import bench_to, resolve_device
from croma.task_sizes import fit_run_sizes


def contexts(methods: list[str], *, benchmark: str = "udhr-speech", preset: str = "quick", seed: int = 0,
             no_val: bool = False) -> dict[str, MethodContext]:
    """The :class:`MethodContext` each method gets in ``croma benchmark`` (first training seed)."""
    cfg = BenchmarkConfig(benchmark=benchmark, preset=preset, methods=list(methods), seed=seed, progress=False)
    p = PRESETS[preset]
    steps, seconds = _budget(cfg, p)
    device = resolve_device(cfg.device)
    bench = bench_to(load_for_benchmark(cfg), device)
    train, ev, _ = _contexts(cfg, bench, p)
    train = replace(train, device=str(device))
    families = {"align", "source_cls", *(train.task_weights or {})} | ({"target_cls"} if "oracle" in methods else set())
    train, ev, _ = fit_run_sizes(train, bench, families=sorted(families), eval_cfg=ev)
    import torch._dynamo  # noqa: F401  (imported by the first torch.func.grad of the job, before any method trains: pretrain's)

    knobs = _knobs(cfg, p)
    if no_val:
        knobs["select"] = False
    return {
        m: MethodContext(bench=bench, train=train, eval=ev, budget_seconds=seconds, budget_steps=steps,
                         label_noise=cfg.label_noise, knobs=knobs, hp=_method_hp(cfg, p, m))
        for m in methods
    }


def _no_select(ctx, model, params, inputs=None):
    return {int(k): {"head_init": "prototype", "finetune_steps": 0, "finetune_lr": 0.0, "finetune": "all",
                     "meta_val": 0.0} for k in ctx.eval.shots}, {}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="align-classify,croma,shared-target-labels")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--with-select", action="store_true", help="keep the meta-test setting choice (select_eval)")
    ap.add_argument("--no-val", action="store_true", help="no meta-val checks in ordinary training")
    ap.add_argument("--profile", type=int, default=0, help="cProfile one run per method; print the top N")
    ap.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's malloc thresholds (croma benchmark raises them)")
    args = ap.parse_args(argv)
    if not args.no_malloc_tuning:
        from croma.perf.workload import tune_allocator

        tune_allocator()  # as croma benchmark does
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    t0 = time.perf_counter()
    ctxs = contexts(methods, no_val=args.no_val)
    print(f"data ready in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if not args.with_select:
        common.select_eval = _no_select  # finish() looks it up in its module
    if args.profile:
        for m in methods:
            prof = cProfile.Profile()
            prof.enable()
            out = get_method(m).fn(ctxs[m])
            prof.disable()
            print(f"\n== {m}: train {out.train_seconds:.2f} s (under cProfile)")
            for key in ("cumulative", "tottime"):
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats(key).print_stats(args.profile)
                print(s.getvalue())
        return
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.runs):
        for m in methods:
            times[m].append(get_method(m).fn(ctxs[m]).train_seconds)
        print(f"run {r + 1}: " + ", ".join(f"{m} {times[m][-1]:.2f} s" for m in methods), flush=True)
    print("\nmethod                  median train s   runs")
    for m in methods:
        print(f"{m:<24}{statistics.median(times[m]):>14.2f}   " + " ".join(f"{t:.2f}" for t in times[m]))


if __name__ == "__main__":
    main()
