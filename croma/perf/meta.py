"""`croma bench meta`: the batched inner loops (vmap) against the sequential reference.

The same workload runs through both paths, alternating, in one process: a meta-batch of
``meta_batch`` N-way K-shot source classification tasks (support + queries) with ``inner_steps``
inner steps, on a synthetic benchmark with ``feature_dim``-d feature vectors and 2-layer MLP
encoders (``feature_dim -> hidden -> embed_dim``) plus the shared classifier. One timed unit is
``CromaTrainer.chunked_deltas`` for one outer iteration (task sampling, inner loops, the summed
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

__all__ = ["run_meta_bench", "run_scaling_bench", "tune_allocator"]


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


def _workload(inner_loop: str, *, repeats: int, meta_batch: int, device: str, inner_steps: int, inner_optimizer: str,
              ways: int, shots: int, queries: int, feature_dim: int, hidden: int, embed_dim: int, seed: int,
              task_chunk: int | None = None, compile_inner: bool = False):
    """The benchmark's :class:`CromaTrainer` (synthetic features, 2-layer MLP encoders, cls tasks)."""
    from croma.meta.trainer import CromaTrainer, TrainConfig
    from episodes.datasets.synthetic import make_synthetic_benchmark

    per_class = 2 * (shots + queries) + 2  # half of each class's source rows serve classification
    bench = make_synthetic_benchmark(
        num_classes=max(20, 4 * ways), per_class=per_class, source_dim=feature_dim, target_dim=feature_dim,
        latent_dim=16, seed=seed,
    )
    base = dict(
        iterations=max(2 * repeats + 2, 2), meta_batch=meta_batch, task_mix=0.0, inner_steps=inner_steps,
        inner_lr=1e-3, inner_optimizer=inner_optimizer, ways=ways, shots=shots, queries=queries,
        eval_every=0, checkpoint_every=0, seed=seed, device=device,
        model={"embed_dim": embed_dim, "hidden": hidden, "encoders": {bench.source: "mlp", bench.target: "mlp"},
               "encoder_hp": {bench.source: {"layers": 2}, bench.target: {"layers": 2}}},
    )
    if task_chunk is not None:
        base["task_chunk"] = task_chunk
    return CromaTrainer(TrainConfig(**base, inner_loop=inner_loop, compile_inner=compile_inner), bench)


def naive_task_deltas(trainer, theta: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
    """The meta-batch's summed Reptile deltas the way learn2learn-style code computes them.

    Per task: ``copy.deepcopy`` of the model (holding ``theta``), a fresh ``torch.optim.Adam``
    (or ``SGD``) over the parameters the task trains, and ``zero_grad`` / ``loss.backward()`` /
    ``step()`` with plain autograd, one task after another. The reference point for what the
    functional, batched path saves; the result equals :meth:`CromaTrainer.task_deltas` up to
    rounding.
    """
    import copy

    from croma.meta.functional import load_parameters
    from croma.meta.tasks import derive_seed

    cfg, icfg = trainer.cfg, trainer.inner_cfg
    base = copy.deepcopy(trainer.model)
    load_parameters(base, theta)
    frozen = tuple(cfg.frozen)
    deltas = {k: torch.zeros_like(v) for k, v in theta.items()}
    for fam_name, indices in trainer.locate(iteration, range(trainer.meta_batch)):
        fam = trainer.families[fam_name]
        batch = fam.sample(indices)
        fam.begin(derive_seed(cfg.seed, "noise", iteration, fam_name, *indices))
        for i in range(len(indices)):
            b = {k: v[i] for k, v in batch.items()}
            model = copy.deepcopy(base)
            named = [(n, p) for n, p in model.named_parameters() if n in theta and fam.trainable(n) and not n.startswith(frozen)]
            params = [p for _, p in named]
            if icfg.optimizer == "adam":
                opt = torch.optim.Adam(params, lr=icfg.lr, betas=(icfg.beta1, icfg.beta2), eps=icfg.eps)
            else:
                opt = torch.optim.SGD(params, lr=icfg.lr)
            for _ in range(icfg.steps):
                opt.zero_grad()
                loss = fam.loss(model, b)
                loss.backward()
                opt.step()
            with torch.no_grad():
                for n, p in named:
                    deltas[n] += p - theta[n]
    return deltas


def matmul_peak(n: int = 1024, reps: int = 3, device: torch.device | str = "cpu") -> list[float]:
    """Seconds per ``[n, n] @ [n, n]`` float32 product, ``reps`` timings (after one warm-up)."""
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev)
    b = torch.randn(n, n, generator=g).to(dev)
    out = torch.empty(n, n, device=dev)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return times


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter.FlopCounterMode``: matrix products,
    convolutions, attention; elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def higher_available() -> bool:
    """True when the optional ``higher`` package imports."""
    try:
        from croma.meta.inner import import_higher

        import_higher()
    except CromaError:
        return False
    return True


