"""Modality front-ends: raw item values -> fixed-shape tensors.

* text: :func:`text_to_bytes` (UTF-8 bytes + 1, 0 = padding).
* audio: :func:`load_audio` (soundfile read in blocks, mono mix-down, resampled with
  ``torchaudio.functional.resample`` at a ratio whose terms are bounded, so a hostile sample rate
  cannot blow up the filter; rates outside 1-384 kHz, more than 64 channels and truncated WAVs
  are refused; only as many seconds as the features need are read) then :class:`LogMel` (``torchaudio.transforms.MelSpectrogram``,
  log, per-utterance mean normalisation, cropped / zero-padded to a fixed frame count).
* image: :func:`load_image` (PIL decode, reduced for large images, RGB, resize, ImageNet
  normalisation; more than 100 megapixels refused from the header) or
  :func:`images_from_arrays` for already-decoded ``uint8`` arrays (CIFAR).

:class:`FrontendSettings` collects every setting that changes the features; the feature cache
(:mod:`episodes.cache`) keys entries by it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from episodes.errors import DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrontendSettings",
    "text_to_bytes",
    "load_audio",
    "LogMel",
    "load_image",
    "load_image_uint8",
    "normalize_images",
    "images_from_arrays",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FrontendSettings:
    """Every setting that changes front-end output (part of the feature-cache key).

    Attributes:
        text_max_len: byte ids per text (longer texts are truncated).
        sample_rate: audio is resampled to this rate (Hz).
        n_mels, n_fft, hop_length: log-mel settings (hop 160 at 16 kHz = 10 ms frames).
        max_frames: log-mel frames kept per clip (cropped / zero-padded).
        image_size: images are resized to ``image_size x image_size``.
    """

    text_max_len: int = 256
    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 400
    hop_length: int = 160
    max_frames: int = 300
    image_size: int = 32

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"front-end setting {name} must be a positive integer, got {value!r}")

    def for_modality(self, modality: str) -> dict[str, int]:
        """The settings that matter for ``modality`` (what the cache key includes)."""
        if modality == "text":
            return {"text_max_len": self.text_max_len}
        if modality == "audio":
            return {k: getattr(self, k) for k in ("sample_rate", "n_mels", "n_fft", "hop_length", "max_frames")}
        if modality == "image":
            return {"image_size": self.image_size}
        raise DataError(f"unknown modality {modality!r}")


def text_to_bytes(texts: Sequence[str], max_len: int = 256) -> torch.Tensor:
    """Encode texts as UTF-8 byte ids.

    Args:
        texts: ``n`` strings.
        max_len: L, ids per text; longer encodings are truncated.

    Returns:
        ``long [n, L]``: byte value + 1 (1..256), 0 = padding.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"text item {i} is not a string ({type(t).__name__})")
        b = np.frombuffer(t.encode("utf-8")[:max_len], dtype=np.uint8)
        out[i, : b.size] = b.astype(np.int64) + 1
    return torch.from_numpy(out)


MIN_SAMPLE_RATE = 1000  # Hz; files outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] are refused
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 64
MAX_AUDIO_SECONDS = 600.0  # read at most this much of a file (callers pass less: what features need)
MAX_RESAMPLE_TERMS = 1000  # resampling ratio p/q is approximated with p, q <= this (bounded filter)
_READ_BLOCK = 65536  # frames per read block (mixed to mono as it is read)


