"""``CrossModalModel``: one encoder per modality, a target-side alignment layer, one shared
classifier over the joint embedding space (Liang et al., §4.2), and :func:`build_model`.

Parameter names (the meta-learner and checkpoints rely on them):
``encoders.<modality>.*``, ``align.weight`` ``[E, E]``, ``align.bias`` ``[E]``,
``classifier.weight`` ``[num_classes, E]``, ``classifier.bias`` ``[num_classes]``, and, when
reconstruction is on, ``recon.decoder.weight`` / ``recon.decoder.bias``.

Everything here is safe under ``torch.func.functional_call`` + ``vmap`` (batched parameters) +
``grad``. Because ``functional_call`` always calls ``forward``, ``forward`` takes an ``output``
keyword to reach ``embed`` and ``reconstruction_loss`` functionally::

    functional_call(model, params, ("audio", x), {"output": "embed"})
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from croma.encoders import get_encoder
from episodes.data import by_modality, modality_kind

__all__ = ["CrossModalModel", "ModelConfig", "build_model", "ReconstructionHead", "input_summary_dim"]

_RECON_POOL = 4  # images / spectrograms: adaptive-average-pooled to 4 x 4 per channel
_BYTE_VOCAB = 257  # byte ids 1..256, 0 = padding


def input_summary_dim(input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Width of :func:`input_summary` for one example of ``input_shape`` / ``dtype``.

    ``long [L]`` byte ids -> 257 (byte histogram); ``float [D]`` -> D; ``float [C, T]`` ->
    C (mean over time); ``float [C, H, W]`` -> C * 16 (4 x 4 average pool).
    """
    if not dtype.is_floating_point:
        return _BYTE_VOCAB
    if len(input_shape) == 1:
        return int(input_shape[0])
    if len(input_shape) == 2:
        return int(input_shape[0])
    if len(input_shape) == 3:
        return int(input_shape[0]) * _RECON_POOL * _RECON_POOL
    raise ValueError(f"reconstruction: unsupported input shape {tuple(input_shape)}")


def input_summary(x: torch.Tensor, input_shape: tuple[int, ...], is_float: bool) -> torch.Tensor:
    """Fixed-size summary of a batch of inputs (the reconstruction target).

    Args:
        x: ``[B, *input_shape]``.
    Returns:
        ``float [B, input_summary_dim]``: normalised byte histogram (pads ignored) for byte
        ids; the vector itself for ``[D]``; the mean over time for ``[C, T]``; a 4 x 4 average
        pool, flattened, for ``[C, H, W]``.
    """
    if not is_float:
        onehot = nn.functional.one_hot(x.long(), _BYTE_VOCAB).float()  # [B, L, 257]
        counts = onehot[..., 1:].sum(dim=1)  # [B, 256], pads dropped
        hist = counts / counts.sum(dim=-1, keepdim=True).clamp_min(1.0)
        return torch.cat([torch.zeros_like(hist[:, :1]), hist], dim=-1)  # [B, 257]
    x = x.float()
    if len(input_shape) == 1:
        return x
    if len(input_shape) == 2:
        return x.mean(dim=-1)
    pooled = nn.functional.adaptive_avg_pool2d(x, _RECON_POOL)  # [B, C, 4, 4]
    return pooled.flatten(1)


