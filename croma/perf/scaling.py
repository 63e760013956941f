"""`croma bench meta --nproc N`: tasks/s of the batched path with 1 process and with N processes.

``nproc`` local processes (one thread each, ``gloo``) form a process group; alternately, rank 0
alone runs a whole batched meta-batch (the 1-process figure; the others wait in a barrier) and
all ranks run their share of one (round-robin whole task chunks) followed by the ``all_reduce``
of the packed chunk deltas, exactly as distributed training does. The last line is
``scaling: X.XX`` = tasks/s with ``nproc`` processes / tasks/s with 1.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from typing import Any, Callable

import torch

from croma.errors import CromaError
from croma.perf.flops import sync
from croma.perf.workload import Workload, as_workload, tune_allocator

__all__ = ["run_scaling_bench"]


_SCALING_WORKER = "import sys; from croma.perf.scaling import _scaling_worker; sys.exit(_scaling_worker(sys.argv[1]))"


def run_scaling_bench(
    workload: Workload | None = None,
    *,
    nproc: int = 2,
    repeats: int = 5,
    device: str = "cpu",
    threads: int = 1,
    allocator: str = "default",
    timeout_s: float = 120.0,
    out: Callable[[str], None] | None = None,
    **sizes: Any,
) -> dict[str, Any]:
    """Tasks/s of batched meta-batches with 1 process and with ``nproc`` processes, in one run.

    Starts ``nproc`` local ranks (:func:`croma.distributed.launch_local`, ``threads`` threads
    each; ``gloo`` on CPU, ``nccl`` with one GPU per rank on CUDA). Per repeat, in alternating
    order: rank 0 alone computes ``MetaLearner.chunked_deltas`` of a whole meta-batch (1 process),
    and every rank computes its round-robin share of the task chunks followed by the packed
    ``all_reduce`` of :meth:`croma.distributed.Distributed.reduce_chunks` (``nproc`` processes; timed on rank 0
    between barriers). Prints the load average before and after (other processes on the machine
    distort the figures) and, last, ``scaling: X.XX`` (median 1-process time / median
    ``nproc``-process time).

    ``workload`` (default :class:`~croma.perf.workload.Workload`'s defaults) with keyword ``sizes``
    replacing its fields; without a ``task_chunk`` the meta-batch is cut into ``nproc`` whole chunks.

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
    wl = as_workload(workload, **sizes)
    for name, v, lo in (("repeats", repeats, 1), ("nproc", nproc, 2)):
        if v < lo:
            raise CromaError(f"--{name} must be >= {lo} (got {v})")
    from croma.factory import resolve_device

    if resolve_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise CromaError(f"--nproc {nproc} needs one CUDA device per process ({torch.cuda.device_count()} visible)")
    meta_batch = wl.meta_batch
    if wl.task_chunk is None:  # every process gets work: the meta-batch's tasks split into nproc whole chunks
        wl = replace(wl, task_chunk=max(1, -(-meta_batch // nproc)))
        out(f"task chunks of {wl.task_chunk} (meta-batch {meta_batch} / {nproc} processes; --task-chunk to change)")
    load_before = os.getloadavg()
    spec = dict(
        workload=wl.to_dict(), repeats=repeats, device=device, threads=threads, timeout_s=timeout_s,
        tune_allocator=allocator != "default",
    )
    with tempfile.TemporaryDirectory(prefix="croma-bench-") as tmp:
        spec["result"] = os.path.join(tmp, "result.json")
        path = os.path.join(tmp, "spec.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        code, codes = launch_local(python_cmd(_SCALING_WORKER, path), nproc, threads=threads, grace_s=timeout_s + 10.0,
                                    tmpdir=tmp)
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
        f"croma bench meta --nproc {nproc}: {wl.describe()} (<= {-(-meta_batch // nproc)} tasks per process), "
        f"batched, device {r['device']} ({r['backend']}), {threads} thread(s) per process, {repeats} repeats, allocator {allocator}"
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
    from croma.factory import resolve_device

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
    wl = Workload(**spec["workload"])
    trainer = wl.trainer("batched", device=str(dev), repeats=spec["repeats"])
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
            ids = dist.shard(wl.meta_batch)
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
                sync(dev)
                t0 = time.perf_counter()
                if what == "one":
                    if dist.rank == 0:
                        whole_batch(2 * r + 1)
                        sync(dev)
                        t1.append(time.perf_counter() - t0)
                else:
                    shared(2 * r + 2)
                    sync(dev)
                    tn.append(time.perf_counter() - t0)
        dist.barrier()
        if dist.rank == 0:
            with open(spec["result"], "w", encoding="utf-8") as fh:
                json.dump({"t1": t1, "tn": tn, "max_abs_diff": max_diff, "device": str(dev), "backend": dist.backend,
                           "total": total}, fh)
    finally:
        dist.close()
    return 0
