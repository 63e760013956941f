"""`croma bench meta`: the batched inner loops (vmap) against the sequential reference.

The same workload runs through both paths, alternating, in one process: a meta-batch of
``meta_batch`` N-way K-shot source classification tasks (support + queries) with ``inner_steps``
inner steps, on a synthetic benchmark with ``feature_dim``-d feature vectors and 2-layer MLP
encoders (``feature_dim -> hidden -> embed_dim``) plus the shared classifier. One timed unit is
``MetaLearner.chunked_deltas`` for one outer iteration (task sampling, inner loops, the summed
Reptile deltas). Paths: batched (vmap), sequential (the reference), naive (learn2learn-style:
deepcopy per task, ``torch.optim``, autograd) and ``higher`` when installed. Each path's FLOPs
are counted (``FlopCounterMode``) and related to a 1024^2 float32 matmul timed in the same run.
The last lines are ``speedup_vs_naive: X``, ``peak_fraction: X`` and ``speedup: X.XX`` = median
sequential time / median batched time.

With ``nproc > 1`` (:func:`run_scaling_bench`) it measures scaling instead: ``nproc`` local
processes (one thread each, ``gloo``) form a process group; alternately, rank 0 alone runs a
whole batched meta-batch (the 1-process figure; the others wait in a barrier) and all ranks run
their share of one (round-robin whole task chunks) followed by the ``all_reduce`` of the packed
chunk deltas, exactly as distributed training does. The last line is ``scaling: X.XX`` = tasks/s with
``nproc`` processes / tasks/s with 1.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Callable

import torch

from croma.errors import CromaError
from croma.perf.flops import count_flops, matmul_peak
from croma.perf.flops import sync as _sync
from croma.perf.scaling import run_scaling_bench
from croma.perf.workload import Workload, _workload, as_workload, higher_available, naive_task_deltas, tune_allocator

# the helpers live in croma.perf.flops / .workload / .scaling; re-exported here for the CLI and tests
__all__ = [
    "run_meta_bench", "run_scaling_bench", "tune_allocator", "naive_task_deltas", "matmul_peak", "count_flops",
    "higher_available", "_workload", "Workload",
]


PATH_NOTES = {
    "batched": "torch.func, vmap over the tasks of a chunk",
    "sequential": "torch.func, one task at a time",
    "naive": "deepcopy per task + torch.optim + autograd",
    "higher": "higher's differentiable optimisers, one task at a time",
    "compiled": "the batched path through torch.compile",
}


def run_meta_bench(
    workload: Workload | None = None,
    *,
    repeats: int = 5,
    device: str = "cpu",
    nproc: int = 1,
    threads: int = 1,
    allocator: str = "default",
    higher: bool | None = None,
    compile: bool = False,
    out: Callable[[str], None] | None = None,
    **sizes: Any,
) -> dict[str, Any]:
    """Time the inner-loop paths on the same meta-batches and relate them to a matmul peak.

    Paths: ``batched`` (vmap), ``sequential`` (the reference), ``naive`` (learn2learn-style:
    :func:`naive_task_deltas`) and, when installed, ``higher``. One timed unit is one
    meta-batch's summed Reptile deltas (``MetaLearner.chunked_deltas``, what training runs).
    FLOPs of one meta-batch are counted per path with ``FlopCounterMode``; achieved GFLOP/s =
    FLOPs / median time; the peak is the median rate of a 1024 x 1024 float32 matrix product,
    timed in the same run between the meta-batches.

    Args:
        repeats: timed meta-batches per path (after one warm-up each).
        workload: the tasks and model (:class:`~croma.perf.workload.Workload`; default its defaults);
            keyword ``sizes`` (``meta_batch=32``, ``hidden=64``, ``task_chunk=8``, ...) replace fields of it.
        device: ``cpu`` | ``cuda`` | ``auto``.
        nproc: processes; > 1 runs :func:`run_scaling_bench` instead.
        threads: ``torch.set_num_threads`` for the run (restored afterwards).
        allocator: a note on the allocator settings, printed in the header (see :func:`tune_allocator`).
        higher: time the ``higher`` path (None: when installed).
        compile: also time ``compiled`` (the batched path through ``torch.compile``); its
            compile time (first meta-batch minus a later one) is reported separately, and its
            FLOPs are the batched path's (the same computation).
        out: line printer (default ``print``); the last three lines are ``speedup_vs_naive: X``,
            ``peak_fraction: X`` and ``speedup: X.XX`` (batched vs sequential).

    Returns:
        ``{"<path>_ms", "<path>_tasks_per_s", "<path>_gflop", "<path>_gflops", "<path>_ms_range",
        "speedup", "speedup_vs_naive", "peak_gflops", "peak_fraction", "max_abs_diff" (batched vs
        sequential), "max_abs_diff_naive", "peak_rss_mib", "cuda_peak_mib" (or None), "paths", ...}``.

    Raises:
        CromaError: bad sizes, or ``higher=True`` without the package.
    """
    from croma.factory import resolve_device

    out = out or (lambda s: (print(s), sys.stdout.flush()))
    wl = as_workload(workload, **sizes)
    if nproc < 1:
        raise CromaError(f"--nproc must be >= 1 (got {nproc})")
    if nproc > 1:
        return run_scaling_bench(wl, nproc=nproc, repeats=repeats, device=device, threads=threads, allocator=allocator, out=out)
    if repeats < 1:
        raise CromaError(f"--repeats must be >= 1 (got {repeats})")
    if higher is None:
        higher = higher_available()
    elif higher:
        from croma.meta.inner import import_higher

        import_higher()
    dev = resolve_device(device)
    paths = ["batched", "sequential", "naive"] + (["higher"] if higher else []) + (["compiled"] if compile else [])
    meta_batch = wl.meta_batch
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainers = {mode: wl.trainer(mode, device=str(dev), repeats=repeats) for mode in paths if mode not in ("naive", "compiled")}
        if compile:
            trainers["compiled"] = wl.trainer("batched", device=str(dev), repeats=repeats, compile_inner=True)
        trainers["naive"] = trainers["sequential"]
        theta = trainers["batched"].theta

        def unit(mode: str, it: int):
            if mode == "naive":
                return naive_task_deltas(trainers[mode], theta, it)
            return trainers[mode].chunked_deltas(theta, it)[0]

        times: dict[str, list[float]] = {m: [] for m in paths}
        cuda_peak: dict[str, float] = {}
        # warm-up (vmap's first call traces) and the check that every path computes the same deltas
        results, first_s = {}, {}
        for m in paths:
            t0 = time.perf_counter()
            results[m] = unit(m, 0)
            first_s[m] = time.perf_counter() - t0
        diffs = {m: max(float((results["batched"][k] - results[m][k]).abs().max()) for k in theta) for m in paths[1:]}
        flops = {m: count_flops(lambda m=m: unit(m, 0)) for m in paths if m != "compiled"}
        if compile:
            flops["compiled"] = flops["batched"]
        peak_times = matmul_peak(device=dev, reps=2)
        for r in range(repeats):
            order = paths if r % 2 == 0 else paths[::-1]  # alternate, flipping the order each repeat
            for mode in order:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                _sync(dev)
                t0 = time.perf_counter()
                unit(mode, r + 1)
                _sync(dev)
                times[mode].append(time.perf_counter() - t0)
                if dev.type == "cuda":
                    cuda_peak[mode] = max(cuda_peak.get(mode, 0.0), torch.cuda.max_memory_allocated(dev) / 2**20)
            peak_times += matmul_peak(device=dev, reps=2)
    finally:
        torch.set_num_threads(old_threads)
    med = {m: statistics.median(v) for m, v in times.items()}
    peak_gflops = 2 * 1024**3 / statistics.median(peak_times) / 1e9
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    res: dict[str, Any] = {
        "device": str(dev), "threads": threads, "meta_batch": meta_batch, "repeats": repeats, "paths": paths,
        "task_chunk": trainers["batched"].cfg.task_chunk, "peak_gflops": peak_gflops,
        "peak_gflops_range": (2 * 1024**3 / max(peak_times) / 1e9, 2 * 1024**3 / min(peak_times) / 1e9),
        "max_abs_diff": diffs["sequential"], "max_abs_diff_naive": diffs["naive"],
        "max_abs_diff_higher": diffs.get("higher"), "peak_rss_mib": rss_mib, "cuda_peak_mib": cuda_peak or None,
        "allocator": allocator,
    }
    for m in paths:
        res[f"{m}_ms"] = 1000 * med[m]
        res[f"{m}_ms_range"] = (1000 * min(times[m]), 1000 * max(times[m]))
        res[f"{m}_tasks_per_s"] = meta_batch / med[m]
        res[f"{m}_gflop"] = flops[m] / 1e9
        res[f"{m}_gflops"] = flops[m] / 1e9 / med[m]
    if compile:
        res["compile_s"] = first_s["compiled"] - med["compiled"]
    res["speedup"] = med["sequential"] / med["batched"]
    res["speedup_vs_naive"] = med["naive"] / med["batched"]
    res["peak_fraction"] = res["batched_gflops"] / peak_gflops
    out(
        f"croma bench meta: {wl.describe()}, "
        f"task chunks of {res['task_chunk'] or 'a whole family'}, device {dev}, {threads} thread(s), {repeats} repeats, "
        f"allocator {allocator}"
    )
    lo, hi = res["peak_gflops_range"]
    out(f"matmul peak: {peak_gflops:.1f} GFLOP/s (1024x1024 float32, median of {len(peak_times)}; range {lo:.1f}-{hi:.1f})")
    for m in paths:
        a, b = res[f"{m}_ms_range"]
        line = (f"{m:<10}: {res[f'{m}_tasks_per_s']:8.1f} tasks/s  (median {res[f'{m}_ms']:.1f} ms per meta-batch, "
                f"range {a:.1f}-{b:.1f}; {res[f'{m}_gflop']:.3f} GFLOP, {res[f'{m}_gflops']:.1f} GFLOP/s = "
                f"{100 * res[f'{m}_gflops'] / peak_gflops:.0f}% of peak)  [{PATH_NOTES[m]}]")
        if cuda_peak:
            line += f"  peak CUDA memory {cuda_peak[m]:.1f} MiB"
        out(line)
    if compile:
        out(f"compile time (torch.compile of the batched step, all shapes of the first meta-batch): {res['compile_s']:.1f} s")
    for m in paths[1:]:
        out(f"max |batched - {m}| Reptile delta: {diffs[m]:.2e}")
    out(f"peak memory (process max RSS): {rss_mib:.1f} MiB")
    out(f"speedup_vs_naive: {res['speedup_vs_naive']:.2f}")
    out(f"peak_fraction: {res['peak_fraction']:.3f}")
    out(f"speedup: {res['speedup']:.2f}")
    return res


REAL_NOTES = {
    "batched": "croma train's default: vmap over the tasks of a family; conv = k strided matmuls, bmm across tasks",
    "sequential": "the reference: one task at a time, same per-task function",
    "batched-native": "opt-in cnn1d conv=native: under vmap ONE grouped F.conv1d across the tasks (groups = T)",
    "sequential-native": "opt-in cnn1d conv=native, one task at a time",
    "compiled": "--compile-inner: the batched step through torch.compile (inductor)",
}


def compile_break_even(compile_s: float, eager_s: float, compiled_s: float) -> float:
    """Meta-batches after which ``torch.compile`` pays: ``compile_s / (eager_s - compiled_s)`` (inf without a gain)."""
    gain = eager_s - compiled_s
    return compile_s / gain if gain > 0 else float("inf")


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``||a - b|| / ||b||`` over all tensors of the dicts together (Frobenius)."""
    num = sum(float((a[k].double() - b[k].double()).square().sum()) for k in b)
    den = sum(float(b[k].double().square().sum()) for k in b)
    return (num / den) ** 0.5 if den > 0 else float(num > 0)


