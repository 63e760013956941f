"""Meta-test: non-interference, batched == sequential, hand-derived accuracies, retrieval."""

import statistics

import pytest
import torch
import torch.nn.functional as F

from croma.config import TrainConfig
from croma.errors import CromaError
from croma.evaluate import EvalConfig, _episode_batch, choose_head_init, evaluate_kshot, format_results
from croma.factory import build_from_config
from croma.meta.functional import FunctionalModel, meta_parameters, tree_equal
from croma.meta.tasks import model_inputs
from episodes.datasets.synthetic import make_synthetic_benchmark


@pytest.fixture(scope="module")
def setup(bench):
    model = build_from_config(TrainConfig(ways=5, model={"embed_dim": 8, "hidden": 16}), bench).eval()
    return bench, model


def ecfg(**kw):
    base = dict(shots=[1, 3], ways=5, tasks=3, queries=4, repeats=2, finetune_steps=3, finetune_lr=0.05, retrieval_gallery=20)
    base.update(kw)
    return EvalConfig(**base)


@pytest.mark.parametrize("head", ["meta", "zero", "prototype"])
def test_meta_test_never_changes_parameters(setup, head):
    bench, model = setup
    theta = meta_parameters(model)
    snap = {k: v.clone() for k, v in theta.items()}
    mod_snap = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res = evaluate_kshot(model, bench, ecfg(head_init=head), params=theta)
    assert tree_equal(theta, snap)
    assert all(torch.equal(mod_snap[k], v) for k, v in model.state_dict().items())
    assert [r["shots"] for r in res["rows"]] == [1, 3]
    for r in res["rows"]:
        assert len(r["accuracies"]) == 2 and 0.0 <= r["accuracy_mean"] <= 100.0
        assert r["accuracy_std"] >= 0.0
    assert "accuracy" in format_results(res)


def test_batched_equals_sequential_and_deterministic(setup):
    bench, model = setup
    a = evaluate_kshot(model, bench, ecfg(head_init="prototype"))
    b = evaluate_kshot(model, bench, ecfg(head_init="prototype", inner_loop="sequential"))
    c = evaluate_kshot(model, bench, ecfg(head_init="prototype"))
    for ra, rb, rc in zip(a["rows"], b["rows"], c["rows"]):
        assert ra["accuracies"] == pytest.approx(rb["accuracies"], abs=1e-4)
        assert ra["centroid_accuracies"] == pytest.approx(rb["centroid_accuracies"], abs=1e-4)
        assert ra["accuracies"] == rc["accuracies"]
    d = evaluate_kshot(model, bench, ecfg(head_init="prototype", seed=5))
    assert [r["accuracies"] for r in d["rows"]] != [r["accuracies"] for r in a["rows"]]


def test_zero_head_without_finetuning_is_chance_exactly(setup):
    """All logits equal -> argmax picks class 0 -> accuracy = 1/N with balanced queries."""
    bench, model = setup
    res = evaluate_kshot(model, bench, ecfg(head_init="zero", finetune_steps=0))
    for r in res["rows"]:
        assert r["accuracies"] == pytest.approx([20.0, 20.0], abs=1e-5)


def _naive(setup, cfg, shots, repeat):
    """Loops: embed support/query, class means, nearest centroid and prototype-head predictions."""
    bench, model = setup
    x = model_inputs(model, bench, "cpu")[bench.target]
    b = _episode_batch(bench, x, cfg, shots, repeat)
    cent, proto = [], []
    with torch.no_grad():
        for t in range(cfg.tasks):
            zs = model.embed(bench.target, b["xs"][t])
            zq = model.embed(bench.target, b["xq"][t])
            means = torch.stack([zs[b["ys"][t] == c].mean(0) for c in range(cfg.ways)])
            pred_c = torch.tensor([min(range(cfg.ways), key=lambda c: float(((q - means[c]) ** 2).sum())) for q in zq])
            cent.append(float((pred_c == b["yq"][t]).float().mean()))
            w = F.normalize(means, dim=-1) * cfg.prototype_scale
            pred_p = torch.tensor([int(torch.argmax(torch.stack([q @ w[c] for c in range(cfg.ways)]))) for q in zq])
            proto.append(float((pred_p == b["yq"][t]).float().mean()))
    return 100 * sum(cent) / len(cent), 100 * sum(proto) / len(proto)


def test_nearest_centroid_and_prototype_head_match_naive_loops(setup):
    bench, model = setup
    cfg = ecfg(head_init="prototype", finetune_steps=0, prototype_scale=3.0, shots=[3])
    res = evaluate_kshot(model, bench, cfg)
    for r in range(cfg.repeats):
        cent, proto = _naive(setup, cfg, 3, r)
        assert res["rows"][0]["centroid_accuracies"][r] == pytest.approx(cent, abs=1e-4)
        assert res["rows"][0]["accuracies"][r] == pytest.approx(proto, abs=1e-4)


def test_support_noise_only(setup):
    bench, model = setup
    x = model_inputs(model, bench, "cpu")[bench.target]
    clean = _episode_batch(bench, x, ecfg(), 3, 0)
    noisy = _episode_batch(bench, x, ecfg(label_noise=0.6), 3, 0)
    assert torch.equal(clean["yq"], noisy["yq"]) and torch.equal(clean["xq"], noisy["xq"])
    assert not torch.equal(clean["ys"], noisy["ys"])


