"""`croma report DIR1 DIR2 ...` pools the same benchmark run on other class splits (other --seed):
one table over splits, training seeds and episodes with a three-level bootstrap interval."""

import json
import shutil

import pytest
import torch

from croma.benchmark_config import PRESETS
from croma.stats import QUANTUM, split_level_interval, split_level_means, two_level_draws

ARGV = ["benchmark", "synthetic", "--methods", "pretrain,croma", "--budget-steps", "40", "--repeats", "1",
        "--eval-tasks", "4", "--shots", "1", "3", "--ways", "3", "--train-seeds", "2", "--device", "cpu", "--quiet"]


def test_split_level_means_follow_the_documented_draws():
    """The vectorised three-level bootstrap equals a plain loop over its documented draws, exactly."""
    g = torch.Generator().manual_seed(3)
    P, S, E, R, seed = 3, 2, 5, 40, 7
    x = torch.randint(0, 101, (P, S, E), generator=g).double() * 0.2  # accuracies on a 0.2 grid
    q = torch.round(x / QUANTUM)
    split_idx = torch.randint(P, (R, P), generator=torch.Generator().manual_seed(seed))
    seed_idx, counts = two_level_draws(S, E, R * P, seed + 1, "shared")
    want = []
    for b in range(R):
        total = 0.0
        for j in range(P):
            row, p = b * P + j, int(split_idx[b, j])
            for s in seed_idx[row].tolist():
                total += float((counts[row] * q[p, s]).sum())
        want.append(total / (P * S * E) * QUANTUM)
    got = split_level_means(x, resamples=R, seed=seed)
    assert got.tolist() == want


def test_a_split_effect_widens_the_interval_beyond_seeds_and_episodes():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 40, generator=g, dtype=torch.float64) * 40 + 30
    shifted = x + torch.tensor([-15.0, 0.0, 15.0]).view(3, 1, 1)  # which classes are in meta-test matters
    assert split_level_interval(shifted)["ci95"] > 2 * split_level_interval(x)["ci95"]
    assert split_level_interval(shifted)["mean"] == pytest.approx(float(shifted.mean()), abs=1e-6)  # quantised to 1e-6


@pytest.fixture(scope="module")
def split_dirs(tmp_path_factory):
    """The same tiny benchmark on class splits --seed 0, 1, 2; copies of seed 0 as a second folder of the
    same split (s0c) and as another experiment (s0b: its results.json says another budget)."""
    import contextlib
    import io

    from croma.cli import main

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("splits")
    mp = pytest.MonkeyPatch()
    mp.setitem(PRESETS["quick"], "knobs", {**PRESETS["quick"]["knobs"], "val_episodes": 4, "val_checks": 1,
                                           "finetune_grid": [0], "finetune_mode_grid": ["all"]})
    mp.setitem(PRESETS["quick"], "train", {**PRESETS["quick"]["train"], "eval_tasks": 4, "finetune_steps": 2})
    try:
        for name, extra in (("s0", ["--seed", "0"]), ("s1", ["--seed", "1"]), ("s2", ["--seed", "2"])):
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(ARGV + extra + ["--out", str(root / name)]) == 0
    finally:
        mp.undo()
    shutil.copytree(root / "s0", root / "s0c")
    shutil.copytree(root / "s0", root / "s0b")
    res = json.loads((root / "s0b" / "results.json").read_text())
    (root / "s0b" / "results.json").write_text(json.dumps({**res, "budget_steps": 20}))
    return root


@pytest.mark.slow  # three tiny benchmark runs (~12 s)
def test_report_pools_class_splits(split_dirs, run_cli):
    dirs = [str(split_dirs / n) for n in ("s0", "s1", "s2")]
    out = split_dirs / "pooled.json"
    rc, text, err = run_cli(["report", *dirs, "--out", str(out)])
    assert rc == 0, err
    assert "mean over 3 class splits (--seed 0, 1, 2) x 2 training seeds x 4 episodes" in text
    assert "three-level bootstrap" in text and "meta-test has" not in text
    assert "in each of the 3 folders" in text
    pooled = json.loads(out.read_text())
    singles = [json.loads((split_dirs / n / "results.json").read_text()) for n in ("s0", "s1", "s2")]
    assert len({tuple(s["meta_test"]) for s in pooled["splits"]}) == 3
    for row in pooled["rows"]:
        per = [next(r for r in s["rows"] if r["method"] == row["method"] and r["shots"] == row["shots"])["accuracy_mean"]
               for s in singles]
        assert row["accuracy_per_split"] == per
        # equal seeds x episodes per split: the pooled mean is the mean of the split means (float64 sums of 3)
        assert row["accuracy_mean"] == pytest.approx(sum(per) / 3, rel=1e-12)
        assert row["accuracy_ci95_low"] <= row["accuracy_mean"] <= row["accuracy_ci95_high"]
    assert {(c["baseline"], c["shots"]) for c in pooled["comparisons"]} == {("pretrain", 1), ("pretrain", 3)}


@pytest.mark.slow
def test_report_refuses_folders_that_are_not_other_splits_of_one_experiment(split_dirs, run_cli):
    rc, _, err = run_cli(["report", str(split_dirs / "s0"), str(split_dirs / "s0c")])
    assert rc == 2 and err.count("\n") == 1 and "same class split" in err and "s0c" in err
    rc, _, err = run_cli(["report", str(split_dirs / "s1"), str(split_dirs / "s0b")])
    assert rc == 2 and err.count("\n") == 1 and "budget_steps" in err and "s0b" in err
    rc, _, err = run_cli(["report", str(split_dirs / "s1"), str(split_dirs / "s2"), "--out", str(split_dirs / "x.txt")])
    assert rc == 2 and "--out" in err and not (split_dirs / "x.txt").exists()
