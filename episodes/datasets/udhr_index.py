"""The udhr-speech WAV cache's index: what a cached WAV must match (:func:`_entry_for`), whether
it does (:func:`_cached_ok`), and the index file itself (read, written atomically)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from episodes.tts import SynthParams

__all__ = ["_text_hash", "_entry_for", "_cached_ok", "_write_json_atomic", "_read_index"]


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _entry_for(text: str, params: SynthParams, sample_rate: int, backend: str | None = None) -> dict[str, Any]:
    """What a cached WAV must match: every synthesis setting and the backend that made it
    (``backend=None``, no backend usable here: a WAV made by any backend is accepted)."""
    entry = {
        "text_sha": _text_hash(text),
        "voice": params.voice,
        "rate": params.rate,
        "pitch": params.pitch,
        "pitch_range": params.pitch_range,
        "seed": params.seed,
        "sample_rate": sample_rate,
    }
    if backend is not None:
        entry["backend"] = backend
    return entry


def _cached_ok(path: Path, want: dict[str, Any], have: dict[str, Any] | None) -> bool:
    """A cached WAV is reused only when the index entry matches the wanted parameters and the
    file is a readable mono WAV of the recorded length and rate."""
    if have is None or any(have.get(k) != v for k, v in want.items()):
        return False
    import soundfile as sf

    try:
        info = sf.info(str(path))
        size = path.stat().st_size
    except (OSError, RuntimeError, sf.LibsndfileError):
        return False
    samples = have.get("samples")
    return (
        info.samplerate == want["sample_rate"]
        and info.channels == 1
        and info.frames == samples
        and isinstance(samples, int)
        and samples > 0
        and size >= 2 * samples + 44
    )


def _write_json_atomic(path: Path, obj: Any) -> None:
    from episodes.cache import atomic_write

    atomic_write(path, lambda fh: fh.write(json.dumps(obj, sort_keys=True).encode("utf-8")))


def _read_index(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt index: every WAV is re-checked against fresh params
