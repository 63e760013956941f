"""What every method receives and returns, and the pieces methods share.

Budget rule: every trained method gets the same number of **optimiser steps**
(``MethodContext.budget_steps``). A Reptile method turns it into outer iterations of
``meta_batch`` tasks x ``inner_steps`` inner steps (one optimiser step per task per inner step);
ordinary training takes that many mini-batch steps. Batches differ in size between the two (a
Reptile task holds ``ways x (shots + queries)`` items or ``align_batch`` pairs; an ordinary step
one mini-batch per loss term), so outcomes also report ``examples`` (items passed through an
encoder during training). A wall-clock budget (``budget_seconds``) is an option for exploration;
no preset uses it. Meta-val (never meta-test) selects the parameters kept (the starting point is
a candidate too) and the meta-test fine-tuning settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import torch
from torch import nn

from croma.config import TrainConfig
from croma.evaluate import EvalConfig
from croma.factory import build_from_config
from croma.log import unit_note
from croma.meta.functional import meta_parameters
from croma.meta.multimodal import uses_multi_alignment
from croma.meta.tasks import model_inputs

# the meta-val choice of the meta-test setting lives in croma.val_choice; re-exported here
from croma.val_choice import HEAD_CHOICES, VAL_HALVING, VAL_RULE, VAL_RULES, eval_grid, select_eval  # noqa: F401
from episodes.data import ModalityData, PreparedBenchmark
from episodes.noise import symmetric_label_noise


@dataclass
class MethodContext:
    """Inputs of a method.

    Attributes:
        bench: the benchmark with clean labels (on the training device).
        train: base :class:`TrainConfig` of the preset (loss, inner loop, ways, seed, model).
        eval: meta-test :class:`EvalConfig` (its ``label_noise`` is the run's noise rate).
        budget_seconds: wall-clock training budget (exploration only; ``budget_steps`` wins).
        label_noise: symmetric noise on target labels used in meta-training.
        progress: show progress bars.
        oracle_warm_start: supervised warm start for the oracle.
        knobs: preset extras (ordinary-training lr and batch sizes, val tasks, ...).
        budget_steps: optimiser steps of a trained method (the budget every preset uses).
        hp: this method's own hyper-parameters chosen on meta-val (override ``knobs`` and the
            Reptile settings of ``train``; see :meth:`knob`, :meth:`method_train`).
        partial: a :class:`croma.unit_partial.Partial` (``croma benchmark --out``): where ordinary
            training keeps its state at each meta-val check, and whether it continues one.
    """

    bench: PreparedBenchmark
    train: TrainConfig
    eval: EvalConfig
    budget_seconds: float | None = None
    label_noise: float = 0.0
    progress: bool = False
    oracle_warm_start: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)
    budget_steps: int | None = None
    hp: dict[str, Any] = field(default_factory=dict)
    # where a croma benchmark unit keeps its training state for --resume (croma.unit_partial.Partial)
    partial: Any = None

    def knob(self, name: str, default: Any = None) -> Any:
        """A method hyper-parameter: the method's tuned value (``hp``), else the preset's knob."""
        if name in self.hp:
            return self.hp[name]
        return self.knobs.get(name, default)

    def method_train(self) -> TrainConfig:
        """``train`` with this method's own settings (:func:`with_method_hp`)."""
        return with_method_hp(self.train, self.hp)

    def budget(self, fraction: float = 1.0) -> "Budget":
        """This method's budget, or a fraction of it (a method with two phases splits it)."""
        if self.budget_steps is not None:
            return Budget(steps=max(1, int(round(self.budget_steps * fraction))))
        if self.budget_seconds is None:
            raise ValueError("a method needs budget_steps or budget_seconds")
        return Budget(seconds=float(self.budget_seconds) * fraction)


