"""Front-ends, feature cache and restricted unpickler."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_layouts as F  # noqa: E402

from episodes.cache import FeatureCache, default_cache_dir, hash_key, inputs_digest  # noqa: E402
from episodes.errors import DataError  # noqa: E402
from episodes.frontends import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrontendSettings,
    LogMel,
    images_from_arrays,
    load_audio,
    load_image,
    text_to_bytes,
)
from episodes.pickle_safe import load_restricted_pickle  # noqa: E402


# ---------------------------------------------------------------- text
def test_text_to_bytes_hand_values():
    out = text_to_bytes(["ab", "é", "abcdef"], max_len=4)
    assert out.dtype == torch.long and out.shape == (3, 4)
    assert out[0].tolist() == [ord("a") + 1, ord("b") + 1, 0, 0]
    assert out[1].tolist() == [0xC3 + 1, 0xA9 + 1, 0, 0]  # UTF-8 of é
    assert out[2].tolist() == [ord(c) + 1 for c in "abcd"]  # truncated


def test_text_to_bytes_rejects_non_string():
    with pytest.raises(DataError, match="item 1"):
        text_to_bytes(["ok", 3])


# ---------------------------------------------------------------- audio
def test_load_audio_mono_and_resample(tmp_path):
    import soundfile as sf
    import torchaudio.functional as AF

    sr = 8000
    left = np.linspace(-0.5, 0.5, 800).astype(np.float32)
    right = np.full(800, 0.25, dtype=np.float32)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), sr, subtype="FLOAT")
    same = load_audio(tmp_path / "st.wav", sr)
    np.testing.assert_allclose(same, (left + right) / 2, atol=1e-7)
    up = load_audio(tmp_path / "st.wav", 16000)
    ref = AF.resample(torch.from_numpy((left + right) / 2), 1, 2).numpy()
    assert up.shape == (1600,) and up.dtype == np.float32
    np.testing.assert_allclose(up, ref, atol=1e-6)
    # a decoded waveform with its rate (soundfile.read's result) gives what the file gives
    assert np.array_equal(load_audio(sf.read(tmp_path / "st.wav", dtype="float32"), 16000), up)
    np.testing.assert_allclose(load_audio((torch.from_numpy((left + right) / 2), 8000), 16000), up, rtol=0, atol=1e-7)
    channels_first = torch.from_numpy(np.stack([left, right]))  # torchaudio.load's layout
    np.testing.assert_allclose(load_audio((channels_first, 8000), 16000), up, rtol=0, atol=1e-7)
    with pytest.raises(DataError, match="sample rate in Hz"):
        load_audio((left, "8000"), 16000)
    with pytest.raises(DataError, match="outside the supported"):
        load_audio((left, 10), 16000)


def test_load_audio_truncated_and_missing(tmp_path):
    F.write_wav(tmp_path / "ok.wav", seconds=0.05)
    raw = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "trunc.wav").write_bytes(raw[:30])
    with pytest.raises(DataError, match="trunc.wav"):
        load_audio(tmp_path / "trunc.wav", 16000)
    with pytest.raises(DataError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav", 16000)


def test_logmel_matches_naive_reference():
    import torchaudio.transforms as AT

    g = torch.Generator().manual_seed(0)
    wav = torch.randn(16000 // 4, generator=g) * 0.1  # 0.25 s -> 26 frames
    lm = LogMel(16000, n_mels=8, n_fft=400, hop_length=160, max_frames=40)
    out = lm(wav.numpy())
    assert out.shape == (8, 40) and out.dtype == torch.float32
    ref = torch.log(AT.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=8)(wav) + 1e-6)
    frames = ref.shape[1]
    ref = ref - ref.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out[:, :frames], ref, atol=1e-4, rtol=1e-4)
    assert torch.all(out[:, frames:] == 0)
    cropped = LogMel(16000, n_mels=8, max_frames=10)(wav)
    assert cropped.shape == (8, 10)
    torch.testing.assert_close(cropped.mean(dim=1), torch.zeros(8), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- images
def test_load_image_matches_naive(tmp_path):
    from PIL import Image

    F.write_jpeg(tmp_path / "a.jpg", seed=3, size=(40, 30))
    x = load_image(tmp_path / "a.jpg", size=16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    arr = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB").resize((16, 16), Image.BILINEAR), dtype=np.float64)
    for c in range(3):
        ref = (arr[:, :, c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[c].numpy(), ref, atol=1e-5)


def test_load_image_truncated(tmp_path):
    F.write_jpeg(tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:40])
    with pytest.raises(DataError, match="bad.jpg"):
        load_image(tmp_path / "bad.jpg")


def test_images_from_arrays_layout():
    a = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    x = images_from_arrays(a, size=4)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4, 4)
    assert x[1, 2, 3, 0].item() == a[1, 3, 0, 2]
    assert images_from_arrays(a, size=2).shape == (2, 3, 2, 2)


def test_image_arrays_are_scaled_by_their_dtype():
    """uint8 0-255, uint16 0-65535, bool, other integers in 0-255 and floats in [0, 1] all give the same
    uint8 image; a float array on the 0-255 scale (or out of range) is refused, not read as white."""
    from episodes.errors import DataError

    a = np.random.default_rng(0).integers(0, 256, size=(2, 4, 4, 3)).astype(np.uint8)
    want = images_from_arrays(a, size=4)
    assert torch.equal(images_from_arrays(a.astype(np.float32) / 255.0, size=4), want)
    assert torch.equal(images_from_arrays(a.astype(np.float64) / 255.0, size=4), want)
    assert torch.equal(images_from_arrays(a.astype(np.uint16) * 257, size=4), want)
    assert torch.equal(images_from_arrays(a.astype(np.int64), size=4), want)
    assert torch.equal(images_from_arrays(a > 127, size=4), images_from_arrays((a > 127).astype(np.uint8) * 255, size=4))
    for bad, needle in ((a.astype(np.float32), r"values in \[0, 1\] \(got 0 to 25"), (a.astype(np.int64) - 5, "0-255"),
                        (np.full((1, 2, 2, 3), np.nan, np.float32), "non-finite")):
        with pytest.raises(DataError, match=needle):
            images_from_arrays(bad, size=4)


def test_frontend_settings_validation():
    with pytest.raises(ValueError, match="max_frames"):
        FrontendSettings(max_frames=0)
    assert FrontendSettings().for_modality("audio")["n_mels"] == 40


# ---------------------------------------------------------------- cache
def test_cache_roundtrip_and_rebuild_after_corruption(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"features": torch.arange(12.0).view(3, 4), "ok": torch.tensor([True, False, True])}

    key = hash_key({"a": 1})
    t1, s1 = cache.get_or_build("ds/audio", key, build)
    t2, s2 = cache.get_or_build("ds/audio", key, build)
    assert (s1, s2) == ("built", "hit") and len(calls) == 1
    torch.testing.assert_close(t2["features"], t1["features"])
    assert t2["ok"].tolist() == [True, False, True]
    path = cache.path("ds/audio", key)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated
    t3, s3 = cache.get_or_build("ds/audio", key, build)
    assert s3 == "rebuilt" and len(calls) == 2
    torch.testing.assert_close(t3["features"], t1["features"])
    flipped = bytearray(path.read_bytes())
    flipped[-5] ^= 0xFF  # same length, corrupt payload
    path.write_bytes(bytes(flipped))
    assert cache.load("ds/audio", key) is None and not path.exists()
    _, s4 = cache.get_or_build("ds/audio", key, build)
    assert s4 == "built" and cache.stats == {"hit": 1, "built": 2, "rebuilt": 1}


def test_cache_key_changes_with_input_and_settings(tmp_path):
    f = tmp_path / "x.wav"
    F.write_wav(f, seconds=0.01)
    d1 = inputs_digest([("a", str(f)), ("b", "some text")])
    assert d1 == inputs_digest([("a", str(f)), ("b", "some text")])
    assert d1 != inputs_digest([("a", str(f)), ("b", "other text")])
    F.write_wav(f, seconds=0.02)  # new size
    assert d1 != inputs_digest([("a", str(f)), ("b", "some text")])
    assert hash_key({"n_mels": 40}) != hash_key({"n_mels": 41})


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CROMA_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "croma"


def test_prepare_uses_cache_and_rebuilds_corrupt_entry(tmp_path):
    from episodes.datasets import load_benchmark

    F.write_wilderness(tmp_path)
    cache = tmp_path / "cache"
    b1 = load_benchmark("wilderness", data_root=tmp_path, cache_dir=cache)
    assert b1.info["cache"]["audio"] == "built"
    b2 = load_benchmark("wilderness", data_root=tmp_path, cache_dir=cache)
    assert b2.info["cache"]["audio"] == "hit"
    torch.testing.assert_close(b1.data["audio"].features, b2.data["audio"].features)
    (entry,) = list((cache / "features" / "wilderness" / "audio").glob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])
    b3 = load_benchmark("wilderness", data_root=tmp_path, cache_dir=cache)
    assert b3.info["cache"]["audio"] == "rebuilt"
    torch.testing.assert_close(b1.data["audio"].features, b3.data["audio"].features)


# ---------------------------------------------------------------- restricted unpickler
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_1.*refused.*system"):
        load_restricted_pickle(bad)
    assert not marker.exists()
    for proto in (0, 4):  # any protocol: os.system / builtins.eval are refused
        bad.write_bytes(pickle.dumps(_Evil(marker), protocol=proto))
        with pytest.raises(DataError, match="refused"):
            load_restricted_pickle(bad)
    bad.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DataError, match="builtins.eval"):
        load_restricted_pickle(bad)
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_dict(tmp_path):
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for proto in (2, 4):
        p = tmp_path / f"b{proto}"
        p.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2], b"batch_label": b"x"}, protocol=proto))
        out = load_restricted_pickle(p)
        np.testing.assert_array_equal(out[b"data"], data)
        assert out[b"labels"] == [1, 2]
    (tmp_path / "junk").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="junk"):
        load_restricted_pickle(tmp_path / "junk")


def test_pil_images_load_as_their_files_and_key_by_their_pixels(tmp_path):
    """A PIL image decodes as its file does (transparency over white); two images differing only in
    pixels get different cache digests (not their repr, which carries a memory address)."""
    from PIL import Image

    from episodes.cache import inputs_digest
    from episodes.errors import DataError
    from episodes.images import load_image_uint8

    rgba = np.random.default_rng(1).integers(0, 256, size=(9, 7, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert torch.equal(load_image_uint8(im, 8), load_image_uint8(tmp_path / "a.png", 8))
    a, b = Image.fromarray(rgba[..., :3]), Image.fromarray(255 - rgba[..., :3])
    assert inputs_digest([("x", a)]) != inputs_digest([("x", b)])
    assert inputs_digest([("x", a)]) == inputs_digest([("x", Image.fromarray(rgba[..., :3].copy()))])
    with pytest.raises(DataError, match="file paths, arrays .* or PIL images \\(got bytes\\)"):
        load_image_uint8(b"\x89PNG", 8)