def run_real_meta_bench(
    benchmark: str, *, repeats: int = 5, threads: int = 1, compile: bool = False, variants: bool = True,
    out: Callable[[str], None] | None = None, **overrides: Any,
) -> dict[str, Any]:
    """``croma bench meta --benchmark NAME``: ``croma train NAME``'s default meta-batch (its data, its
    default encoders, e.g. cnn1d on byte ids and log-mel frames for udhr-speech, its task mix) through
    the batched and the sequential inner loop, alternating in one process, one thread; with
    ``variants`` also both with the opt-in ``cnn1d`` ``conv="native"``; with ``compile`` also the
    compiled batched step, its compile time and the break-even in meta-batches. One timed unit is
    ``MetaLearner.chunked_deltas`` (sampling, inner loops, summed Reptile deltas). Prints which path
    ``croma train`` runs and, last, ``speedup: X.XX`` (batched eager over sequential). ``overrides``:
    ``TrainConfig`` fields replacing the defaults (tests: ``meta_batch=2, inner_steps=1``).

    Returns ``{"<path>_ms", "rel_diff" {path: ||delta - sequential|| / ||sequential||}, "speedup",
    "native_speedup", "compile_s", "break_even", ...}``."""
    from dataclasses import replace

    from croma.config import TrainConfig
    from croma.encoders.sequence import Conv1dEncoder
    from croma.factory import load_bench
    from croma.learner import MetaLearner

    out = out or (lambda s: (print(s), sys.stdout.flush()))
    if repeats < 1:
        raise CromaError(f"--repeats must be >= 1 (got {repeats})")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = TrainConfig(**{"benchmark": benchmark, "iterations": 2 * repeats + 4, "eval_every": 0, "device": "cpu",
                              **overrides})
        bench = load_bench(cfg)
        tr = {m: MetaLearner(replace(cfg, inner_loop=m), bench) for m in ("batched", "sequential")}
        cnn = [m for m, e in tr["batched"].model.encoders.items() if isinstance(e, Conv1dEncoder)]
        if variants and cnn:
            hp = {**cfg.model, "encoder_hp": {**dict(cfg.model.get("encoder_hp") or {}), **{m: {"conv": "native"} for m in cnn}}}
            for m in ("batched", "sequential"):
                tr[f"{m}-native"] = MetaLearner(replace(cfg, inner_loop=m, model=hp), bench)
        if compile:
            tr["compiled"] = MetaLearner(replace(cfg, compile_inner=True), bench)
        base = tr["batched"]
        theta, paths = base.theta, list(tr)
        first_s, res = {}, {}
        for m in paths:  # warm-up (vmap traces, torch.compile compiles) and the results compared below
            t0 = time.perf_counter()
            res[m] = tr[m].chunked_deltas(theta, 0)[0]
            first_s[m] = time.perf_counter() - t0
        gflop = count_flops(lambda: base.chunked_deltas(theta, 0)) / 1e9
        peak_times = matmul_peak(reps=2)
        times: dict[str, list[float]] = {m: [] for m in paths}
        for r in range(repeats):
            for m in paths if r % 2 == 0 else paths[::-1]:
                t0 = time.perf_counter()
                tr[m].chunked_deltas(theta, r + 1)
                times[m].append(time.perf_counter() - t0)
            peak_times += matmul_peak(reps=2)
    finally:
        torch.set_num_threads(old_threads)
    med = {m: statistics.median(v) for m, v in times.items()}
    peak = 2 * 1024**3 / statistics.median(peak_times) / 1e9
    plan = ", ".join(f"{n} {f}" for f, n in base.plan)
    encs = ", ".join(f"{m} {type(e).__name__}" for m, e in base.model.encoders.items())
    out(f"croma bench meta --benchmark {benchmark}: croma train {benchmark}'s default meta-batch {cfg.meta_batch} ({plan}), "
        f"{cfg.inner_steps} inner steps ({cfg.inner_optimizer}), task chunks of {base.cfg.task_chunk}, encoders {encs}; "
        f"cpu, {threads} thread(s), {repeats} repeats, alternating")
    out(f"matmul peak: {peak:.1f} GFLOP/s (1024x1024 float32, median of {len(peak_times)}); {gflop:.2f} GFLOP per meta-batch")
    for m in paths:
        out(f"{m:<17}: median {1000 * med[m]:7.1f} ms per meta-batch (range {1000 * min(times[m]):.0f}-"
            f"{1000 * max(times[m]):.0f}; {gflop / med[m]:.1f} GFLOP/s = {100 * gflop / med[m] / peak:.0f}% of peak)  "
            f"[{REAL_NOTES[m]}]")
    ref = res["sequential"]
    diffs = {m: _rel(res[m], ref) for m in paths if m != "sequential"}
    for m, d in diffs.items():
        out(f"||{m} - sequential|| / ||sequential|| summed Reptile delta: {d:.2e}")
    result: dict[str, Any] = {"benchmark": benchmark, "paths": paths, "gflop": gflop, "peak_gflops": peak,
                              "rel_diff": diffs, **{f"{m}_ms": 1000 * med[m] for m in paths}}
    if "batched-native" in tr:
        result["native_speedup"] = med["batched"] / med["batched-native"]
        out(f"native conv: batched {result['native_speedup']:.2f}x, sequential "
            f"{med['sequential'] / med['sequential-native']:.2f}x the taps; native batched over native sequential "
            f"{med['sequential-native'] / med['batched-native']:.2f}x")
    path = "batched (eager vmap, conv=taps; the default)"
    if compile:
        compile_s = max(0.0, first_s["compiled"] - med["compiled"])
        be = compile_break_even(compile_s, med["batched"], med["compiled"])
        result.update(compile_s=compile_s, break_even=be, compiled_speedup=med["batched"] / med["compiled"])
        out(f"compiled: {result['compiled_speedup']:.2f}x the batched eager path; compile {compile_s:.1f} s (first "
            f"meta-batch minus the median; inductor's FX graph cache makes reruns of the same shapes far cheaper); "
            f"break-even after {be:.0f} meta-batches (croma train's default: {TrainConfig().iterations} iterations)")
        path += (f"; --compile-inner pays from {be:.0f} iterations on" if be < float("inf") else "; --compile-inner does not pay")
    out(f"path: croma train runs {path}")
    result["speedup"] = med["sequential"] / med["batched"]
    # each repeat times every path back to back: the median of the per-repeat ratios is robust to load drifting
    result["paired_speedup"] = statistics.median(s / b for s, b in zip(times["sequential"], times["batched"]))
    out(f"paired speedup (median of per-repeat sequential/batched ratios): {result['paired_speedup']:.2f}")
    out(f"speedup: {result['speedup']:.2f}")
    return result
