"""Domain-adaptation baselines: one encoder body shared by both modalities, separate input layers.

Applies when both modalities are fixed-size vectors (the compact front-ends, e.g. text n-grams
and speech statistics of ``udhr-speech``): each modality gets its own input layer
``Linear(D_m, hidden)``; the body (the ``mlp`` encoder) is the *same module* for both, so its
parameters are tied. Also applies when both are sequences (byte ids / frames, the ``paper``
preset): each modality keeps its own ``cnn1d`` stem (byte embedding or frames -> first conv),
and the remaining conv layers, the pooling and the projection are one shared module (see
:mod:`croma.baselines.shared_sequence`). Methods (ordinary training, same budget as the others):

* ``shared``: source labels only;
* ``shared-align``: + the alignment objective on cross-modal pairs;
* ``shared-confusion``: + domain confusion (gradient reversal against a modality discriminator,
  on unlabeled target items);
* ``shared-target-labels``: + target labels of meta-train classes.

More than two modalities (a manifest's extra modalities, unless ``--no-extra-modalities``):
``shared-align`` aligns every modality as the other alignment methods do (one ``align_multi``
task per step, :class:`croma.baselines.ordinary.MultiAlignTerm`). An extra modality joins the
shared body through its own input layer / stem when its features are of the body's kind
(vectors for the MLP body, sequences for the ``cnn1d`` body); otherwise (e.g. image pixels next
to vector text and audio) it keeps the encoder every other method builds for it, mapping into
the same joint space. ``shared``, ``shared-confusion`` and ``shared-target-labels`` stay between
source and target: they have no alignment term, and domain confusion is a two-domain
(source vs. target) discriminator, as its paper defines it; their models have no extra encoders.
"""

from __future__ import annotations

import torch
from torch import nn

from croma.baselines import register_method
from croma.baselines.common import MethodContext, finish, noisy_target_bench, target_pool_counts
from croma.baselines.ordinary import ordinary_train
from croma.baselines.shared_sequence import extra_sequence_encoder, is_sequence, shared_sequence_encoders
from croma.encoders import get_encoder
from croma.factory import build_from_config
from croma.meta.multimodal import uses_multi_alignment
from croma.meta.tasks import derive_seed
from croma.model import CrossModalModel


class SharedBodyEncoder(nn.Module):
    """``[B, D_m] -> Linear -> GELU -> shared body -> [B, E]``."""

    def __init__(self, in_dim: int, hidden: int, body: nn.Module) -> None:
        super().__init__()
        self.input = nn.Linear(in_dim, hidden)
        self.body = body
        self.out_dim = body.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.nn.functional.gelu(self.input(x)))


def _vectors(bench) -> bool:
    return all(bench.data[m].features.dim() == 2 and bench.data[m].features.dtype.is_floating_point for m in (bench.source, bench.target))


def _sequences(bench) -> bool:
    return all(is_sequence(bench.data[m].features) for m in (bench.source, bench.target))


def applies(bench) -> bool:
    """Both modalities have float vector features, or both have sequence features (byte ids
    ``long [N, L]`` / frames ``float [N, C, T]``)."""
    return _vectors(bench) or _sequences(bench)


def _extras(bench) -> tuple[str, ...]:
    mods = tuple(getattr(bench, "modalities", (bench.source, bench.target)))
    return tuple(m for m in mods if m not in (bench.source, bench.target)) if uses_multi_alignment(bench) else ()


def shared_model(ctx: MethodContext, *, extras: bool = False) -> CrossModalModel:
    """A CrossModalModel whose source and target encoders share one body (seeded, global RNG
    untouched). ``extras``: the benchmark's extra modalities (when it aligns more than two) get
    encoders too, built after the two others (which stay as without them): their own input layer /
    stem into the shared body when their features are of the body's kind, else the encoder the
    other methods build for them."""
    bench, cfg = ctx.bench, ctx.train
    hidden = int(cfg.model.get("hidden", 128))
    embed = int(cfg.model.get("embed_dim", 128))
    device = bench.data[bench.source].features.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "shared-body"))
        if _vectors(bench):
            body = get_encoder("mlp", (hidden,), embed, hidden=hidden)
            encoders = {m: SharedBodyEncoder(bench.data[m].features.shape[1], hidden, body) for m in (bench.source, bench.target)}
        else:  # sequences: own stem per modality, shared conv body (croma.baselines.shared_sequence)
            encoders = shared_sequence_encoders(bench, dict(cfg.model), embed)
        others = None
        for m in _extras(bench) if extras else ():
            feats = bench.data[m].features
            if _vectors(bench) and feats.dim() == 2 and feats.dtype.is_floating_point:
                encoders[m] = SharedBodyEncoder(feats.shape[1], hidden, body)
            elif not _vectors(bench) and is_sequence(feats):
                encoders[m] = extra_sequence_encoder(bench, dict(cfg.model), m, encoders[bench.source].body)
            else:
                others = others if others is not None else build_from_config(cfg, bench)  # seeded by itself
                encoders[m] = others.encoders[m]
        model = CrossModalModel(encoders, source=bench.source, target=bench.target, embed_dim=embed, num_classes=cfg.ways)
    return model.to(device)


def _run(ctx: MethodContext, *, align: float = 0.0, confusion: float = 0.0, target_labels: bool = False):
    model = shared_model(ctx, extras=align > 0)
    bench = noisy_target_bench(ctx.bench, ctx.label_noise, seed=ctx.train.seed) if target_labels else ctx.bench
    train_filter = None
    if confusion > 0 and not (align > 0 or target_labels):
        # The target input layer would get only the reversed (adversarial) gradient, which Adam
        # rescales to full-size steps whatever the reversal weight: it drifts until target
        # embeddings carry no information (measured: meta-val 5-way accuracy near chance even at
        # weight 0.01). As in ``shared``, it stays a fixed random projection; confusion acts on
        # the shared body.
        frozen = f"encoders.{ctx.bench.target}.input."
        train_filter = lambda name: not name.startswith(frozen)  # noqa: E731
    info = ordinary_train(
        ctx, model, budget=ctx.budget(), align_weight=align, source_cls=True, target_cls=target_labels,
        confusion_weight=confusion, bench=bench, train_filter=train_filter, all_modalities=align > 0,
    )
    counts = target_pool_counts(ctx.bench, align=align > 0, unlabelled=confusion > 0, labelled=target_labels)
    return finish(
        ctx, model, None, train_seconds=info["seconds"], outer_steps=0, optimizer_steps=info["optimizer_steps"],
        counts=counts, notes=info, examples=info["examples"],
    )


@register_method("shared", family="domain_adaptation", description="shared encoder body, source labels only", shared_body=True, applies=applies)
def shared(ctx):
    return _run(ctx)


@register_method(
    "shared-align", family="domain_adaptation", description="shared body + alignment objective on pairs",
    uses_target_samples=True, shared_body=True, applies=applies,
)
def shared_align(ctx):
    return _run(ctx, align=float(ctx.knob("align_weight", 1.0)))


@register_method(
    "shared-confusion", family="domain_adaptation", description="shared body + domain confusion (gradient reversal)",
    uses_target_samples=True, shared_body=True, applies=applies,
)
def shared_confusion(ctx):
    return _run(ctx, confusion=float(ctx.knob("confusion_weight", 0.01)))


@register_method(
    "shared-target-labels", family="domain_adaptation", description="shared body + target labels of meta-train classes",
    uses_target_labels=True, uses_target_samples=True, shared_body=True, applies=applies,
)
def shared_target_labels(ctx):
    return _run(ctx, target_labels=True)