def resample_ratio(orig: int, new: int) -> tuple[int, int]:
    """``(p, q)`` with ``new / orig ~= q / p`` and ``p, q <= MAX_RESAMPLE_TERMS``: the rates passed to
    ``torchaudio.functional.resample``, whose filter has ``q`` phases of ``~p`` taps, so its memory
    and time per sample stay bounded for any rate. Exact for all common rates (8, 11.025, 16,
    22.05, 32, 44.1, 48, 88.2, 96, 192, 384 kHz to 16 kHz); otherwise the relative pitch error is
    below ``1 / MAX_RESAMPLE_TERMS**2``-ish (``Fraction.limit_denominator``)."""
    from fractions import Fraction

    r = Fraction(int(new), int(orig))
    limit = MAX_RESAMPLE_TERMS
    while max(r.numerator, r.denominator) > MAX_RESAMPLE_TERMS:
        r = Fraction(int(new), int(orig)).limit_denominator(limit)
        limit = max(1, limit // 2)
    return r.denominator, r.numerator


def _wav_truncation(p: Path) -> str | None:
    """For a RIFF/WAVE file: a description when its ``data`` chunk claims more bytes than the file
    holds (a truncated download or copy), else None. Reads chunk headers only."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            for _ in range(10000):  # bounded: a crafted file cannot loop us
                fh.seek(pos)
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return None
                cid, n = hdr[:4], int.from_bytes(hdr[4:8], "little")
                if cid == b"data":
                    have = size - (pos + 8)
                    if n not in (0, 0xFFFFFFFF) and n > have:
                        return f"its header says {n} data bytes but only {have} are present"
                    return None
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


_ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".pkl", ".pickle", ".safetensors")


def _refuse_empty(p: Path, what: str) -> None:
    """A 0-byte file (an interrupted copy or download) gets its own message, not a decoder's; an
    array / pickle file (``.npy``, ``.pt``, ...) is named as such and never opened (nothing unpickled)."""
    if p.suffix.lower() in _ARRAY_SUFFIXES:
        raise DataError(f"{p}: a {p.suffix} file is not an {what} file; a manifest names {what} files (decoded arrays "
                        "go through croma.records_to_dataset in Python; array files are never loaded)")
    try:
        empty = p.stat().st_size == 0
    except OSError:
        return
    if empty:
        raise DataError(f"{p}: {what} file is empty (0 bytes)")


def _waveform(value: np.ndarray | torch.Tensor, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """An in-memory waveform (taken to be at ``sample_rate`` already): checked, float32, cropped."""
    a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    if a.ndim != 1 or a.dtype.kind != "f" or a.size == 0:
        raise DataError(f"audio array of shape {tuple(a.shape)} and dtype {a.dtype}: expected a non-empty 1-D float "
                        "waveform")
    if not np.isfinite(a).all():
        raise DataError("audio array holds non-finite samples")
    limit = MAX_AUDIO_SECONDS if max_seconds is None else min(float(max_seconds), MAX_AUDIO_SECONDS)
    return np.ascontiguousarray(a[: max(1, int(math.ceil(limit * sample_rate)))], dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int, *, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file with soundfile, mix to mono and resample, with bounded memory and time.

    Args:
        path: audio file (any format libsndfile reads: WAV, FLAC, OGG, ...), or an already-decoded
            1-D float waveform (numpy / torch), taken to be at ``sample_rate`` already.
        sample_rate: output rate in Hz.
        max_seconds: read at most this many seconds from the start (default and ceiling
            :data:`MAX_AUDIO_SECONDS`); the front-end passes what its frames need.

    Returns:
        ``float32 [samples]`` in [-1, 1].

    Raises:
        DataError: the file is missing, unreadable, truncated (a WAV whose data chunk claims more
            bytes than the file holds), empty, has non-finite samples, a sample rate outside
            [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`] Hz or more than
            :data:`MAX_CHANNELS` channels (names the file).
    """
    import soundfile as sf

    if isinstance(path, (np.ndarray, torch.Tensor)):  # an already-decoded waveform (records_to_dataset)
        return _waveform(path, sample_rate, max_seconds)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: audio file not found")
    _refuse_empty(p, "audio")
    trunc = _wav_truncation(p)
    if trunc is not None:
        raise DataError(f"{p}: truncated audio file ({trunc})")
    limit = MAX_AUDIO_SECONDS if max_seconds is None else min(float(max_seconds), MAX_AUDIO_SECONDS)
    try:
        with sf.SoundFile(str(p)) as fh:
            sr, channels = int(fh.samplerate), int(fh.channels)
            if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
                raise DataError(f"{p}: sample rate {sr} Hz is outside the supported {MIN_SAMPLE_RATE}-"
                                f"{MAX_SAMPLE_RATE} Hz (a corrupt header, or resample the file first)")
            if not 1 <= channels <= MAX_CHANNELS:
                raise DataError(f"{p}: {channels} channels; at most {MAX_CHANNELS} are supported")
            want = max(1, int(math.ceil(limit * sr)))
            blocks = []
            while want > 0:
                block = fh.read(min(_READ_BLOCK, want), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                blocks.append(block.mean(axis=1, dtype=np.float32))
                want -= block.shape[0]
    except DataError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / ValueError
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: unreadable or truncated audio file ({msg})") from None
    wav = np.concatenate(blocks).astype(np.float32, copy=False) if blocks else np.zeros(0, dtype=np.float32)
    if wav.size == 0:
        raise DataError(f"{p}: audio file holds no samples (empty or truncated)")
    if not np.isfinite(wav).all():
        raise DataError(f"{p}: audio file holds non-finite samples")
    if sr != sample_rate:
        import torchaudio.functional as AF

        orig, new = resample_ratio(sr, int(sample_rate))
        if orig != new:
            wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), orig, new).numpy()
    return np.ascontiguousarray(wav, dtype=np.float32)


