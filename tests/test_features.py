import math
import zlib

import torch

from episodes.data import ModalityData
from episodes.datasets.synthetic import make_synthetic_benchmark
from episodes.features import audio_bow_features, audio_stat_features, compact_benchmark, text_ngram_features


def test_text_ngrams_match_a_naive_count():
    text = "Ab ab"
    v = text_ngram_features([text], dim=64)
    s = "\x02ab ab\x03"
    naive = [0.0] * 64
    for n in (1, 2, 3):
        for i in range(len(s) - n + 1):
            naive[zlib.crc32(f"{n}|{s[i:i+n]}".encode()) % 64] += 1
    naive = [math.sqrt(c) for c in naive]
    norm = math.sqrt(sum(c * c for c in naive))
    assert torch.allclose(v[0], torch.tensor([c / norm for c in naive]), atol=1e-6)
    # whitespace and case are normalised; an empty text is the boundary marks only
    assert torch.allclose(text_ngram_features(["AB   AB"], dim=64), v)
    assert text_ngram_features([""], dim=8).shape == (1, 8)


def test_audio_stats_ignore_padding_and_match_naive():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, generator=g)
    x[1, :, 4:] = 0.0  # padding frames of item 1
    f = audio_stat_features(x)
    assert f.shape == (2, 12)
    v = x[1, :, :4]
    assert torch.allclose(f[1, :3], v.mean(-1), atol=1e-5)
    assert torch.allclose(f[1, 3:6], v.std(-1, unbiased=False), atol=1e-5)
    d = v[:, 1:] - v[:, :-1]
    assert torch.allclose(f[1, 6:9], d.mean(-1), atol=1e-5)
    assert torch.allclose(f[1, 9:12], d.std(-1, unbiased=False), atol=1e-5)


def test_bag_of_audio_words_codebook_sees_only_fit_rows():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 4, 20, generator=g)
    fit = torch.arange(6)
    a = audio_bow_features(x, fit, words=4, iterations=3, sample_frames=500, seed=0)
    y = x.clone()
    y[6:] = torch.randn(4, 4, 20, generator=g) * 5  # change rows outside the fit set
    b = audio_bow_features(y, fit, words=4, iterations=3, sample_frames=500, seed=0)
    assert a.shape == (10, 4)
    assert torch.allclose(a[:6], b[:6])  # codebook unchanged -> same features for unchanged rows
    assert torch.allclose((a**2).sum(1), torch.ones(10), atol=1e-5)  # sqrt of a distribution


def test_compact_benchmark_keeps_rows_pairs_and_splits():
    b = make_synthetic_benchmark(num_classes=10, per_class=6, seed=0)
    ids = torch.randint(1, 120, (b.data["text"].labels.numel(), 16), generator=torch.Generator().manual_seed(0))
    logmel = torch.randn(b.data["audio"].labels.numel(), 5, 30, generator=torch.Generator().manual_seed(1))
    b.data["text"] = ModalityData(ids, b.data["text"].labels, b.data["text"].clusters, b.data["text"].ids)
    b.data["audio"] = ModalityData(logmel, b.data["audio"].labels, b.data["audio"].clusters, b.data["audio"].ids)
    c = compact_benchmark(b, text_dim=32, audio_words=8)
    assert c.data["text"].features.shape == (60, 32)
    assert c.data["audio"].features.shape == (60, 4 * 5 + 8)
    assert torch.equal(c.pairs, b.pairs) and c.splits == b.splits
    c.validate()
    # standardisation uses meta-train rows only: their mean is ~0
    rows = c.rows_of_classes("audio", c.splits["meta_train"])
    assert c.data["audio"].features[rows].mean(0).abs().max() < 1e-4


def test_compact_audio_codebook_fits_a_small_data_set():
    """Too few meta-train frames for the asked codebook: the words are lowered to frames / 4 (said in
    info and the features line), statistics only under 2 words; enough frames keep the asked size."""
    from episodes.features import FRAMES_PER_WORD, fitted_audio_words

    b = make_synthetic_benchmark(num_classes=10, per_class=6, seed=0)
    n = b.data["audio"].labels.numel()
    logmel = torch.randn(n, 5, 30, generator=torch.Generator().manual_seed(1))
    logmel[:, :, 3:] = 0.0  # 3 frames per clip
    b.data["audio"] = ModalityData(logmel, b.data["audio"].labels, b.data["audio"].clusters, b.data["audio"].ids)
    train = [i for i, c in enumerate(b.data["audio"].labels.tolist()) if c in set(b.splits["meta_train"])
             or c in set(b.splits.get("source_train", []))]
    frames = 3 * len(train)
    assert fitted_audio_words(logmel, torch.tensor(train), 256) == frames // FRAMES_PER_WORD
    assert fitted_audio_words(logmel, torch.tensor(train), 4) == 4  # enough frames: as asked
    assert fitted_audio_words(logmel, torch.tensor(train[:2]), 256) == 0  # 6 frames: statistics only
    c = compact_benchmark(b, text_dim=32, audio_words=256, modalities=["audio"])
    used = frames // FRAMES_PER_WORD
    assert c.data["audio"].features.shape == (n, 4 * 5 + used)
    assert c.info["audio_words"]["used"] == used and c.info["audio_words"]["asked"] == 256
    assert f"a {used}-word bag" in c.info["features"] and "asked 256" in c.info["features"]
    assert "audio_words" not in compact_benchmark(b, text_dim=32, audio_words=8, modalities=["audio"]).info
