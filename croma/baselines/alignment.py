"""Alignment-then-classify baselines: ``pretrain``, ``align-classify``, ``align-meta-classify``.

On a benchmark with more than two modalities (a manifest's extra modalities, unless
``--no-extra-modalities``) the ordinary alignment of ``align-classify`` and of phase 1 of
``align-meta-classify`` covers every modality, as ``croma``'s ``align_multi`` tasks do (see
:mod:`croma.baselines.ordinary`); the extra modalities' encoders train with it. Classification
(source labels) and meta-test stay in source and target.
"""

from __future__ import annotations

from croma.baselines import register_method
from croma.baselines.common import MethodContext, finish, fresh_model, target_pool_counts
from croma.baselines.ordinary import ordinary_train
from croma.baselines.reptile_runs import budgeted_reptile


@register_method(
    "pretrain",
    family="alignment",
    description="no meta-training: fine-tune the initial (or pretrained) encoders on the target support set",
)
def pretrain(ctx: MethodContext):
    model = fresh_model(ctx)
    return finish(ctx, model, None, train_seconds=0.0, outer_steps=0, optimizer_steps=0, counts=target_pool_counts(ctx.bench))


@register_method(
    "align-classify",
    family="alignment",
    description="ordinary training: align the spaces with the objective + a classifier on source labels (no meta-learning)",
    uses_target_samples=True,
)
def align_classify(ctx: MethodContext):
    model = fresh_model(ctx)
    info = ordinary_train(ctx, model, budget=ctx.budget(), align_weight=float(ctx.knob("align_weight", 1.0)), source_cls=True)
    return finish(
        ctx, model, None, train_seconds=info["seconds"], outer_steps=0, optimizer_steps=info["optimizer_steps"],
        counts=target_pool_counts(ctx.bench, align=True), notes=info, examples=info["examples"],
    )


@register_method(
    "align-meta-classify",
    family="alignment",
    description="ordinary alignment for half the budget, then Reptile on source classification tasks "
    "meta-learning the shared layers on the aligned space (encoders frozen)",
    uses_target_samples=True,
)
def align_meta_classify(ctx: MethodContext):
    """Phase 1 aligns the encoders (the objective only; every modality when the benchmark has
    more than two); phase 2 meta-learns the classifier on the aligned space with Reptile over
    source classification tasks. The encoders stay frozen in phase 2: training the source encoder
    on source labels alone would move source embeddings away from the target encoder's, undoing
    the alignment that the target side relies on."""
    model = fresh_model(ctx)
    info_a = ordinary_train(ctx, model, budget=ctx.budget(0.5), align_weight=1.0, source_cls=False)
    params, info_r = budgeted_reptile(
        ctx, model=model, task_weights={"source_cls": 1.0}, budget=ctx.budget(0.5), overrides={"frozen": ["encoders."]},
    )
    return finish(
        ctx, model, params, train_seconds=info_a["seconds"] + info_r["seconds"], outer_steps=info_r["outer_steps"],
        optimizer_steps=info_a["optimizer_steps"] + info_r["optimizer_steps"],
        counts=target_pool_counts(ctx.bench, align=True), notes={"alignment": info_a, "reptile": info_r},
        examples=info_a["examples"] + info_r["examples"],
    )
