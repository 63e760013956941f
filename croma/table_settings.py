"""The training settings of a benchmark table's ``croma`` row, as one ``croma train`` run.

``croma benchmark`` trains croma with its preset's settings, the method's tuned hyper-parameters
(``method_hp``) and a budget of optimiser steps; ``croma train`` has its own defaults. A researcher
who read the table and wants *that* model, to evaluate, predict and embed with, runs
``croma train --config RESULTS.json`` (:func:`table_train_config`): the same data settings (front-end,
backbones, class split, task sizes), the same model, inner and outer loop, the same budget turned
into outer iterations as the benchmark turns it (``max(1, steps // (meta_batch * inner_steps))``,
:mod:`croma.baselines.reptile_runs`) and meta-val checked as often. The run selects ``best.pt`` and chooses its meta-test fine-tuning per k
as the table does (:mod:`croma.table_choice`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from croma.config import TrainConfig

__all__ = ["table_train_config", "settings_from_results", "TABLE_METHOD"]

#: the row of the table whose settings ``croma train --config RESULTS.json`` trains with
TABLE_METHOD = "croma"


def table_train_config(bcfg: Any, method: str = TABLE_METHOD) -> tuple[TrainConfig, str]:
    """``(TrainConfig, description)``: what ``croma benchmark`` (``bcfg``, a
    :class:`croma.benchmark_config.BenchmarkConfig`) trained ``method`` with, for one ``croma train``
    run with ``bcfg``'s seed. The description is one line for the user.

    Raises:
        ValueError: a method other than croma, or a seconds budget (a table budgeted in seconds has
            no fixed iteration count to reproduce).
    """
    from croma.baselines.common import with_method_hp
    from croma.baselines.meta_learning import croma_task_weights
    from croma.baselines.reptile_runs import step_schedule
    from croma.benchmark import _contexts, _knobs, _method_hp
    from croma.benchmark_config import PRESETS

    if method != TABLE_METHOD:
        raise ValueError(f"croma train reproduces the table's {TABLE_METHOD} settings only (got {method!r})")
    preset = PRESETS[bcfg.preset]
    if bcfg.budget_steps is None and bcfg.budget_seconds is not None:
        raise ValueError("that table was budgeted in seconds (--budget-seconds); croma train needs a "
                         "step budget to reproduce: rerun the table with --budget-steps")
    train = with_method_hp(_contexts(bcfg, None, preset)[0], _method_hp(bcfg, preset, method))
    steps = int(bcfg.budget_steps if bcfg.budget_steps is not None else preset["budget_steps"])
    iterations, every = step_schedule(train, steps, int(_knobs(bcfg, preset).get("val_checks", 6)))
    cfg = replace(
        train, task_weights=croma_task_weights(train), iterations=iterations, eval_every=every, head_init="meta",
        val_label_noise=bcfg.label_noise, features=preset["frontend"], backbones=dict(bcfg.backbones or {}),
        audio_model=bcfg.audio_model, source=bcfg.source, target=bcfg.target, skip_bad=bcfg.skip_bad,
        split_classes=bcfg.split_classes, extra_modalities=bcfg.extra_modalities, seed=bcfg.seed,
    )
    used = iterations * train.meta_batch * train.inner_steps
    budget = f"{steps} optimiser steps" if used == steps else f"a budget of {steps} optimiser steps, {used} used"
    text = (f"the table's {method} settings: preset {bcfg.preset}, {budget} = {iterations} iterations "
            f"of {train.meta_batch} tasks x {train.inner_steps} inner steps, meta-val every {cfg.eval_every}, "
            f"{preset['frontend']} features, seed {bcfg.seed}")
    return cfg, text


def settings_from_results(path: str, results: dict) -> tuple[dict, str]:
    """A results.json's benchmark settings (``results["benchmark_config"]``, the paths left out) ->
    the croma row's training settings (:meth:`TrainConfig.to_dict` form) and the line saying what
    they are.

    Raises:
        ValueError: naming ``path``, for settings that do not make a benchmark or a seconds budget.
    """
    from croma.benchmark_config import LOCAL_SETTINGS, BenchmarkConfig

    raw = {k: v for k, v in dict(results.get("benchmark_config") or {}).items() if k not in LOCAL_SETTINGS}
    try:
        bcfg = BenchmarkConfig.from_dict(raw)
        bcfg.validate()
        cfg, note = table_train_config(bcfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--config {path}: {exc}") from None
    return cfg.to_dict(), note
