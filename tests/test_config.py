"""Nested configs, strict files, --config / --loss-hp / --task-weights, the outer-algorithm registry,
and the layout rules (no import cycle, no file in croma/ over 400 lines)."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from croma.cli import main
from croma.config import FLAT, InnerLoopConfig, TrainConfig
from croma.fit import CromaTrainer

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- TrainConfig
def test_sections_flat_names_and_replace():
    cfg = TrainConfig(inner=InnerLoopConfig(lr=3e-3), iterations=7, eval_shots=[1, 5], model={"hidden": 16})
    assert cfg.inner.lr == cfg.inner_lr == 3e-3 and cfg.outer.iterations == cfg.iterations == 7
    assert cfg.eval.shots == [1, 5] and cfg.model == {"hidden": 16}
    other = dataclasses.replace(cfg, inner_lr=1e-2, seed=3)
    assert other.inner.lr == 1e-2 and other.run.seed == 3 and cfg.inner.lr == 3e-3  # a copy, not shared
    assert cfg.replace(task_mix=0.25).outer.task_mix == 0.25 and cfg.task_mix == 0.5
    cfg.inner_steps = 2
    assert cfg.inner.steps == 2
    with pytest.raises(TypeError, match="unknown setting 'inner_lrr'"):
        TrainConfig(inner_lrr=1.0)
    with pytest.raises(AttributeError):
        cfg.not_a_setting = 1
    # every flat name maps to exactly one section field
    assert len(set(FLAT.values())) == len(FLAT)


def test_from_dict_nested_flat_mixed_and_strict():
    cfg = TrainConfig(iterations=9, loss_hp={"temperature": 0.2}, task_weights={"align": 1.0, "source_cls": 2.0})
    d = cfg.to_dict()
    assert set(d) == {"data", "model", "inner", "outer", "eval", "run"}
    assert TrainConfig.from_dict(d) == cfg
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg  # through a JSON file
    assert TrainConfig.from_dict(cfg.flat()) == cfg  # the pre-section (checkpoint) form
    assert TrainConfig.from_dict({"outer": {"iterations": 9}, "inner_lr": 0.5}).inner.lr == 0.5
    with pytest.raises(ValueError, match="'bogus'"):
        TrainConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="inner.lrr"):
        TrainConfig.from_dict({"inner": {"lrr": 1}})
    assert TrainConfig.flat_keys({"inner": {"lr": 1}, "seed": 2, "model": {}}) == {"inner_lr", "seed", "model"}


def test_validate_names_the_flag():
    for kw, flag in [({"inner_lr": -1.0}, "--inner-lr"), ({"task_weights": {"nope": 1.0}}, "--task-weights"),
                     ({"algorithm": "maml2"}, "--outer"), ({"model": {"widht": 3}}, "--model"),
                     ({"meta_batch": True}, "--meta-batch")]:
        with pytest.raises(ValueError, match=flag):
            TrainConfig(**kw).validate()


# ---------------------------------------------------------------- outer algorithms
def _cfg(**kw):
    base = dict(benchmark="synthetic", iterations=3, meta_batch=4, task_mix=0.5, inner_steps=1, inner_lr=0.05,
                inner_optimizer="sgd", align_batch=8, ways=3, shots=2, queries=2, eval_every=0, checkpoint_every=0,
                model={"embed_dim": 16, "hidden": 16}, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_fomaml_direction_is_the_gradient_at_the_adapted_parameters(bench):
    """With SGD, Reptile's 2-step delta minus its 1-step delta is -lr * grad L(phi_1): exactly
    first-order MAML's direction after one step (an independent route to the same number)."""
    one = CromaTrainer(_cfg(), bench)
    two = CromaTrainer(_cfg(inner_steps=2), bench)
    fo = CromaTrainer(_cfg(algorithm="fomaml"), bench)
    d1, n, _ = one.task_deltas(one.theta, 1)
    d2, _, _ = two.task_deltas(two.theta, 1)
    df, nf, _ = fo.task_deltas(fo.theta, 1)
    assert n == nf == 4
    scale = max(float(v.abs().max()) for v in one.theta.values())
    # each delta is a difference of float32 parameters of size <= scale, summed over n tasks
    tol = 8 * n * torch.finfo(torch.float32).eps * scale
    for k in d1:
        assert torch.allclose(0.05 * df[k], d2[k] - d1[k], atol=tol, rtol=0), k
    assert any(float(v.abs().max()) > 100 * tol for v in df.values())  # not trivially zero