class LogMel:
    """Log-mel spectrogram of a mono waveform, fixed frame count.

    ``log(mel + 1e-6)``, then each mel band's mean over the clip's frames is subtracted
    (per-utterance mean normalisation), then frames are cropped to / zero-padded up to
    ``max_frames`` (padding is exactly 0 = the normalised mean).

    Args:
        sample_rate: waveform rate (Hz).
        n_mels, n_fft, hop_length: ``torchaudio.transforms.MelSpectrogram`` settings.
        max_frames: T, output frames.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 40, n_fft: int = 400, hop_length: int = 160,
                 max_frames: int = 300) -> None:
        import torchaudio.transforms as AT

        self.sample_rate, self.n_mels, self.n_fft = sample_rate, n_mels, n_fft
        self.hop_length, self.max_frames = hop_length, max_frames
        self._mel = AT.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)

    def __call__(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[samples]`` waveform -> ``float [n_mels, max_frames]``."""
        w = torch.as_tensor(np.asarray(waveform, dtype=np.float32) if not torch.is_tensor(waveform) else waveform)
        w = w.float().flatten()
        if w.numel() < self.n_fft:  # too short for one window: pad so there is one frame
            w = torch.nn.functional.pad(w, (0, self.n_fft - w.numel()))
        with torch.no_grad():
            spec = torch.log(self._mel(w) + 1e-6)  # [n_mels, frames]
        spec = spec[:, : self.max_frames]
        spec = spec - spec.mean(dim=1, keepdim=True)
        out = torch.zeros(self.n_mels, self.max_frames, dtype=torch.float32)
        out[:, : spec.shape[1]] = spec
        return out


def _pil_open(path: Path):
    from PIL import Image

    return Image.open(path)


IMAGE_ALPHA = "white"  # transparent pixels are composited over white (part of image cache keys)


_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# Images are refused above this many pixels, from the header, before any pixel is decoded (a 328 KB
# PNG can hold 13000 x 13000 pixels); raise it here for larger scans.
MAX_IMAGE_PIXELS = 100_000_000
# Above this many pixels an image is decoded reduced: JPEG at 1/2, 1/4 or 1/8 scale (PIL's draft),
# then converted to RGB strip by strip and box-reduced to about IMAGE_REDUCE_GAP x the target side
# before the bilinear resize (as PIL's ``reducing_gap``). Smaller images take the plain path
# (decode, RGB, resize), so their pixels are unchanged.
IMAGE_REDUCE_ABOVE = 4_000_000
IMAGE_REDUCE_GAP = 8
_STRIP_PIXELS = 1 << 18


