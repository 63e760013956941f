"""espeak-ng speech synthesis: the shared library through ctypes, or the ``espeak-ng`` program.

Two backends produce the same thing, a mono ``int16`` waveform at the engine's native rate
(22050 Hz for espeak-ng):

* :class:`EspeakLibrary` loads ``libespeak-ng`` (from the PyPI wheel ``espeakng-loader``, which
  bundles the library and its voice data) and drives it synchronously: ``espeak_Initialize``
  with ``AUDIO_OUTPUT_SYNCHRONOUS``, a synth callback that collects the samples. espeak-ng keeps
  global state and is not thread-safe: use one instance per *process* (see
  :func:`get_backend`, which caches one per process), never share it between threads. Each
  utterance is spoken by a freshly loaded library with fixed noise seeds, so the waveform is a
  pure function of (text, parameters) and not of what the process said before.
* :class:`EspeakProgram` runs ``espeak-ng -m -v VOICE -s RATE -p PITCH -w out.wav`` with the text
  wrapped in SSML ``<prosody range="RANGE">`` (the pitch range has no flag before espeak-ng 1.52).

Both honour every field of :class:`SynthParams`. The noise seed: the library backend reseeds
before every utterance; the program cannot be told a seed, but an espeak-ng up to 1.51 draws its
noise from libc ``rand()`` in a fresh process, whose start state is ``srand(1)`` (glibc treats
``srand(0)`` as ``srand(1)``), so the program honours seeds 0 and 1 and refuses others (and every
seed on espeak-ng >= 1.52, which seeds its noise generator from the clock) with a
:class:`~episodes.errors.DataError` rather than ignore it. Each backend has a :attr:`cache_id`
(``"library-1.52.0"``, ``"program-1.51"``) that caches record, so WAVs made by different engines
never mix.

:func:`get_backend` picks the library when importable, else the program on ``PATH``, else raises
:class:`~episodes.errors.DataError` naming both (``pip install espeakng-loader`` or install the
``espeak-ng`` program).

Voice names are espeak-ng voice identifiers (``en``, ``de``, ``pt-br``...) optionally followed
by a variant (``en+f3``, ``de+m2``).
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import tempfile

import numpy as np

from episodes.errors import DataError
from episodes.espeak_library import EspeakLibrary
from episodes.synth_params import INSTALL_HINT as _INSTALL_HINT
from episodes.synth_params import SynthParams, check_params

__all__ = [
    "SynthParams",
    "EspeakLibrary",
    "EspeakProgram",
    "get_backend",
    "backend_available",
    "backend_cache_id",
    "check_params",
]


class EspeakProgram:
    """The ``espeak-ng`` program: ``espeak-ng -m -v VOICE -s RATE -p PITCH -w out.wav --stdin`` with
    ``<speak><prosody range="RANGE">TEXT</prosody></speak>`` on stdin.

    Every field of :class:`SynthParams` is honoured: voice, rate and pitch by flags, the pitch range
    by SSML (``-P`` only exists from espeak-ng 1.52), the seed as the module docstring explains
    (0 and 1 on espeak-ng <= 1.51; any other seed, or any seed on a newer engine, is refused).

    Args:
        executable: program path (default: ``espeak-ng`` on ``PATH``).

    Raises:
        DataError: the program is not found or does not run.
    """

    name = "program"

    def __init__(self, executable: str | None = None) -> None:
        exe = executable or shutil.which("espeak-ng")
        if not exe:
            raise DataError(f"espeak-ng program not found on PATH: {_INSTALL_HINT}")
        self.executable = exe
        self.sample_rate = 22050
        try:
            proc = subprocess.run([exe, "--version"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"espeak-ng program {exe} does not run: {exc}") from exc
        out = proc.stdout.decode("utf-8", "replace")
        # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data"
        words = out.split(":", 1)[1].split() if ":" in out else []
        self.version = words[0] if words else "unknown"

    @property
    def cache_id(self) -> str:
        """``"program-<engine version>"``: recorded with cached audio so that backends never mix."""
        return f"{self.name}-{self.version}"

    def _version_tuple(self) -> tuple[int, ...]:
        parts = []
        for p in self.version.split("."):
            digits = "".join(c for c in p if c.isdigit())
            if not digits:
                break
            parts.append(int(digits))
        return tuple(parts)

    def command(self, text: str, params: SynthParams, out: str) -> tuple[list[str], bytes]:
        """The command line and stdin that speak ``text`` with ``params`` into ``out``.

        Raises:
            DataError: ``params.seed`` cannot be honoured by this program.
        """
        check_params(params)
        version = self._version_tuple()
        if params.seed not in (0, 1) or not version or version >= (1, 52):
            why = (f"espeak-ng {self.version} seeds its noise generator from the clock" if not version or version >= (1, 52)
                   else "only seeds 0 and 1 (libc's start state) are reproducible with it")
            raise DataError(
                f"the espeak-ng program cannot set the noise seed {params.seed} ({why}); install the PyPI wheel "
                "`espeakng-loader` to use the library backend, which sets any seed"
            )
        ssml = f'<speak><prosody range="{params.pitch_range}">{html.escape(text, quote=False)}</prosody></speak>'
        cmd = [self.executable, "-m", "-v", params.voice, "-s", str(params.rate), "-p", str(params.pitch),
               "-w", out, "--stdin"]
        return cmd, ssml.encode("utf-8")

    def synthesize(self, text: str, params: SynthParams) -> np.ndarray:
        """Speak ``text``; returns ``int16 [samples]`` at :attr:`sample_rate` (updated from the file).

        Raises:
            DataError: the program failed, or a setting it cannot honour (see :meth:`command`).
        """
        import soundfile as sf

        with tempfile.TemporaryDirectory(prefix="croma-espeak-") as tmp:
            out = os.path.join(tmp, "out.wav")
            cmd, stdin = self.command(text, params, out)
            proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120)
            if proc.returncode != 0 or not os.path.exists(out):
                msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                raise DataError(f"espeak-ng program failed for voice {params.voice!r}: {msg[0] if msg else proc.returncode}")
            wav, sr = sf.read(out, dtype="int16", always_2d=True)
        self.sample_rate = int(sr)
        return wav[:, 0].copy()


_BACKEND: EspeakLibrary | EspeakProgram | None = None
_BACKEND_PID: int | None = None


def get_backend(prefer: str = "auto") -> EspeakLibrary | EspeakProgram:
    """The espeak-ng backend of this process (created once per process and cached).

    Args:
        prefer: ``"auto"`` (library, else program), ``"library"`` or ``"program"``.

    Raises:
        DataError: neither the ``espeakng-loader`` library nor the ``espeak-ng`` program is usable.
    """
    global _BACKEND, _BACKEND_PID
    if prefer not in ("auto", "library", "program"):
        raise ValueError(f"prefer must be 'auto', 'library' or 'program', got {prefer!r}")
    if _BACKEND is not None and prefer in ("auto", _BACKEND.name):
        if _BACKEND_PID != os.getpid():  # inherited through fork: same handle, reload before speaking
            if isinstance(_BACKEND, EspeakLibrary):
                _BACKEND.mark_forked()
            _BACKEND_PID = os.getpid()
        return _BACKEND
    errors = []
    for kind in (("library", "program") if prefer == "auto" else (prefer,)):
        try:
            backend = EspeakLibrary() if kind == "library" else EspeakProgram()
        except DataError as exc:
            errors.append(str(exc))
            continue
        _BACKEND, _BACKEND_PID = backend, os.getpid()
        return backend
    raise DataError(f"no espeak-ng backend usable: {_INSTALL_HINT} ({'; '.join(errors)})")


def backend_cache_id(prefer: str = "auto") -> str | None:
    """:attr:`cache_id` of the backend :func:`get_backend` picks, or ``None`` when none is usable."""
    try:
        return get_backend(prefer).cache_id
    except DataError:
        return None


def backend_available() -> bool:
    """True when :func:`get_backend` would succeed."""
    try:
        get_backend()
    except DataError:
        return False
    return True