def with_method_hp(train: TrainConfig, hp: Mapping[str, Any]) -> TrainConfig:
    """``train`` with a method's own settings (``inner_lr``, ``task_mix``, ``meta_lr``, ``loss``, ``loss_hp``)."""
    over = {k: hp[k] for k in ("inner_lr", "task_mix", "meta_lr", "loss") if k in hp}
    if "loss_hp" in hp:
        over["loss_hp"] = {**train.loss_hp, **dict(hp["loss_hp"])}
    return replace(train, **over) if over else train


@dataclass(frozen=True)
class Budget:
    """Optimiser steps (``steps``) or, for exploration only, wall-clock seconds (``seconds``)."""

    steps: int | None = None
    seconds: float | None = None


@dataclass
class MethodOutcome:
    """Output of a method: a model + meta-parameters to meta-test, and what it cost.

    Attributes:
        model: the :class:`croma.model.CrossModalModel` (run functionally).
        params: parameters to meta-test.
        eval_choice: per k, ``{"head_init", "finetune_steps", "finetune_lr", "finetune", "meta_val"}`` chosen
            on meta-val (:func:`croma.val_choice.select_eval`; its ``val_rule="simplest"`` adds
            ``"rule"``, ``"best"``, ``"within"``).
        eval_scores: meta-val accuracy of every candidate setting per k.
        train_seconds: wall-clock training time.
        outer_steps: Reptile outer steps (or ordinary epochs-of-steps; 0 when untrained).
        optimizer_steps: gradient steps taken in training.
        target_samples: distinct target-modality items available to training.
        target_labels: distinct target-modality labels (items whose label it used).
        notes: free-form facts for results.json.
        examples: items passed through an encoder during training (batch sizes differ between
            Reptile tasks and ordinary mini-batches; this makes budgets comparable).
        choice_seconds: wall-clock seconds of the meta-val choice in this process (None: not timed).
    """

    model: nn.Module
    params: dict[str, torch.Tensor]
    eval_choice: dict[int, dict[str, Any]]
    eval_scores: dict[str, dict[int, float]]
    train_seconds: float
    outer_steps: int
    optimizer_steps: int
    target_samples: int
    target_labels: int
    notes: dict[str, Any] = field(default_factory=dict)
    examples: int = 0
    choice_seconds: float | None = None


def fresh_model(ctx: MethodContext, **model_overrides: Any) -> nn.Module:
    """A model built from the preset's config (seeded), on the bench's device."""
    cfg = replace(ctx.train, model={**ctx.train.model, **model_overrides})
    device = next(iter(ctx.bench.data.values())).features.device
    return build_from_config(cfg, ctx.bench).to(device)


def noisy_target_bench(bench: PreparedBenchmark, rate: float, seed: int) -> PreparedBenchmark:
    """Copy of ``bench`` whose target labels of meta-train classes carry symmetric noise.

    Only labels of meta-train classes change, and only among meta-train classes, so nothing about
    held-out classes leaks; meta-val/test rows keep their labels.
    """
    if rate <= 0:
        return bench
    tgt = bench.data[bench.target]
    classes = sorted(bench.splits["meta_train"])
    index = {c: i for i, c in enumerate(classes)}
    rows = torch.tensor([i for i, c in enumerate(tgt.labels.tolist()) if c in index], dtype=torch.long)
    local = torch.tensor([index[int(c)] for c in tgt.labels[rows].tolist()], dtype=torch.long)
    noisy_local = symmetric_label_noise(local, rate, len(classes), seed)
    labels = tgt.labels.clone()
    labels[rows] = torch.tensor(classes, dtype=torch.long)[noisy_local]
    data = dict(bench.data)
    data[bench.target] = ModalityData(features=tgt.features, labels=labels, clusters=tgt.clusters, ids=tgt.ids)
    return replace(bench, data=data)


