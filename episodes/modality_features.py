"""One modality's front-end output, through the feature cache: :func:`compute_features`.

Text -> :func:`~episodes.frontends.text_to_bytes` (never cached: cheap). Audio files ->
:func:`~episodes.frontends.load_audio` + :class:`~episodes.frontends.LogMel`; image files or
arrays of mixed sizes -> decoded ``uint8``; these whole-modality outputs (``features`` + an
``ok`` mask) are one :class:`~episodes.cache.FeatureCache` entry keyed by (:data:`CACHE_FORMAT`,
data set, modality, front-end settings, input identity); images are normalised after loading.
Same-sized image arrays (CIFAR rows) are stacked directly, uncached. With an
:class:`~episodes.embedding.Embedder` a frozen backbone's embeddings replace the front-end
(cached under :func:`embedding_cache_key`). Step 1 of :func:`episodes.prepare.prepare_benchmark`;
the public names are re-exported from :mod:`episodes.prepare`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from episodes.cache import FeatureCache, hash_key, inputs_digest
from episodes.data import Item, modality_kind
from episodes.embedding import Embedder
from episodes.errors import DataError
from episodes.frontends import (
    IMAGE_ALPHA,
    FrontendSettings,
    LogMel,
    images_from_arrays,
    load_audio,
    load_image_uint8,
    normalize_images,
    text_to_bytes,
)
from episodes.images import as_uint8

__all__ = ["CACHE_FORMAT", "compute_features", "embedding_cache_key"]

CACHE_FORMAT = 1  # part of every feature-cache key: bump it to invalidate all cached features


def _per_item(items: list[Item], modality: str, fn: Callable[[Any], torch.Tensor], shape: tuple[int, ...],
              dtype: torch.dtype, skip_bad: bool, progress: bool, desc: str) -> dict[str, torch.Tensor]:
    feats = torch.zeros((len(items), *shape), dtype=dtype)
    ok = torch.ones(len(items), dtype=torch.bool)
    bar = None
    if progress:
        from episodes.progress import progress_bar as tqdm

        bar = tqdm(total=len(items), desc=desc, unit="item")
    threads = torch.get_num_threads()
    # Per-item front-end ops are tiny: intra-op threads only add synchronisation, and on a busy
    # machine they made this loop 10x slower (50 s vs 4.6 s for 1,760 clips on 2 cores).
    torch.set_num_threads(1)
    try:
        for i, it in enumerate(items):
            try:
                feats[i] = fn(it.modalities[modality])
            except DataError:
                if not skip_bad:
                    raise
                ok[i] = False
            if bar is not None:
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    return {"features": feats, "ok": ok}


def compute_features(name: str, modality: str, items: list[Item], settings: FrontendSettings, *,
                     cache: FeatureCache | None, skip_bad: bool = False,
                     progress: bool = False, embedder: Embedder | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Front-end output of one modality of ``items``.

    Args:
        name: data set name (cache namespace).
        modality: ``text`` / ``audio`` / ``image``.
        items: the items holding ``modality``.
        settings: front-end settings.
        cache: feature cache, or ``None`` to compute without caching.
        skip_bad: mark unreadable items in ``ok`` instead of raising.
        embedder: a frozen pretrained backbone (:class:`~episodes.embedding.Embedder`): its
            ``float [n, D]`` embeddings replace the front-end, cached under
            ``<name>/<modality>/<embedder.name>`` keyed by :meth:`~episodes.embedding.Embedder.cache_key`.

    Returns:
        ``(features [n, *shape], ok bool [n], cache status)``; text: ``long [n, L]``; audio:
        ``float [n, n_mels, T]``; image: ``float [n, 3, S, S]`` normalised. Status is
        ``hit`` / ``built`` / ``rebuilt`` / ``uncached``.

    Raises:
        DataError: an unreadable file (names it) without ``skip_bad``.
    """
    values = [it.modalities[modality] for it in items]
    if embedder is not None:
        return _embedded_features(name, modality, items, values, embedder, cache=cache, skip_bad=skip_bad,
                                  progress=progress)
    kind = modality_kind(modality)  # a named modality (image:ct) is featurised as its kind
    if kind == "text":
        return text_to_bytes(values, settings.text_max_len), torch.ones(len(items), dtype=torch.bool), "uncached"
    desc = f"{name}: {modality}"
    if kind == "image" and all(isinstance(v, np.ndarray) for v in values):
        if not values:
            return torch.zeros(0, 3, settings.image_size, settings.image_size), torch.ones(0, dtype=torch.bool), "uncached"
        shapes = {v.shape for v in values}
        if len(shapes) == 1 and len(next(iter(shapes))) == 3 and next(iter(shapes))[-1] == 3:
            # stack the CHW views (contiguous for CIFAR rows): one memcpy per image, no transpose pass
            chw = torch.from_numpy(as_uint8(np.stack([v.transpose(2, 0, 1) for v in values])))  # by dtype
            s = settings.image_size
            if chw.shape[-1] != s or chw.shape[-2] != s:
                chw = images_from_arrays(chw.permute(0, 2, 3, 1).numpy(), s)
            return normalize_images(chw), torch.ones(len(items), dtype=torch.bool), "uncached"
    if kind == "audio":
        logmel = LogMel(settings.sample_rate, settings.n_mels, settings.n_fft, settings.hop_length, settings.max_frames)

        # read only what the kept frames need (+1 s margin so resampling and STFT edges are unchanged)
        need_s = (settings.max_frames * settings.hop_length + settings.n_fft) / settings.sample_rate + 1.0

        def one(v):
            return logmel(load_audio(v, settings.sample_rate, max_seconds=need_s))

        def build() -> dict[str, torch.Tensor]:
            return _per_item(items, modality, one, (settings.n_mels, settings.max_frames), torch.float32,
                             skip_bad, progress, desc)
    elif kind == "image":
        s = settings.image_size

        def one(v):
            if isinstance(v, np.ndarray):
                return images_from_arrays(v[None], s)[0]
            return load_image_uint8(v, s)

        def build() -> dict[str, torch.Tensor]:
            return _per_item(items, modality, one, (3, s, s), torch.uint8, skip_bad, progress, desc)
    else:
        raise DataError(f"unknown modality {modality!r}")
    if cache is None:
        out, status = build(), "uncached"
    else:
        key = hash_key({"format": CACHE_FORMAT, "dataset": name, "modality": modality,
                        "settings": settings.for_modality(modality),
                        **({"alpha": IMAGE_ALPHA} if kind == "image" else {}),
                        "inputs": inputs_digest((it.id, v) for it, v in zip(items, values))})
        out, status = cache.get_or_build(f"{name}/{modality}", key, build)
        if out["features"].shape[0] != len(items) or out["ok"].shape[0] != len(items):
            out = build()
            cache.save(f"{name}/{modality}", key, out)
            status = "rebuilt"
    feats, ok = out["features"], out["ok"].bool()
    if not skip_bad and not bool(ok.all()):  # cached with skip_bad earlier: retry, raising on the bad file
        feats, ok = feats.clone(), ok.clone()
        for i in torch.nonzero(~ok).flatten().tolist():
            feats[i] = one(values[i])
            ok[i] = True
    if kind == "image":
        feats = normalize_images(feats)
    return feats, ok, status


