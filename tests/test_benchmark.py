import csv
import json

import pytest
import torch

from croma.baselines import get_method, list_methods, methods_for
from croma.baselines.common import noisy_target_bench, target_pool_counts
from croma.benchmark import BenchmarkConfig, run_benchmark, run_noise_sweep
from croma.cli import main
from croma.report import format_table
from episodes.datasets.synthetic import make_synthetic_benchmark

ALL = [
    "pretrain", "align-classify", "align-meta-classify", "croma", "oracle", "unsup-meta",
    "shared", "shared-align", "shared-confusion", "shared-target-labels",
]


def _bench():
    return make_synthetic_benchmark(num_classes=25, per_class=24, seed=0)


def _cfg(tmp_path, **kw):
    base = dict(benchmark="synthetic", shots=[1, 3], repeats=2, eval_tasks=2, ways=3, budget_steps=80,
                device="cpu", out=str(tmp_path / "out"), progress=False)
    base.update(kw)
    return BenchmarkConfig(**base)


def test_every_paper_method_is_registered_and_applies_to_vector_benchmarks():
    assert set(ALL) <= set(list_methods())
    assert set(ALL) <= set(methods_for(_bench()))
    assert get_method("oracle").uses_target_labels and not get_method("croma").uses_target_labels
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")


@pytest.mark.slow
def test_benchmark_writes_schema_and_files(tmp_path):
    cfg = _cfg(tmp_path, methods=["pretrain", "croma", "oracle"])
    res = run_benchmark(cfg, bench=_bench())
    out = tmp_path / "out"
    data = json.loads((out / "results.json").read_text())
    for key in ("benchmark", "loss", "ways", "label_noise", "preset", "seed", "wall_seconds", "rows", "config",
                "comparisons", "budget_steps"):
        assert key in data
    assert data["ways"] == 3 and data["loss"] == "cwcl"
    assert {(r["method"], r["shots"]) for r in data["rows"]} == {(m, k) for m in ("pretrain", "croma", "oracle") for k in (1, 3)}
    for r in data["rows"]:
        for key in ("method", "shots", "accuracy_mean", "accuracy_std", "repeats", "target_samples", "target_labels",
                    "accuracy_ci95", "episodes", "examples"):
            assert key in r
        assert 0.0 <= r["accuracy_mean"] <= 100.0 and r["repeats"] == 2 and r["episodes"] == 4
        assert r["optimizer_steps"] in (0, 80)  # the budget, exactly, for every trained method
    rows = {r["method"]: r for r in data["rows"] if r["shots"] == 1}
    bench = _bench()
    # the #target samples(labels) column is computed from what each method may see
    assert (rows["pretrain"]["target_samples"], rows["pretrain"]["target_labels"]) == (0, 0)
    assert rows["croma"]["target_samples"] == bench.align_target_rows.numel() and rows["croma"]["target_labels"] == 0
    n_train = bench.rows_of_classes("audio", bench.splits["meta_train"]).numel()
    assert (rows["oracle"]["target_samples"], rows["oracle"]["target_labels"]) == (n_train, n_train)
    assert rows["croma"]["optimizer_steps"] == 80 and rows["pretrain"]["optimizer_steps"] == 0
    # croma against each other method at each k, paired over the same 4 episodes
    assert {(c["baseline"], c["shots"]) for c in data["comparisons"]} == {(m, k) for m in ("pretrain", "oracle") for k in (1, 3)}
    for c in data["comparisons"]:
        assert set(c) >= {"method", "baseline", "shots", "mean_diff", "ci95_low", "ci95_high", "episodes", "seeds"}
        assert c["method"] == "croma" and c["episodes"] == 4 and c["ci95_low"] <= c["mean_diff"] <= c["ci95_high"]
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(res)
    assert "1-shot" in table and "croma" in table and "#target samples(labels)" in table


@pytest.mark.slow
def test_domain_adaptation_family_runs(tmp_path):
    res = run_benchmark(_cfg(tmp_path, methods=["shared", "shared-confusion", "shared-target-labels"], shots=[1]), bench=_bench())
    assert [r["method"] for r in res["rows"]] == ["shared", "shared-confusion", "shared-target-labels"]


@pytest.mark.slow
def test_same_seed_same_accuracies_bitwise_for_trained_methods(tmp_path):
    """Step budgets: a result is a function of the seed, not of how busy the machine was."""
    methods = ["pretrain", "align-classify", "croma"]
    a = run_benchmark(_cfg(tmp_path, methods=methods, out=None), bench=_bench())
    b = run_benchmark(_cfg(tmp_path, methods=methods, out=None), bench=_bench())
    assert [r["accuracy_mean"] for r in a["rows"]] == [r["accuracy_mean"] for r in b["rows"]]
    assert a["comparisons"] == b["comparisons"]


def test_noisy_target_bench_changes_only_meta_train_target_labels():
    b = _bench()
    n = noisy_target_bench(b, 0.5, seed=0)
    tl, nl = b.data["audio"].labels, n.data["audio"].labels
    changed = tl != nl
    train = torch.isin(tl, torch.tensor(b.splits["meta_train"]))
    assert changed.any() and not (changed & ~train).any()
    assert torch.isin(nl[train], torch.tensor(b.splits["meta_train"])).all()
    assert torch.equal(n.data["text"].labels, b.data["text"].labels)
    assert abs(changed[train].float().mean().item() - 0.5) < 0.12
    assert target_pool_counts(b) == (0, 0)


def test_noise_sweep_writes_plots(tmp_path):
    results = run_noise_sweep(_cfg(tmp_path, methods=["pretrain"], shots=[1]), [0.0, 0.4])
    assert [r["label_noise"] for r in results] == [0.0, 0.4]
    out = tmp_path / "out"
    assert (out / "noise_sweep.json").exists() and (out / "noise_sweep_1shot.png").exists()
    assert (out / "noise_0.4" / "results.json").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["benchmark", "synthetic", "--label-noise", "1.5"], "--label-noise"),
        (["benchmark", "synthetic", "--methods", "nope"], "unknown method"),
        (["benchmark", "synthetic", "--repeats", "0"], "--repeats"),
        (["benchmark", "synthetic", "--noise-sweep", "0,x"], "--noise-sweep"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, needle, capsys, tmp_path):
    rc = main(argv + ["--out", str(tmp_path / "o"), "--quiet"]) if "--noise-sweep" not in argv else None
    if rc is None:
        with pytest.raises(SystemExit) as e:
            main(argv + ["--out", str(tmp_path / "o")])
        rc = e.value.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_budget_seconds_is_an_option_and_never_cuts_a_run_to_nothing(tmp_path):
    """Wall-clock mode (exploration): trains until the time is spent, with at least one step."""
    res = run_benchmark(_cfg(tmp_path, methods=["align-classify", "croma"], budget_steps=None, budget_seconds=0.5,
                             shots=[1], out=None), bench=_bench())
    steps = {r["method"]: r["optimizer_steps"] for r in res["rows"]}
    assert steps["align-classify"] >= 1 and steps["croma"] >= 40  # croma: whole iterations of 8 tasks x 5 steps
    assert res["budget_steps"] is None and res["config"]["budget_seconds_per_method"] == 0.5
