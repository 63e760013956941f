"""The training runs of ``croma benchmark`` as independent units, in this process or in workers.

A unit is one (method, training seed): train within the budget, choose the meta-test settings on
meta-val, meta-test every k on the run's episodes (:func:`run_unit`). Units share nothing but the
prepared benchmark, so they can run in any order and in parallel: :func:`run_units` runs them in
this process (``jobs=1``) or in ``jobs`` worker processes (``spawn``; the benchmark is sent to each
worker once). Every unit runs with :data:`UNIT_THREADS` intra-op thread(s) wherever it runs, so
the numbers do not depend on ``--jobs`` (bitwise on one machine): on a small model one thread per
process does more work per core than several threads sharing one process's small matrix products.

Workers ignore Ctrl-C (the parent stops them and says so once) and die with the parent (Linux:
``PR_SET_PDEATHSIG``); a unit that fails stops the run with its own message.
"""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

__all__ = ["UNIT_THREADS", "Unit", "run_unit", "run_units", "auto_jobs", "peak_rss_mib"]

#: intra-op threads of every unit, in this process or a worker (results do not depend on --jobs)
UNIT_THREADS = 1


@dataclass(frozen=True)
class Unit:
    """One training run: ``method`` with training seed ``seed``; ``ctx`` holds the
    :class:`croma.baselines.common.MethodContext` fields other than the benchmark and ``progress``
    (its ``eval`` is the meta-test's base config); ``shots``: the meta-test k values."""

    method: str
    seed: int
    ctx: dict[str, Any] = field(default_factory=dict)
    shots: tuple[int, ...] = ()
    partial: Any = None  # croma.unit_partial.Partial: where training keeps its state (not in the fingerprint)


@contextmanager
def unit_threads(n: int = UNIT_THREADS) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_unit(bench, unit: Unit, *, progress: bool = False) -> dict[str, Any]:
    """Train ``unit.method`` with seed ``unit.seed``, then meta-test each k with the setting meta-val
    chose. Returns plain facts (no model): the outcome's fields, ``evals`` ``{k: evaluate_kshot row}``,
    ``seconds`` (training + meta-val choice) and ``eval_seconds`` (meta-test), wall clock, and the
    same spans in this process's CPU time (``cpu_seconds``, ``eval_cpu_seconds``)."""
    from dataclasses import replace

    from croma.baselines import get_method
    from croma.baselines.common import MethodContext
    from croma.evaluate import evaluate_kshot
    from croma.log import unit_note

    spec = get_method(unit.method)
    ctx = MethodContext(bench=bench, progress=progress, partial=unit.partial, **unit.ctx)
    with unit_threads():
        t0, c0 = time.perf_counter(), time.process_time()
        outcome = spec.fn(ctx)
        t1, c1 = time.perf_counter(), time.process_time()
        evals = {}
        partial = unit.partial  # croma benchmark --out: each k's row is kept for --resume (croma.unit_partial)
        for k in unit.shots:
            kept = partial.kept("meta_test", str(k)) if partial is not None else None
            if kept is not None:
                evals[int(k)] = kept
                continue
            unit_note(f"meta-test, {k}-shot", force=True)
            ch = outcome.eval_choice[int(k)]
            ev_k = replace(ctx.eval, shots=[int(k)], head_init=ch["head_init"], finetune_steps=ch["finetune_steps"],
                           finetune_lr=ch["finetune_lr"], finetune=ch["finetune"])
            tk, ck = time.perf_counter(), time.process_time()
            evals[int(k)] = evaluate_kshot(outcome.model, bench, ev_k, params=outcome.params)["rows"][0]
            if partial is not None:
                partial.keep("meta_test", str(k), evals[int(k)], time.perf_counter() - tk, time.process_time() - ck)
        t2, c2 = time.perf_counter(), time.process_time()
    # a continued unit's spans: its training seconds in every invocation (the training states keep
    # them) and the kept stages it reused, with their own seconds
    reused = partial.reused if partial is not None else {}
    r_choice, r_test = reused.get("meta_val_choice", {}), reused.get("meta_test", {})
    seconds = t1 - t0
    if partial is not None and partial.resume and outcome.choice_seconds is not None:
        seconds = max(seconds, outcome.train_seconds + outcome.choice_seconds)
    return {
        "method": unit.method, "seed": unit.seed, "eval_choice": outcome.eval_choice, "eval_scores": outcome.eval_scores,
        "train_seconds": outcome.train_seconds, "outer_steps": outcome.outer_steps,
        "optimizer_steps": outcome.optimizer_steps, "examples": outcome.examples,
        "target_samples": outcome.target_samples, "target_labels": outcome.target_labels, "notes": outcome.notes,
        "evals": evals, "seconds": seconds + r_choice.get("seconds", 0.0),
        "eval_seconds": t2 - t1 + r_test.get("seconds", 0.0),
        # CPU time of this process over the same spans: with one thread, what the run costs a core
        # whatever else the machine runs (wall seconds grow with the load, these barely do); a
        # continued unit's counts its kept stages but not the training of earlier invocations
        "cpu_seconds": round(c1 - c0 + r_choice.get("cpu_seconds", 0.0), 2),
        "eval_cpu_seconds": round(c2 - c1 + r_test.get("cpu_seconds", 0.0), 2),
    }


