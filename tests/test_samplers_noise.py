
import numpy as np
import pytest
import torch

from episodes.datasets.synthetic import make_synthetic_benchmark
from episodes.errors import DataError
from episodes.noise import symmetric_label_noise
from episodes.samplers import AlignmentTaskSampler, ClassificationTaskSampler


def _labels(num_classes=6, per_class=12):
    return torch.arange(num_classes).repeat_interleave(per_class)


def test_classification_episode_is_pure_function_of_seed_and_index():
    labels = _labels()
    s1 = ClassificationTaskSampler(labels, range(6), ways=3, shots=2, queries=3, seed=7)
    s2 = ClassificationTaskSampler(labels, range(6), ways=3, shots=2, queries=3, seed=7)
    state = torch.get_rng_state()
    a, b = s1.sample(5), s2.sample(5)
    # the global RNG is untouched
    assert torch.equal(state, torch.get_rng_state())
    for f in ("support_rows", "support_labels", "query_rows", "query_labels", "classes"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    # out-of-order sampling gives the same episode
    s2.sample(0), s2.sample(99)
    assert torch.equal(s2.sample(5).support_rows, a.support_rows)
    assert not torch.equal(s1.sample(6).support_rows, a.support_rows) or not torch.equal(
        s1.sample(6).classes, a.classes
    )


def test_classification_episode_structure():
    labels = _labels()
    s = ClassificationTaskSampler(labels, [0, 1, 2, 3], ways=3, shots=2, queries=3, seed=1)
    t = s.sample(0)
    assert t.support_rows.shape == (6,) and t.query_rows.shape == (9,)
    assert t.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert t.query_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # labels are remapped consistently with the global classes
    for rows, lab in ((t.support_rows, t.support_labels), (t.query_rows, t.query_labels)):
        assert torch.equal(labels[rows], t.classes[lab])
    # support and query disjoint, only allowed classes
    assert not set(t.support_rows.tolist()) & set(t.query_rows.tolist())
    assert set(t.classes.tolist()) <= {0, 1, 2, 3}
    many = s.sample_many(3, 4)
    assert many.support_rows.shape == (4, 6)
    assert torch.equal(many.support_rows[1], s.sample(4).support_rows)


def test_classification_rows_restriction_and_errors():
    labels = _labels()
    rows = torch.arange(0, labels.numel(), 2)
    s = ClassificationTaskSampler(labels, range(6), ways=2, shots=1, queries=1, seed=0, rows=rows)
    for i in range(10):
        t = s.sample(i)
        assert set(t.support_rows.tolist() + t.query_rows.tolist()) <= set(rows.tolist())
    # classes with too few items are left out; too few remaining -> error naming N
    with pytest.raises(DataError, match="5-way"):
        ClassificationTaskSampler(labels, range(6), ways=5, shots=10, queries=3, seed=0)
    small = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    s = ClassificationTaskSampler(small, [0, 1, 2], ways=2, shots=2, queries=1, seed=0)
    assert s.classes.tolist() == [0, 1]


def test_support_label_noise_keeps_queries_clean():
    labels = _labels(5, 40)
    s = ClassificationTaskSampler(labels, range(5), ways=5, shots=20, queries=5, seed=3, label_noise=0.4)
    flips = total = 0
    for i in range(20):
        t = s.sample(i)
        assert torch.equal(labels[t.query_rows], t.classes[t.query_labels])
        clean = torch.arange(5).repeat_interleave(20)
        flips += int((t.support_labels != clean).sum())
        total += clean.numel()
    assert abs(flips / total - 0.4) < 0.05


def test_strong_alignment_sampler():
    pairs = torch.stack([torch.arange(30), torch.arange(30) + 100], 1)
    s = AlignmentTaskSampler("strong", batch_size=8, seed=2, pairs=pairs, source_rows=torch.arange(20))
    t = s.sample(0)
    assert t.source_rows.shape == (8,)
    assert len(set(t.source_rows.tolist())) == 8
    assert torch.equal(t.target_rows, t.source_rows + 100)
    assert max(t.source_rows.tolist()) < 20
    same = AlignmentTaskSampler("strong", batch_size=8, seed=2, pairs=pairs, source_rows=torch.arange(20))
    assert torch.equal(s.sample(0).source_rows, same.sample(0).source_rows)
    with pytest.raises(DataError):
        AlignmentTaskSampler("strong", batch_size=8, seed=2, pairs=pairs[:3])


def test_weak_alignment_rows_come_from_distinct_shared_clusters():
    sc = torch.tensor([0, 0, 1, 1, 2, 2, 3, -1])
    tc = torch.tensor([0, 1, 1, 2, 2, 2, -1])
    s = AlignmentTaskSampler("weak", batch_size=5, seed=0, source_clusters=sc, target_clusters=tc)
    assert s.batch_size == 3  # clusters 0, 1, 2 are on both sides
    for i in range(10):
        t = s.sample(i)
        cs, ct = sc[t.source_rows], tc[t.target_rows]
        assert torch.equal(cs, ct)
        assert len(set(cs.tolist())) == 3


def test_symmetric_noise_rate_uniformity_and_determinism():
    labels = np.repeat(np.arange(4), 5000)
    noisy = symmetric_label_noise(labels, 0.3, 4, seed=11)
    assert isinstance(noisy, np.ndarray)
    changed = noisy != labels
    assert abs(changed.mean() - 0.3) < 0.01
    # replacements are uniform over the other classes
    for c in range(4):
        repl = noisy[(labels == c) & changed]
        assert not (repl == c).any()
        counts = np.bincount(repl, minlength=4)[[k for k in range(4) if k != c]]
        assert counts.min() / counts.max() > 0.85
    assert np.array_equal(noisy, symmetric_label_noise(labels, 0.3, 4, seed=11))
    assert not np.array_equal(noisy, symmetric_label_noise(labels, 0.3, 4, seed=12))
    assert symmetric_label_noise([0, 1, 2], 0.0, 3, seed=0) == [0, 1, 2]
    t = symmetric_label_noise(torch.tensor([0, 1, 2]), 0.5, 3, seed=0)
    assert isinstance(t, torch.Tensor)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_noise_rate_out_of_range(rate):
    with pytest.raises(ValueError, match="rate"):
        symmetric_label_noise([0, 1], rate, 2, seed=0)


@pytest.mark.parametrize("weak", [False, True])
def test_synthetic_benchmark_respects_split_rules(weak):
    b = make_synthetic_benchmark(num_classes=10, per_class=10, weak=weak, seed=3)
    b.validate()
    held = set(b.splits["meta_val"]) | set(b.splits["meta_test"])
    assert not held & set(b.data[b.source].labels[b.align_source_rows].tolist())
    assert not held & set(b.data[b.source].labels[b.classify_source_rows].tolist())
    assert not set(b.align_source_rows.tolist()) & set(b.classify_source_rows.tolist())
    assert b.align_mode == ("weak" if weak else "strong")
    c = make_synthetic_benchmark(num_classes=10, per_class=10, weak=weak, seed=3)
    assert torch.equal(b.data[b.source].features, c.data[c.source].features)
