"""`croma bench meta`: the batched inner loops (vmap) against the sequential reference.

The same workload runs through both paths, alternating, in one process: a meta-batch of
``meta_batch`` N-way K-shot source classification tasks (support + queries) with ``inner_steps``
inner steps, on a synthetic benchmark with ``feature_dim``-d feature vectors and 2-layer MLP
encoders (``feature_dim -> hidden -> embed_dim``) plus the shared classifier. One timed unit is
``CromaTrainer.task_deltas`` for one outer iteration (task sampling, inner loops, the summed
Reptile deltas). The last line printed is ``speedup: X.XX`` = median sequential time / median
batched time.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Callable

import torch

from croma.errors import CromaError

__all__ = ["run_meta_bench", "tune_allocator"]


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc's malloc to keep freed tensor buffers for reuse (process-wide; for CLIs).

    Batched inner loops allocate multi-megabyte tensors ([tasks, *param shape]) every step; by
    default glibc serves those with fresh ``mmap`` pages and returns them on ``free``, so every
    step pays page faults (on a VM several times the arithmetic). Raising ``M_MMAP_THRESHOLD``
    and ``M_TRIM_THRESHOLD`` keeps them in the heap. Returns True when applied (glibc only); a
    no-op elsewhere. Only applications (``croma`` subcommands) should call this.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(mallopt(m_trim_threshold, int(trim_threshold)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_meta_bench(
    *,
    repeats: int = 5,
    meta_batch: int = 16,
    device: str = "cpu",
    nproc: int = 1,
    inner_steps: int = 5,
    inner_optimizer: str = "adam",
    ways: int = 5,
    shots: int = 5,
    queries: int = 5,
    feature_dim: int = 256,
    hidden: int = 128,
    embed_dim: int = 64,
    threads: int = 1,
    seed: int = 0,
    allocator: str = "default",
    out: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time batched vs sequential inner loops on the same meta-batches.

    Args:
        repeats: timed meta-batches per path (after one warm-up each).
        meta_batch, inner_steps, inner_optimizer, ways, shots, queries: the workload.
        feature_dim, hidden, embed_dim: synthetic features and MLP sizes.
        device: ``cpu`` | ``cuda`` | ``auto``.
        nproc: processes (only 1 is supported for now).
        threads: ``torch.set_num_threads`` for the run (restored afterwards).
        allocator: a note on the allocator settings, printed in the header (see :func:`tune_allocator`).
        out: line printer (default ``print``); the last line is ``speedup: X.XX``.

    Returns:
        ``{"batched_tasks_per_s", "sequential_tasks_per_s", "batched_ms", "sequential_ms",
        "speedup", "max_abs_diff", "peak_rss_mib", "cuda_peak_mib" (or None), "device", ...}``.

    Raises:
        CromaError: ``nproc > 1`` (not supported yet) or bad sizes.
    """
    from croma.meta.trainer import CromaTrainer, TrainConfig, resolve_device
    from episodes.datasets.synthetic import make_synthetic_benchmark

    out = out or (lambda s: (print(s), sys.stdout.flush()))
    if nproc != 1:
        raise CromaError(f"--nproc {nproc}: multi-process benchmarking is not yet supported (use --nproc 1)")
    for name, v, lo in (("repeats", repeats, 1), ("meta-batch", meta_batch, 1), ("inner-steps", inner_steps, 1)):
        if v < lo:
            raise CromaError(f"--{name} must be >= {lo} (got {v})")
    dev = resolve_device(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        per_class = 2 * (shots + queries) + 2  # half of each class's source rows serve classification
        bench = make_synthetic_benchmark(
            num_classes=max(20, 4 * ways), per_class=per_class, source_dim=feature_dim, target_dim=feature_dim,
            latent_dim=16, seed=seed,
        )
        base = dict(
            iterations=max(repeats + 1, 2), meta_batch=meta_batch, task_mix=0.0, inner_steps=inner_steps,
            inner_lr=1e-3, inner_optimizer=inner_optimizer, ways=ways, shots=shots, queries=queries,
            eval_every=0, checkpoint_every=0, seed=seed, device=str(dev),
            model={"embed_dim": embed_dim, "hidden": hidden, "encoders": {bench.source: "mlp", bench.target: "mlp"},
                   "encoder_hp": {bench.source: {"layers": 2}, bench.target: {"layers": 2}}},
        )
        trainers = {
            mode: CromaTrainer(TrainConfig(**base, inner_loop=mode), bench) for mode in ("batched", "sequential")
        }
        theta = trainers["batched"].theta
        times: dict[str, list[float]] = {"batched": [], "sequential": []}
        cuda_peak: dict[str, float] = {}
        max_diff = 0.0
        # warm-up (vmap's first call traces), then alternate, flipping the order each repeat
        results = {m: trainers[m].task_deltas(theta, 0)[0] for m in times}
        max_diff = max(float((results["batched"][k] - results["sequential"][k]).abs().max()) for k in theta)
        for r in range(repeats):
            order = ("batched", "sequential") if r % 2 == 0 else ("sequential", "batched")
            for mode in order:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                _sync(dev)
                t0 = time.perf_counter()
                trainers[mode].task_deltas(theta, r + 1)
                _sync(dev)
                times[mode].append(time.perf_counter() - t0)
                if dev.type == "cuda":
                    cuda_peak[mode] = max(cuda_peak.get(mode, 0.0), torch.cuda.max_memory_allocated(dev) / 2**20)
    finally:
        torch.set_num_threads(old_threads)
    med = {m: statistics.median(v) for m, v in times.items()}
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    speedup = med["sequential"] / med["batched"]
    res: dict[str, Any] = {
        "device": str(dev),
        "threads": threads,
        "meta_batch": meta_batch,
        "repeats": repeats,
        "batched_ms": 1000 * med["batched"],
        "sequential_ms": 1000 * med["sequential"],
        "batched_tasks_per_s": meta_batch / med["batched"],
        "sequential_tasks_per_s": meta_batch / med["sequential"],
        "speedup": speedup,
        "max_abs_diff": max_diff,
        "peak_rss_mib": rss_mib,
        "cuda_peak_mib": cuda_peak or None,
        "allocator": allocator,
    }
    out(
        f"croma bench meta: {meta_batch} tasks/meta-batch ({ways}-way {shots}-shot + {queries} queries), "
        f"{inner_steps} inner steps ({inner_optimizer}), 2-layer MLP encoders {feature_dim}->{hidden}->{embed_dim}, "
        f"device {dev}, {threads} thread(s), {repeats} repeats, allocator {allocator}"
    )
    for m in ("batched", "sequential"):
        line = f"{m:<10}: {res[f'{m}_tasks_per_s']:8.1f} tasks/s  (median {res[f'{m}_ms']:.1f} ms per meta-batch)"
        if cuda_peak:
            line += f"  peak CUDA memory {cuda_peak[m]:.1f} MiB"
        out(line)
    out(f"max |batched - sequential| Reptile delta: {max_diff:.2e}")
    out(f"peak memory (process max RSS): {rss_mib:.1f} MiB")
    out(f"speedup: {speedup:.2f}")
    return res
