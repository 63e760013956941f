"""What both espeak-ng backends are asked to do: :class:`SynthParams` and :func:`check_params`.

Shared by :class:`~episodes.espeak_library.EspeakLibrary` and
:class:`~episodes.tts.EspeakProgram`; everything here is re-exported from :mod:`episodes.tts`,
the public home. ``SynthParams.__module__`` stays ``"episodes.tts"``, so a pickled
``SynthParams`` (the synthesis jobs handed to worker processes) is byte-for-byte what it was
before the class moved here, and still loads by its public path.
"""

from __future__ import annotations

from dataclasses import dataclass

from episodes.errors import DataError

__all__ = ["INSTALL_HINT", "SynthParams", "check_params"]

INSTALL_HINT = (
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


SynthParams.__module__ = "episodes.tts"  # its public path (pickles, docs), re-exported there


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
