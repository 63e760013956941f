"""Hostile data files (issue causes 1, 4, 6, 10, 11, 12): bounded cost, one-line errors naming the file.

Every input is generated here, a few hundred bytes each.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_layouts as F  # noqa: E402

from croma.cli import main  # noqa: E402
from episodes.cache import FeatureCache, atomic_write, remove_stale_temps  # noqa: E402
from episodes.datasets import load_dataset  # noqa: E402
from episodes.errors import DataError  # noqa: E402
from episodes.frontends import MAX_SAMPLE_RATE, load_audio, resample_ratio  # noqa: E402


def _wav_bytes(n: int = 800, sr: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(n) / 16000.0
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _with_rate(raw: bytes, rate: int) -> bytes:
    """The same canonical 44-byte-header WAV with another sample rate in its header."""
    b = bytearray(raw)
    assert b[12:16] == b"fmt "
    struct.pack_into("<I", b, 24, rate)
    struct.pack_into("<I", b, 28, (rate * 2) & 0xFFFFFFFF)
    return bytes(b)


# ---------------------------------------------------------------- cause 1: sample rates
def test_coprime_sample_rate_resamples_in_bounded_time_and_memory(tmp_path):
    p = tmp_path / "odd.wav"
    p.write_bytes(_with_rate(_wav_bytes(800), 48001))  # 1.6 KB; gcd(48001, 16000) = 1
    assert p.stat().st_size < 2000
    tracemalloc.start()
    t0 = time.perf_counter()
    w = load_audio(p, 16000)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0 and peak < 64 * 2**20  # was 40 s and 13.3 GB
    assert w.dtype == np.float32 and abs(w.shape[0] - round(800 * 16000 / 48001)) <= 1
    for sr in (48001, 44099, 12345, 383999, 1000, 16001):
        p_, q_ = resample_ratio(sr, 16000)
        assert max(p_, q_) <= 1000 and abs(q_ / p_ - 16000 / sr) / (16000 / sr) < 1e-3
    assert resample_ratio(44100, 16000) == (441, 160)  # common rates stay exact


def test_absurd_sample_rate_is_one_line_naming_the_file(tmp_path, capsys):
    raw = _wav_bytes(200)
    for rate in (1073741823, MAX_SAMPLE_RATE + 1, 10):
        p = tmp_path / f"r{rate}.wav"
        p.write_bytes(_with_rate(raw, rate))
        with pytest.raises(DataError, match=f"r{rate}.wav.*sample rate {rate} Hz"):
            load_audio(p, 16000)


# ---------------------------------------------------------------- cause 10: truncated WAV
def test_truncated_wav_is_refused(tmp_path):
    raw = _wav_bytes(800)  # header: 1600 data bytes
    p = tmp_path / "cut.wav"
    p.write_bytes(raw[: 44 + 778])
    with pytest.raises(DataError, match=r"cut.wav: truncated audio file .*1600 data bytes but only 778"):
        load_audio(p, 16000)
    ok = tmp_path / "ok.wav"
    ok.write_bytes(raw)
    assert load_audio(ok, 16000).shape == (800,)


def test_truncated_wav_in_manifest_is_reported(tmp_path, capsys):
    path = F.write_manifest(tmp_path)
    wav = tmp_path / "wav" / "a0.wav"
    wav.write_bytes(wav.read_bytes()[:-100])
    rc = main(["data", "prepare", "manifest", "--manifest", str(path), "--source", "text", "--target", "audio",
               "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert rc == 2 and err.startswith("error: ") and "a0.wav" in err and "truncated" in err


# ---------------------------------------------------------------- cause 6: malformed layouts
def _cifar_with(tmp_path, meta=None, batch_patch=None):
    F.write_cifar10(tmp_path)
    F.write_esc50(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    if meta is not None:
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    if batch_patch is not None:
        b = pickle.loads((folder / "data_batch_1").read_bytes())
        b.update(batch_patch)
        (folder / "data_batch_1").write_bytes(pickle.dumps(b, protocol=2))


@pytest.mark.parametrize("case", ["labels-scalar", "labels-dict", "label-names-int", "labels-float"])
def test_malformed_cifar_is_one_line(case, tmp_path, capsys):
    if case == "labels-scalar":
        _cifar_with(tmp_path, batch_patch={b"labels": 3})
    elif case == "labels-dict":
        _cifar_with(tmp_path, batch_patch={b"labels": {1: 2}})
    elif case == "labels-float":
        _cifar_with(tmp_path, batch_patch={b"labels": [0.5, 1.5]})
    else:
        _cifar_with(tmp_path, meta={b"label_names": 7})
    rc = main(["data", "inspect", "cifar-esc50", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    name = "batches.meta" if case == "label-names-int" else "data_batch_1"
    assert rc == 2 and name in err and err.count("\n") == 1 and "Traceback" not in err


def test_esc50_csv_huge_field_is_one_line(tmp_path, capsys):
    F.write_cifar10(tmp_path)
    F.write_esc50(tmp_path)
    csv_path = tmp_path / "ESC-50-master" / "meta" / "esc50.csv"
    lines = csv_path.read_text().splitlines()
    lines.insert(2, "x" * 200_000 + ",1,0,dog,False,1,A")
    csv_path.write_text("\n".join(lines) + "\n")
    rc = main(["data", "inspect", "cifar-esc50", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "esc50.csv" in err and err.count("\n") == 1 and len(err) < 500


def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    man = tmp_path / "m.jsonl"
    man.write_text('{"id": "a", "label": ' + deep + ', "text": "x"}\n')
    rc = main(["data", "inspect", "manifest", "--manifest", str(man), "--source", "text", "--target", "audio"])
    err = capsys.readouterr().err
    assert rc == 2 and "m.jsonl: line 1" in err and err.count("\n") == 1
    F.write_yummly(tmp_path)
    meta = tmp_path / "Yummly28K" / "metadata27638" / "meta00000.json"
    meta.write_text('{"attributes": ' + deep + "}")
    rc = main(["data", "inspect", "yummly", "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "meta00000.json" in err and err.count("\n") == 1


# ---------------------------------------------------------------- cause 11: manifest value types
@pytest.mark.parametrize("label", ['{"a": [1, 2]}', "NaN", "[1]", "true", "1.5", '"  "'])
def test_manifest_label_must_be_text_or_integer(label, tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text(f'{{"id": "a", "label": {label}, "text": "x"}}\n')
    with pytest.raises(DataError, match="m.jsonl: line 1"):
        load_dataset("manifest", manifest=str(man), source="text", target="audio")


def test_manifest_integer_labels_still_accepted(tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps({"id": i, "label": i % 2, "cluster": 3, "text": f"t{i}", "image": "x.png"}) + "\n"
                           for i in range(4)))
    F.write_jpeg(tmp_path / "x.png")
    ds = load_dataset("manifest", manifest=str(man), source="text", target="image")
    assert sorted({it.label for it in ds.items}) == ["0", "1"] and ds.items[0].cluster == "3"
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"id": "a", "label": "x", "cluster": {"k": 1}, "text": "x"}\n')
    with pytest.raises(DataError, match="cluster must be"):
        load_dataset("manifest", manifest=str(bad), source="text", target="image")


# ---------------------------------------------------------------- cause 4: cache that cannot be written
def test_cache_entry_replaced_by_folder_is_one_line(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    p = cache.path("ns", "k")
    p.mkdir(parents=True)
    calls = []
    with pytest.raises(DataError, match=r"k\.pt: feature cache entry is a folder"):
        cache.get_or_build("ns", "k", lambda: calls.append(1) or {"x": torch.ones(1)})
    assert calls == []  # refused before the (possibly long) build


def test_unwritable_cache_fails_before_building(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache folder belongs (like a read-only disk: cannot write)
    cache = FeatureCache(blocker / "cache")
    calls = []
    with pytest.raises(DataError, match="feature cache is not writable"):
        cache.get_or_build("ns", "k", lambda: calls.append(1) or {"x": torch.ones(1)})
    assert calls == []
    path = F.write_manifest(tmp_path / "m")
    monkeypatch.setenv("CROMA_CACHE", str(blocker / "cache"))
    rc = main(["data", "prepare", "manifest", "--manifest", str(path), "--source", "text", "--target", "audio"])
    err = capsys.readouterr().err
    assert rc == 2 and str(blocker) in err and err.count("\n") == 1


def test_cache_full_disk_leaves_no_temp_file(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "c")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DataError, match="(?i)no space left"):
        cache.save("ns", "k", {"x": torch.ones(3)})
    assert os.listdir(cache.path("ns", "k").parent) == []


# ---------------------------------------------------------------- cause 12: temp files of killed writers
_KILLED_WRITER = r"""
import os, sys, time
from episodes.cache import atomic_write
def write(fh):
    fh.write(b"half")
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_sigkill_during_atomic_write_leaves_temp_that_next_write_removes(tmp_path):
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout.readline().strip() == b"writing"
    finally:
        proc.kill()
        proc.wait()
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()
    # a live writer's temporary file (this process) and other targets' files are kept
    mine = tmp_path / f".last.pt.{left[0].split('.')[3]}.{os.getpid()}.live.tmp"
    mine.write_bytes(b"in progress")
    other = tmp_path / ".best.pt.somehost.1.x.tmp"
    other.write_bytes(b"x")
    atomic_write(target, lambda fh: fh.write(b"whole"))
    assert target.read_bytes() == b"whole"
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".tmp")) == sorted([mine.name, other.name])
    old = time.time() - 2 * 24 * 3600
    os.utime(other, (old, old))  # another host's leftover: removed once it is old
    assert remove_stale_temps(tmp_path / "best.pt") == 1 and not other.exists()


def test_checkpoint_and_cache_writes_clean_leftovers(tmp_path):
    from croma.checkpoint import FORMAT, save_checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    from episodes.cache import _host

    stale = tmp_path / f".last.pt.{_host()}.{pid}.abc.tmp"
    stale.write_bytes(b"half")
    save_checkpoint(tmp_path / "last.pt", {"format": FORMAT, "model": {"w": torch.ones(1)}, "iteration": 1})
    assert not stale.exists()
    cache = FeatureCache(tmp_path / "c")
    p = cache.path("ns", "k")
    p.parent.mkdir(parents=True)
    stale2 = p.parent / f".{p.name}.{_host()}.{pid}.abc.tmp"
    stale2.write_bytes(b"half")
    cache.save("ns", "k", {"x": torch.ones(1)})
    assert not stale2.exists() and cache.load("ns", "k")["x"].tolist() == [1.0]
