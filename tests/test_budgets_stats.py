"""Results you can trust: intervals and paired comparisons against hand computations, step budgets,
meta-val selection that scores the start, faithful baselines, batched evaluation == reference."""

import math
from dataclasses import replace

import pytest
import torch

from croma.baselines.common import Budget, MethodContext, target_pool_counts
from croma.baselines.domain_adaptation import shared_model
from croma.baselines.reptile_runs import budgeted_reptile, task_examples
from croma.benchmark import PRESETS, BenchmarkConfig, _contexts
from croma.evaluate import EvalConfig, evaluate_kshot, target_param_names
from croma.meta.functional import meta_parameters
from croma.stats import Z95, mean_ci95, paired_comparison, seed_std
from episodes.datasets.synthetic import make_synthetic_benchmark


# ----------------------------------------------------------------------------- statistics
def test_mean_ci95_by_hand():
    mean, half = mean_ci95([0.0, 100.0, 50.0, 50.0])
    sd = math.sqrt((50**2 + 50**2 + 0 + 0) / 3)
    assert mean == 50.0 and half == pytest.approx(Z95 * sd / 2, rel=1e-12)
    assert mean_ci95([42.0]) == (42.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_ci95([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_ci95([1.0, float("nan")])


def test_wilson_interval_is_the_score_tests_boundary():
    """Each bound pi solves |p - pi| = z * sqrt(pi (1 - pi) / n) (the score test's acceptance edge);
    0 of n gives [0, z^2 / (n + z^2)], never the degenerate [0, 0] of 1.96 * sd / sqrt(n)."""
    from croma.stats import wilson_interval

    for correct, n in ((6, 14), (1, 3), (50, 100), (99, 100)):
        low, high = wilson_interval(correct, n)
        p = correct / n
        for b in (low / 100, high / 100):
            assert abs(p - b) == pytest.approx(Z95 * math.sqrt(b * (1 - b) / n), rel=1e-9)
        assert low < 100 * p < high
    assert wilson_interval(0, 10) == (0.0, pytest.approx(100 * Z95**2 / (10 + Z95**2), rel=1e-12))
    assert wilson_interval(10, 10) == (pytest.approx(100 * 10 / (10 + Z95**2), rel=1e-12), pytest.approx(100.0, rel=1e-12))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_paired_comparison_cancels_shared_episode_variance():
    # episodes differ wildly in difficulty, but a is always exactly 2 points above b
    b = [10.0, 90.0, 40.0, 70.0, 20.0]
    a = [x + 2.0 for x in b]
    c = paired_comparison(a, b)
    assert c == {"mean_diff": 2.0, "ci95_low": 2.0, "ci95_high": 2.0, "episodes": 5}
    # unpaired intervals would overlap completely
    assert mean_ci95(a)[1] > 10
    d = paired_comparison([1.0, 0.0], [0.0, 1.0])
    assert d["ci95_low"] < 0 < d["ci95_high"] and d["mean_diff"] == 0.0
    with pytest.raises(ValueError, match="same episodes"):
        paired_comparison([1.0], [1.0, 2.0])
    assert seed_std([1.0]) == 0.0 and seed_std([1.0, 3.0]) == pytest.approx(math.sqrt(2.0))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bench():
    return make_synthetic_benchmark(num_classes=25, per_class=24, seed=0)


def _ctx(bench, **kw):
    cfg = BenchmarkConfig(benchmark="synthetic", shots=[1, 3], repeats=1, eval_tasks=4, ways=3, device="cpu",
                          out=None, progress=False)
    train, ev, _ = _contexts(cfg, bench, PRESETS["quick"])
    train = replace(train, eval_tasks=4, model=dict(embed_dim=16, hidden=32))
    knobs = dict(PRESETS["quick"]["knobs"], val_episodes=4, val_checks=2)
    base = dict(bench=bench, train=train, eval=ev, budget_steps=80, knobs=knobs)
    base.update(kw)
    return MethodContext(**base)


# ----------------------------------------------------------------------------- budgets
def test_step_budget_becomes_outer_iterations_and_start_is_scored(bench):
    from croma.baselines.common import fresh_model

    ctx = _ctx(bench)
    model = fresh_model(ctx)
    theta0 = {k: v.clone() for k, v in meta_parameters(model).items()}
    params, info = budgeted_reptile(ctx, model=model, task_weights={"align": 0.5, "source_cls": 0.5}, budget=Budget(steps=80))
    cfg = ctx.train  # meta_batch 8 x inner_steps 5 = 40 optimiser steps per iteration
    assert info["outer_steps"] == 2 and info["optimizer_steps"] == 80
    assert info["examples"] == 2 * task_examples(replace(cfg, task_weights={"align": 0.5, "source_cls": 0.5}))
    assert info["start_val"] is not None and info["best_val"] >= info["start_val"]
    if info["best_iteration"] == 0:  # the start won: the kept parameters are the start, bitwise
        assert all(torch.equal(params[k], theta0[k]) for k in theta0)


def test_start_is_kept_when_training_only_hurts(bench, monkeypatch):
    """When every meta-val check after the start scores lower, the start is what is kept, bitwise."""
    from croma.baselines import ordinary, reptile_runs
    from croma.baselines.common import fresh_model

    calls = []

    def falling(*args, **kwargs):
        calls.append(1)
        return 90.0 - len(calls)  # the first check (the start) is the best

    monkeypatch.setattr(reptile_runs, "meta_val_score", falling)
    ctx = _ctx(bench)
    model = fresh_model(ctx)
    theta0 = {k: v.clone() for k, v in meta_parameters(model).items()}
    params, info = budgeted_reptile(ctx, model=model, task_weights={"source_cls": 1.0}, budget=Budget(steps=80))
    assert info["outer_steps"] == 2 and info["best_iteration"] == 0 and len(calls) >= 3
    assert all(torch.equal(params[k], theta0[k]) for k in theta0)

    scores = iter([70.0, 60.0, 50.0, 40.0, 30.0])
    monkeypatch.setattr(ordinary, "meta_val_score", lambda *a, **k: next(scores))
    model = fresh_model(ctx)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    info = ordinary.ordinary_train(ctx, model, budget=Budget(steps=20), align_weight=1.0, source_cls=True)
    assert info["optimizer_steps"] == 20 and info["best_step"] == 0 and info["best_val"] == 70.0
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_ordinary_training_takes_exactly_the_budget(bench):
    from croma.baselines import get_method

    out = get_method("align-classify").fn(_ctx(bench, budget_steps=30))
    assert out.optimizer_steps == 30 and out.examples > 0
    assert out.notes["start_val"] is not None and out.notes["best_val"] >= out.notes["start_val"]


def test_align_meta_classify_keeps_encoders_out_of_the_reptile_phase(bench):
    from croma.baselines import get_method
    from croma.baselines.common import fresh_model
    from croma.baselines.ordinary import ordinary_train

    ctx = _ctx(bench)
    out = get_method("align-meta-classify").fn(ctx)
    # rebuild phase 1 alone: same seed, same steps -> same aligned encoders
    model = fresh_model(ctx)
    ordinary_train(ctx, model, budget=ctx.budget(0.5), align_weight=1.0, source_cls=False)
    aligned = meta_parameters(model)
    for k, v in out.params.items():
        if k.startswith("encoders."):
            assert torch.equal(v, aligned[k]), k


# ----------------------------------------------------------------------------- baselines
def test_shared_body_is_fine_tuned_with_the_target_encoder(bench):
    ctx = _ctx(bench)
    model = shared_model(ctx)
    names = list(meta_parameters(model))
    tgt = target_param_names(model, bench.target, names)
    body = {n for n in names if ".body." in n}
    assert body and body <= tgt  # the shared body is listed under the *source* encoder's names
    assert f"encoders.{bench.target}.input.weight" in tgt
    assert f"encoders.{bench.source}.input.weight" not in tgt


def test_frontend_fit_rows_count_as_target_samples(bench):
    b = replace(bench, info={**bench.info, "frontend_fit_rows": {bench.target: [0, 1, 2]}})
    assert target_pool_counts(b) == (3, 0)
    n_align = len(set(b.align_target_rows.tolist()) | {0, 1, 2})
    assert target_pool_counts(b, align=True) == (n_align, 0)


# ----------------------------------------------------------------------------- evaluation paths
@pytest.mark.parametrize("finetune, steps, head", [("head", 4, "zero"), ("all", 0, "prototype"), ("all", 3, "meta")])
def test_batched_evaluation_equals_sequential_reference(bench, finetune, steps, head):
    ctx = _ctx(bench)
    from croma.baselines.common import fresh_model

    model = fresh_model(ctx)
    cfg = EvalConfig(shots=[1, 3], ways=3, tasks=7, queries=2, repeats=1, split="meta_test", head_init=head,
                     finetune=finetune, finetune_steps=steps, finetune_lr=1e-2, retrieval=False)
    a = evaluate_kshot(model, bench, cfg)
    b = evaluate_kshot(model, bench, replace(cfg, inner_loop="sequential"))
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["episodes"] == 7 and len(ra["episode_accuracies"]) == 7
        # accuracies are multiples of 1/6 per episode; rounding may flip a near-tie, never more
        assert ra["episode_accuracies"] == pytest.approx(rb["episode_accuracies"], abs=1e-4)
        assert ra["centroid_episode_accuracies"] == pytest.approx(rb["centroid_episode_accuracies"], abs=1e-4)
        assert ra["accuracy_ci95"] == pytest.approx(mean_ci95(ra["episode_accuracies"])[1])