PATH_NOTES = {
    "batched": "torch.func, vmap over the tasks of a chunk",
    "sequential": "torch.func, one task at a time",
    "naive": "deepcopy per task + torch.optim + autograd",
    "higher": "higher's differentiable optimisers, one task at a time",
    "compiled": "the batched path through torch.compile",
}


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
    task_chunk: int | None = None,
    higher: bool | None = None,
    compile: bool = False,
    out: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time the inner-loop paths on the same meta-batches and relate them to a matmul peak.

    Paths: ``batched`` (vmap), ``sequential`` (the reference), ``naive`` (learn2learn-style:
    :func:`naive_task_deltas`) and, when installed, ``higher``. One timed unit is one
    meta-batch's summed Reptile deltas (``CromaTrainer.chunked_deltas``, what training runs).
    FLOPs of one meta-batch are counted per path with ``FlopCounterMode``; achieved GFLOP/s =
    FLOPs / median time; the peak is the median rate of a 1024 x 1024 float32 matrix product,
    timed in the same run between the meta-batches.

    Args:
        repeats: timed meta-batches per path (after one warm-up each).
        meta_batch, inner_steps, inner_optimizer, ways, shots, queries: the workload.
        feature_dim, hidden, embed_dim: synthetic features and MLP sizes.
        device: ``cpu`` | ``cuda`` | ``auto``.
        nproc: processes; > 1 runs :func:`run_scaling_bench` instead.
        threads: ``torch.set_num_threads`` for the run (restored afterwards).
        allocator: a note on the allocator settings, printed in the header (see :func:`tune_allocator`).
        task_chunk: ``TrainConfig.task_chunk`` (None: its default).
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
    from croma.meta.trainer import resolve_device

    out = out or (lambda s: (print(s), sys.stdout.flush()))
    if nproc < 1:
        raise CromaError(f"--nproc must be >= 1 (got {nproc})")
    if nproc > 1:
        return run_scaling_bench(
            nproc=nproc, repeats=repeats, meta_batch=meta_batch, device=device, inner_steps=inner_steps,
            inner_optimizer=inner_optimizer, ways=ways, shots=shots, queries=queries, feature_dim=feature_dim,
            hidden=hidden, embed_dim=embed_dim, threads=threads, seed=seed, allocator=allocator, task_chunk=task_chunk,
            out=out,
        )
    for name, v, lo in (("repeats", repeats, 1), ("meta-batch", meta_batch, 1), ("inner-steps", inner_steps, 1)):
        if v < lo:
            raise CromaError(f"--{name} must be >= {lo} (got {v})")
    if higher is None:
        higher = higher_available()
    elif higher:
        from croma.meta.inner import import_higher

        import_higher()
    dev = resolve_device(device)
    paths = ["batched", "sequential", "naive"] + (["higher"] if higher else []) + (["compiled"] if compile else [])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kw = dict(
            repeats=repeats, meta_batch=meta_batch, device=str(dev), inner_steps=inner_steps,
            inner_optimizer=inner_optimizer, ways=ways, shots=shots, queries=queries, feature_dim=feature_dim,
            hidden=hidden, embed_dim=embed_dim, seed=seed, task_chunk=task_chunk,
        )
        trainers = {mode: _workload(mode, **kw) for mode in paths if mode not in ("naive", "compiled")}
        if compile:
            trainers["compiled"] = _workload("batched", compile_inner=True, **kw)
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
        f"croma bench meta: {meta_batch} tasks/meta-batch ({ways}-way {shots}-shot + {queries} queries), "
        f"{inner_steps} inner steps ({inner_optimizer}), 2-layer MLP encoders {feature_dim}->{hidden}->{embed_dim}, "
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


