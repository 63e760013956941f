"""libespeak-ng through ctypes: :class:`EspeakLibrary`, the library backend of :mod:`episodes.tts`.

It loads ``libespeak-ng`` (from the PyPI wheel ``espeakng-loader``, which bundles the library
and its voice data) and drives it synchronously: ``espeak_Initialize`` with
``AUDIO_OUTPUT_SYNCHRONOUS``, a synth callback that collects the samples. espeak-ng keeps global
state and is not thread-safe: use one instance per *process* (:func:`episodes.tts.get_backend`
caches one per process), never share it between threads. Each utterance is spoken by a freshly
loaded library with fixed noise seeds, so the waveform is a pure function of (text, parameters)
and not of what the process said before. Re-exported from :mod:`episodes.tts`.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from episodes.errors import DataError
from episodes.synth_params import INSTALL_HINT as _INSTALL_HINT
from episodes.synth_params import SynthParams, check_params

__all__ = ["EspeakLibrary"]

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakINITIALIZE_DONT_EXIT = 0x8000
_espeakCHARS_UTF8 = 1
_POS_CHARACTER = 1
_espeakRATE, _espeakVOLUME, _espeakPITCH, _espeakRANGE = 1, 2, 3, 4
_EE_OK = 0


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
