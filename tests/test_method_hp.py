"""`croma benchmark --method-hp`: per-method hyper-parameters from the command line, merged over
the preset's tuned ones, checked before any work, stored in results.json and reused by --config."""

import json

import pytest

from croma.baselines import list_methods
from croma.benchmark import PRESETS, BenchmarkConfig, _method_hp
from croma.benchmark_config import METHOD_HP_KEYS
from croma.cli import build_parser
from croma.cli.benchmark import config_from_args
from croma.cli.config_flags import parse_method_hp

TINY = ["--shots", "1", "--repeats", "1", "--eval-tasks", "2", "--ways", "3", "--budget-steps", "40", "--device", "cpu",
        "--quiet"]


def _cfg(*argv: str) -> BenchmarkConfig:
    return config_from_args(build_parser().parse_args(["benchmark", *argv]))


def test_key_value_and_json_forms_parse_to_the_same_settings():
    assert parse_method_hp(["croma.inner_lr=0.001"]) == {"croma": {"inner_lr": 0.001}}
    assert parse_method_hp(['{"croma": {"inner_lr": 0.001}}']) == {"croma": {"inner_lr": 0.001}}
    # repeated and comma-separated items merge; dotted keys nest; VALUE as --loss-hp (JSON, else text)
    got = parse_method_hp(["croma.loss=cmcr,croma.loss_hp.memory=256", "align-classify.ordinary_lr=3e-4",
                           "croma.loss_hp.memory_temperature=0.02"])
    assert got == {"croma": {"loss": "cmcr", "loss_hp": {"memory": 256, "memory_temperature": 0.02}},
                   "align-classify": {"ordinary_lr": 0.0003}}
    assert parse_method_hp(['croma={"inner_lr": 0.001, "task_mix": 0.5}', "croma.task_mix=0.25"]) == {
        "croma": {"inner_lr": 0.001, "task_mix": 0.25}}  # later items win, key by key
    assert parse_method_hp(['{"croma": {"loss_hp": {"memory": 64}}}', "croma.loss_hp.memory=256"]) == {
        "croma": {"loss_hp": {"memory": 256}}}


def test_the_flag_lands_in_the_config_merged_over_the_preset():
    cfg = _cfg("synthetic", "--method-hp", "croma.inner_lr=0.01", "--method-hp", '{"oracle": {"meta_lr": 0.5}}')
    assert cfg.method_hp == {"croma": {"inner_lr": 0.01}, "oracle": {"meta_lr": 0.5}}
    quick = PRESETS["quick"]
    assert _method_hp(cfg, quick, "croma") == {**quick["method_hp"]["croma"], "inner_lr": 0.01}
    assert _method_hp(cfg, quick, "oracle") == {**quick["method_hp"]["oracle"], "meta_lr": 0.5}
    assert _method_hp(cfg, quick, "unsup-meta") == quick["method_hp"]["unsup-meta"]  # not named: the preset's
    assert _cfg("synthetic").method_hp is None  # not given: nothing changes


def test_every_builtin_method_declares_its_settings_and_the_presets_use_only_those():
    assert set(METHOD_HP_KEYS) <= set(list_methods())
    for name in ("pretrain", "croma", "oracle", "unsup-meta", "align-classify", "align-meta-classify", "shared",
                 "shared-align", "shared-confusion", "shared-target-labels"):
        assert name in METHOD_HP_KEYS
    for preset in PRESETS.values():
        for name, hp in preset["method_hp"].items():
            assert set(hp) <= set(METHOD_HP_KEYS[name]), name
            BenchmarkConfig(benchmark="synthetic", method_hp={name: dict(hp)}).validate()