def test_fomaml_trains_through_the_cli(tmp_path, capsys):
    rc = main(["train", "synthetic", "--outer", "fomaml", "--meta-lr", "0.01", "--iterations", "3", "--meta-batch", "2",
               "--ways", "3", "--shots", "2", "--queries", "2", "--align-batch", "8", "--eval-every", "0",
               "--checkpoint-dir", str(tmp_path / "r"), "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    cfg = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["config"]
    assert cfg["outer"]["algorithm"] == "fomaml"


# ---------------------------------------------------------------- --config, --loss-hp, --task-weights
TRAIN = ["--iterations", "3", "--meta-batch", "2", "--ways", "3", "--shots", "2", "--queries", "2", "--align-batch", "8",
         "--eval-every", "2", "--eval-tasks", "2", "--eval-shots", "1", "--quiet", "--device", "cpu"]


def _params(path):
    return torch.load(path, weights_only=True)["model"]


def test_config_from_checkpoint_reproduces_the_run(tmp_path, capsys):
    assert main(["train", "synthetic", *TRAIN, "--checkpoint-dir", str(tmp_path / "a"), "--loss-hp", "temperature=0.2",
                 "--task-weights", "align=1,source_cls=3"]) == 0
    ck = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert ck["config"]["outer"]["loss_hp"] == {"temperature": 0.2}
    assert ck["config"]["outer"]["task_weights"] == {"align": 1.0, "source_cls": 3.0}
    assert main(["train", "--config", str(tmp_path / "a" / "last.pt"), "--checkpoint-dir", str(tmp_path / "b")]) == 0
    a, b = _params(tmp_path / "a" / "last.pt"), _params(tmp_path / "b" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # flags given on the command line override the file
    assert main(["train", "--config", str(tmp_path / "a" / "last.pt"), "--checkpoint-dir", str(tmp_path / "c"),
                 "--seed", "5", "--loss-hp", "temperature=0.3"]) == 0
    c = torch.load(tmp_path / "c" / "last.pt", weights_only=True)["config"]
    assert c["run"]["seed"] == 5 and c["outer"]["loss_hp"] == {"temperature": 0.3}
    assert c["outer"]["task_weights"] == {"align": 1.0, "source_cls": 3.0}  # kept from the file


def test_config_files_json_and_toml(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[data]\nbenchmark = "synthetic"\n[outer]\nways = 3\nshots = 2\nqueries = 2\n'
                                     'iterations = 2\nmeta_batch = 2\nalign_batch = 8\n[eval]\nevery = 0\n'
                                     f'[run]\ncheckpoint_dir = "{(tmp_path / "t").as_posix()}"\ndevice = "cpu"\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--quiet"]) == 0
    t = torch.load(tmp_path / "t" / "last.pt", weights_only=True)
    assert t["iteration"] == 2 and t["config"]["outer"]["ways"] == 3
    flat = {"benchmark": "synthetic", "ways": 3, "shots": 2, "queries": 2, "iterations": 2, "meta_batch": 2,
            "align_batch": 8, "eval_every": 0, "device": "cpu"}
    (tmp_path / "c.json").write_text(json.dumps(flat))
    assert main(["train", "--config", str(tmp_path / "c.json"), "--checkpoint-dir", str(tmp_path / "j"), "--quiet"]) == 0
    j = _params(tmp_path / "j" / "last.pt")
    assert all(torch.equal(j[k], v) for k, v in t["model"].items())


@pytest.mark.parametrize("argv, needle", [
    (["--config", "{d}/missing.json"], "missing.json"),
    (["--config", "{d}/bad.json"], "inner.lrr"),
    (["--config", "{d}/broken.toml"], "broken.toml"),
    (["--loss-hp", "nope=1"], "nope"),
    (["--loss-hp", "temperature"], "--loss-hp"),
    (["--task-weights", "align=-1"], "--task-weights"),
    (["--task-weights", "bogus=1"], "--task-weights"),
])
def test_bad_config_inputs_are_one_line_errors(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.json").write_text('{"inner": {"lrr": 1}}')
    (tmp_path / "broken.toml").write_text("[data\n")
    argv = [a.format(d=tmp_path) for a in argv]
    rc = main(["train", "synthetic", *TRAIN, "--checkpoint-dir", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_benchmark_config_reruns_a_results_file(tmp_path, capsys):
    argv = ["benchmark", "synthetic", "--ways", "3", "--methods", "croma,pretrain", "--budget-steps", "40",
            "--eval-tasks", "5", "--repeats", "1", "--shots", "1", "--quiet", "--device", "cpu",
            "--loss-hp", "temperature=0.2", "--task-weights", "align=3,source_cls=1"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    assert a["config"]["train"]["outer"]["loss_hp"] == {"temperature": 0.2}
    assert main(["benchmark", "--config", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "b")]) == 0
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [(r["method"], r["shots"], r["accuracy_mean"]) for r in a["rows"]] == \
        [(r["method"], r["shots"], r["accuracy_mean"]) for r in b["rows"]]
    assert b["config"]["benchmark_config"]["task_weights"] == {"align": 3.0, "source_cls": 1.0}
    rc = main(["benchmark", "--config", str(tmp_path / "a" / "results.json"), "--out", str(tmp_path / "c"),
               "--methods", "pretrain"])
    assert rc == 0 and [r["method"] for r in json.loads((tmp_path / "c" / "results.json").read_text())["rows"]] \
        == ["pretrain"] * 1


# ---------------------------------------------------------------- layout rules
def _modules():
    mods = {}
    for pkg in ("croma", "episodes"):
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def test_import_graph_is_acyclic():
    """Every import (module level or inside functions) among croma/ and episodes/ modules, as a
    graph without the parent-package edges Python adds itself: no cycle."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".")
                    keep = len(base) - node.level + (1 if f.name == "__init__.py" else 0)
                    prefix = ".".join(base[:keep] + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + ".") and not t.startswith(m + "."):
                    graph[m].add(t)
    state: dict[str, int] = {}
    cycles = []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, cycles
    assert not any(t.startswith("croma") for m in mods if m.startswith("episodes") for t in graph[m])


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported as the first croma/episodes module of the process (torch stays loaded
    between them to keep this fast): a cycle would show up as a partially initialised module."""
    names = sorted(m for m in _modules() if not m.endswith("__main__"))
    code = (
        "import importlib, sys, torch\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for n in names:\n"
        "    for k in [k for k in sys.modules if k.split('.')[0] in ('croma', 'episodes')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_file_in_croma_over_400_lines():
    long = {str(f.relative_to(ROOT)): n for f in (ROOT / "croma").rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long


def test_no_file_in_episodes_over_400_lines():
    long = {str(f.relative_to(ROOT)): n for f in (ROOT / "episodes").rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long


# ---------------------------------------------------------------- plugins: one file, no edit to croma
PLUGIN = '''
import torch
from croma.losses.registry import LossModule, register_loss


@register_loss("plugin-cos", paper="a test plugin", hyper={"scale": 1.0}, formula="-scale * mean cos(u, v)")
class PluginCos(LossModule):
    def forward(self, z_source, z_target, **context):
        return -self.hparams["scale"] * torch.nn.functional.cosine_similarity(z_source, z_target, dim=-1).mean()
'''


def test_a_plugin_file_reaches_the_cli(tmp_path):
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    env = {"CROMA_PLUGINS": "myplugin", "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "croma", "train", "synthetic", *TRAIN, "--loss", "plugin-cos", "--loss-hp", "scale=2",
           "--eval-every", "0", "--checkpoint-dir", str(tmp_path / "r")]
    proc = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cfg = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["config"]
    assert cfg["outer"]["loss"] == "plugin-cos" and cfg["outer"]["loss_hp"] == {"scale": 2}
    env["CROMA_PLUGINS"] = "no_such_plugin"
    proc = subprocess.run([sys.executable, "-m", "croma", "losses"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no_such_plugin" in proc.stderr, proc.stderr


def test_finetune_modes_reach_the_meta_val_choice_and_are_checked(run_cli, tmp_path):
    from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, _knobs

    cfg = BenchmarkConfig(benchmark="synthetic", preset="paper", finetune_modes=["head"])
    train, ev, _ = _contexts(cfg, None, PRESETS["paper"])
    assert train.finetune == ev.finetune == "head" and _knobs(cfg, PRESETS["paper"])["finetune_mode_grid"] == ["head"]
    assert _knobs(BenchmarkConfig(), PRESETS["quick"])["finetune_mode_grid"] == ["all", "head"]
    rc, _, err = run_cli(["benchmark", "synthetic", "--finetune-modes", "all,everything", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--finetune-modes" in err and not (tmp_path / "o").exists()


def test_val_episodes_reach_the_meta_val_choice_and_are_checked(run_cli, tmp_path):
    """--val-episodes sets the episodes each candidate setting is scored on; unset, the knobs are the
    preset's exactly (so a run's unit fingerprints, and --resume of older runs, do not change)."""
    from types import SimpleNamespace

    from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, _knobs
    from croma.val_choice import meta_val_config

    assert _knobs(BenchmarkConfig(), PRESETS["quick"]) == PRESETS["quick"]["knobs"]
    cfg = BenchmarkConfig(benchmark="synthetic", val_episodes=7)
    _, ev, _ = _contexts(cfg, None, PRESETS["quick"])
    ctx = SimpleNamespace(eval=ev, knobs=_knobs(cfg, PRESETS["quick"]), label_noise=0.0)
    assert meta_val_config(ctx).tasks == 7 and meta_val_config(ctx).split == "meta_val"
    for bad in ("0", "x"):
        rc, _, err = run_cli(["benchmark", "synthetic", "--val-episodes", bad, "--out", str(tmp_path / "o")])
        assert rc == 2 and "--val-episodes" in err and not (tmp_path / "o").exists()


def test_val_halving_flag_reaches_the_meta_val_choice(run_cli, tmp_path, monkeypatch):
    """--val-halving turns on the val_halving knob (successive halving of the candidates); unset, the
    knobs stay the preset's."""
    import importlib

    from croma.benchmark import PRESETS, BenchmarkConfig, _knobs

    E = importlib.import_module("croma.evaluate")  # the module (croma.evaluate is also a function's name)

    assert _knobs(BenchmarkConfig(val_halving=True), PRESETS["quick"])["val_halving"] is True
    assert "val_halving" not in _knobs(BenchmarkConfig(), PRESETS["quick"])
    calls = []
    real = E.successive_halving
    monkeypatch.setattr(E, "successive_halving", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    rc, _, err = run_cli(["benchmark", "synthetic", "--ways", "3", "--methods", "pretrain", "--budget-steps", "10",
                          "--eval-tasks", "3", "--shots", "1", "5", "--train-seeds", "1", "--jobs", "1", "--val-episodes",
                          "8", "--val-halving", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 0, err
    assert calls == [8, 8]  # one halving per meta-test k, over the --val-episodes episodes
    from croma.report_tables import format_table

    table = format_table(json.loads((tmp_path / "o" / "results.json").read_text()))
    assert "fine-tuning setting chosen on 8 meta-val episodes per candidate, by successive halving" in table


def test_a_methods_own_objective_reaches_ordinary_training(bench, monkeypatch):
    """method_hp {"loss": ..., "loss_hp": ...} of an ordinary-training method is the objective it trains with."""
    import croma.losses as L
    from croma.baselines.common import MethodContext
    from croma.baselines.ordinary import ordinary_train
    from croma.evaluate import EvalConfig
    from croma.factory import build_model

    seen = []
    real = L.get_loss
    monkeypatch.setattr(L, "get_loss", lambda name, **hp: seen.append((name, hp)) or real(name, **hp))
    train = TrainConfig(benchmark="synthetic", ways=3, shots=2, queries=2, align_batch=8, device="cpu",
                        model={"embed_dim": 16, "hidden": 16})
    ctx = MethodContext(bench=bench, train=train, eval=EvalConfig(ways=3), budget_seconds=None, budget_steps=2,
                        label_noise=0.0, progress=False, oracle_warm_start=False,
                        knobs={"val_checks": 0, "ordinary_batch": 8}, hp={"loss": "clip", "loss_hp": {"temperature": 0.2}})
    ordinary_train(ctx, build_model(train, bench), align_weight=1.0, source_cls=True, budget=ctx.budget())
    assert seen and seen[0] == ("clip", {"temperature": 0.2})
