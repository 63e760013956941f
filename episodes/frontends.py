"""Modality front-ends: raw item values -> fixed-shape tensors.

* text: :func:`text_to_bytes` (UTF-8 bytes + 1, 0 = padding).
* audio: :func:`load_audio` (soundfile read in blocks, mono mix-down, resampled with
  ``torchaudio.functional.resample`` at a ratio whose terms are bounded, so a hostile sample rate
  cannot blow up the filter; rates outside 1-384 kHz, more than 64 channels and truncated WAVs
  are refused; only as many seconds as the features need are read) then :class:`LogMel` (``torchaudio.transforms.MelSpectrogram``,
  log, per-utterance mean normalisation, cropped / zero-padded to a fixed frame count).
* image (:mod:`episodes.images`, re-exported here): :func:`load_image` (PIL decode, reduced for
  large images, RGB, resize, ImageNet normalisation; more than 100 megapixels refused from the
  header) or :func:`images_from_arrays` for already-decoded ``uint8`` arrays (CIFAR).

:class:`FrontendSettings` collects every setting that changes the features; the feature cache
(:mod:`episodes.cache`) keys entries by it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from episodes.errors import DataError
from episodes.images import (  # noqa: F401  (re-exported: moved from here, imported as episodes.frontends.*)
    _ARRAY_SUFFIXES,
    _DEEP_MODES,
    _STRIP_PIXELS,
    IMAGE_ALPHA,
    IMAGE_REDUCE_ABOVE,
    IMAGE_REDUCE_GAP,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IMAGE_PIXELS,
    _pil_open,
    _reduced_rgb,
    _refuse_empty,
    _scale_decision,
    _to_rgb,
    _too_large,
    images_from_arrays,
    load_image,
    load_image_uint8,
    normalize_images,
)

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
        """The settings that matter for ``modality`` (what the cache key includes); a named
        modality (``image:ct``) has its kind's."""
        from episodes.data import modality_kind

        kind = modality_kind(modality)
        if kind == "text":
            return {"text_max_len": self.text_max_len}
        if kind == "audio":
            return {k: getattr(self, k) for k in ("sample_rate", "n_mels", "n_fft", "hop_length", "max_frames")}
        if kind == "image":
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


def _resampled(wav: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    """``wav`` (``float32 [samples]`` at ``rate``) at ``out_rate`` (torchaudio's windowed sinc)."""
    if rate != out_rate:
        import torchaudio.functional as AF

        orig, new = resample_ratio(rate, int(out_rate))
        if orig != new:
            wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), orig, new).numpy()
    return np.ascontiguousarray(wav, dtype=np.float32)


def mono_waveform(a: np.ndarray, rate: int, out_rate: int, where: str, max_seconds: float | None = None) -> np.ndarray:
    """A decoded float waveform at ``rate`` Hz (``[samples]``, ``[channels, samples]`` or
    ``[samples, channels]``: the shorter axis is the channels, mixed) -> ``float32 [samples]`` at
    ``out_rate``: checked, cropped to ``max_seconds`` (default and ceiling :data:`MAX_AUDIO_SECONDS`),
    resampled. Raises :class:`DataError` naming ``where``."""
    if a.dtype.kind != "f":
        raise DataError(f"{where}: audio has dtype {a.dtype}; expected a float waveform in [-1, 1] (integer PCM: "
                        "divide int16 samples by 32768)")
    if a.ndim == 2:
        ch_axis = 0 if a.shape[0] <= a.shape[1] else 1
        if a.shape[ch_axis] > MAX_CHANNELS:
            raise DataError(f"{where}: audio has shape {tuple(a.shape)}; expected [samples] or [channels <= "
                            f"{MAX_CHANNELS}, samples]")
        a = a.mean(axis=ch_axis)
    if a.ndim != 1 or a.size == 0:
        raise DataError(f"{where}: audio has shape {tuple(a.shape)}; expected a non-empty 1-D waveform or [channels, "
                        "samples]")
    if not np.isfinite(a).all():
        raise DataError(f"{where}: audio holds NaN or infinite samples")
    limit = MAX_AUDIO_SECONDS if max_seconds is None else min(float(max_seconds), MAX_AUDIO_SECONDS)
    a = np.ascontiguousarray(a[: int(math.ceil(limit * rate))], dtype=np.float32)
    a = _resampled(a, rate, out_rate)
    if a.size == 0:
        raise DataError(f"{where}: audio is too short to resample from {rate} to {out_rate} Hz")
    return a


def _waveform_at(pair: tuple, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """``(waveform, rate)``: checked, mixed to mono and resampled by :func:`mono_waveform`."""
    if len(pair) != 2 or not isinstance(pair[0], (np.ndarray, torch.Tensor)) or isinstance(pair[1], bool) \
            or not isinstance(pair[1], (int, np.integer)):
        raise DataError("an audio value given as a pair must be (waveform array, sample rate in Hz as an int), "
                        f"got a {len(pair)}-tuple of {', '.join(type(v).__name__ for v in pair)}")
    a = pair[0].detach().cpu().numpy() if isinstance(pair[0], torch.Tensor) else np.asarray(pair[0])
    sr = int(pair[1])
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise DataError(f"audio sample rate {sr} Hz is outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return mono_waveform(a, sr, int(sample_rate), "audio array", max_seconds)


def load_audio(path: str | os.PathLike, sample_rate: int, *, max_seconds: float | None = None) -> np.ndarray:
    """Read an audio file with soundfile, mix to mono and resample, with bounded memory and time.

    Args:
        path: audio file (any format libsndfile reads: WAV, FLAC, OGG, ...); or an already-decoded
            1-D float waveform (numpy / torch), taken to be at ``sample_rate`` already; or a pair
            ``(waveform, rate)`` of a decoded waveform (1-D, or ``[samples, channels]`` as
            ``soundfile.read`` gives it, or ``[channels, samples]`` as ``torchaudio.load`` does: mixed
            to mono) and its rate in Hz, resampled here.
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
    if isinstance(path, tuple):  # (waveform, its sample rate), e.g. soundfile.read's result
        return _waveform_at(path, sample_rate, max_seconds)
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
    return _resampled(wav, sr, int(sample_rate))


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
