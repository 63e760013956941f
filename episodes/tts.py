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

import ctypes
import html
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from episodes.errors import DataError

__all__ = [
    "SynthParams",
    "EspeakLibrary",
    "EspeakProgram",
    "get_backend",
    "backend_available",
    "backend_cache_id",
    "check_params",
]

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakINITIALIZE_DONT_EXIT = 0x8000
_espeakCHARS_UTF8 = 1
_POS_CHARACTER = 1
_espeakRATE, _espeakVOLUME, _espeakPITCH, _espeakRANGE = 1, 2, 3, 4
_EE_OK = 0

_INSTALL_HINT = (
    "install the PyPI wheel `espeakng-loader` (pip install espeakng-loader; it bundles "
    "libespeak-ng and its voices) or put the `espeak-ng` program on PATH"
)


@dataclass(frozen=True)
class SynthParams:
    """How one utterance is spoken.

    Attributes:
        voice: espeak-ng voice, e.g. ``"de"`` or ``"de+m3"`` (language + optional variant).
        rate: speaking rate in words per minute (espeak-ng accepts 80-450).
        pitch: base pitch 0-100 (espeak default 50).
        pitch_range: pitch range 0-100 (espeak default 50; 0 = monotone).
        seed: seed of espeak-ng's noise generator (the library reseeds it before every
            utterance, so the waveform does not depend on what was spoken before).
    """

    voice: str
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    seed: int = 0


def check_params(params: SynthParams) -> None:
    """Both backends accept the same settings (espeak-ng's ranges) and refuse the rest.

    Raises:
        DataError: a field outside espeak-ng's range (the field and the range are named).
    """
    if not params.voice or any(c.isspace() for c in params.voice):
        raise DataError(f"espeak-ng voice must be a voice name such as 'de' or 'de+m3', got {params.voice!r}")
    for field, lo, hi in (("rate", 80, 450), ("pitch", 0, 100), ("pitch_range", 0, 100), ("seed", 0, 2**31 - 1)):
        value = getattr(params, field)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise DataError(f"espeak-ng {field} must be an integer in [{lo}, {hi}], got {value!r}")


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakLibrary:
    """libespeak-ng through ctypes (one instance per process; not thread-safe).

    Args:
        library_path: path of ``libespeak-ng.so`` (default: the ``espeakng-loader`` wheel's).
        data_path: the ``espeak-ng-data`` directory (default: the wheel's).

    Raises:
        DataError: the library or its data cannot be loaded / initialised.
    """

    name = "library"

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        if library_path is None or data_path is None:
            try:
                import espeakng_loader  # type: ignore[import-not-found]
            except ImportError as exc:
                raise DataError(f"espeak-ng library not available: {_INSTALL_HINT}") from exc
            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        self.library_path, self.data_path = str(library_path), str(data_path)
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()

        def _collect(wav, numsamples, events):  # noqa: ARG001 - ctypes signature
            if numsamples > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
            return 0

        self._callback = _SYNTH_CALLBACK(_collect)  # keep a reference: freed callbacks crash
        try:
            self._srand = ctypes.CDLL(None).srand  # espeak-ng also draws from libc rand()
            self._srand.argtypes = [ctypes.c_uint]
            self._srand.restype = None
        except (OSError, AttributeError):  # pragma: no cover - non-POSIX
            self._srand = None
        self._lib = None
        self._dirty = False
        self._load()

    def _load(self) -> None:
        """dlopen + ``espeak_Initialize``: a library instance that has not spoken yet."""
        try:
            lib = ctypes.CDLL(self.library_path)
        except OSError as exc:
            raise DataError(f"cannot load espeak-ng library {self.library_path}: {exc}") from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
            self._set_seed.restype = None
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), _espeakINITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise DataError(f"espeak-ng failed to initialise with data {self.data_path}: {_INSTALL_HINT}")
        lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = int(rate)
        self.version = (lib.espeak_Info(None) or b"unknown").decode("ascii", "replace")
        self._lib = lib
        self._dirty = False

    def _fresh(self) -> None:
        """Start from a library that has not spoken: espeak-ng keeps state between utterances
        (pitch flutter, filter memories) in static variables, so the same text would give a
        slightly different waveform depending on what was said before. Unloading the library
        (dlclose) and loading it again resets them (~1 ms). If the library is loaded twice in
        this process (refcount > 1) the reset has no effect and output may depend on history."""
        if not self._dirty:
            return
        try:
            import _ctypes

            self._lib.espeak_Terminate()
            _ctypes.dlclose(self._lib._handle)
        except (ImportError, AttributeError, OSError):  # pragma: no cover - platform without dlclose
            self._dirty = False
            return
        self._lib = None
        self._load()

    @property
    def cache_id(self) -> str:
        """``"library-<engine version>"``: recorded with cached audio so that backends never mix."""
        return f"{self.name}-{self.version}"

    def mark_forked(self) -> None:
        """Called in a forked child: reload before the next utterance (state came from the parent)."""
        self._dirty = True

    def voices(self) -> list[str]:
        """Identifiers of all voices espeak-ng knows (``["af", "am", ..., "roa/pt-BR"...]``)."""
        arr = self._lib.espeak_ListVoices(None)
        out, i = [], 0
        while arr[i]:
            ident = arr[i].contents.identifier
            out.append(ident.decode() if ident else "")
            i += 1
        return out

    def _set(self, params: SynthParams) -> None:
        if self._lib.espeak_SetVoiceByName(params.voice.encode()) != _EE_OK:
            raise DataError(f"espeak-ng has no voice {params.voice!r}")
        for key, value in ((_espeakRATE, params.rate), (_espeakPITCH, params.pitch), (_espeakRANGE, params.pitch_range)):
            self._lib.espeak_SetParameter(key, int(value), 0)

    def phonemes(self, text: str, voice: str) -> str:
        """espeak-ng's phoneme transcription of ``text`` (IPA) with ``voice``; language
        switches show as ``(en)`` etc."""
        with self._lock:
            self._dirty = True
            self._set(SynthParams(voice))
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            parts = []
            while ptr.value:
                res = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), _espeakCHARS_UTF8, 0x02)
                if res:
                    parts.append(res.decode("utf-8", "replace"))
            return " ".join(parts)

    def synthesize(self, text: str, params: SynthParams) -> np.ndarray:
        """Speak ``text``.

        Returns:
            ``int16 [samples]`` mono waveform at :attr:`sample_rate`.

        Raises:
            DataError: unknown voice or a synthesis failure.
        """
        check_params(params)
        data = text.encode("utf-8") + b"\0"
        with self._lock:
            self._fresh()
            self._dirty = True
            self._set(params)
            if self._set_seed is not None:
                self._set_seed(params.seed)
            if self._srand is not None:
                self._srand(params.seed & 0xFFFFFFFF)
            self._chunks = []
            err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None)
            if err != _EE_OK:
                raise DataError(f"espeak-ng synthesis failed (error {err}) for voice {params.voice!r}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


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
