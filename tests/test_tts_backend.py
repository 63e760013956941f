"""One TTS behaviour: both espeak-ng backends honour every per-utterance setting (or refuse it),
and the udhr-speech cache records the backend, so WAVs of two backends never mix."""

import json
import shutil
import stat
import sys
import textwrap

import numpy as np
import pytest

from episodes import tts
from episodes.datasets import udhr_speech as us
from episodes.errors import DataError


def _fake_program(tmp_path, version="1.51"):
    """An `espeak-ng` stand-in that logs its arguments and stdin and writes a short tone."""
    log = tmp_path / "args.json"
    fake = tmp_path / "espeak-ng"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys, numpy as np, soundfile as sf
        args = sys.argv[1:]
        if args == ["--version"]:
            print("eSpeak NG text-to-speech: {version}  Data at: /nowhere")
            sys.exit(0)
        text = sys.stdin.read()
        json.dump({{"args": args, "stdin": text}}, open({str(log)!r}, "w"))
        sf.write(args[args.index("-w") + 1], (0.1 * np.sin(np.arange(2205))).astype("float32"), 22050, subtype="PCM_16")
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake, log


def test_program_passes_every_setting(tmp_path):
    fake, log = _fake_program(tmp_path)
    prog = tts.EspeakProgram(str(fake))
    assert prog.version == "1.51" and prog.cache_id == "program-1.51"
    for seed in (0, 1):
        wav = prog.synthesize("a < b & c", tts.SynthParams("de+m3", rate=150, pitch=40, pitch_range=17, seed=seed))
        assert wav.dtype == np.int16 and wav.shape == (2205,)
        got = json.loads(log.read_text())
        args = got["args"]
        assert args[:7] == ["-m", "-v", "de+m3", "-s", "150", "-p", "40"] and args[-1] == "--stdin"
        assert got["stdin"] == '<speak><prosody range="17">a &lt; b &amp; c</prosody></speak>'


def test_program_refuses_a_seed_it_cannot_set(tmp_path):
    fake, log = _fake_program(tmp_path)
    prog = tts.EspeakProgram(str(fake))
    with pytest.raises(DataError) as info:
        prog.synthesize("hallo", tts.SynthParams("de", seed=5))
    msg = str(info.value)
    assert "\n" not in msg and "seed 5" in msg and "espeakng-loader" in msg
    assert not log.exists()  # refused before running the program
    (tmp_path / "new").mkdir()
    newer, _ = _fake_program(tmp_path / "new", version="1.52.0")
    with pytest.raises(DataError, match="clock"):
        tts.EspeakProgram(str(newer)).synthesize("hallo", tts.SynthParams("de", seed=0))


@pytest.mark.parametrize("field, value", [("rate", 10), ("pitch", 101), ("pitch_range", -1), ("seed", -3),
                                          ("voice", "de m3"), ("rate", 150.5)])
def test_both_backends_refuse_the_same_out_of_range_settings(tmp_path, field, value):
    params = dict(voice="de", rate=175, pitch=50, pitch_range=50, seed=0)
    params[field] = value
    bad = tts.SynthParams(**params)
    fake, log = _fake_program(tmp_path)
    with pytest.raises(DataError, match=field) as from_program:
        tts.EspeakProgram(str(fake)).synthesize("hallo", bad)
    with pytest.raises(DataError, match=field) as from_check:
        tts.check_params(bad)
    assert str(from_program.value) == str(from_check.value)
    if tts.backend_available() and tts.get_backend().name == "library":
        with pytest.raises(DataError) as from_library:
            tts.get_backend().synthesize("hallo", bad)
        assert str(from_library.value) == str(from_check.value)


def _backends():
    out = []
    try:
        out.append(tts.get_backend("library"))  # the process's one instance: libespeak-ng state is global
    except DataError:
        pass
    if shutil.which("espeak-ng"):
        prog = tts.EspeakProgram()
        if prog._version_tuple() < (1, 52):
            out.append(prog)
    return out


BACKENDS = _backends()
TEXT = "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen begabt."


