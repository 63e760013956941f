"""Meta-test speed: milliseconds per fine-tuned episode, batched path against the sequential reference.

    OMP_NUM_THREADS=1 python experiments/tools/bench_eval.py [--episodes 100] [--repeats 3]

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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

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


if __name__ == "__main__":
    raise SystemExit(main())