class ReconstructionHead(nn.Module):
    """Linear decoder from the target embedding to :func:`input_summary` of the target input.

    Used by the unsupervised-reconstruction baseline. ``loss(z, x)`` is the mean squared error.
    """

    def __init__(self, embed_dim: int, input_shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.is_float = bool(dtype.is_floating_point)
        self.decoder = nn.Linear(embed_dim, input_summary_dim(self.input_shape, dtype))

    def loss(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``z [B, E]``, ``x [B, *input_shape]`` -> scalar MSE."""
        target = input_summary(x, self.input_shape, self.is_float).to(z.dtype)
        return (self.decoder(z) - target).pow(2).mean()


class CrossModalModel(nn.Module):
    """Separate encoders per modality + target-side alignment layer + shared classifier.

    Args:
        encoders: ``{modality: encoder}``; each maps ``[B, *shape] -> [B, embed_dim]``.
        source, target: modality names (keys of ``encoders``).
        embed_dim: joint-space width ``E``.
        num_classes: classifier outputs (the task's ways ``N``).
        recon: optional :class:`ReconstructionHead` (``None`` by default).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        *,
        source: str,
        target: str,
        embed_dim: int,
        num_classes: int,
        recon: nn.Module | None = None,
    ) -> None:
        super().__init__()
        for mod in (source, target):
            if mod not in encoders:
                raise ValueError(f"CrossModalModel: no encoder for modality {mod!r} (have {sorted(encoders)})")
        if source == target:
            raise ValueError(f"CrossModalModel: source and target are both {source!r}")
        for mod, enc in encoders.items():
            out = getattr(enc, "out_dim", embed_dim)
            if out != embed_dim:
                raise ValueError(f"CrossModalModel: encoder {mod!r} outputs {out}, expected embed_dim {embed_dim}")
        self.source = source
        self.target = target
        self.embed_dim = int(embed_dim)
        self.num_classes = int(num_classes)
        self.encoders = nn.ModuleDict(dict(encoders))
        self.align = nn.Linear(embed_dim, embed_dim)
        with torch.no_grad():
            self.align.weight.copy_(torch.eye(embed_dim))
            self.align.bias.zero_()
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.recon = recon

    def preprocess(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """Convert a modality's stored features to the encoder's input, once, outside vmap.

        Identity for every encoder except those defining ``preprocess`` (``bert`` turns byte
        ids into its own token ids). ``features [n, *shape] -> [n, *shape']``.
        """
        enc = self.encoders[modality]
        fn = getattr(enc, "preprocess", None)
        return fn(features) if callable(fn) else features

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """``x [B, *shape] -> z [B, E]``: encoder, then ``align`` for the target modality."""
        z = self.encoders[modality](x)
        if modality == self.target:
            z = self.align(z)
        return z

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, E] -> logits [B, num_classes]`` (shared classifier)."""
        return self.classifier(z)

    def reconstruction_loss(self, x_target: torch.Tensor) -> torch.Tensor:
        """Scalar MSE of reconstructing the target input's summary from its embedding.

        Raises:
            ValueError: the model was built without reconstruction.
        """
        if self.recon is None:
            raise ValueError("reconstruction_loss: model has no reconstruction head (ModelConfig.reconstruction=False)")
        return self.recon.loss(self.embed(self.target, x_target), x_target)

    def forward(self, modality: str, x: torch.Tensor, *, output: str = "logits") -> torch.Tensor:
        """``x [B, *shape]`` -> ``output``: ``"logits"`` ``[B, num_classes]`` (default),
        ``"embed"`` ``[B, E]``, or ``"reconstruction_loss"`` (scalar; target modality only)."""
        if output == "logits":
            return self.classify(self.embed(modality, x))
        if output == "embed":
            return self.embed(modality, x)
        if output == "reconstruction_loss":
            if modality != self.target:
                raise ValueError(f"reconstruction_loss is for the target modality {self.target!r}, got {modality!r}")
            return self.reconstruction_loss(x)
        raise ValueError(f"forward: unknown output {output!r}; expected logits, embed or reconstruction_loss")

    def meta_parameters(self) -> dict[str, torch.Tensor]:
        """``{name: parameter}`` of all trainable (not frozen) parameters."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}


@dataclass
class ModelConfig:
    """How to build a :class:`CrossModalModel`.

    Attributes:
        embed_dim: joint-space width.
        hidden: hidden width passed to ``mlp`` and ``lstm`` encoders (unless set in encoder_hp).
        encoders: ``{modality: encoder name}``; missing / ``None`` = automatic choice from the
            feature shape and dtype (see :func:`default_encoder_name`).
        encoder_hp: ``{modality: {hp: value}}`` extra encoder hyper-parameters.
        image_weights: local torchvision ResNet-18 weights file; makes ``resnet18`` the default
            for ``[3, H, W]`` images.
        text_model: local transformers BERT directory; makes ``bert`` the default for text.
        num_classes: classifier outputs (the ways N).
        reconstruction: add a :class:`ReconstructionHead` on the target modality.
    """

    embed_dim: int = 128
    hidden: int = 128
    encoders: dict[str, str | None] = field(default_factory=dict)
    encoder_hp: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_weights: str | None = None
    text_model: str | None = None
    num_classes: int = 5
    reconstruction: bool = False


def default_encoder_name(modality: str, shape: tuple[int, ...], dtype: torch.dtype, cfg: ModelConfig) -> str:
    """Automatic encoder: byte ids ``long [L]`` -> ``cnn1d`` (``bert`` for text when
    ``cfg.text_model``); ``float [C, T]`` -> ``cnn1d``; ``float [3, H, W]`` -> ``cnn2d``
    (``resnet18`` when ``cfg.image_weights``); ``float [C, H, W]`` -> ``cnn2d``;
    ``float [D]`` -> ``mlp``."""
    if not dtype.is_floating_point:
        if len(shape) != 1:
            raise ValueError(f"modality {modality!r}: integer features must be [L] token ids, got shape {shape}")
        return "bert" if (cfg.text_model and modality_kind(modality) == "text") else "cnn1d"
    if len(shape) == 1:
        return "mlp"
    if len(shape) == 2:
        return "cnn1d"
    if len(shape) == 3:
        return "resnet18" if (cfg.image_weights and shape[0] == 3) else "cnn2d"
    raise ValueError(f"modality {modality!r}: no default encoder for feature shape {shape}")


def _encoder_hp(name: str, modality: str, cfg: ModelConfig) -> dict[str, Any]:
    from croma.encoders import encoder_hyperparameters

    hp = dict(cfg.encoder_hp.get(modality, {}) or {})
    accepted = encoder_hyperparameters(name)
    if "hidden" in accepted:
        hp.setdefault("hidden", cfg.hidden)
    if name == "resnet18" and cfg.image_weights:
        hp.setdefault("weights_path", cfg.image_weights)
    if name == "bert" and cfg.text_model:
        hp.setdefault("model_dir", cfg.text_model)
    return hp


def build_model(
    cfg: ModelConfig,
    bench_or_shapes: Any,
    *,
    seed: int = 0,
    source: str | None = None,
    target: str | None = None,
) -> CrossModalModel:
    """Build the model for a benchmark, deterministically from ``seed``.

    Args:
        cfg: the configuration.
        bench_or_shapes: a ``PreparedBenchmark`` (feature shapes/dtypes and source/target taken
            from it; its extra modalities, used by alignment tasks only, get encoders too, each
            initialised from its own seed so the other parameters are those of the two-modality
            model) or ``{modality: (shape, dtype)}`` (source/target from the keywords, else
            the dict's first and second keys).
        seed: initialisation seed; the global RNG state is left as it was.
    Raises:
        ValueError: unknown encoder / hyper-parameter, bad shapes. Encoder files missing:
        CromaError naming the path.
    """
    if hasattr(bench_or_shapes, "data") and hasattr(bench_or_shapes, "source"):
        bench = bench_or_shapes
        src, tgt = source or bench.source, target or bench.target
        mods = (src, tgt) + tuple(m for m in getattr(bench, "modalities", ()) if m not in (src, tgt))
        specs = {m: (tuple(bench.data[m].features.shape[1:]), bench.data[m].features.dtype) for m in mods}
    elif isinstance(bench_or_shapes, Mapping):
        keys = list(bench_or_shapes)
        if len(keys) < 2 and (source is None or target is None):
            raise ValueError("build_model: need shapes for a source and a target modality")
        src = source or keys[0]
        tgt = target or [k for k in keys if k != src][0]
        specs = {}
        for m in (src, tgt):
            if m not in bench_or_shapes:
                raise ValueError(f"build_model: no shape given for modality {m!r}")
            shape, dtype = bench_or_shapes[m]
            specs[m] = (tuple(int(s) for s in shape), dtype)
        for m in keys:  # further modalities (a run's extra ones, alignment only): encoders too
            if m not in specs:
                shape, dtype = bench_or_shapes[m]
                specs[m] = (tuple(int(s) for s in shape), dtype)
    else:
        raise ValueError("build_model: expected a PreparedBenchmark or {modality: (shape, dtype)}")
    if cfg.embed_dim <= 0 or cfg.num_classes <= 0:
        raise ValueError(f"build_model: embed_dim and num_classes must be positive, got {cfg.embed_dim}, {cfg.num_classes}")

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        encoders: dict[str, nn.Module] = {}
        for mod in (src, tgt):
            shape, dtype = specs[mod]
            name = by_modality(cfg.encoders or {}, mod) or default_encoder_name(mod, shape, dtype, cfg)
            encoders[mod] = get_encoder(name, shape, cfg.embed_dim, **_encoder_hp(name, mod, cfg))
        recon = None
        if cfg.reconstruction:
            shape, dtype = specs[tgt]
            recon = ReconstructionHead(cfg.embed_dim, shape, dtype)
        model = CrossModalModel(
            encoders, source=src, target=tgt, embed_dim=cfg.embed_dim, num_classes=cfg.num_classes, recon=recon
        )
    for mod in specs:  # extra modalities: own seeds, after the rest, so the rest is unchanged
        if mod in (src, tgt):
            continue
        shape, dtype = specs[mod]
        name = by_modality(cfg.encoders or {}, mod) or default_encoder_name(mod, shape, dtype, cfg)
        digest = hashlib.blake2b(f"{int(seed)}:encoder:{mod}".encode(), digest_size=8).digest()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
            enc = get_encoder(name, shape, cfg.embed_dim, **_encoder_hp(name, mod, cfg))
        if getattr(enc, "out_dim", cfg.embed_dim) != cfg.embed_dim:
            raise ValueError(f"build_model: encoder {mod!r} outputs {enc.out_dim}, expected embed_dim {cfg.embed_dim}")
        model.encoders[mod] = enc
    return model