def target_pool_counts(bench: PreparedBenchmark, *, align: bool = False, labelled: bool = False, unlabelled: bool = False) -> tuple[int, int]:
    """(#target samples, #target labels) a method's training may draw from.

    ``align``: target rows of alignment pairs (no labels; with more than two modalities also those
    of the multi-way alignment tuples, e.g. target items aligned with an extra modality only);
    ``labelled``: target rows of meta-train
    classes with their labels; ``unlabelled``: target rows of meta-train classes without labels.
    Target rows that fitted a front-end (``bench.info["frontend_fit_rows"]``, e.g. the bag of
    audio words' codebook) count for every method, since every method sees their effect.
    """
    samples: set[int] = set(int(r) for r in (bench.info.get("frontend_fit_rows") or {}).get(bench.target, []))
    labels = 0
    if align:
        samples |= set(bench.align_target_rows.tolist())
        if uses_multi_alignment(bench):
            col = bench.alignment_tuples()[:, list(bench.modalities).index(bench.target)]
            samples |= set(col[col >= 0].tolist())
    meta_train_rows = set(bench.rows_of_classes(bench.target, bench.splits["meta_train"]).tolist())
    if labelled:
        samples |= meta_train_rows
        labels = len(meta_train_rows)
    if unlabelled:
        samples |= meta_train_rows
    return len(samples), labels


def meta_val_score(ctx: MethodContext, model: nn.Module, params: dict[str, torch.Tensor], inputs=None, bench=None) -> float:
    """Meta-val accuracy (percent, mean over the run's ``eval_shots``) that selects the parameters
    a method keeps; the same function for every method (Reptile and ordinary training alike).

    Two readings of the same episodes, the better one counts: the run's fine-tuning setting
    (the meta-learned head when the classifier has ``ways`` outputs, else the prototype head,
    ``finetune_steps`` steps) and the prototype head without fine-tuning. The second sees an
    improved embedding even when the method never trains the classifier (``unsup-meta``,
    ``oracle`` before its head is useful); both are among the settings meta-test may use.
    Support labels carry the run's label noise, as at meta-test.
    """
    from croma.evaluate import evaluate_kshot
    from croma.factory import eval_config_from

    bench = bench if bench is not None else ctx.bench
    cfg = eval_config_from(ctx.train, label_noise=ctx.label_noise)
    if params["classifier.weight"].shape[0] != cfg.ways:
        cfg = replace(cfg, head_init="prototype")
    scores = []
    for c in (cfg, replace(cfg, head_init="prototype", finetune_steps=0)):
        res = evaluate_kshot(model, bench, c, params=params, inputs=inputs)
        scores.append(sum(r["accuracy_mean"] for r in res["rows"]) / len(res["rows"]))
    unit_note(f"training: meta-val check {max(scores):.1f} %")
    return max(scores)


def finish(
    ctx: MethodContext,
    model: nn.Module,
    params: dict[str, torch.Tensor] | None,
    *,
    train_seconds: float,
    outer_steps: int,
    optimizer_steps: int,
    counts: tuple[int, int],
    notes: dict[str, Any] | None = None,
    examples: int = 0,
) -> MethodOutcome:
    """Choose the meta-test settings on meta-val and package the outcome."""
    params = {k: v.detach() for k, v in (dict(params) if params is not None else meta_parameters(model)).items()}
    inputs = model_inputs(model, ctx.bench, next(iter(params.values())).device)
    unit_note(f"trained in {train_seconds:.0f} s; choosing the meta-test setting on meta-val", force=True)
    t0 = time.perf_counter()
    choice, scores = select_eval(ctx, model, params, inputs)
    return MethodOutcome(
        model=model, params=params, eval_choice=choice, eval_scores=scores, train_seconds=train_seconds,
        outer_steps=outer_steps, optimizer_steps=optimizer_steps, target_samples=counts[0],
        target_labels=counts[1], notes=dict(notes or {}), examples=int(examples),
        choice_seconds=time.perf_counter() - t0,
    )


MethodFn = Callable[[MethodContext], MethodOutcome]
