"""Budgeted Reptile runs shared by the meta-learning methods (croma, oracle, unsup-meta, ...).

A run is calibrated first: a few outer steps and one meta-val pass are timed, and the iteration
count is planned from them (with 25 % headroom); the trainer's ``time_budget_s`` ends the run, so
every method uses its whole budget. The meta step size anneals linearly over the planned
iterations. Model selection uses meta-val only.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from croma.baselines.common import MethodContext, Stopwatch
from croma.meta.trainer import CromaTrainer, TrainConfig


def budgeted_reptile(
    ctx: MethodContext,
    *,
    model: nn.Module,
    task_weights: dict[str, float],
    seconds: float,
    bench=None,
    overrides: dict[str, Any] | None = None,
    calibration_steps: int = 4,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reptile on ``model`` with the given task families for about ``seconds``.

    Args:
        ctx: the method context (its ``train`` config supplies inner-loop settings).
        model: the model to meta-train (its current parameters are the starting point).
        task_weights: ``{family: fraction}`` of the meta-batch.
        seconds: wall-clock budget including calibration.
        bench: benchmark to train on (default ``ctx.bench``; e.g. a noisy-label copy).
        overrides: TrainConfig fields to change.

    Returns:
        ``(params, info)``: meta-parameters selected on meta-val (best) and facts
        (``outer_steps``, ``optimizer_steps``, ``seconds``, ``best_val``, ``best_iteration``).
    """
    bench = bench if bench is not None else ctx.bench
    watch = Stopwatch(seconds)
    base: TrainConfig = replace(
        ctx.train, task_weights=dict(task_weights), checkpoint_dir=None, checkpoint_every=0, head_init="meta",
        **(overrides or {}),
    )
    # Calibrate: time a few outer steps (they are discarded).
    probe = CromaTrainer(replace(base, iterations=calibration_steps + 2, eval_every=0), bench, model=model)
    probe.outer_step()  # warm-up: first calls pay one-off costs (kernel selection, caches)
    probe.outer_step()
    probe.validate()
    t0 = time.perf_counter()
    for _ in range(calibration_steps):
        probe.outer_step()
    per_step = (time.perf_counter() - t0) / calibration_steps
    checks = int(ctx.knobs.get("val_checks", 8))
    t0 = time.perf_counter()
    probe.validate()
    per_val = time.perf_counter() - t0
    del probe
    remaining = max(seconds - watch.elapsed, per_step)
    # Meta-val costs time too: reserve it for ``checks`` validations (at most a third of the budget).
    checks = max(1, min(checks, int(remaining / 3 / max(per_val, 1e-6))))
    # Plan ~25 % more iterations than the estimate so the wall-clock budget, not a misestimate
    # (first steps are slower than later ones), ends the run; epsilon then ends near 0.2 * meta_lr.
    iterations = max(2, int((remaining - checks * per_val) * 1.25 / per_step))
    eval_every = max(1, iterations // checks)
    cfg = replace(base, iterations=iterations, eval_every=eval_every, time_budget_s=max(remaining, 1e-3))
    trainer = CromaTrainer(cfg, bench, model=model, progress=ctx.progress)
    result = trainer.fit()
    steps = result.iteration
    info = {
        "outer_steps": steps,
        "optimizer_steps": steps * cfg.meta_batch * cfg.inner_steps,
        "seconds": watch.elapsed,
        "best_val": result.best_val,
        "best_iteration": result.best_iteration,
        "planned_iterations": iterations,
        "seconds_per_outer_step": per_step,
        "task_weights": dict(task_weights),
    }
    return {k: v.detach() for k, v in result.best_theta.items()}, info
