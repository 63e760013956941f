"""Domain-adaptation baselines (shared encoder body) on sequence features: byte ids + frames."""

from dataclasses import replace

import pytest
import torch

from croma.baselines import methods_for
from croma.baselines.common import MethodContext
from croma.baselines.domain_adaptation import shared_model
from croma.baselines.shared_sequence import SequenceBody, SequenceStem
from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, run_benchmark
from croma.finetune import target_param_names
from croma.meta.functional import meta_parameters
from episodes.data import ModalityData
from episodes.datasets.synthetic import make_synthetic_benchmark

DA = ["shared", "shared-align", "shared-confusion", "shared-target-labels"]


def _seq_bench(num_classes=25, per_class=12):
    """The synthetic benchmark with its features turned into sequences that carry the class:
    text = byte ids (length 24, class-dependent bytes, padded with 0 at random lengths),
    audio = 6 x 40 frames (a class pattern + noise)."""
    b = make_synthetic_benchmark(num_classes=num_classes, per_class=per_class, seed=0)
    y = b.data["text"].labels
    n = y.numel()
    g = torch.Generator().manual_seed(0)
    ids = 1 + (y.unsqueeze(1) * 7 + torch.randint(0, 5, (n, 24), generator=g)) % 250
    lengths = torch.randint(12, 25, (n,), generator=g)
    ids[torch.arange(24).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    pattern = torch.randn(num_classes, 6, 1, generator=g)
    frames = pattern[y] + 0.5 * torch.randn(n, 6, 40, generator=g)
    a = b.data["audio"]
    b.data["text"] = ModalityData(ids, y, b.data["text"].clusters, b.data["text"].ids)
    b.data["audio"] = ModalityData(frames, a.labels, a.clusters, a.ids)
    b.validate()
    return b


def _ctx(bench, **model):
    cfg = BenchmarkConfig(benchmark="synthetic", preset="paper", ways=3, shots=[1], device="cpu", progress=False, out=None,
                          model=model)
    train, ev, _ = _contexts(cfg, bench, PRESETS["paper"])
    return MethodContext(bench=bench, train=train, eval=ev, budget_steps=5, knobs=dict(PRESETS["paper"]["knobs"]))


def test_domain_adaptation_applies_to_sequence_benchmarks_not_to_mixed_ones():
    bench = _seq_bench()
    assert set(DA) <= set(methods_for(bench))
    mixed = replace(bench, data={**bench.data, "audio": ModalityData(
        bench.data["audio"].features.mean(-1), bench.data["audio"].labels, bench.data["audio"].clusters, bench.data["audio"].ids)})
    assert not set(DA) & set(methods_for(mixed))  # one vector, one sequence modality: no common body


def test_sequence_body_is_one_module_and_stems_are_per_modality():
    bench = _seq_bench()
    ctx = _ctx(bench)
    model = shared_model(ctx)
    enc = model.encoders
    assert enc["text"].body is enc["audio"].body and isinstance(enc["text"].body, SequenceBody)
    assert isinstance(enc["text"].input, SequenceStem) and enc["text"].input is not enc["audio"].input
    assert enc["text"].input.embedding is not None and enc["audio"].input.embedding is None
    assert enc["audio"].input.convs[0].weight.shape[1] == 6  # frames: mel channels straight into the stem conv
    names = list(meta_parameters(model))
    assert not any(n.startswith("encoders.audio.body.") for n in names)  # tied: listed once, under the source
    body = {n for n in names if ".body." in n}
    assert body == {f"encoders.text.body.{n}" for n, _ in enc["text"].body.named_parameters()}
    tgt = target_param_names(model, "audio", names)
    assert body <= tgt and "encoders.audio.input.convs.0.weight" in tgt and "encoders.text.input.embedding.weight" not in tgt
    # both modalities reach the joint space; a gradient through either reaches the shared body
    for m in ("text", "audio"):
        model.zero_grad()
        z = model.embed(m, bench.data[m].features[:4])
        assert z.shape == (4, 128)
        z.sum().backward()
        assert enc["text"].body.proj.weight.grad.abs().sum() > 0
        other = "audio" if m == "text" else "text"
        assert all(p.grad is None for p in enc[other].input.parameters())
    # built deterministically, the global RNG untouched
    state = torch.get_rng_state()
    again = shared_model(ctx)
    assert torch.equal(torch.get_rng_state(), state)
    for (n, p), (n2, p2) in zip(model.named_parameters(), again.named_parameters()):
        assert n == n2 and torch.equal(p, p2)


def test_byte_padding_does_not_change_the_embedding_and_hp_follow_encoder_hp():
    bench = _seq_bench()
    model = shared_model(_ctx(bench))
    x = bench.data["text"].features[:5]
    padded = torch.cat([x, torch.zeros(5, 16, dtype=x.dtype)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.embed("text", x), model.embed("text", padded), atol=1e-5)
    wide = shared_model(_ctx(bench, encoder_hp={"text": {"channels": 8, "layers": 2}}))
    assert wide.encoders["text"].body.proj.weight.shape == (128, 16)
    assert len(wide.encoders["audio"].body.convs) == 1 and wide.encoders["audio"].input.convs[0].weight.shape[0] == 8


@pytest.mark.slow
def test_domain_adaptation_family_runs_on_sequences(tmp_path):
    bench = _seq_bench()
    # the quick preset's (smaller) selection grid on the sequence bench: the paper preset's would fine-tune 38 settings
    cfg = BenchmarkConfig(benchmark="synthetic", preset="quick", methods=DA, shots=[1], repeats=1, eval_tasks=3, ways=3,
                          budget_steps=12, device="cpu", out=str(tmp_path / "out"), progress=False)
    res = run_benchmark(cfg, bench=bench)
    assert [r["method"] for r in res["rows"]] == DA
    for r in res["rows"]:
        assert r["optimizer_steps"] == 12 and 0.0 <= r["accuracy_mean"] <= 100.0
    n_train = bench.rows_of_classes("audio", bench.splits["meta_train"]).numel()
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["shared-target-labels"]["target_labels"] == n_train and rows["shared"]["target_samples"] == 0


def test_shared_confusion_keeps_the_target_stem_fixed_on_sequences():
    bench = _seq_bench()
    from croma.baselines import get_method

    ctx = replace(_ctx(bench), knobs={**PRESETS["paper"]["knobs"], "select": False, "finetune_grid": [0],
                                      "finetune_mode_grid": ["head"], "val_episodes": 2})
    start = {n: p.detach().clone() for n, p in shared_model(ctx).named_parameters()}
    out = get_method("shared-confusion").fn(ctx)
    for n, v in out.params.items():
        if n.startswith("encoders.audio.input."):
            assert torch.equal(v, start[n]), n
    assert any(not torch.equal(v, start[n]) for n, v in out.params.items() if ".body." in n)