def test_retrieval_perfect_when_embeddings_coincide_and_matches_naive_ranks():
    bench = make_synthetic_benchmark(num_classes=30, per_class=16, source_dim=10, target_dim=10, latent_dim=4, seed=2)
    bench.data[bench.target].features = bench.data[bench.source].features.clone()
    model = build_from_config(TrainConfig(ways=5, model={"embed_dim": 8, "hidden": 16}), bench).eval()
    theta = meta_parameters(model)
    tied = dict(theta)
    for k, v in theta.items():
        if k.startswith("encoders.audio."):
            tied[k] = theta[k.replace("encoders.audio.", "encoders.text.")].clone()
    res = evaluate_kshot(model, bench, ecfg(shots=[1], repeats=2), params=tied)
    ret = res["retrieval"]
    assert ret["gallery"] == 20 and ret["r1_mean"] == 100.0 and ret["r10_mean"] == 100.0

    # untied: compare with a naive rank computation for the same gallery
    res = evaluate_kshot(model, bench, ecfg(shots=[1], repeats=1, retrieval_gallery=15), params=theta)
    from croma.meta.tasks import derive_seed

    pairs = bench.pairs
    classes = torch.tensor(bench.splits["meta_test"])
    pairs = pairs[torch.isin(bench.data["audio"].labels[pairs[:, 1]], classes)]
    g = torch.Generator().manual_seed(derive_seed(0, "meta_test", "retrieval", 0))
    pick = pairs[torch.randperm(pairs.shape[0], generator=g)[:15]]
    fm = FunctionalModel(model)
    with torch.no_grad():
        zs = fm(theta, lambda m, v: m.embed("text", v), bench.data["text"].features[pick[:, 0]])
        zt = fm(theta, lambda m, v: m.embed("audio", v), bench.data["audio"].features[pick[:, 1]])
    hits = {1: 0, 5: 0, 10: 0}
    for i in range(15):
        sims = [float(F.cosine_similarity(zs[i], zt[j], dim=0)) for j in range(15)]
        rank = sum(s > sims[i] for s in sims)
        for k in hits:
            hits[k] += rank < k
    for k in hits:
        assert res["retrieval"][f"r{k}_mean"] == pytest.approx(100 * hits[k] / 15, abs=1e-4)
        # the interval is over the 15 queries (one gallery: each query's hit is 0 or 1)
        p = hits[k] / 15
        sd = (p * (1 - p) * 15 / 14) ** 0.5 * 100
        assert res["retrieval"]["queries"] == 15
        z = statistics.NormalDist().inv_cdf(0.975)
        assert res["retrieval"][f"r{k}_ci95"] == pytest.approx(z * sd / 15 ** 0.5, abs=1e-6)
        # Wilson's interval of hits[k] of 15 (what the table prints): inside [0, 100], around the mean
        from croma.stats import wilson_interval

        low, high = res["retrieval"][f"r{k}_ci95_low"], res["retrieval"][f"r{k}_ci95_high"]
        assert (low, high) == pytest.approx(wilson_interval(hits[k], 15), abs=1e-9)
        assert 0.0 <= low <= 100 * p <= high <= 100.0
    # a gallery holding every pair, several times: the per-gallery spread is 0, the interval is not
    res = evaluate_kshot(model, bench, ecfg(shots=[1], repeats=3, retrieval_gallery=10_000), params=theta)
    ret = res["retrieval"]
    assert ret["gallery"] == ret["queries"] == pairs.shape[0] and ret["r1_std"] == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < ret["r5_ci95"] or ret["r5_mean"] in (0.0, 100.0)
    assert "[Wilson 95% interval] over" in format_results(res)
    assert f"R@1 {ret['r1_mean']:.1f} [{ret['r1_ci95_low']:.1f}, {ret['r1_ci95_high']:.1f}]" in format_results(res)


def test_validation_and_head_choice(setup):
    bench, model = setup
    with pytest.raises(CromaError, match="--ways 5"):
        evaluate_kshot(model, bench, ecfg(ways=3, head_init="meta"))
    res = evaluate_kshot(model, bench, ecfg(ways=3, head_init="zero", shots=[1], repeats=1))
    assert res["ways"] == 3
    for bad in (dict(shots=[0]), dict(head_init="best"), dict(split="train"), dict(label_noise=1.0), dict(finetune="some")):
        with pytest.raises(ValueError):
            evaluate_kshot(model, bench, ecfg(**bad))
    best, scores = choose_head_init(model, bench, ecfg(shots=[3], repeats=1))
    assert set(scores) == {"meta", "zero", "prototype"} and scores[best] == max(scores.values())


def test_retrieval_at_chance_is_named():
    """R@1 whose Wilson interval holds chance (1 in the gallery) gets a note that the encoders are not
    aligned; one clearly above chance does not (the audit's raw-pixel run sat at chance unseen)."""
    from croma.stats import wilson_interval

    def result(hits, gallery=24):
        low, high = wilson_interval(hits, gallery)
        ret = {"gallery": gallery, "queries": gallery, "r1_mean": 100 * hits / gallery, "r1_ci95_low": low,
               "r1_ci95_high": high}
        for k in (5, 10):
            ret.update({f"r{k}_mean": 50.0, f"r{k}_ci95_low": 30.0, f"r{k}_ci95_high": 70.0})
        return {"split": "meta_test", "ways": 5, "tasks": 2, "repeats": 1, "queries": 1, "head_init": "meta",
                "finetune": "all", "rows": [], "retrieval": ret}

    at_chance = format_results(result(1)).splitlines()[-1]
    assert at_chance.startswith("note: R@1 cannot be told from chance (1 in 24, 4.2 %)")
    assert not format_results(result(12)).splitlines()[-1].startswith("note:")
