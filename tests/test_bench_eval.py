"""`croma bench eval` and the evaluation levers: the command's figures, episode ranges, chunk sizes,
the compiled step and successive halving of the meta-val settings, each against the reference."""

from dataclasses import replace

import pytest
import torch

from croma.baselines.common import MethodContext, select_eval
from croma.config import TrainConfig
from croma.evaluate import EvalConfig, episode_accuracies, evaluate_kshot, successive_halving
from croma.factory import build_from_config
from croma.meta.functional import meta_parameters
from croma.meta.tasks import model_inputs

TINY = ["--episodes", "3", "--sequential-episodes", "2", "--shots", "2", "--steps", "2", "--hidden", "8",
        "--embed-dim", "4", "--target-dim", "6"]


@pytest.fixture(scope="module")
def setup(bench):
    model = build_from_config(TrainConfig(ways=5, model={"embed_dim": 8, "hidden": 16}), bench).eval()
    return bench, model, {k: v.detach() for k, v in meta_parameters(model).items()}, model_inputs(model, bench, "cpu")


def ecfg(**kw):
    base = dict(shots=[2], ways=5, tasks=7, queries=3, repeats=1, split="meta_val", finetune_steps=3,
                finetune_lr=0.05, nearest_centroid=False, retrieval=False, head_init="prototype")
    base.update(kw)
    return EvalConfig(**base)


def test_bench_eval_prints_figures_and_speedup_last(run_cli):
    rc, out, err = run_cli(["bench", "eval", *TINY])
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("speedup: ") and float(lines[-1].split()[1]) > 0
    assert lines[-2].startswith("peak_fraction: ")
    assert any(l.startswith("matmul peak:") for l in lines)
    for path in ("batched", "sequential"):
        assert any(l.startswith(f"{path:<10}:") and "episodes/s" in l and "GFLOP/s" in l for l in lines)
    diff = [l for l in lines if l.startswith("accuracies sequential vs batched")]
    assert diff and diff[0].endswith(", 0 differ")
    assert any(l.startswith("meta-val choice by successive halving") for l in lines)
    assert "malloc: " in lines[0] and all("page faults per episode" in l for l in lines if "episodes/s" in l)
    floor = [l for l in lines if l.startswith("memory floor of the 3 '2/all' units")]
    assert floor and float(floor[0].rsplit(" ", 1)[1]) > 0


def test_bench_eval_keeps_the_default_allocator_on_request(run_cli):
    rc, out, err = run_cli(["bench", "eval", *TINY, "--no-halving", "--no-malloc-tuning"])
    assert rc == 0, err
    assert out.splitlines()[0].endswith("malloc: default")


def test_adam_floor_times_the_update_of_every_episode_copy():
    from croma.perf.evaluation import adam_floor

    sec, moved = adam_floor([(4, 3), (4,)], tasks=5, steps=2, lr=1e-3)
    assert sec > 0 and moved == 28 * 5 * (12 + 4)


def test_bench_eval_refuses_bad_sizes(run_cli):
    rc, _, err = run_cli(["bench", "eval", "--episodes", "0"])
    assert rc == 2 and "--episodes" in err


@pytest.mark.parametrize("finetune", ["all", "head"])
def test_episode_ranges_and_chunk_sizes_give_the_full_evaluation_exactly(setup, finetune):
    """Episodes a..b computed alone (any chunk size) equal those episodes of evaluate_kshot, bitwise."""
    bench, model, theta, inputs = setup
    cfg = ecfg(finetune=finetune)
    full = evaluate_kshot(model, bench, cfg, params=theta, inputs=inputs)["rows"][0]["episode_accuracies"]
    parts = [episode_accuracies(model, bench, cfg, 2, a, b, params=theta, inputs=inputs, chunk=c)
             for a, b, c in ((0, 3, 2), (3, 4, 50), (4, 7, 1))]
    assert [100.0 * float(a) for a in torch.cat(parts).tolist()] == full


@pytest.mark.slow  # dynamo's tracing: ~10 s
def test_compiled_finetuning_step_gives_the_reference_accuracies(setup, monkeypatch):
    from croma.meta import inner

    monkeypatch.setattr(inner, "_COMPILE_BACKEND", "eager")  # graph capture without code generation
    bench, model, theta, inputs = setup
    cfg = ecfg(tasks=3)
    ref = episode_accuracies(model, bench, replace(cfg, inner_loop="sequential"), 2, 0, 3, params=theta, inputs=inputs)
    got = episode_accuracies(model, bench, cfg, 2, 0, 3, params=theta, inputs=inputs, compile=True)
    assert torch.equal(got, ref)


def test_successive_halving_picks_the_known_best_and_never_recomputes():
    # candidate i scores p_i on every episode; the best (index 5) is not the first
    p = [0.2, 0.5, 0.1, 0.6, 0.3, 0.9, 0.4, 0.7]
    names = [f"c{i}" for i in range(8)]
    calls = []

    def run(name, a, b):
        calls.append((name, a, b))
        return torch.full((b - a,), p[names.index(name)])

    best, scores, counts = successive_halving(names, 100, run)
    assert best == "c5"
    assert counts == {"c0": 25, "c1": 50, "c2": 25, "c3": 50, "c4": 25, "c5": 100, "c6": 25, "c7": 100}
    assert scores["c5"] == pytest.approx(90.0) and scores["c7"] == pytest.approx(70.0)
    seen = {}
    for name, a, b in calls:  # each candidate's calls tile its episodes without overlap
        assert a == seen.get(name, 0)
        seen[name] = b
    # ties go to the earlier name, in rungs and at the end
    best, _, _ = successive_halving(["a", "b", "c"], 8, lambda n, a, b: torch.full((b - a,), 0.5))
    assert best == "a"


def test_select_eval_by_halving_matches_the_full_grid_scores_of_its_finalists(setup):
    bench, model, theta, inputs = setup
    ctx = MethodContext(bench=bench, train=TrainConfig(ways=5), knobs={"val_episodes": 8, "finetune_grid": [0, 2]},
                        eval=EvalConfig(shots=[1, 2], ways=5, queries=3, finetune_steps=2, finetune_lr=0.05))
    full_choice, full_scores = select_eval(ctx, model, theta, inputs)
    ctx_h = replace(ctx, knobs={**ctx.knobs, "val_halving": True})
    half_choice, half_scores = select_eval(ctx_h, model, theta, inputs)
    for k, ch in half_choice.items():
        name = f"{ch['head_init']}/{ch['finetune_steps']}/{ch['finetune_lr']:g}/{ch['finetune']}"
        assert ch["meta_val"] == full_scores[name][k]  # the finalists are scored on every episode, same numbers
        assert ch["meta_val"] <= full_choice[k]["meta_val"]
    assert set(half_scores) == set(full_scores)