def _f0(wav, sr):
    """Per-frame F0 (Hz) of the voiced frames, by autocorrelation (60-400 Hz)."""
    x = wav.astype(np.float64) / 32768
    hop, win, f0s = 256, 1024, []
    lo, hi = sr // 400, sr // 60
    for s in range(0, len(x) - win, hop):
        fr = x[s:s + win] - x[s:s + win].mean()
        if np.sqrt((fr ** 2).mean()) < 0.02:
            continue
        ac = np.correlate(fr, fr, "full")[win - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(sr / lag)
    assert len(f0s) > 50
    return np.array(f0s)


def _stats(backend, **kw):
    p = dict(voice="de+m3", rate=160, pitch=40, pitch_range=50, seed=0)
    p.update(kw)
    wav = backend.synthesize(TEXT, tts.SynthParams(**p))
    f0 = _f0(wav, backend.sample_rate)
    return {"median": float(np.median(f0)), "spread": float(np.percentile(f0, 90) - np.percentile(f0, 10)),
            "seconds": len(wav) / backend.sample_rate, "wav": wav}


@pytest.mark.skipif(not BACKENDS, reason="no espeak-ng backend")
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_setting_has_its_effect(backend):
    """Measured on the waveform: pitch moves F0, pitch range widens its spread, rate shortens the
    utterance, the voice variant changes F0, and the same settings give the same samples."""
    assert _stats(backend, pitch=80)["median"] > 1.3 * _stats(backend, pitch=20)["median"]
    narrow, wide = _stats(backend, pitch_range=5), _stats(backend, pitch_range=95)
    assert narrow["spread"] < 10 and wide["spread"] > 2.5 * max(narrow["spread"], 5.0)
    assert _stats(backend, rate=300)["seconds"] < 0.7 * _stats(backend, rate=100)["seconds"]
    assert _stats(backend, voice="de+f3")["median"] > 1.3 * _stats(backend, voice="de+m3")["median"]
    assert np.array_equal(_stats(backend)["wav"], _stats(backend)["wav"])


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both the library and an espeak-ng <= 1.51 program")
def test_program_and_library_agree_on_every_setting():
    lib, prog = BACKENDS
    for kw in ({}, {"pitch": 80}, {"pitch_range": 95}, {"pitch_range": 5}, {"rate": 300}, {"voice": "de+f3"}):
        a, b = _stats(lib, **kw), _stats(prog, **kw)
        assert abs(a["median"] - b["median"]) < 0.1 * a["median"], kw
        assert abs(a["spread"] - b["spread"]) < 0.25 * a["spread"] + 3.0, kw
        assert abs(a["seconds"] - b["seconds"]) < 0.15 * a["seconds"] + 0.5, kw


class _Fake:
    """A backend stand-in with a cache id; tone pitch follows the settings."""

    sample_rate = 16000

    def __init__(self, cache_id):
        self.name, self.cache_id, self.calls = "fake", cache_id, 0

    def synthesize(self, text, params):
        self.calls += 1
        t = np.arange(80 * len(text))
        return (3000 * np.sin(2 * np.pi * params.pitch * 4 * t / 16000)).astype(np.int16)


def test_cache_records_the_backend_and_never_mixes(tmp_path, monkeypatch):
    kw = dict(cache_dir=tmp_path, languages=["deu", "eng"], chunks_per_language=2, workers=0)
    a, b = _Fake("fake-a"), _Fake("fake-b")
    monkeypatch.setattr(us, "get_backend", lambda *x, **k: a)
    ds = us.load_udhr_speech(**kw)
    assert ds.meta["synthesised"] == 4 and a.calls == 4
    index = json.loads((tmp_path / "udhr-speech" / "v1" / "index.json").read_text())
    assert {e["backend"] for e in index.values()} == {"fake-a"} and {e["seed"] for e in index.values()} == {0}
    assert us.load_udhr_speech(**kw).meta["reused"] == 4 and a.calls == 4  # same backend: reused
    monkeypatch.setattr(us, "get_backend", lambda *x, **k: b)
    ds = us.load_udhr_speech(**kw)  # another backend: every WAV is made again, none mixed in
    assert ds.meta["synthesised"] == 4 and ds.meta["reused"] == 0 and b.calls == 4
    index = json.loads((tmp_path / "udhr-speech" / "v1" / "index.json").read_text())
    assert {e["backend"] for e in index.values()} == {"fake-b"}

    def none(*x, **k):
        raise DataError("no espeak-ng backend usable")

    monkeypatch.setattr(us, "get_backend", none)  # no engine here: a complete cache still loads
    assert us.load_udhr_speech(**kw).meta["reused"] == 4


def test_entries_without_a_backend_are_made_again(tmp_path, monkeypatch):
    kw = dict(cache_dir=tmp_path, languages=["deu"], chunks_per_language=2, workers=0)
    a = _Fake("fake-a")
    monkeypatch.setattr(us, "get_backend", lambda *x, **k: a)
    us.load_udhr_speech(**kw)
    path = tmp_path / "udhr-speech" / "v1" / "index.json"
    index = json.loads(path.read_text())
    for e in index.values():  # as written before the backend was recorded
        del e["backend"], e["seed"]
    path.write_text(json.dumps(index))
    assert us.load_udhr_speech(**kw).meta["synthesised"] == 2
