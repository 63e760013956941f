"""Silent and (almost) empty audio clips are named once the data is decoded (they were accepted with
no word): ``episodes.prepare.quiet_audio`` on the log-mel rows, ``croma data prepare``'s note."""

import json

import numpy as np

from croma.bench_data import data_notes, quiet_lines
from croma.cli import main
from episodes.data import ModalityData
from episodes.frontends import FrontendSettings, LogMel
from episodes.prepare import quiet_audio


def _tone(seconds, sr=16000, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t) + np.random.default_rng(seed).normal(0, 0.01, t.shape)).astype(np.float32)


def test_silent_and_too_short_clips_are_found_from_the_log_mel():
    import torch

    st = FrontendSettings(max_frames=120)
    lm = LogMel(st.sample_rate, st.n_mels, st.n_fft, st.hop_length, st.max_frames)
    clips = {"silent": np.zeros(16000, np.float32), "dc": np.full(8000, 0.2, np.float32), "blip": _tone(0.02),
             "short": _tone(0.05), "word": _tone(0.8)}
    md = ModalityData(features=torch.stack([lm(w) for w in clips.values()]), labels=torch.zeros(5, dtype=torch.long),
                      clusters=torch.full((5,), -1), ids=list(clips))
    assert quiet_audio("audio:far", md, st) == {"count": 3, "of": 5, "ids": ["silent", "dc", "blip"], "seconds": 0.04}
    assert quiet_audio("text", md, st) is None
    assert quiet_audio("audio", ModalityData(features=md.features[3:], labels=md.labels[3:], clusters=md.clusters[3:],
                                             ids=md.ids[3:]), st) is None


def test_data_prepare_names_them(tmp_path, capsys):
    import soundfile as sf

    (tmp_path / "wav").mkdir()
    rows = []
    for c in range(6):
        for i in range(3):
            k = f"c{c}_{i}"
            wave = np.zeros(8000, np.float32) if k == "c2_1" else _tone(0.3 + 0.05 * c, seed=c * 3 + i)
            sf.write(str(tmp_path / "wav" / f"{k}.wav"), wave, 16000, subtype="PCM_16")
            rows.append({"id": k, "label": f"L{c}", "text": f"class {c} item {i}", "audio": f"wav/{k}.wav"})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["data", "prepare", "manifest", "--manifest", str(manifest), "--source", "text", "--target", "audio",
               "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    note = [line for line in out if line.startswith("note:")]
    assert note == ["note: 1 of 18 audio items hold under 0.04 s of sound, or are silent (e.g. 'c2_1'): they give the "
                    "encoders nothing to learn; check those files"]
    from episodes.datasets import load_benchmark

    bench = load_benchmark("manifest", manifest=manifest, source="text", target="audio", cache_dir=tmp_path / "cache")
    assert quiet_lines(bench) == note and note[0] in data_notes(bench)
