"""The meta-val choice of the meta-test setting (croma.val_choice): the ``simplest`` rule against a
hand computation, the simplicity order, ties, the ``best`` rule equal to the former code, the knob."""

import json
import math
from dataclasses import replace

import pytest
import torch

from croma.baselines.common import MethodContext, select_eval
from croma.config import TrainConfig
from croma.evaluate import EvalConfig, evaluate_kshot
from croma.factory import build_from_config
from croma.meta.functional import meta_parameters
from croma.meta.tasks import model_inputs
from croma.val_choice import (
    candidate_accuracies,
    candidate_grid,
    eval_grid,
    grid_name,
    simplest_within_noise,
    simplicity_key,
)


def g(name):
    head, steps, lr, mode = name.split("/")
    return {"head_init": head, "finetune_steps": int(steps), "finetune_lr": float(lr), "finetune": mode}


def grid_of(names):
    return {n: g(n) for n in names}


@pytest.fixture(scope="module")
def setup(bench):
    model = build_from_config(TrainConfig(ways=5, model={"embed_dim": 8, "hidden": 16}), bench).eval()
    theta = {k: v.detach() for k, v in meta_parameters(model).items()}
    ctx = MethodContext(bench=bench, train=TrainConfig(ways=5),
                        knobs={"val_episodes": 6, "finetune_grid": [0, 2], "finetune_mode_grid": ["all", "head"]},
                        eval=EvalConfig(shots=[1, 2], ways=5, queries=3, finetune_steps=2, finetune_lr=0.05))
    return ctx, model, theta, model_inputs(model, bench, "cpu")


def with_knobs(ctx, **kw):
    return replace(ctx, knobs={**ctx.knobs, **kw})


def test_simplest_rule_matches_a_hand_computation():
    acc = {  # made-up per-episode accuracies on the same 5 episodes, grid order
        "meta/0/0.001/all": torch.tensor([0.6, 0.5, 0.8, 0.6, 0.7]),
        "prototype/0/0.001/all": torch.tensor([0.7, 0.6, 0.8, 0.7, 0.8]),
        "zero/25/0.001/all": torch.tensor([0.8, 0.6, 0.9, 0.7, 0.8]),
    }
    res = simplest_within_noise(acc, grid_of(acc))
    assert res["best"] == "zero/25/0.001/all"  # mean 0.76
    # prototype/0 - best: d = [-.1, 0, -.1, 0, 0]; mean -0.04; sd = sqrt(0.012 / 4) = 0.0547723;
    # se = sd / sqrt(5) = 0.0244949; bound = -0.04 + 1.645 * 0.0244949 = +0.000294 >= 0: within
    assert res["bounds"]["prototype/0/0.001/all"] == pytest.approx(0.000294, abs=1e-6)
    # meta/0 - best: d = [-.2, -.1, -.1, -.1, -.1]; mean -0.12; sd = sqrt(0.008 / 4) = 0.0447214;
    # se = 0.02; bound = -0.12 + 1.645 * 0.02 = -0.0871 < 0: out
    assert res["bounds"]["meta/0/0.001/all"] == pytest.approx(-0.0871, abs=1e-6)
    assert res["bounds"]["zero/25/0.001/all"] == 0.0
    assert res["within"] == ["prototype/0/0.001/all", "zero/25/0.001/all"]
    assert res["choice"] == "prototype/0/0.001/all"
    assert res["means"]["zero/25/0.001/all"] == pytest.approx(0.76)
    # a smaller z (z * se = 0.0367 < 0.04) leaves prototype/0 out: the best is chosen
    tight = simplest_within_noise(acc, grid_of(acc), z=1.5)
    assert tight["within"] == ["zero/25/0.001/all"] and tight["choice"] == "zero/25/0.001/all"


def test_simplicity_order_of_the_quick_grid_and_of_a_wider_one():
    ctx = MethodContext(bench=None, train=TrainConfig(ways=5), eval=EvalConfig(finetune_steps=25, finetune_lr=1e-3),
                        knobs={"finetune_grid": [0, 25], "finetune_mode_grid": ["all", "head"]})
    names = [grid_name(x) for x in sorted(eval_grid(ctx), key=simplicity_key)]
    assert names == ["prototype/0/0.001/all", "meta/0/0.001/all",
                     "prototype/25/0.001/head", "meta/25/0.001/head", "zero/25/0.001/head",
                     "prototype/25/0.001/all", "meta/25/0.001/all", "zero/25/0.001/all"]
    wide = with_knobs(ctx, finetune_grid=[0, 10, 50], finetune_lr_grid=[3e-3, 1e-3])
    order = [grid_name(x) for x in sorted(eval_grid(wide), key=simplicity_key)]
    assert order[:2] == ["prototype/0/0.003/all", "meta/0/0.003/all"]
    # head-only (any steps) before all; fewer steps first; then prototype, meta, zero; then smaller lr
    assert order[2:5] == ["prototype/10/0.001/head", "prototype/10/0.003/head", "meta/10/0.001/head"]
    assert order.index("zero/50/0.003/head") < order.index("prototype/10/0.001/all")