def embedding_cache_key(name: str, modality: str, items: list[Item], values: list[Any], embedder: Embedder) -> str:
    """The feature-cache key of a backbone's embeddings: data set, modality, the backbone's own
    key (weights hash, settings), the device type it runs on (CPU and GPU kernels round
    differently: embeddings made on one never stand in for the other's, so a CPU run stays
    reproducible) and the inputs' digest."""
    device = getattr(getattr(embedder, "device", None), "type", "cpu")
    return hash_key({"format": CACHE_FORMAT, "dataset": name, "modality": modality, "backbone": embedder.cache_key(),
                     "device": str(device), "inputs": inputs_digest((it.id, v) for it, v in zip(items, values))})


def _embedded_features(name: str, modality: str, items: list[Item], values: list[Any], embedder: Embedder, *,
                       cache: FeatureCache | None, skip_bad: bool,
                       progress: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """:func:`compute_features` through a pretrained backbone (embeddings cached as they are)."""
    desc = f"{name}: {modality} ({embedder.name})"

    def build() -> dict[str, torch.Tensor]:
        return embedder.embed(values, skip_bad=skip_bad, progress=progress, desc=desc)

    if cache is None:
        out, status = build(), "uncached"
    else:
        namespace = f"{name}/{modality}/{embedder.name}"
        key = embedding_cache_key(name, modality, items, values, embedder)
        out, status = cache.get_or_build(namespace, key, build)
        if out["features"].shape != (len(items), int(embedder.dim)) or out["ok"].shape[0] != len(items):
            out = build()
            cache.save(namespace, key, out)
            status = "rebuilt"
    feats, ok = out["features"].float(), out["ok"].bool()
    if not skip_bad and not bool(ok.all()):  # cached with skip_bad earlier: retry, raising on the bad file
        bad = torch.nonzero(~ok).flatten().tolist()
        redo = embedder.embed([values[i] for i in bad], skip_bad=False)
        feats, ok = feats.clone(), ok.clone()
        feats[torch.tensor(bad)] = redo["features"]
        ok[torch.tensor(bad)] = True
    return feats, ok, status
