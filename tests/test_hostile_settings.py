"""Hostile settings (issue 21 items 3, 4, 11, 12, 15): every door to a setting (flags, settings
files, results.json, the Python API) checks its type and the one bounds table; objective
hyper-parameters are finite and in each objective's stated range; sizes whose product exceeds the
machine, overflowing task weights, absurdly nested files and plugins that exit at import are one
line naming the culprit (exit 2); a NaN loss names its likely cause; TOML reads without tomllib.
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from croma.benchmark_config import BenchmarkConfig
from croma.config import TrainConfig
from croma.errors import NonFiniteLossError
from croma.evaluate import EvalConfig

INF, NAN = math.inf, math.nan
TINY = ["--iterations", "1", "--eval-every", "0", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2",
        "--queries", "2", "--meta-batch", "2", "--align-batch", "8", "--hidden", "16", "--embed-dim", "8"]


def _one_line(rc, err, *needles):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (rc, err)
    for n in needles:
        assert n in err, (n, err)


# ---------------------------------------------------------------- item 3: objective hyper-parameters
@pytest.mark.parametrize("loss, key, value", [
    ("clip", "temperature", INF), ("cwcl", "temperature", NAN), ("pcmc", "temperature", 1e-9),
    ("pcmr", "threshold", NAN), ("pcmr", "threshold", 2.0), ("pcmr", "rho", 1e308), ("cmcr", "intra_weight", INF),
    ("cmcr", "noise_std", INF), ("cmcr", "memory_temperature", 1e6), ("cmcr", "memory", 10**9),
])
def test_objective_setting_out_of_range_is_refused_by_validate(loss, key, value):
    with pytest.raises(ValueError, match=rf"^--loss-hp {key}=.*{key} of loss '{loss}' must be"):
        TrainConfig(loss=loss, loss_hp={key: value}).validate()


def test_infinite_temperature_is_refused_before_any_work(run_cli, tmp_path):
    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "synthetic", *TINY, "--loss", "clip", "--loss-hp", "temperature=Infinity",
                          "--checkpoint-dir", str(run)])
    _one_line(rc, err, "--loss-hp temperature=inf", "finite number in [0.0001, 10]")
    assert not run.exists()


def test_every_objective_states_a_range_for_each_numeric_setting(capsys):
    from croma.cli import main
    from croma.losses import loss_infos

    for info in loss_infos():
        numeric = {k for k, v in info.hyper.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numeric <= set(info.ranges), (info.name, numeric - set(info.ranges))
        for k in numeric:  # the defaults lie in their own range
            assert info.ranges[k].problem(info.hyper[k]) is None, (info.name, k)
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert "accepted ranges" in out and "rho [0, 8]" in out and "temperature [0.0001, 10]" in out


def test_an_objective_without_ranges_still_refuses_non_finite_settings():
    from croma.losses.registry import LOSSES, LossModule, get_loss, register_loss

    name = "hostile-settings-toy"
    register_loss(name, paper="a test", hyper={"scale": 1.0})(type("Toy", (LossModule,), {}))
    try:
        assert get_loss(name, scale=2.0).hparams["scale"] == 2.0
        with pytest.raises(ValueError, match="scale of loss 'hostile-settings-toy' must be a finite number"):
            get_loss(name, scale=INF)
    finally:
        LOSSES.unregister(name)  # the registry is shared by every test


# ---------------------------------------------------------------- item 4: one validation path
FILE_CASES = [
    ("inner_lr", 'inner_lr = "0.1"', "--inner-lr must be a finite number in (0, 10000]"),
    ("device", "device = 5", "--device must be text"),
    ("encoder", 'encoder = "mlp"', "--encoder must be a table"),
    ("hidden", "hidden = 1000000", "--hidden must be an integer in [1, 16384]"),
    ("meta_batch", "meta_batch = 1e8", "--meta-batch must be an integer in [1, 65536]"),
    ("eval_tasks", "eval_tasks = 1000000000", "--eval-tasks must be an integer in [1, 100000]"),
    ("skip_bad", 'skip_bad = "no"', "--skip-bad must be true or false"),
    ("eval_shots", 'eval_shots = "15"', "--eval-shots must be a list of integers"),
    ("seed", "seed = -1", "--seed must be an integer in [0, "),
    ("loss_hp", "[loss_hp]\ntemperature = inf", "--loss-hp temperature=inf"),
]


@pytest.mark.parametrize("name, text, needle", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_a_settings_file_is_checked_like_the_flags(run_cli, tmp_path, name, text, needle):
    path = tmp_path / "run.toml"
    path.write_text(text + "\n")
    rc, _, err = run_cli(["train", "synthetic", "--config", str(path), "--iterations", "1", "--eval-every", "0",
                          "--quiet", "--checkpoint-dir", str(tmp_path / "r")])
    _one_line(rc, err, needle, *(["run.toml"] if name != "loss_hp" else []))  # the objective: after the flags
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("settings, needle", [
    ({"skip_bad": "no"}, "--skip-bad must be true or false"),
    ({"methods": "pretrain,croma"}, "--methods must be a list of names"),
    ({"shots": "15"}, "--shots must be a list of integers"),
])
def test_a_results_json_is_checked_like_the_flags(run_cli, tmp_path, settings, needle):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"rows": [], "config": {"benchmark_config": {"benchmark": "synthetic", **settings}}}))
    rc, _, err = run_cli(["benchmark", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    _one_line(rc, err, needle)
    assert not (tmp_path / "out").exists()


BENCH_FILE_CASES = [
    ("shots", "shots = [0]", "bench.toml: --shots must be a list of integers in [1, 1000]"),
    ("queries", "queries = 0", "bench.toml: --queries must be"),
    ("typo", "shot = [1]", "unknown benchmark setting(s) 'shot' (did you mean 'shots'?)"),
    ("methods", 'methods = "pretrain,nope"', "unknown method 'nope'"),
]


@pytest.mark.parametrize("name, text, needle", BENCH_FILE_CASES, ids=[c[0] for c in BENCH_FILE_CASES])
def test_a_benchmark_settings_file_value_is_named_with_the_file(run_cli, tmp_path, name, text, needle):
    """A bad value from ``croma benchmark --config FILE`` names the file as well as the setting (the user
    edits the file, not a flag they never typed); a flag given on the command line is named as the flag."""
    path = tmp_path / "bench.toml"
    path.write_text(f'benchmark = "synthetic"\n{text}\n')
    rc, _, err = run_cli(["benchmark", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    _one_line(rc, err, needle, "bench.toml")
    assert not (tmp_path / "out").exists()
    if name == "shots":
        rc, _, err = run_cli(["benchmark", "--config", str(path), "--shots", "0", "--out", str(tmp_path / "out")])
        _one_line(rc, err, "--shots")
        assert "bench.toml" not in err


def test_a_benchmark_settings_file_takes_methods_as_the_flag_does(tmp_path):
    from croma.cli import build_parser
    from croma.cli.benchmark import config_from_args

    path = tmp_path / "bench.toml"
    path.write_text('benchmark = "synthetic"\nmethods = "croma, pretrain"\n')
    assert config_from_args(build_parser().parse_args(["benchmark", "--config", str(path)])).methods == ["croma", "pretrain"]


def test_a_training_settings_file_typo_gets_a_near_match(run_cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("itrations = 10\n")
    rc, _, err = run_cli(["train", "synthetic", "--config", str(path), "--checkpoint-dir", str(tmp_path / "r")])
    _one_line(rc, err, "run.toml", "'itrations'", "(did you mean 'iterations'?)")
    assert not (tmp_path / "r").exists()


API_CASES = [
    (lambda: TrainConfig(inner_lr="0.1"), "--inner-lr"),
    (lambda: TrainConfig(device=5), "--device must be text"),
    (lambda: TrainConfig(encoders="mlp"), "--encoder"),
    (lambda: TrainConfig(hidden=1_000_000), "--hidden must be an integer in [1, 16384]"),
    (lambda: TrainConfig(meta_batch=10**8), "--meta-batch must be an integer in [1, 65536]"),
    (lambda: TrainConfig(eval_tasks=10**9), "--eval-tasks"),
    (lambda: TrainConfig(skip_bad="no"), "--skip-bad must be true or false"),
    (lambda: TrainConfig(eval_shots="15"), "--eval-shots"),
    (lambda: TrainConfig(time_budget_s=INF), "--time-budget-s"),
    (lambda: TrainConfig(split_classes=[1, 2]), "--split-classes"),
    (lambda: EvalConfig(shots="15"), "--shots must be a list of integers"),
    (lambda: EvalConfig(tasks=10**9), "--eval-tasks must be an integer in [1, 100000]"),
    (lambda: EvalConfig(ways="5"), "--ways"),
    (lambda: EvalConfig(retrieval="no"), "--retrieval must be true or false"),
    (lambda: EvalConfig(prototype_scale=INF), "--prototype-scale must be a finite number in (0, 10000]"),
    (lambda: EvalConfig(queries=0), "--queries must be an integer in [1, 1000]"),
    (lambda: BenchmarkConfig(methods="pretrain,croma"), "--methods must be a list of names"),
    (lambda: BenchmarkConfig(skip_bad="no"), "--skip-bad must be true or false"),
    (lambda: BenchmarkConfig(model={"hidden": 10**6}), "--hidden must be an integer in [1, 16384]"),
    (lambda: BenchmarkConfig(loss_hp={"temperature": INF}), "--loss-hp temperature=inf"),
    (lambda: BenchmarkConfig(seed="0"), "--seed"),
    (lambda: BenchmarkConfig(device=0), "--device must be text"),
    (lambda: BenchmarkConfig(method_hp={"croma": {"inner_lr": 1e300}}), "--method-hp croma.inner_lr"),
    (lambda: BenchmarkConfig(task_weights={"align": 1e308, "source_cls": 1e308}), "--task-weights align"),
]


@pytest.mark.parametrize("make, needle", API_CASES, ids=[f"api{i}" for i in range(len(API_CASES))])
def test_python_api_settings_pass_the_same_checks(make, needle):
    with pytest.raises(ValueError) as info:
        make().validate()
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_one_bounds_table_for_flags_and_configs():
    from croma.bounds import BOUNDS
    from croma.cli import NUMERIC_BOUNDS

    assert NUMERIC_BOUNDS is BOUNDS
    for name in ("meta_batch", "hidden", "eval_tasks", "ways", "align_batch"):
        hi = int(BOUNDS[name][2])
        TrainConfig(**{name: hi}).check_types()  # the maximum is a valid setting ...
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be an integer in"):
            TrainConfig(**{name: hi + 1}).validate()  # ... one more is refused, whichever door it came through


# ---------------------------------------------------------------- item 11: products, overflow, nesting, plugins
def test_sizes_whose_product_exceeds_the_machine_are_refused_naming_them(monkeypatch):
    import croma.bounds

    monkeypatch.setattr(croma.bounds, "machine_memory", lambda device="cpu": (2**30, "machine"))
    cfg = TrainConfig(meta_batch=64, task_chunk=0, embed_dim=4096, device="cpu")
    cfg.validate()  # every setting is in range on its own
    with pytest.raises(ValueError, match=r"need at least .* GiB of memory \(meta_batch=64 \(task_chunk=0\).*"
                                         r"embed_dim=4096.*more than this machine's 1 GiB"):
        cfg.check_memory()
    TrainConfig(meta_batch=64, task_chunk=4, embed_dim=256, device="cpu").check_memory()  # a normal run fits


def test_eval_sizes_whose_product_is_absurd_are_refused():
    with pytest.raises(ValueError, match=r"eval tasks=100000 x ways=1000 x \(shots=1000 \+ queries=1000\)"):
        EvalConfig(tasks=100000, ways=1000, shots=[1000], queries=1000).validate()


def test_cli_refuses_a_huge_product_before_loading_data(run_cli, tmp_path):
    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "synthetic", "--iterations", "1", "--eval-every", "0", "--quiet", "--device", "cpu",
                          "--meta-batch", "65536", "--task-chunk", "0", "--embed-dim", "16384",
                          "--checkpoint-dir", str(run)])
    _one_line(rc, err, "meta_batch=65536", "embed_dim=16384", "of memory")


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: not enough memory: you tried to "
                 "allocate 123456789 bytes."),
    MemoryError(),
], ids=["cuda", "cpu", "python"])
def test_out_of_memory_during_training_is_one_line_naming_the_sizes(run_cli, tmp_path, monkeypatch, exc):
    from croma.learner import MetaLearner

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(MetaLearner, "step", boom)
    rc, _, err = run_cli(["train", "synthetic", *TINY, "--checkpoint-dir", str(tmp_path / "r")])
    _one_line(rc, err, "out of memory", "meta_batch=2", "embed_dim=8")


@pytest.mark.parametrize("how", ["flag", "file"])
def test_task_weights_whose_sum_overflows_are_refused(run_cli, tmp_path, how):
    if how == "flag":
        extra = ["--task-weights", "align=1e308,source_cls=1e308"]
    else:
        (tmp_path / "c.json").write_text(json.dumps({"task_weights": {"align": 1e308, "source_cls": 1e308}}))
        extra = ["--config", str(tmp_path / "c.json")]
    rc, _, err = run_cli(["train", "synthetic", *TINY, *extra, "--checkpoint-dir", str(tmp_path / "r")])
    _one_line(rc, err, "--task-weights align must be a finite number in [0, 1e+09]")
    with pytest.raises(ValueError, match="--task-weights"):
        TrainConfig(task_weights={"align": 1e308, "source_cls": 1e308}).validate()


@pytest.mark.parametrize("suffix, depth", [(".json", 100000), (".json", 40), (".toml", 5000)])
def test_deeply_nested_settings_files_are_one_line(run_cli, tmp_path, suffix, depth):
    path = tmp_path / f"deep{suffix}"
    if suffix == ".json":
        path.write_text('{"loss_hp": {"x": ' + "[" * depth + "]" * depth + "}}")
    else:
        path.write_text("x = " + "[" * depth + "]" * depth + "\n")
    rc, _, err = run_cli(["train", "synthetic", "--config", str(path), "--checkpoint-dir", str(tmp_path / "r")])
    _one_line(rc, err, path.name, "nested deeper than 32 levels")


@pytest.mark.parametrize("flag, value", [("--loss-hp", "x=" + "[" * 5000 + "]" * 5000),
                                         ("--method-hp", '{"croma": ' + "[" * 5000 + "]" * 5000 + "}")])
def test_deeply_nested_flag_values_are_one_line(run_cli, tmp_path, flag, value):
    cmd = ["benchmark", "synthetic", "--out", str(tmp_path / "o")] if flag == "--method-hp" else [
        "train", "synthetic", "--checkpoint-dir", str(tmp_path / "r")]
    rc, _, err = run_cli([*cmd, flag, value])
    _one_line(rc, err, flag, "nested deeper than 32 levels")


@pytest.mark.parametrize("body, needle", [("import sys\nsys.exit(0)\n", "sys.exit(0)"),
                                          ("import sys\nsys.exit('bye')\n", "sys.exit('bye')"),
                                          ("raise KeyboardInterrupt\n", "KeyboardInterrupt")])
def test_a_plugin_that_exits_at_import_is_one_line_naming_it(run_cli, tmp_path, monkeypatch, body, needle):
    name = f"hostile_plugin_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CROMA_PLUGINS", name)
    rc, out, err = run_cli(["losses"])
    _one_line(rc, err, f"CROMA_PLUGINS: importing {name!r} stopped", needle)
    assert out == "" and name not in sys.modules


# ---------------------------------------------------------------- item 12: a NaN loss names its likely cause
def _trainer(bench, **kw):
    from croma.fit import CromaTrainer

    base = dict(benchmark="synthetic", iterations=1, meta_batch=2, inner_steps=1, inner_lr=0.05, inner_optimizer="sgd",
                align_batch=8, ways=3, shots=2, queries=2, eval_every=0, checkpoint_every=0,
                model={"embed_dim": 8, "hidden": 16}, device="cpu")
    return CromaTrainer(TrainConfig(**{**base, **kw}), bench)


@pytest.mark.parametrize("kw, what, needles", [
    ({"loss": "clip", "loss_hp": {"temperature": 1e-4}}, "align loss", ["--loss clip --loss-hp temperature=0.0001",
                                                                       "usual 0.005 to 1"]),
    ({"loss": "pcmr", "loss_hp": {"rho": 6.0}}, "align loss", ["--loss-hp rho=6.0"]),
    ({"loss": "clip"}, "align loss", ["--inner-lr (now 0.05)", "--loss clip --loss-hp"]),
    ({"loss": "clip", "loss_hp": {"temperature": 1e-4}}, "source_cls loss", ["--inner-lr (now 0.05) or --meta-lr"]),
    ({}, "meta-parameter update", ["lower --meta-lr (now 1)"]),
])
def test_non_finite_message_names_the_likely_culprit(bench, kw, what, needles):
    trainer = _trainer(bench, **kw)
    with pytest.raises(NonFiniteLossError) as info:
        trainer._non_finite(what, 0)
    for n in needles:
        assert n in str(info.value), (n, str(info.value))
    if what == "source_cls loss":
        assert "temperature" not in str(info.value)


@pytest.mark.parametrize("terms, loss_hp, needles", [
    (["align"], {"temperature": 1e-4}, ["--loss-hp temperature=0.0001", "align_weight", "ordinary_lr (now 0.5"]),
    (["align"], {}, ["--loss clip --loss-hp", "ordinary_lr (now 0.5"]),
    (["confusion"], {}, ["confusion_weight", "ordinary_lr (now 0.5"]),
    (["source_cls"], {"temperature": 1e-4}, ["lower the method's ordinary_lr (now 0.5"]),
])
def test_ordinary_training_non_finite_names_the_term_and_setting(terms, loss_hp, needles):
    from croma.errors import ordinary_non_finite_advice
    from croma.losses import get_loss

    text = ordinary_non_finite_advice(terms, 0.5, get_loss("clip", **loss_hp))
    for n in needles:
        assert n in text, (n, text)
    assert ("temperature" in text) == ("align" in terms and bool(loss_hp))


# ---------------------------------------------------------------- item 15: TOML without tomllib (Python 3.10)
def test_toml_settings_read_with_tomli_when_tomllib_is_missing(tmp_path, monkeypatch):
    pytest.importorskip("tomli")
    from croma.factory import read_settings

    path = tmp_path / "run.toml"
    path.write_text('iterations = 7\n[loss_hp]\ntemperature = 0.2\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    assert read_settings(path) == ({"iterations": 7, "loss_hp": {"temperature": 0.2}}, "file")


def test_toml_without_tomllib_or_tomli_names_the_package(tmp_path, monkeypatch):
    from croma.errors import CromaError
    from croma.factory import read_settings

    path = tmp_path / "run.toml"
    path.write_text("iterations = 7\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(CromaError, match="run.toml: reading TOML on Python < 3.11 needs the tomli package"):
        read_settings(path)


def test_tomli_is_declared_for_python_before_3_11():
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert cfg["options"]["python_requires"].strip() == ">=3.10"
    reqs = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert any(r.startswith("tomli") and 'python_version < "3.11"' in r for r in reqs), reqs


def test_label_noise_with_a_noise_sweep_is_refused_in_one_line(run_cli, tmp_path):
    """The sweep sets each run's rate: a --label-noise beside it would be silently ignored."""
    rc, _, err = run_cli(["benchmark", "synthetic", "--noise-sweep", "0,0.2", "--label-noise", "0.1", "--out",
                          str(tmp_path / "out")])
    _one_line(rc, err, "--label-noise 0.1 and --noise-sweep")
    assert not (tmp_path / "out").exists()


def test_rows_without_the_asked_modality_are_counted_in_the_message(tmp_path):
    from episodes.datasets.rows import load_rows
    from episodes.errors import DataError

    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": f"i{i}", "text": "x"}) + "\n" for i in range(3)))
    with pytest.raises(DataError, match=r"none of its 3 rows holds a value of the asked modality 'image'"):
        load_rows(path, "image", skipped=[])
