"""Budgeted Reptile runs shared by the meta-learning methods (croma, oracle, unsup-meta, ...).

A budget of ``B`` optimiser steps becomes ``max(1, B // (meta_batch * inner_steps))`` outer
iterations: every task of a meta-batch takes ``inner_steps`` optimiser steps. The meta step size
anneals linearly over those iterations. Meta-val is checked ``val_checks`` times, evenly spaced,
and once **before** training: the kept parameters are the best of these, so meta-training is
never kept when it made meta-val worse. Nothing depends on timing, so the same seed gives the
same parameters on the same machine, however busy it is.

``Budget(seconds=S)`` (``croma benchmark --budget-seconds``, for exploration) runs outer steps
until ``S`` seconds have passed, with a constant meta step size (an annealing schedule would need
a timing estimate, and a misestimate must never cut a run short) and meta-val every
``val_every`` iterations.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from croma.baselines.common import Budget, MethodContext, meta_val_score
from croma.config import TrainConfig
from croma.fit import CromaTrainer
from croma.meta.multimodal import AlignMultiFamily
from croma.meta.outer import task_plan


def task_examples(cfg: TrainConfig, align_items: int | None = None) -> int:
    """Items one outer iteration passes through encoders (all tasks, all inner steps).

    ``align_items``: items of one alignment task when it is not ``2 x align_batch`` (an
    ``align_multi`` task over more than two modalities: its ``items_per_task()``).
    """
    per_task = {
        "align": 2 * cfg.align_batch if align_items is None else int(align_items),
        "source_cls": cfg.ways * (cfg.shots + cfg.queries),
        "target_cls": cfg.ways * (cfg.shots + cfg.queries),
        "target_recon": cfg.align_batch,
    }
    return sum(per_task.get(fam, 0) * count for fam, count in task_plan(cfg)) * cfg.inner_steps


def step_schedule(cfg: TrainConfig, steps: int, checks: int) -> tuple[int, int]:
    """``(iterations, eval_every)`` of a budget of ``steps`` optimiser steps: ``max(1, steps //
    (meta_batch * inner_steps))`` outer iterations, meta-val ``checks`` times, evenly spaced."""
    iterations = max(1, int(steps) // (cfg.meta_batch * cfg.inner_steps))
    return iterations, max(1, iterations // max(1, int(checks)))


def budgeted_reptile(
    ctx: MethodContext,
    *,
    model: nn.Module,
    task_weights: dict[str, float],
    budget: Budget,
    bench=None,
    overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reptile on ``model`` with the given task families within ``budget``.

    Args:
        ctx: the method context (``ctx.method_train()`` supplies inner-loop settings).
        model: the model to meta-train (its current parameters are the starting point).
        task_weights: ``{family: fraction}`` of the meta-batch.
        budget: optimiser steps (or, for exploration, seconds).
        bench: benchmark to train on (default ``ctx.bench``; e.g. a noisy-label copy).
        overrides: TrainConfig fields to change.

    Returns:
        ``(params, info)``: meta-parameters selected on meta-val (the start included) and facts
        (``outer_steps``, ``optimizer_steps``, ``examples``, ``seconds``, ``best_val``,
        ``best_iteration``, ``start_val``).
    """
    bench = bench if bench is not None else ctx.bench
    t0 = time.perf_counter()
    base: TrainConfig = replace(
        ctx.method_train(), task_weights=dict(task_weights), checkpoint_dir=None, checkpoint_every=0,
        head_init="meta", val_label_noise=ctx.label_noise, **(overrides or {}),
    )
    if budget.steps is not None:
        iterations, every = step_schedule(base, int(budget.steps), int(ctx.knobs.get("val_checks", 6)))
        cfg = replace(base, iterations=iterations, eval_every=every)
    else:
        cfg = replace(
            base, iterations=10**9, meta_lr_final=base.meta_lr, eval_every=int(ctx.knobs.get("val_every", 25)),
            time_budget_s=max(float(budget.seconds), 1e-3),
        )
    # croma benchmark --out: the phase keeps a trainer run folder, checkpointed at every meta-val check,
    # that --resume continues bitwise (croma.unit_partial); a seconds budget is never continued
    partial = ctx.partial if budget.steps is not None else None
    tag = "reptile-" + "+".join(sorted(task_weights))
    started = partial.run_start(tag) if partial is not None else None
    if partial is not None:
        cfg = replace(cfg, checkpoint_dir=str(partial.run_folder(tag)), checkpoint_every=cfg.eval_every)
    trainer = CromaTrainer(cfg, bench, model=model, progress=ctx.progress)
    # the selection score every method shares (croma.baselines.common.meta_val_score)
    trainer.validate = lambda theta=None: meta_val_score(
        ctx, trainer.model, dict(trainer.theta if theta is None else theta), trainer.inputs, trainer.bench
    )
    if started is None:
        start_val = trainer.validate()
        trainer.best_val, trainer.best_iteration = start_val, 0
        trainer.best_theta = {k: v.clone() for k, v in trainer.theta.items()}
        start_seconds = time.perf_counter() - t0
        if partial is not None:  # the start is the best so far: best.pt holds it until meta-val finds better
            from croma.runlock import new_run_id

            partial.run_started(tag, {"start_val": start_val, "start_seconds": start_seconds})
            trainer.checkpointer.run_id = new_run_id()
            trainer.checkpointer.save("best", trainer.theta, trainer.progress_state())
    else:  # continued: last.pt / best.pt hold the parameters, the step, the best so far and the RNG
        start_val, start_seconds = started["start_val"], float(started["start_seconds"])
    last: dict[str, Any] = {}
    result = trainer.fit(resume=started is not None, on_iteration=lambda _t, row: last.update(row))
    steps = result.iteration
    seconds = time.perf_counter() - t0
    if partial is not None:  # a continued phase counts every invocation's seconds (metrics.csv's running total)
        if not last:  # continued at its end: no iteration ran here
            from croma.runlog import read_metrics

            last = (read_metrics(partial.run_folder(tag) / "metrics.csv") or [{}])[-1]
        seconds = start_seconds + float(last.get("seconds") or 0.0)
    align = trainer.families.get("align")
    align_items = align.items_per_task() if isinstance(align, AlignMultiFamily) else None
    info = {
        "outer_steps": steps,
        "optimizer_steps": steps * base.meta_batch * base.inner_steps,
        "examples": steps * task_examples(cfg, align_items),
        "seconds": seconds,
        "start_val": start_val,
        "best_val": result.best_val,
        "best_iteration": result.best_iteration,
        "task_weights": dict(task_weights),
        "inner_lr": cfg.inner_lr,
        "task_mix": cfg.task_mix,
        # how each family resolved its objective's automatic settings (e.g. cwcl weights=auto)
        "objective_settings": {f: dict(getattr(fam, "objective_settings", {}) or {})
                               for f, fam in trainer.families.items() if getattr(fam, "objective_settings", None)},
    }
    return {k: v.detach() for k, v in result.best_theta.items()}, info
