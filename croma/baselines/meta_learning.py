"""Meta-learning methods: ``croma`` (the paper's method), ``oracle`` and ``unsup-meta``."""

from __future__ import annotations

from croma.baselines import register_method
from croma.baselines.common import MethodContext, finish, fresh_model, noisy_target_bench, target_pool_counts
from croma.baselines.ordinary import ordinary_train
from croma.baselines.reptile_runs import budgeted_reptile


def croma_task_weights(train) -> dict[str, float]:
    """croma's meta-batch mix: ``task_mix`` alignment, the rest source classification
    (``--task-weights``, any families, replaces it)."""
    mix = float(train.task_mix)
    return dict(train.task_weights) if train.task_weights else {"align": mix, "source_cls": 1.0 - mix}


@register_method(
    "croma",
    family="meta_learning",
    description="CROMA: Reptile over alignment tasks + source classification tasks (separate encoders, shared classifier)",
    uses_target_samples=True,
)
def croma(ctx: MethodContext):
    model = fresh_model(ctx)
    params, info = budgeted_reptile(ctx, model=model, task_weights=croma_task_weights(ctx.method_train()),
                                    budget=ctx.budget())
    return finish(
        ctx, model, params, train_seconds=info["seconds"], outer_steps=info["outer_steps"],
        optimizer_steps=info["optimizer_steps"], counts=target_pool_counts(ctx.bench, align=True), notes=info,
        examples=info["examples"],
    )


@register_method(
    "oracle",
    family="meta_learning",
    description="Reptile within the target modality using target labels of meta-train classes",
    uses_target_labels=True,
    uses_target_samples=True,
)
def oracle(ctx: MethodContext):
    bench = noisy_target_bench(ctx.bench, ctx.label_noise, seed=ctx.train.seed)
    model = fresh_model(ctx)
    notes = {}
    steps = examples = 0
    reptile_budget = ctx.budget()
    if ctx.oracle_warm_start:
        info_w = ordinary_train(ctx, model, budget=ctx.budget(0.3), align_weight=0.0, source_cls=False, target_cls=True, bench=bench)
        notes["warm_start"] = info_w
        steps += info_w["optimizer_steps"]
        examples += info_w["examples"]
        reptile_budget = ctx.budget(0.7)
    params, info = budgeted_reptile(ctx, model=model, task_weights={"target_cls": 1.0}, budget=reptile_budget, bench=bench)
    notes.update(info)
    return finish(
        ctx, model, params, train_seconds=info["seconds"] + notes.get("warm_start", {}).get("seconds", 0.0),
        outer_steps=info["outer_steps"], optimizer_steps=info["optimizer_steps"] + steps,
        counts=target_pool_counts(ctx.bench, labelled=True), notes=notes, examples=info["examples"] + examples,
    )


@register_method(
    "unsup-meta",
    family="meta_learning",
    description="Reptile on unlabeled target data via reconstruction (unsupervised meta-learning)",
    uses_target_samples=True,
)
def unsup_meta(ctx: MethodContext):
    model = fresh_model(ctx, reconstruction=True)
    params, info = budgeted_reptile(ctx, model=model, task_weights={"target_recon": 1.0}, budget=ctx.budget())
    return finish(
        ctx, model, params, train_seconds=info["seconds"], outer_steps=info["outer_steps"],
        optimizer_steps=info["optimizer_steps"], counts=target_pool_counts(ctx.bench, unlabelled=True), notes=info,
        examples=info["examples"],
    )
