"""Meta-test speed: milliseconds per fine-tuned episode, batched path against the sequential reference.

    OMP_NUM_THREADS=1 python experiments/tools/bench_eval.py [--episodes 100] [--repeats 3]

(``croma bench eval`` is the full version: every meta-val setting, GFLOP/s, peak fraction, ``speedup:``.)

    OMP_NUM_THREADS=1 /usr/bin/time -v python experiments/tools/bench_eval.py --main-job croma,align-classify --out DIR

runs the main job (``croma benchmark udhr-speech --preset quick``, the named methods or all with
``--main-job all``) with every method's meta-val choice made twice — the full grid (kept: the
table is the product's) and successive halving (``val_halving``) — and prints, per method, both
choices, both times, the wall time and the process's peak RSS (also in ``DIR/select_check.json``).

Shapes follow the ``quick`` preset on udhr-speech (416-d speech vectors, MLP 256 -> 128, 5-way,
5 queries per class, 25 Adam steps); the data are random (speed does not depend on values).
Prints, per (fine-tuned part, k), the median over repeats of the time per episode of each path
and their ratio, all measured in this run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--main-job", default=None, metavar="METHODS",
                    help="instead: run croma benchmark udhr-speech --preset quick with these methods (comma-separated, "
                    "or 'all'), checking successive halving against the full meta-val grid")
    ap.add_argument("--out", default="runs/bench-eval-main-job", help="--main-job's output directory")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.main_job:
        return main_job(None if args.main_job == "all" else args.main_job.split(","), args.out)

    from croma.config import TrainConfig
    from croma.evaluate import EvalConfig, evaluate_kshot
    from croma.factory import build_from_config
    from croma.meta.tasks import model_inputs
    from episodes.data import ModalityData, PreparedBenchmark

    g = torch.Generator().manual_seed(0)
    n_cls, per = 40, 20
    labels = torch.arange(n_cls).repeat_interleave(per)
    rows = torch.arange(n_cls * per)
    none = torch.full_like(labels, -1)  # no concept clusters
    ids = [str(i) for i in rows.tolist()]
    data = {
        "text": ModalityData(torch.randn(n_cls * per, 1024, generator=g), labels.clone(), none, ids),
        "audio": ModalityData(torch.randn(n_cls * per, 416, generator=g), labels.clone(), none, ids),
    }
    bench = PreparedBenchmark(
        name="bench-eval", source="text", target="audio", class_names=[str(i) for i in range(n_cls)],
        cluster_names=[], data=data, pairs=torch.stack([rows, rows], 1),
        splits={"meta_train": list(range(20)), "meta_val": list(range(20, 30)), "meta_test": list(range(30, 40)),
                "source_train": list(range(20))},
        align_source_rows=rows[:10], align_target_rows=rows[:10], classify_source_rows=rows[:10], align_mode="strong",
    )
    cfg = TrainConfig(benchmark="synthetic", features="compact", model=dict(embed_dim=128, hidden=256))
    model = build_from_config(cfg, bench)
    inputs = model_inputs(model, bench, "cpu")
    print(f"meta-test speed, {args.episodes} episodes x {args.repeats} repeats, {torch.get_num_threads()} thread(s), "
          f"5-way, 25 Adam steps, MLP 416->256->128 (ms per episode, median over repeats)")
    print(f"{'fine-tune':>9} {'k':>3} {'batched':>9} {'sequential':>11} {'speedup':>8}")
    for mode in ("all", "head"):
        for k in (1, 5, 10):
            ev = EvalConfig(shots=[k], ways=5, tasks=args.episodes, queries=5, repeats=1, head_init="prototype",
                            finetune=mode, finetune_steps=25, finetune_lr=1e-3, nearest_centroid=False, retrieval=False)
            times = {}
            for path in ("batched", "sequential"):
                e = replace(ev, inner_loop=path)
                evaluate_kshot(model, bench, replace(e, tasks=2), inputs=inputs)  # warm-up
                runs = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    evaluate_kshot(model, bench, e, inputs=inputs)
                    runs.append(1000 * (time.perf_counter() - t0) / args.episodes)
                times[path] = statistics.median(runs)
            print(f"{mode:>9} {k:>3} {times['batched']:9.2f} {times['sequential']:11.2f} "
                  f"{times['sequential'] / times['batched']:7.1f}x", flush=True)
    return 0


def main_job(methods: list[str] | None, out: str) -> int:
    """The main job with each select_eval made by the full grid (kept) and by successive halving (timed, compared)."""
    import json
    import os
    import resource

    import croma.baselines.common as common
    from croma.benchmark import run_benchmark
    from croma.benchmark_config import BenchmarkConfig

    log: list[dict] = []
    select = common.select_eval

    def both(ctx, model, params, inputs=None):
        t0 = time.perf_counter()
        full = select(ctx, model, params, inputs)
        t1 = time.perf_counter()
        half = select(replace(ctx, knobs={**ctx.knobs, "val_halving": True}), model, params, inputs)
        t2 = time.perf_counter()
        keys = ("head_init", "finetune_steps", "finetune_lr", "finetune")
        same = {k: all(full[0][k][x] == half[0][k][x] for x in keys) for k in full[0]}
        log.append({"full_s": round(t1 - t0, 1), "halving_s": round(t2 - t1, 1), "same": same, "full": full[0],
                    "halving": half[0], "full_scores": full[1], "halving_scores": half[1]})
        print(f"meta-val choice: full grid {t1 - t0:.1f} s, successive halving {t2 - t1:.1f} s, same choice "
              + ", ".join(f"k={k}: {'yes' if v else 'NO'}" for k, v in same.items()), flush=True)
        return full

    common.select_eval = both
    t0 = time.perf_counter()
    run_benchmark(BenchmarkConfig(benchmark="udhr-speech", preset="quick", methods=methods, out=out, progress=False))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "select_check.json"), "w") as fh:
        json.dump({"wall_s": wall, "max_rss_mib": rss, "selects": log}, fh, indent=1)
    print(f"wall {wall:.0f} s (meta-val choices made twice), peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
