import pytest
import torch

import episodes.datasets as datasets
from croma.config import TrainConfig
from croma.factory import load_bench
from episodes.data import ModalityData
from episodes.datasets.synthetic import make_synthetic_benchmark


def _sequence_bench(**_):
    b = make_synthetic_benchmark(num_classes=10, per_class=6, seed=0)
    n = b.data["text"].labels.numel()
    g = torch.Generator().manual_seed(0)
    b.data["text"] = ModalityData(torch.randint(1, 200, (n, 24), generator=g), b.data["text"].labels,
                                  b.data["text"].clusters, b.data["text"].ids)
    b.data["audio"] = ModalityData(torch.randn(n, 6, 40, generator=g), b.data["audio"].labels,
                                   b.data["audio"].clusters, b.data["audio"].ids)
    return b


def test_compact_features_turn_sequences_into_vectors(monkeypatch):
    monkeypatch.setattr(datasets, "load_benchmark", lambda name, **kw: _sequence_bench())
    seq = load_bench(TrainConfig(benchmark="x", features="sequence"))
    assert seq.data["text"].features.dtype == torch.long and seq.data["audio"].features.dim() == 3
    comp = load_bench(TrainConfig(benchmark="x", features="compact"))
    assert comp.data["text"].features.dim() == 2 and comp.data["text"].features.dtype.is_floating_point
    assert comp.data["audio"].features.dim() == 2
    assert torch.equal(comp.data["audio"].labels, seq.data["audio"].labels)
    comp.validate()


def test_bad_features_value_names_the_flag():
    with pytest.raises(ValueError, match="--features"):
        TrainConfig(features="bogus").validate()