def test_ties_best_goes_to_the_earlier_grid_entry_and_the_choice_to_the_simplest():
    same = torch.tensor([0.5, 0.7, 0.6, 0.9])
    acc = {"meta/0/0.001/all": same - 0.3, "zero/25/0.001/all": same.clone(),
           "prototype/25/0.001/head": same.clone(), "meta/25/0.001/head": same.clone()}
    res = simplest_within_noise(acc, grid_of(acc))
    assert res["best"] == "zero/25/0.001/all"  # first of the equal means in grid order
    assert res["within"] == ["prototype/25/0.001/head", "meta/25/0.001/head", "zero/25/0.001/all"]
    assert res["choice"] == "prototype/25/0.001/head"
    # a single episode: no spread to estimate, only exact ties are within noise
    one = simplest_within_noise({"zero/25/0.001/all": torch.tensor([0.8]), "prototype/0/0.001/all": torch.tensor([0.6])},
                                grid_of(["zero/25/0.001/all", "prototype/0/0.001/all"]))
    assert one["choice"] == "zero/25/0.001/all"
    with pytest.raises(ValueError, match="paired"):
        simplest_within_noise({"a/0/1/all": torch.zeros(3), "b/0/1/all": torch.zeros(4)}, {})


def _old_select_eval(ctx, model, params, inputs):
    """select_eval as it was before val_rule (commit cd012dc), the full grid."""
    base = replace(ctx.eval, split="meta_val", repeats=1, tasks=int(ctx.knobs.get("val_episodes", 100)),
                   label_noise=ctx.label_noise, nearest_centroid=False, retrieval=False)
    ways_ok = params["classifier.weight"].shape[0] == base.ways
    scores = {}
    for x in eval_grid(ctx):
        if x["head_init"] == "meta" and not ways_ok:
            continue
        res = evaluate_kshot(model, ctx.bench, replace(base, **x), params=params, inputs=inputs)
        scores[grid_name(x)] = {int(r["shots"]): r["accuracy_mean"] for r in res["rows"]}
    choice = {}
    for k in base.shots:
        best = max(scores, key=lambda name: scores[name][int(k)])
        head, steps, lr, mode = best.split("/")
        choice[int(k)] = {"head_init": head, "finetune_steps": int(steps), "finetune_lr": float(lr),
                          "finetune": mode, "meta_val": scores[best][int(k)]}
    return choice, scores


def test_best_rule_is_the_former_choice_bitwise(setup):
    ctx, model, theta, inputs = setup
    assert select_eval(with_knobs(ctx, val_rule="best"), model, theta, inputs) == _old_select_eval(ctx, model, theta, inputs)


def test_simplest_rule_in_select_eval_scores_every_candidate_on_the_same_episodes(setup):
    ctx, model, theta, inputs = setup
    choice, scores = select_eval(with_knobs(ctx, val_rule="simplest"), model, theta, inputs)
    old_choice, old_scores = _old_select_eval(ctx, model, theta, inputs)
    assert set(scores) == set(old_scores) == set(candidate_grid(ctx, theta))
    for k, ch in choice.items():
        acc = candidate_accuracies(ctx, model, theta, inputs, k, 0, 6)
        res = simplest_within_noise(acc, candidate_grid(ctx, theta))
        name = grid_name(ch)
        assert (ch["rule"], ch["best"], ch["within"], name) == ("simplest", res["best"], res["within"], res["choice"])
        assert ch["meta_val"] == scores[name][k] == 100.0 * res["means"][name]
        for n in scores:  # the same episodes as the full evaluation (float32 means there)
            assert math.isclose(scores[n][k], old_scores[n][k], abs_tol=1e-4)
        assert ch["best"] == grid_name(old_choice[k]) or math.isclose(scores[ch["best"]][k], old_choice[k]["meta_val"], abs_tol=1e-4)
    json.dumps(choice)  # results.json copies eval_choice as is


def test_simplest_rule_with_halving_chooses_among_the_finalists(setup):
    ctx, model, theta, inputs = setup
    choice, scores = select_eval(with_knobs(ctx, val_rule="simplest", val_halving=True), model, theta, inputs)
    full = select_eval(with_knobs(ctx, val_rule="simplest"), model, theta, inputs)[1]
    for k, ch in choice.items():
        assert ch["rule"] == "simplest" and grid_name(ch) in ch["within"] and ch["best"] in ch["within"]
        for n in ch["within"]:  # finalists: scored on every episode, the full grid's numbers
            assert math.isclose(scores[n][k], full[n][k], abs_tol=1e-4)


def test_val_rule_knob_is_checked(setup):
    ctx, model, theta, inputs = setup
    with pytest.raises(ValueError, match=r"knob val_rule must be one of best, simplest \(got 'bogus'\)"):
        select_eval(with_knobs(ctx, val_rule="bogus"), model, theta, inputs)


def test_a_setting_blind_to_the_support_set_loses_every_tie():
    """The meta head without fine-tuning predicts without the support set (chance by construction); on
    a tiny set where every candidate scored 50 %, both rules chose it, a constant predictor."""
    from croma.val_choice import best_of, support_blind

    names = ["meta/0/0.001/all", "meta/10/0.001/all", "prototype/0/0.001/all", "zero/10/0.001/all"]
    grid = grid_of(names)
    assert [support_blind(grid[n]) for n in names] == [True, False, False, False]
    tied = {n: {1: 50.0} for n in names}
    assert best_of(tied, grid, 1) == "meta/10/0.001/all"  # the first of the ties that uses the support set
    assert best_of({**tied, "meta/0/0.001/all": {1: 51.0}}, grid, 1) == "meta/0/0.001/all"  # a real best stays
    flat = {n: torch.full((6,), 0.5) for n in names}
    assert simplest_within_noise(flat, grid)["choice"] == "prototype/0/0.001/all"
    only = {"meta/0/0.001/all": torch.full((6,), 0.5), "zero/10/0.001/all": torch.full((6,), 0.5)}
    assert simplest_within_noise(only, grid_of(list(only)))["within"] == ["zero/10/0.001/all", "meta/0/0.001/all"]