def _to_rgb(im, scale: bool | None = None):
    """A PIL image -> RGB; images with transparency (RGBA, LA, palette with a transparent colour)
    are composited over white, so what a transparent pixel happens to store does not leak in.
    16-bit greyscale (``I;16``, or ``I`` holding values beyond 0..255) is scaled to 8 bits; float
    greyscale (``F``) in [0, 1] is scaled by 255 (other ranges are clipped to 0..255, as before).
    ``scale``: that decision for ``I`` / ``F``, made on the whole image (:func:`_scale_decision`)
    when ``im`` is one strip of it; ``None`` decides on ``im``."""
    from PIL import Image

    if im.mode in _DEEP_MODES:  # 16-bit grey: scale 0..65535 to 0..255 (PIL's convert clips at 255: all white)
        a = np.asarray(im)
        if scale is None:
            scale = im.mode != "I" or int(a.max(initial=0)) > 255 or int(a.min(initial=0)) < 0
        if scale:
            a = (np.clip(a.astype(np.int64), 0, 65535) * 255 + 32767) // 65535
            return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":  # 32-bit float grey (TIFF): values in [0, 1] are scaled (PIL's convert makes them black)
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("float image holds NaN or infinite pixels")
        if scale is None:
            scale = bool(a.size and a.min() >= 0.0 and a.max() <= 1.0)
        if scale:
            return Image.fromarray(np.rint(a * 255.0).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.alpha_composite(rgba)
        return out.convert("RGB")
    return im.convert("RGB")


def _scale_decision(im) -> bool | None:
    """:func:`_to_rgb`'s 16-bit / float scaling decision for the whole of ``im`` (its extrema, no copy)."""
    if im.mode in _DEEP_MODES:
        if im.mode != "I":
            return True
        lo, hi = im.getextrema()
        return hi > 255 or lo < 0
    if im.mode == "F":
        lo, hi = im.getextrema()
        return bool(lo >= 0.0 and hi <= 1.0)  # NaN compares False; the strips refuse it
    return None


def _reduced_rgb(im, size: int):
    """``im`` (over :data:`IMAGE_REDUCE_ABOVE` pixels) -> an RGB image about ``IMAGE_REDUCE_GAP x size``
    a side: JPEG decoded at a reduced scale, then converted and box-reduced strip by strip, so no
    full-size RGB / RGBA copy is ever made (memory: the decoded image plus one strip)."""
    from PIL import Image

    want = IMAGE_REDUCE_GAP * size
    im.draft(None, (want, want))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still >= want a side; others: no-op
    im.load()
    w, h = im.size
    kx, ky = max(1, w // want), max(1, h // want)
    scale = _scale_decision(im)
    out = Image.new("RGB", (-(-w // kx), -(-h // ky)))
    rows = max(ky, (_STRIP_PIXELS // max(w, 1)) // ky * ky)  # a multiple of ky: strips reduce like the whole
    for top in range(0, h, rows):
        strip = _to_rgb(im.crop((0, top, w, min(h, top + rows))), scale)
        out.paste(strip.reduce((kx, ky)) if kx > 1 or ky > 1 else strip, (0, top // ky))
    return out


def load_image_uint8(path: str | os.PathLike, size: int = 32) -> torch.Tensor:
    """Decode an image file, convert to RGB (transparency composited over white) and resize
    (bilinear) to ``size x size``.

    Images over :data:`MAX_IMAGE_PIXELS` (100 megapixels) are refused from their header, before
    any pixel is decoded; images over :data:`IMAGE_REDUCE_ABOVE` (4 megapixels) are decoded reduced
    (:func:`_reduced_rgb`: memory about one decoded copy in the file's own mode).

    Returns:
        ``uint8 [3, size, size]``.

    Raises:
        DataError: missing, unreadable, truncated or too large image (names the file; the size).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    _refuse_empty(p, "image")
    try:
        import warnings

        from PIL import Image

        # PIL's warnings (a header claiming ~100 MP, corrupt EXIF, ...) would print lines between the
        # progress bar and the one error line; what matters is whether the image decodes
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pil_open(p) as im:
                w, h = im.size  # from the header: nothing decoded yet
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(_too_large(p, f"{w}x{h} pixels, {w * h / 1e6:.0f} megapixels"))
                rgb = _reduced_rgb(im, size) if w * h > IMAGE_REDUCE_ABOVE else _to_rgb(im)
                arr = np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except DataError:
        raise
    except MemoryError:
        raise DataError(_too_large(p, "not enough memory to decode it")) from None
    except Exception as exc:  # PIL raises UnidentifiedImageError / OSError on bad data
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if type(exc).__name__ == "DecompressionBombError":  # PIL's own bound, met while reading the header
            n = re.search(r"\((\d+) pixels\)", msg)
            raise DataError(_too_large(p, f"{int(n.group(1)) / 1e6:.0f} megapixels" if n else msg)) from None
        raise DataError(f"{p}: unreadable or truncated image file ({msg})") from None
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _too_large(p: Path, what: str) -> str:
    return (f"{p}: image too large ({what}; at most {MAX_IMAGE_PIXELS / 1e6:g} megapixels are read): "
            "downscale it, or leave it out with --skip-bad")


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [n, 3, H, W]`` -> ``float [n, 3, H, W]``: ``/255`` then ImageNet mean/std."""
    x = images.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def load_image(path: str | os.PathLike, size: int = 32) -> torch.Tensor:
    """Decode, resize and normalise one image.

    Returns:
        ``float [3, size, size]`` normalised with ImageNet mean/std.

    Raises:
        DataError: missing, unreadable or truncated image (names the file).
    """
    return normalize_images(load_image_uint8(path, size)[None])[0]


def images_from_arrays(arrays: Any, size: int = 32) -> torch.Tensor:
    """Already-decoded RGB images -> ``uint8 [n, 3, size, size]``.

    Args:
        arrays: ``uint8`` array ``[n, H, W, 3]`` (HWC, as CIFAR rows reshaped) or a sequence of
            ``[H, W, 3]`` arrays of one shape.
        size: output side; resized bilinearly when it differs from ``H``/``W``.
    """
    a = np.asarray(arrays) if not isinstance(arrays, np.ndarray) else arrays
    if a.ndim != 4 or a.shape[-1] != 3:
        raise DataError(f"image arrays must be [n, H, W, 3], got shape {tuple(a.shape)}")
    x = torch.from_numpy(np.ascontiguousarray(a.astype(np.uint8, copy=False).transpose(0, 3, 1, 2)))
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
        x = x.round().clamp_(0, 255).to(torch.uint8)
    return x