@pytest.mark.parametrize(
    "value, needle",
    [
        ("nope.inner_lr=0.1", "unknown method 'nope'"),
        ("croma.ordinary_lr=0.1", "croma has no setting 'ordinary_lr'"),
        ("pretrain.inner_lr=0.1", "pretrain has no setting 'inner_lr'"),
        ("croma.inner_lr=-1", "croma.inner_lr must be a finite number > 0"),
        ("croma.task_mix=2", "croma.task_mix must be in [0, 1]"),
        ("align-classify.ordinary_batch=0.5", "align-classify.ordinary_batch must be an integer"),
        ("croma.loss=nope", "croma.loss must be one of"),
        ("croma.loss_hp.bogus=1", "unknown hyper-parameter 'bogus'"),
        ("inner_lr=0.1", "expects METHOD.KEY=VALUE"),
        ("croma.inner_lr", "expects KEY=VALUE"),
        ('{"croma": 0.1}', "expects a JSON object"),
        ('{"croma": {"inner_lr": }', "not a JSON object"),
    ],
)
def test_bad_method_hp_is_a_one_line_error_naming_the_flag_exit_2(run_cli, tmp_path, value, needle):
    rc, _, err = run_cli(["benchmark", "synthetic", "--method-hp", value, "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2, err
    assert err.startswith("error: --method-hp") and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # checked before any work


def test_a_settings_file_method_hp_is_checked_and_the_flag_merges_over_it(run_cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"benchmark": "synthetic", "method_hp": {"croma": {"momentum": 0.9}}}))
    rc, _, err = run_cli(["benchmark", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--method-hp" in err and "momentum" in err and len(err.strip().splitlines()) == 1, err
    good = tmp_path / "good.toml"
    good.write_text('benchmark = "synthetic"\n[method_hp.croma]\ninner_lr = 0.01\nloss = "cmcr"\n'
                    '[method_hp.croma.loss_hp]\nmemory = 64\n')
    cfg = _cfg("--config", str(good), "--method-hp", "croma.loss_hp.memory=256,croma.task_mix=0.5")
    assert cfg.method_hp == {"croma": {"inner_lr": 0.01, "loss": "cmcr", "loss_hp": {"memory": 256}, "task_mix": 0.5}}
    assert _cfg("--config", str(good)).method_hp == {"croma": {"inner_lr": 0.01, "loss": "cmcr", "loss_hp": {"memory": 64}}}


@pytest.mark.slow
def test_the_setting_reaches_the_method_is_stored_and_reruns_from_results_json(run_cli, tmp_path):
    out = tmp_path / "a"
    rc, _, err = run_cli(["benchmark", "synthetic", "--methods", "croma", *TINY, "--out", str(out),
                          "--method-hp", "croma.inner_lr=0.03,croma.task_mix=0.25"])
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["benchmark_config"]["method_hp"] == {"croma": {"inner_lr": 0.03, "task_mix": 0.25}}
    croma = res["config"]["methods"]["croma"]
    assert croma["hp"] == {"inner_lr": 0.03, "task_mix": 0.25}
    # what the method trained with: its Reptile settings and the meta-batch mix the task mix makes
    assert croma["notes"]["inner_lr"] == 0.03 and croma["notes"]["task_mix"] == 0.25
    assert croma["notes"]["task_weights"] == {"align": 0.25, "source_cls": 0.75}
    # without the flag: the preset's tuned values (inner_lr 3e-3, task_mix 0.75)
    base = _cfg("synthetic", "--methods", "croma", *TINY)
    assert _method_hp(base, PRESETS["quick"], "croma") == PRESETS["quick"]["method_hp"]["croma"] != croma["hp"]
    # --config results.json reruns with the same per-method settings, bitwise the same figures
    again = tmp_path / "b"
    rc, _, err = run_cli(["benchmark", "--config", str(out / "results.json"), "--out", str(again), "--quiet"])
    assert rc == 0, err
    res2 = json.loads((again / "results.json").read_text())
    assert res2["config"]["benchmark_config"]["method_hp"] == res["config"]["benchmark_config"]["method_hp"]
    assert res2["config"]["methods"]["croma"]["hp"] == croma["hp"]
    assert res2["config"]["methods"]["croma"]["eval_scores_meta_val"] == croma["eval_scores_meta_val"]
    assert [r["accuracy_mean"] for r in res2["rows"]] == [r["accuracy_mean"] for r in res["rows"]]


def _tune_methods():
    from conftest import load_tool

    return load_tool("tune_methods")


def test_tune_methods_equal_effort_grids_and_its_errors(tmp_path):
    tm = _tune_methods()
    for name, space in tm.SPACES.items():  # the equal-effort grid: TRIALS points of settings the method reads
        assert len(tm.trials(space)) == tm.TRIALS and set(space) <= set(METHOD_HP_KEYS[name]), name
    with pytest.raises(SystemExit, match="no search space for nope"):
        tm.main(["--benchmark", "synthetic", "--methods", "nope", "--budget-steps", "1"])
    with pytest.raises(SystemExit, match="--method-hp"):
        tm.main(["--benchmark", "synthetic", "--method-hp", "croma.bogus=1"])
    # tune_manifest.py's options (now tune_methods.py's) parse; --manifest makes the benchmark manifest
    args = tm.parser().parse_args(["--manifest", "m.jsonl", "--source", "image", "--target", "text", "--backbone",
                                   "image=efficientnet-lite0", "--cache-dir", "c", "--shots", "1", "5", "--ways", "5",
                                   "--budget-steps", "300", "--loss", "cmcr", "--loss-hp", "memory=256",
                                   "--task-weights", "align=0.5,source_cls=0.5", "--space", "{}"])
    assert args.manifest == "m.jsonl" and args.backbone == ["image=efficientnet-lite0"] and args.budget_steps == 300


@pytest.mark.slow
def test_tune_methods_design_check_starts_from_the_tuned_and_given_settings(tmp_path, capsys):
    """A --space trial: the preset's method_hp, then --method-hp, then the trial's values; scored on
    meta-val with the selection trace (what tune_manifest.py recorded)."""
    out = tmp_path / "t.json"
    rc = _tune_methods().main(["--benchmark", "synthetic", "--methods", "croma", "--shots", "1", "--ways", "3",
                               "--budget-steps", "40", "--space", '{"croma": {"inner_lr": [0.001, 0.03]}}',
                               "--method-hp", "croma.task_mix=0.25", "--out", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["budget_steps"] == 40 and rep["benchmark"] == "synthetic" and rep["split"] == "meta_val"
    rows = rep["methods"]["croma"]
    assert [r["hp"] for r in rows] == [{"inner_lr": 0.001}, {"inner_lr": 0.03}]
    for r, lr in zip(rows, (0.001, 0.03)):
        assert r["notes"]["inner_lr"] == lr and r["notes"]["task_mix"] == 0.25 and r["notes"]["optimizer_steps"] == 40
        assert len(r["val_trace"]) >= 2 and set(r["meta_val"]) == set(r["eval_choice"]) == {"1"}
    assert rep["chosen"]["croma"] == max(rows, key=lambda r: r["score"])["hp"]
    import croma.baselines.common as common
    import croma.baselines.reptile_runs as reptile_runs

    assert reptile_runs.meta_val_score is common.meta_val_score  # the trace hook is removed afterwards