def auto_jobs(units: int, device: str = "cpu") -> int:
    """Worker processes when ``--jobs`` is not given: ``$CROMA_JOBS`` when set, else the CPU cores
    this process may use; at most one per unit; 1 on a GPU (units would share it).

    Raises:
        ValueError: ``CROMA_JOBS`` is not an integer in 1..1024 (named).
    """
    env = os.environ.get("CROMA_JOBS", "").strip()
    if env:
        from croma.bounds import BOUNDS

        lo, _, hi, _ = BOUNDS["jobs"]  # the range of --jobs
        try:
            n = int(env)
        except ValueError:
            n = lo - 1
        if not lo <= n <= hi:
            raise ValueError(f"CROMA_JOBS must be an integer in {lo}..{hi} (got {env!r}); it sets the default of --jobs")
        return max(1, min(n, units))
    if str(device).startswith("cuda"):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, units))


def _own_peak_mib() -> float | None:
    """This process image's peak resident memory (MiB): ``VmHWM`` (Linux), which starts afresh at
    ``exec``, unlike ``ru_maxrss``, which keeps the peak of the image before it (for a spawned
    worker: the parent's size when it started). None where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError):
        pass
    return None


def peak_rss_mib(results: dict | None = None) -> dict[str, float | None]:
    """Peak resident memory (MiB) of this process and of the largest worker (from the units'
    ``worker_peak_rss_mib``; None when every unit ran here). Each counts the libraries it shares
    with the others (torch) again."""
    scale = 1024.0 if os.uname().sysname != "Darwin" else 1024.0 * 1024.0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    workers = [f["worker_peak_rss_mib"] for f in (results or {}).values() if f.get("worker_peak_rss_mib") is not None]
    return {"main": round(own, 1), "largest_worker": max(workers) if workers else None}


# ---------------------------------------------------------------------- worker processes
_BENCH = None
_NOTES = False


def _init_worker(bench, parent_pid: int, notes: bool = False) -> None:
    """Worker start: keep the benchmark, ignore Ctrl-C (the parent stops the run), die with the parent;
    ``notes``: each unit prints heartbeat lines (:func:`croma.log.unit_note`)."""
    import signal

    from croma.perf.workload import tune_allocator
    from episodes.signals import die_with_parent

    global _BENCH, _NOTES
    _NOTES = bool(notes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)
    die_with_parent(parent_pid)
    torch.set_num_threads(UNIT_THREADS)
    tune_allocator()  # as the croma commands do: large per-episode buffers reused, not re-faulted
    _BENCH = bench


def _worker_terminated(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    """SIGTERM from the parent (:func:`_stop`): release this worker's named semaphores (a lock made
    under the spawn start method is registered with the resource tracker, which would warn about
    it) and exit at once."""
    from multiprocessing import util

    util._run_finalizers(0)
    util._run_finalizers()
    os._exit(128 + signum)


def _work(unit: Unit) -> dict[str, Any]:
    from croma.log import unit_progress

    with unit_progress(f"[{unit.method}] seed {unit.seed}:" if _NOTES else None):
        facts = run_unit(_BENCH, unit)
    facts["worker_peak_rss_mib"] = _own_peak_mib()  # this worker's peak so far
    return facts


def run_units(
    bench, units: list[Unit], *, jobs: int = 1, progress: bool = False,
    done: Callable[[Unit, dict[str, Any]], None] | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run every unit; returns ``{(method, seed): facts}`` (:func:`run_unit`), the same whatever ``jobs``.

    ``jobs=1``: one after another in this process (with ``progress``, the methods' own progress
    bars); ``jobs>1``: that many worker processes, units submitted in order (with ``progress``, a
    running unit's heartbeat lines, at most one a minute: :func:`croma.log.unit_note`). ``done(unit, facts)``
    is called in this process as each unit finishes.
    A failing unit re-raises its exception here after the other workers are stopped.
    """
    results: dict[tuple[str, int], dict[str, Any]] = {}
    if jobs <= 1 or len(units) <= 1:
        for u in units:
            results[(u.method, u.seed)] = facts = run_unit(bench, u, progress=progress)
            if done is not None:
                done(u, facts)
        return results
    import multiprocessing

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(units)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(bench, os.getpid(), progress))
    try:
        with _workers_start_ignoring_ctrl_c():  # the pool starts its workers inside submit()
            pending = {pool.submit(_work, u): u for u in units}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                u = pending.pop(fut)
                results[(u.method, u.seed)] = facts = fut.result()  # a worker's exception re-raises here
                if done is not None:
                    done(u, facts)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return results


@contextmanager
def _workers_start_ignoring_ctrl_c():
    """Workers started inside this block inherit an ignored SIGINT through exec, so Python installs no
    KeyboardInterrupt handler in them: a Ctrl-C while a worker is still importing croma (before
    :func:`_init_worker` runs) cannot print a traceback there; the parent stops the run."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # ignored, so the workers inherit SIG_IGN through exec; also blocked, so a Ctrl-C in these
    # milliseconds stays pending (Linux never discards a blocked signal) and reaches the parent's own
    # handler once it is restored and unblocked: nothing is lost
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started, stop the workers and let the pool close its queues (a failed or
    interrupted run)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for stop in ("terminate", "kill"):  # SIGTERM (the worker cleans up and exits), then SIGKILL what is left
        for p in procs:
            try:
                if p.is_alive():
                    getattr(p, stop)()
            except Exception:  # noqa: BLE001 - already gone
                pass
        for p in procs:
            p.join(timeout=5)
    pool.shutdown(wait=True, cancel_futures=True)
