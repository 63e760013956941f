"""``croma train --config RESULTS.json``: the table's croma row as a model, selected as the table selects.

:mod:`croma.table_settings` gives the run the table's training settings. This module gives it the
table's two choices, made on meta-val as ``croma benchmark`` makes them for each of its units:

* **which parameters are kept** (``best.pt``): the score every benchmark method is selected by
  (:func:`croma.baselines.common.meta_val_score`), with the untrained start a candidate that a
  later check must beat (:func:`table_context` gives the context, :func:`croma.fit.train` takes
  ``validate`` and ``keep_start``);
* **how meta-test fine-tunes, per k** (:func:`choose_finetune`): the benchmark's grid of head init
  x steps x learning rate x what is fine-tuned, scored on the table's number of meta-val episodes
  by the table's rule (:func:`croma.val_choice.select_eval`), stored in ``best.pt``'s serving card
  (``finetune["per_k"]``, ``finetune["chosen_on"] = "meta_val"``), where ``croma evaluate``,
  ``croma predict`` and :meth:`croma.runmodel.RunModel.adapt` read it.

A run without a table keeps its training setting for every k (its card says so).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

__all__ = ["table_context", "table_validate", "choose_finetune", "choice_line", "CHOSEN_ON"]

#: ``finetune["chosen_on"]`` of a card whose per-k settings were chosen on meta-val episodes
CHOSEN_ON = "meta_val"


def table_context(results_config: Mapping[str, Any], bench: Any, cfg: Any):
    """The :class:`croma.baselines.common.MethodContext` ``croma benchmark`` gives its croma unit with
    training seed ``cfg.seed``, on ``bench`` (the run's prepared data). ``results_config``: the
    results.json's ``benchmark_config``."""
    from croma.baselines.common import MethodContext
    from croma.benchmark import _contexts, _knobs, _method_hp
    from croma.benchmark_config import LOCAL_SETTINGS, PRESETS, BenchmarkConfig
    from croma.task_sizes import fit_run_sizes

    bcfg = BenchmarkConfig.from_dict({k: v for k, v in dict(results_config).items() if k not in LOCAL_SETTINGS})
    preset = PRESETS[bcfg.preset]
    train, ev, _ = _contexts(bcfg, bench, preset)
    train = replace(train, device=cfg.device)
    families = {"align", "source_cls", *(train.task_weights or {})}
    # the benchmark's sizes on this data; the run's own are what bench.info and its card record
    train, ev, _ = fit_run_sizes(train, bench, families=sorted(families), eval_cfg=ev, record=False)
    return MethodContext(bench=bench, train=replace(train, seed=int(cfg.seed)), eval=ev, label_noise=bcfg.label_noise,
                         knobs=_knobs(bcfg, preset), hp=_method_hp(bcfg, preset, "croma"))


def table_validate(ctx: Any):
    """``validate(model, theta)`` for :func:`croma.fit.train`: the benchmark's selection score."""
    from croma.baselines.common import meta_val_score

    return lambda model, theta: meta_val_score(ctx, model, dict(theta))


def choose_finetune(ctx: Any, run_dir: str | Path) -> dict[str, Any]:
    """Choose the meta-test fine-tuning per k for ``run_dir``'s ``best.pt`` on meta-val as the table
    does and store it in that checkpoint's card (rewritten atomically). Returns the card's new
    ``finetune``; a card already chosen is returned as it is."""
    from croma.checkpoint import load_checkpoint, save_checkpoint
    from croma.runmodel import load_model
    from croma.val_choice import select_eval

    path = Path(run_dir) / "best.pt"
    ckpt = load_checkpoint(path)
    card = dict(ckpt.get("serving") or {})
    done = card.get("finetune") or {}
    if done.get("chosen_on") == CHOSEN_ON:
        return done
    from croma.factory import resolve_device

    run = load_model(run_dir, device=str(resolve_device(ctx.train.device)))
    t0 = time.perf_counter()
    choice, scores = select_eval(ctx, run.model, {k: v.to(run.device) for k, v in run.theta.items()})
    opt = ctx.eval.finetune_optimizer
    per_k = {str(int(k)): {"head_init": c["head_init"], "finetune": c["finetune"], "finetune_steps": int(c["finetune_steps"]),
                           "finetune_lr": float(c["finetune_lr"]), "finetune_optimizer": opt, "meta_val": float(c["meta_val"])}
             for k, c in sorted(choice.items())}
    finetune = {"default": dict(done.get("default") or next(iter(per_k.values()))), "per_k": per_k,
                "chosen_on": CHOSEN_ON, "episodes": int(ctx.knobs.get("val_episodes", 100)),
                "candidates": len(scores), "seconds": round(time.perf_counter() - t0, 1)}
    card["finetune"] = finetune
    save_checkpoint(path, {**ckpt, "serving": card})
    return finetune


def choice_line(finetune: Mapping[str, Any]) -> str:
    """One line saying what :func:`choose_finetune` chose."""
    per = "; ".join(f"k={k}: {c['head_init']}/{c['finetune_steps']}/{c['finetune_lr']:g}/{c['finetune']} "
                    f"({c['meta_val']:.1f} %)" for k, c in finetune["per_k"].items())
    return (f"meta-test fine-tuning chosen on meta-val as the table chooses ({finetune.get('candidates')} settings x "
            f"{finetune.get('episodes')} episodes per k, {finetune.get('seconds')} s): {per}; stored in best.pt")
