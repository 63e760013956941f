"""The shipped UDHR texts of ``udhr-speech`` and the pure functions of the seed over them.

:func:`load_udhr_texts` reads ``episodes/datasets/udhr/udhr_texts.json.gz`` (88 languages x 30
parallel chunks, see ``episodes/datasets/udhr/PROVENANCE.md``) once per process;
:func:`udhr_class_split` splits the languages into meta-train / meta-val / meta-test;
:func:`synthesis_params` draws the voice variant, rate, pitch and pitch range of utterance ``k``
of a language. The split and the parameters are pure functions of ``(seed, ...)`` (a SHA-256
seeded PCG64 generator), so every run and every worker process agrees on them. The loader that
speaks and caches these texts is :func:`episodes.datasets.udhr_speech.load_udhr_speech`, which
re-exports every name here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from episodes.errors import DataError
from episodes.tts import SynthParams

__all__ = [
    "TEXTS_PATH",
    "VARIANTS",
    "load_udhr_texts",
    "udhr_languages",
    "udhr_class_split",
    "synthesis_params",
]

TEXTS_PATH = Path(__file__).resolve().parent / "udhr" / "udhr_texts.json.gz"
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
RATE_RANGE = (130, 210)
PITCH_RANGE = (30, 70)
PITCH_SPREAD_RANGE = (30, 80)

_TEXTS: dict[str, Any] | None = None


def load_udhr_texts(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The shipped texts: ``{"languages": [{"code", "udhr_code", "bcp47", "name", "voice",
    "chunks": [str, ...]}, ...], "source", "licence", "dropped", ...}``.

    Raises:
        DataError: the file is missing or malformed (names the file).
    """
    global _TEXTS
    if path is None and _TEXTS is not None:
        return _TEXTS
    p = Path(path) if path is not None else TEXTS_PATH
    try:
        with gzip.open(p, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        langs = data["languages"]
        for lang in langs:
            if not (isinstance(lang["code"], str) and isinstance(lang["voice"], str) and lang["chunks"]):
                raise KeyError("code/voice/chunks")
    except FileNotFoundError as exc:
        raise DataError(f"udhr-speech texts not found: {p} (shipped with the package; reinstall croma "
                        "or rebuild it with experiments/tools/extract_udhr.py)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"udhr-speech texts file {p} is malformed ({exc}); rebuild it with "
                        "experiments/tools/extract_udhr.py") from exc
    if path is None:
        _TEXTS = data
    return data


def udhr_languages() -> list[str]:
    """Codes (ISO 639-3) of all shipped languages, sorted."""
    return sorted(lang["code"] for lang in load_udhr_texts()["languages"])


def _generator(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(str(k) for k in key).encode("utf-8")).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def udhr_class_split(languages: Iterable[str], seed: int = 0) -> dict[str, list[str]]:
    """Seeded split of languages into ``meta_train`` / ``meta_val`` / ``meta_test``.

    Deterministic in ``(sorted(set(languages)), seed)``; see the module docstring for sizes.

    Args:
        languages: language codes (duplicates ignored; order irrelevant).
        seed: split seed.

    Returns:
        ``{"meta_train": [...], "meta_val": [...], "meta_test": [...]}``, each sorted, pairwise
        disjoint, together covering all languages.
    """
    langs = sorted(set(languages))
    n = len(langs)
    if n < 3:
        return {"meta_train": langs, "meta_val": [], "meta_test": []}
    perm = _generator("udhr-split", seed).permutation(n)
    shuffled = [langs[i] for i in perm]
    n_test = max(1, round(0.18 * n))
    n_val = max(1, round(0.135 * n))
    return {
        "meta_test": sorted(shuffled[:n_test]),
        "meta_val": sorted(shuffled[n_test : n_test + n_val]),
        "meta_train": sorted(shuffled[n_test + n_val :]),
    }


def synthesis_params(seed: int, lang: str, k: int, voice: str) -> SynthParams:
    """Voice variant, rate, pitch and pitch range of utterance ``k`` of ``lang``: a pure
    function of ``(seed, lang, k)`` (``voice`` is the language's espeak-ng voice)."""
    g = _generator("udhr-voice", seed, lang, k)
    variant = VARIANTS[int(g.integers(len(VARIANTS)))]
    return SynthParams(
        voice=f"{voice}+{variant}",
        rate=int(g.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
        pitch=int(g.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        pitch_range=int(g.integers(PITCH_SPREAD_RANGE[0], PITCH_SPREAD_RANGE[1] + 1)),
    )