_SCALING_WORKER = "import sys; from croma.perf.meta import _scaling_worker; sys.exit(_scaling_worker(sys.argv[1]))"


def run_scaling_bench(
    *,
    nproc: int = 2,
    repeats: int = 5,
    meta_batch: int = 16,
    device: str = "cpu",
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
    timeout_s: float = 120.0,
    task_chunk: int | None = None,
    out: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Tasks/s of batched meta-batches with 1 process and with ``nproc`` processes, in one run.

    Starts ``nproc`` local ranks (:func:`croma.distributed.launch_local`, ``threads`` threads
    each; ``gloo`` on CPU, ``nccl`` with one GPU per rank on CUDA). Per repeat, in alternating
    order: rank 0 alone computes ``CromaTrainer.chunked_deltas`` of a whole meta-batch (1 process),
    and every rank computes its round-robin share of the task chunks followed by the packed
    ``all_reduce`` of :meth:`croma.distributed.Distributed.reduce_chunks` (``nproc`` processes; timed on rank 0
    between barriers). Prints the load average before and after (other processes on the machine
    distort the figures) and, last, ``scaling: X.XX`` (median 1-process time / median
    ``nproc``-process time).

    Returns:
        ``{"tasks_per_s_1", "tasks_per_s_n", "ms_1", "ms_n", "scaling", "max_abs_diff", "nproc",
        "loadavg_before", "loadavg_after", ...}``.

    Raises:
        CromaError: a rank failed (its error is printed on stderr) or bad sizes.
    """
    import json
    import os
    import tempfile

    from croma.distributed import launch_local, python_cmd

    out = out or (lambda s: (print(s), sys.stdout.flush()))
    for name, v, lo in (("repeats", repeats, 1), ("meta-batch", meta_batch, 1), ("inner-steps", inner_steps, 1), ("nproc", nproc, 2)):
        if v < lo:
            raise CromaError(f"--{name} must be >= {lo} (got {v})")
    from croma.meta.trainer import resolve_device

    if resolve_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise CromaError(f"--nproc {nproc} needs one CUDA device per process ({torch.cuda.device_count()} visible)")
    load_before = os.getloadavg()
    spec = dict(
        repeats=repeats, meta_batch=meta_batch, device=device, inner_steps=inner_steps, inner_optimizer=inner_optimizer,
        ways=ways, shots=shots, queries=queries, feature_dim=feature_dim, hidden=hidden, embed_dim=embed_dim,
        seed=seed, threads=threads, timeout_s=timeout_s, tune_allocator=allocator != "default", task_chunk=task_chunk,
    )
    with tempfile.TemporaryDirectory(prefix="croma-bench-") as tmp:
        spec["result"] = os.path.join(tmp, "result.json")
        path = os.path.join(tmp, "spec.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        code, codes = launch_local(python_cmd(_SCALING_WORKER, path), nproc, threads=threads, grace_s=timeout_s + 10.0)
        if code != 0 or not os.path.isfile(spec["result"]):
            raise CromaError(f"croma bench meta --nproc {nproc}: a benchmark process failed (exit codes {codes})")
        with open(spec["result"], encoding="utf-8") as fh:
            r = json.load(fh)
    load_after = os.getloadavg()
    med1, medn = statistics.median(r["t1"]), statistics.median(r["tn"])
    res: dict[str, Any] = {
        "nproc": nproc, "threads": threads, "device": r["device"], "backend": r["backend"], "meta_batch": meta_batch,
        "repeats": repeats, "ms_1": 1000 * med1, "ms_n": 1000 * medn, "tasks_per_s_1": meta_batch / med1,
        "tasks_per_s_n": meta_batch / medn, "scaling": med1 / medn, "max_abs_diff": r["max_abs_diff"],
        "loadavg_before": load_before, "loadavg_after": load_after, "allocator": allocator, "cpus": os.cpu_count(),
    }
    out(
        f"croma bench meta --nproc {nproc}: {meta_batch} tasks/meta-batch (<= {-(-meta_batch // nproc)} per process; "
        f"{ways}-way {shots}-shot + {queries} queries), "
        f"{inner_steps} inner steps ({inner_optimizer}), batched, 2-layer MLP encoders {feature_dim}->{hidden}->{embed_dim}, "
        f"device {r['device']} ({r['backend']}), {threads} thread(s) per process, {repeats} repeats, allocator {allocator}"
    )
    out(f"machine: {os.cpu_count()} CPU(s); load average before {_fmt_load(load_before)}, after {_fmt_load(load_after)}")
    out(f"1 process   : {res['tasks_per_s_1']:8.1f} tasks/s  (median {res['ms_1']:.1f} ms per meta-batch)")
    out(f"{nproc} processes: {res['tasks_per_s_n']:8.1f} tasks/s  (median {res['ms_n']:.1f} ms per meta-batch, incl. all_reduce)")
    out(f"max |{nproc}-process - 1-process| Reptile delta sum: {res['max_abs_diff']:.2e}")
    out(f"scaling: {res['scaling']:.2f}")
    return res


def _fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def _scaling_worker(spec_path: str) -> int:
    """One rank of :func:`run_scaling_bench` (started by :func:`croma.distributed.launch_local`)."""
    import json

    from croma.distributed import Distributed, env_world
    from croma.meta.trainer import resolve_device

    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    if spec["tune_allocator"]:
        tune_allocator()
    torch.set_num_threads(int(spec["threads"]))
    env = env_world()
    dev = resolve_device(spec["device"])
    if dev.type == "cuda":
        dev = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(dev)
    trainer = _workload(
        "batched", repeats=spec["repeats"], meta_batch=spec["meta_batch"], device=str(dev), inner_steps=spec["inner_steps"],
        inner_optimizer=spec["inner_optimizer"], ways=spec["ways"], shots=spec["shots"], queries=spec["queries"],
        feature_dim=spec["feature_dim"], hidden=spec["hidden"], embed_dim=spec["embed_dim"], seed=spec["seed"],
        task_chunk=spec.get("task_chunk"),
    )
    dist = Distributed(env, dev, timeout_s=spec["timeout_s"])
    try:
        theta = trainer.theta
        if trainer.cfg.task_chunk > 0:  # what training does: whole chunks per rank, rows summed in chunk order
            mine = dist.shard(len(trainer.chunks))

            def whole_batch(it: int):
                return trainer.chunked_deltas(theta, it)

            def shared(it: int):
                return trainer.chunked_deltas(theta, it, mine, dist.reduce_chunks)
        else:
            ids = dist.shard(spec["meta_batch"])
            reduce = dist.reduce_deltas([f for f, _ in trainer.plan])

            def whole_batch(it: int):
                return trainer.task_deltas(theta, it)

            def shared(it: int):
                return reduce(*trainer.task_deltas(theta, it, ids))

        # warm-up: both shapes once (and the check that the shares sum to the whole)
        whole = whole_batch(0)[0] if dist.rank == 0 else None
        summed, total, _ = shared(0)
        max_diff = max(float((whole[k] - summed[k]).abs().max()) for k in theta) if dist.rank == 0 else 0.0
        t1: list[float] = []
        tn: list[float] = []
        for r in range(spec["repeats"]):
            for what in (("one", "all") if r % 2 == 0 else ("all", "one")):
                dist.barrier()
                _sync(dev)
                t0 = time.perf_counter()
                if what == "one":
                    if dist.rank == 0:
                        whole_batch(2 * r + 1)
                        _sync(dev)
                        t1.append(time.perf_counter() - t0)
                else:
                    shared(2 * r + 2)
                    _sync(dev)
                    tn.append(time.perf_counter() - t0)
        dist.barrier()
        if dist.rank == 0:
            with open(spec["result"], "w", encoding="utf-8") as fh:
                json.dump({"t1": t1, "tn": tn, "max_abs_diff": max_diff, "device": str(dev), "backend": dist.backend,
                           "total": total}, fh)
    finally:
        dist.close()
    return 0
