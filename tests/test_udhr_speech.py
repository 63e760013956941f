"""udhr-speech: shipped texts, espeak-ng synthesis, cache reuse / rebuild, language split."""

import os
import stat
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from episodes import tts  # noqa: E402
from episodes.datasets import udhr_speech as us  # noqa: E402
from episodes.errors import DataError  # noqa: E402

needs_backend = pytest.mark.skipif(
    not tts.backend_available(),
    reason="no espeak-ng backend: install the PyPI wheel espeakng-loader or the espeak-ng program",
)

LANGS = ["deu", "eng"]


# ---------------------------------------------------------------- shipped texts
def test_shipped_texts():
    data = us.load_udhr_texts()
    langs = data["languages"]
    codes = [lang["code"] for lang in langs]
    assert len(codes) >= 80 and len(set(codes)) == len(codes)
    voices = {lang["voice"].split("+")[0] for lang in langs}
    assert not {"chr", "mya", "cmn", "jpn", "yue"} & set(codes)
    assert not {"chr", "my", "cmn", "ja", "yue"} & voices
    for lang in langs:
        assert len(lang["chunks"]) >= 30, lang["code"]
        assert all(10 <= len(c) <= 80 for c in lang["chunks"]), lang["code"]
        assert len(set(lang["chunks"])) == len(lang["chunks"])
    eng = next(lang for lang in langs if lang["code"] == "eng")
    assert eng["chunks"][0] == "All human beings are born free and equal in dignity and rights."
    assert us.udhr_languages() == sorted(codes)


def test_texts_missing_or_malformed(tmp_path):
    with pytest.raises(DataError, match="nope.json.gz"):
        us.load_udhr_texts(tmp_path / "nope.json.gz")
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="bad.json.gz"):
        us.load_udhr_texts(bad)


# ---------------------------------------------------------------- split
def test_class_split_disjoint_deterministic():
    langs = us.udhr_languages()
    a = us.udhr_class_split(langs, seed=0)
    b = us.udhr_class_split(list(reversed(langs)), seed=0)
    assert a == b
    tr, va, te = (set(a[k]) for k in ("meta_train", "meta_val", "meta_test"))
    assert not (tr & va or tr & te or va & te)
    assert tr | va | te == set(langs)
    n = len(langs)
    assert len(te) == round(0.18 * n) and len(va) == round(0.135 * n)
    if n == 88:
        assert (len(tr), len(va), len(te)) == (60, 12, 16)
    assert us.udhr_class_split(langs, seed=1) != a
    assert us.udhr_class_split(["eng", "deu"], seed=0) == {"meta_train": ["deu", "eng"], "meta_val": [], "meta_test": []}


# ---------------------------------------------------------------- parameters
def test_synthesis_params_pure_and_varied():
    p = [us.synthesis_params(0, "eng", k, "en") for k in range(20)]
    assert p == [us.synthesis_params(0, "eng", k, "en") for k in range(20)]
    assert len({(q.voice, q.rate, q.pitch) for q in p}) == 20  # not one waveform per class
    assert len({q.voice for q in p}) >= 4
    for q in p:
        assert q.voice.startswith("en+") and q.voice[3:] in us.VARIANTS
        assert 130 <= q.rate <= 210 and 30 <= q.pitch <= 70 and 30 <= q.pitch_range <= 80
    assert [us.synthesis_params(1, "eng", k, "en") for k in range(20)] != p
    assert us.synthesis_params(0, "deu", 0, "de") != us.synthesis_params(0, "eng", 0, "de")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="chunks_per_language"):
        us.load_udhr_speech(cache_dir=tmp_path, chunks_per_language=0)
    with pytest.raises(ValueError, match="chunks_per_language"):
        us.load_udhr_speech(cache_dir=tmp_path, chunks_per_language=31)
    with pytest.raises(ValueError, match="xxx"):
        us.load_udhr_speech(cache_dir=tmp_path, languages=["eng", "xxx"])
    with pytest.raises(ValueError, match="workers"):
        us.load_udhr_speech(cache_dir=tmp_path, workers=-1)


# ---------------------------------------------------------------- backends
def test_no_backend_error(monkeypatch):
    monkeypatch.setattr(tts, "_BACKEND", None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(DataError) as exc:
        tts.get_backend()
    msg = str(exc.value)
    assert "espeakng-loader" in msg and "espeak-ng" in msg and "\n" not in msg


def test_program_backend_command_line(tmp_path, monkeypatch):
    """The program fallback calls `espeak-ng -m -v V -s RATE -p PITCH -w OUT --stdin` with the pitch
    range in SSML (fake program)."""
    log = tmp_path / "args.txt"
    fake = tmp_path / "espeak-ng"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, numpy as np, soundfile as sf
        args = sys.argv[1:]
        if args == ["--version"]:
            print("eSpeak NG text-to-speech: 1.51  Data at: /nowhere")
            sys.exit(0)
        text = sys.stdin.read()
        open({str(log)!r}, "w").write(" ".join(args) + "|" + text)
        sf.write(args[args.index("-w") + 1], (0.1 * np.sin(np.arange(2205))).astype("float32"), 22050, subtype="PCM_16")
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    prog = tts.EspeakProgram(str(fake))
    wav = prog.synthesize("hallo welt", tts.SynthParams("de+m3", rate=150, pitch=40))
    assert wav.dtype == np.int16 and wav.shape == (2205,) and prog.sample_rate == 22050
    args, text = log.read_text().split("|")
    assert args.split() == ["-m", "-v", "de+m3", "-s", "150", "-p", "40", "-w", args.split()[8], "--stdin"]
    assert text == '<speak><prosody range="50">hallo welt</prosody></speak>'
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="espeak-ng"):
        tts.EspeakProgram()


# ---------------------------------------------------------------- synthesis + cache
@needs_backend
def test_synthesis_format_and_reference(tmp_path):
    ds = us.load_udhr_speech(cache_dir=tmp_path, languages=LANGS, chunks_per_language=2, workers=0)
    assert (ds.name, ds.source, ds.target) == ("udhr-speech", "text", "audio")
    assert [it.id for it in ds.items] == ["deu-0", "deu-1", "eng-0", "eng-1"]
    assert [it.label for it in ds.items] == ["deu", "deu", "eng", "eng"]
    assert len(ds.strong_pair_items()) == 4
    assert ds.meta["synthesised"] == 4 and ds.meta["reused"] == 0
    assert ds.meta["class_split"]["meta_train"] == LANGS
    texts = {lang["code"]: lang for lang in us.load_udhr_texts()["languages"]}
    backend = tts.get_backend()
    for it in ds.items:
        path = it.modalities["audio"]
        code, k = it.label, int(it.id.split("-")[1])
        assert path == str(tmp_path / "udhr-speech" / "v1" / code / f"{k}.wav")
        assert it.modalities["text"] == texts[code]["chunks"][k]
        info = sf.info(path)
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        wav, _ = sf.read(path, dtype="float32")
        assert 1.0 < len(wav) / 16000 < 12.0
        assert float(np.sqrt(np.mean(wav**2))) > 0.01
        # reference: direct synthesis with the recorded parameters, resampled, quantised
        params = us.synthesis_params(0, code, k, texts[code]["voice"])
        ref = us._resample(backend.synthesize(it.modalities["text"], params), backend.sample_rate, 16000)
        assert wav.shape == ref.shape
        assert np.abs(wav - ref).max() <= 1.0 / 32768 + 1e-6
    # two chunks of one language are not one waveform
    a, _ = sf.read(ds.items[0].modalities["audio"])
    b, _ = sf.read(ds.items[1].modalities["audio"])
    assert a.shape != b.shape or not np.allclose(a, b)
    # no temp files left behind
    assert not [f for f in os.listdir(tmp_path / "udhr-speech" / "v1" / "deu") if f.endswith(".tmp")]


@needs_backend
def test_cache_reuse_and_rebuild(tmp_path):
    kw = dict(cache_dir=tmp_path, languages=LANGS, chunks_per_language=2, workers=0)
    ds = us.load_udhr_speech(**kw)
    paths = [it.modalities["audio"] for it in ds.items]
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    ds2 = us.load_udhr_speech(**kw)
    assert ds2.meta["synthesised"] == 0 and ds2.meta["reused"] == 4
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes
    good = sf.read(paths[0])[0]
    # corrupt one (truncated) and another (garbage): both rebuilt, the rest reused
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(data[: len(data) // 2])
    open(paths[3], "wb").write(b"garbage" * 100)
    ds3 = us.load_udhr_speech(**kw)
    assert ds3.meta["synthesised"] == 2 and ds3.meta["reused"] == 2
    assert np.array_equal(sf.read(paths[0])[0], good)
    assert sf.info(paths[3]).frames > 16000
    # other seed -> other voice parameters -> synthesised once into files of its own; both seeds'
    # files then stay (going back and forth synthesises nothing)
    ds4 = us.load_udhr_speech(seed=1, **kw)
    assert ds4.meta["synthesised"] == 4
    assert all(it.modalities["audio"].endswith(".s1.wav") for it in ds4.items)
    assert us.load_udhr_speech(**kw).meta["synthesised"] == 0
    assert us.load_udhr_speech(seed=1, **kw).meta["synthesised"] == 0
    assert [os.stat(p).st_mtime_ns for p in paths[1:3]] == mtimes[1:3]  # seed 0's files untouched


@needs_backend
def test_process_pool_matches_in_process(tmp_path):
    kw = dict(languages=LANGS, chunks_per_language=4)
    a = us.load_udhr_speech(cache_dir=tmp_path / "a", workers=0, **kw)
    b = us.load_udhr_speech(cache_dir=tmp_path / "b", workers=2, **kw)
    assert b.meta["synthesised"] == 8
    for x, y in zip(a.items, b.items):
        assert x.id == y.id
        assert np.array_equal(sf.read(x.modalities["audio"])[0], sf.read(y.modalities["audio"])[0])


class _FakeBackend:
    """Stands in for espeak-ng: a tone whose length follows the text; silence for English."""

    name = "fake"
    sample_rate = 16000

    def synthesize(self, text, params):
        if params.voice.startswith("en+"):
            return np.zeros(1600, dtype=np.int16)
        t = np.arange(160 * len(text))
        return (3000 * np.sin(2 * np.pi * params.pitch * 4 * t / 16000)).astype(np.int16)


def test_skip_bad_and_error_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setattr(us, "get_backend", lambda *a, **k: _FakeBackend())
    kw = dict(cache_dir=tmp_path, languages=LANGS, chunks_per_language=2, workers=0)
    with pytest.raises(DataError, match=r"synthesis failed for 2 utterance\(s\), first eng/0: .*silence"):
        us.load_udhr_speech(**kw)
    ds = us.load_udhr_speech(skip_bad=True, **kw)
    assert [it.id for it in ds.items] == ["deu-0", "deu-1"]
    assert ds.meta["skipped"] == 2 and ds.meta["backend"] == "fake"
    text = ds.items[0].modalities["text"]
    assert sf.info(ds.items[0].modalities["audio"]).frames == 160 * len(text)  # same rate: no resampling
    # the failed ones are retried next time, the good ones reused
    ds2 = us.load_udhr_speech(skip_bad=True, **kw)
    assert ds2.meta["reused"] == 2 and ds2.meta["skipped"] == 2
