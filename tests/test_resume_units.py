"""croma benchmark --resume: finished (method, seed) runs are kept in OUT/units and reused, the table
is the one an uninterrupted run writes, and units of other settings are refused."""

import json

import pytest
from conftest import result_numbers

import croma.bench_units as bench_units
from croma.benchmark import BenchmarkConfig, run_benchmark
from croma.errors import CromaError
from croma.unit_store import bench_digest, load_units, unit_path
from episodes.datasets.synthetic import make_synthetic_benchmark

_CLOCK = ("train_seconds", "eval_seconds", "meta_val_seconds", "seconds", "wall_seconds", "peak_rss_mib",
          "data_load_seconds", "resumed", "cpu", "finished", "resumed_units", "worker_peak_rss_mib", "unit_seconds",
          "cpu_seconds", "eval_cpu_seconds")


def _numbers(res: dict) -> dict:
    return result_numbers(res, _CLOCK)


def _base(**kw):
    return dict(benchmark="synthetic", methods=["pretrain", "croma"], shots=[1, 3], repeats=1, eval_tasks=4, ways=3,
                budget_steps=30, train_seeds=2, device="cpu", progress=False, jobs=1) | kw


@pytest.fixture(scope="module")
def bench():
    return make_synthetic_benchmark(num_classes=25, per_class=24, seed=0)


def test_an_interrupted_run_resumes_to_the_same_table(tmp_path, bench, monkeypatch):
    whole = run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path / "whole"))), bench=bench)
    assert sorted(p.name for p in (tmp_path / "whole" / "units").iterdir()) == [
        "croma-seed0.json", "croma-seed1.json", "pretrain-seed0.json", "pretrain-seed1.json"]

    out = tmp_path / "cut"
    real = bench_units.run_unit
    calls = []

    def stop_on_third(b, unit, **kw):  # Ctrl-C while the third run trains
        calls.append((unit.method, unit.seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(b, unit, **kw)

    monkeypatch.setattr(bench_units, "run_unit", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(BenchmarkConfig(**_base(out=str(out))), bench=bench)
    assert not (out / "results.json").exists()
    assert sorted(p.name for p in (out / "units").iterdir()) == ["pretrain-seed0.json", "pretrain-seed1.json"]

    calls.clear()
    monkeypatch.setattr(bench_units, "run_unit", lambda b, unit, **kw: (calls.append((unit.method, unit.seed)),
                                                                         real(b, unit, **kw))[1])
    resumed = run_benchmark(BenchmarkConfig(**_base(out=str(out), resume=True)), bench=bench)
    assert calls == [("croma", 0), ("croma", 1)]  # only what was not finished
    assert resumed["resumed_units"] == 2 and whole["resumed_units"] == 0
    assert resumed["unit_seconds"] > 0 and whole["unit_seconds"] > 0  # reused runs counted with their own seconds
    s0 = whole["config"]["methods"]["croma"]["seeds"][0]
    assert 0 < s0["cpu_seconds"] and 0 < s0["eval_cpu_seconds"]  # CPU time of the same spans, for loaded machines
    assert _numbers(resumed) == _numbers(whole)
    assert (out / "episodes.csv").read_bytes() == (tmp_path / "whole" / "episodes.csv").read_bytes()
    seeds = resumed["config"]["methods"]["pretrain"]["seeds"]
    assert all(s["resumed"] and s["cpu"] is not None for s in seeds)
    assert "resumed" not in resumed["config"]["methods"]["croma"]["seeds"][0]

    # all finished: --resume runs nothing and writes the same table again
    calls.clear()
    again = run_benchmark(BenchmarkConfig(**_base(out=str(out), resume=True)), bench=bench)
    assert calls == [] and again["resumed_units"] == 4 and _numbers(again) == _numbers(whole)


def test_without_resume_every_unit_runs_again(tmp_path, bench, monkeypatch):
    run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), methods=["pretrain"], train_seeds=1)), bench=bench)
    calls = []
    real = bench_units.run_unit
    monkeypatch.setattr(bench_units, "run_unit", lambda b, unit, **kw: (calls.append(unit.method), real(b, unit, **kw))[1])
    run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), methods=["pretrain"], train_seeds=1)), bench=bench)
    assert calls == ["pretrain"]


def test_units_of_other_settings_or_data_are_refused(tmp_path, bench):
    run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), methods=["pretrain"], train_seeds=1)), bench=bench)
    path = unit_path(tmp_path, "pretrain", 0)
    with pytest.raises(CromaError, match=r"--resume: .*pretrain-seed0\.json was run with other settings"):
        run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), methods=["pretrain"], train_seeds=1, eval_tasks=5,
                                              resume=True)), bench=bench)
    other = make_synthetic_benchmark(num_classes=25, per_class=24, seed=1)
    assert bench_digest(other) != bench_digest(bench)
    assert bench_digest(make_synthetic_benchmark(num_classes=25, per_class=24, seed=0)) == bench_digest(bench)
    with pytest.raises(CromaError, match="was run with other data than this run"):
        run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), methods=["pretrain"], train_seeds=1, resume=True)),
                      bench=other)
    # a torn or foreign file is named, not guessed at
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CromaError, match=r"cannot read .*pretrain-seed0\.json"):
        load_units(tmp_path, [bench_units.Unit("pretrain", 0)], {("pretrain", 0): "x"})
    path.write_text(json.dumps({"format": 99}), encoding="utf-8")
    with pytest.raises(CromaError, match="not a croma unit file"):
        load_units(tmp_path, [bench_units.Unit("pretrain", 0)], {("pretrain", 0): "x"})


def test_resume_needs_out():
    with pytest.raises(ValueError, match="--resume needs --out"):
        BenchmarkConfig(resume=True, out=None).validate()


def test_the_command_line_resumes_and_refuses_other_settings(tmp_path, capsys):
    from croma.cli import main

    args = ["benchmark", "synthetic", "--ways", "3", "--methods", "pretrain", "--budget-steps", "20", "--eval-tasks", "3",
            "--shots", "1", "--train-seeds", "1", "--jobs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "resuming: 1 of 1 runs finished earlier" in capsys.readouterr().out
    other = [a if a != "3" or i != args.index("--eval-tasks") + 1 else "4" for i, a in enumerate(args)]
    assert main([*other, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pretrain-seed0.json was run with other settings" in err[0]


def test_a_run_of_some_methods_serves_the_whole_table(tmp_path, bench, monkeypatch):
    """Long runs can be done a few methods at a time: units are per (method, seed), so a --methods
    subset's finished units are reused by the whole command's --resume."""
    run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), methods=["croma"])), bench=bench)
    calls = []
    real = bench_units.run_unit
    monkeypatch.setattr(bench_units, "run_unit", lambda b, unit, **kw: (calls.append(unit.method), real(b, unit, **kw))[1])
    both = run_benchmark(BenchmarkConfig(**_base(out=str(tmp_path), resume=True)), bench=bench)
    assert calls == ["pretrain", "pretrain"] and both["resumed_units"] == 2


def test_a_unit_stopped_mid_training_continues_from_its_state_bitwise(tmp_path, bench, monkeypatch):
    """Ordinary training keeps its whole state at each meta-val check (croma.unit_partial); with
    --resume a stopped unit goes on from there and ends as if it had never stopped."""
    from croma.unit_partial import Partial

    base = _base(methods=["align-classify"], train_seeds=1, budget_steps=60)
    whole = run_benchmark(BenchmarkConfig(**base, out=str(tmp_path / "whole")), bench=bench)
    assert not list((tmp_path / "whole" / "units").glob("*.partial.pt"))  # removed once the unit is done

    out = tmp_path / "cut"
    real_save, real_load = Partial.save, Partial.load
    saves, loaded = [], []

    def save_then_stop(self, state):
        real_save(self, state)
        saves.append(state["step"])
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Partial, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(BenchmarkConfig(**base, out=str(out)), bench=bench)
    assert (out / "units" / "align-classify-seed0.partial.pt").exists() and not (out / "results.json").exists()

    monkeypatch.setattr(Partial, "save", real_save)
    monkeypatch.setattr(Partial, "load", lambda self: (loaded.append(s := real_load(self)), s)[1])
    resumed = run_benchmark(BenchmarkConfig(**base, out=str(out), resume=True), bench=bench)
    assert loaded and loaded[0] is not None and loaded[0]["step"] == saves[-1] > 0  # it went on from there
    assert _numbers(resumed) == _numbers(whole)
    assert (out / "episodes.csv").read_bytes() == (tmp_path / "whole" / "episodes.csv").read_bytes()
    assert not (out / "units" / "align-classify-seed0.partial.pt").exists()
    facts = json.loads((out / "units" / "align-classify-seed0.json").read_text())["facts"]
    assert facts["seconds"] >= facts["train_seconds"]  # the stopped invocation's training counts too

    # without --resume, or with a state of other settings, training starts afresh
    assert Partial(str(out / "x.pt"), "f", resume=False).load() is None
    Partial(str(out / "x.pt"), "f", resume=True).save({"step": 1})
    assert Partial(str(out / "x.pt"), "other", resume=True).load() is None
    assert Partial(str(out / "x.pt"), "f", resume=True).load() == {"step": 1}


@pytest.mark.parametrize("method,steps", [("croma", 240), ("align-meta-classify", 480), ("croma", 96)])
def test_a_reptile_unit_stopped_mid_training_continues_bitwise(tmp_path, bench, monkeypatch, method, steps):
    """A Reptile phase keeps a trainer run folder (last.pt at every meta-val check); --resume goes on
    from there and ends as if it had never stopped (align-meta-classify: after its ordinary phase)."""
    from croma.checkpoint import Checkpointer
    from croma.unit_partial import Partial

    base = _base(methods=[method], train_seeds=1, budget_steps=steps)
    whole = run_benchmark(BenchmarkConfig(**base, out=str(tmp_path / "whole")), bench=bench)
    assert not [p.name for p in (tmp_path / "whole" / "units").iterdir() if not p.name.endswith(".json")]

    out = tmp_path / "cut"
    real_save = Checkpointer.save
    saved = []

    def save_then_stop(self, kind, theta, progress):
        real_save(self, kind, theta, progress)
        if kind == "last":
            saved.append(progress["iteration"])
            if len(saved) == 2:  # mid-phase: the phase checkpoints at each of its meta-val checks
                raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(BenchmarkConfig(**base, out=str(out)), bench=bench)
    folder = out / "units" / f"{method}-seed0.reptile-source_cls.run"
    if method == "croma":
        folder = out / "units" / "croma-seed0.reptile-align+source_cls.run"
    assert (folder / "last.pt").is_file() and (folder / "unit.json").is_file() and not (out / "results.json").exists()
    from croma.bench_units import Unit
    from croma.unit_store import kept_note

    assert kept_note(out, [Unit(method, 0), Unit("pretrain", 0)]) == (
        f"1 of 2 runs keep their progress in {out / 'units'}; the same command with --resume continues them")
    from conftest import load_tool

    run = load_tool("unit_status").status(out)["runs"][f"{method}-seed0"]  # where the stopped run stands
    assert run["state"] == "training" and run[folder.name.split(".")[1]]["iteration"] == saved[-1]
    assert ("ordinary" in run) == (method == "align-meta-classify")

    monkeypatch.setattr(Checkpointer, "save", real_save)
    started = []
    real_start = Partial.run_start
    monkeypatch.setattr(Partial, "run_start", lambda self, tag: (started.append(s := real_start(self, tag)), s)[1])
    resumed = run_benchmark(BenchmarkConfig(**base, out=str(out), resume=True), bench=bench)
    assert started and started[0] is not None  # it went on from last.pt
    assert _numbers(resumed) == _numbers(whole)
    assert (out / "episodes.csv").read_bytes() == (tmp_path / "whole" / "episodes.csv").read_bytes()
    assert not folder.exists()  # removed once the unit is done
    unit = json.loads((out / "units" / f"{method}-seed0.json").read_text())
    # stopped mid-phase (96 steps: two outer steps, stopped after the last one, before the meta-val choice)
    assert unit["facts"]["train_seconds"] > 0 and 0 < saved[-1] <= unit["facts"]["outer_steps"]
    assert unit["facts"]["seconds"] >= unit["facts"]["train_seconds"]  # every invocation's training counts
    assert (saved[-1] == unit["facts"]["outer_steps"]) == (steps == 96)
    if steps == 96:  # keeping the run folder changes no number: the same table without --out
        assert _numbers(run_benchmark(BenchmarkConfig(**base), bench=bench)) == _numbers(whole)

    # a folder of other settings is cleared, never continued
    other = Partial(str(out / "units" / "x-seed0.partial.pt"), "f", resume=True)
    other.run_started("reptile-a", {"start_val": 1.0, "start_seconds": 0.0})
    (other.run_folder("reptile-a") / "last.pt").write_bytes(b"")
    assert Partial(other.path, "g", resume=True).run_start("reptile-a") is None
    assert not other.run_folder("reptile-a").exists()


@pytest.mark.parametrize("stage,stop_at", [("meta_val_choice", 2), ("meta_test", 1)])
def test_a_unit_stopped_while_evaluating_keeps_what_it_evaluated(tmp_path, bench, monkeypatch, stage, stop_at):
    """The meta-val choice keeps each setting's scores and meta-test each k's row (croma.unit_partial
    stages); --resume reuses them (no training step runs again) and the table is bitwise the same."""
    from croma.unit_partial import Partial

    base = _base(methods=["croma"], train_seeds=1, budget_steps=96)
    whole = run_benchmark(BenchmarkConfig(**base, out=str(tmp_path / "whole")), bench=bench)
    assert sorted(p.name for p in (tmp_path / "whole" / "units").iterdir()) == ["croma-seed0.json"]

    out = tmp_path / "cut"
    real_keep, real_kept = Partial.keep, Partial.kept
    kept_keys = []

    def keep_then_stop(self, st, key, value, seconds, cpu_seconds):
        real_keep(self, st, key, value, seconds, cpu_seconds)
        if st == stage:
            kept_keys.append(key)
            if len(kept_keys) == stop_at:
                raise KeyboardInterrupt

    monkeypatch.setattr(Partial, "keep", keep_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(BenchmarkConfig(**base, out=str(out)), bench=bench)
    assert (out / "units" / "croma-seed0.stages.pt").is_file()

    monkeypatch.setattr(Partial, "keep", real_keep)
    hits = []
    monkeypatch.setattr(Partial, "kept", lambda self, st, key: (hits.append((st, key)) if (v := real_kept(self, st, key))
                                                                is not None else None, v)[1])
    resumed = run_benchmark(BenchmarkConfig(**base, out=str(out), resume=True), bench=bench)
    assert [key for st, key in hits if st == stage] == kept_keys  # reused, not evaluated again
    assert _numbers(resumed) == _numbers(whole)
    assert (out / "episodes.csv").read_bytes() == (tmp_path / "whole" / "episodes.csv").read_bytes()
    assert not (out / "units" / "croma-seed0.stages.pt").exists()
    unit = json.loads((out / "units" / "croma-seed0.json").read_text())["facts"]
    assert unit["cpu_seconds"] > 0 and unit["eval_cpu_seconds"] > 0

    # stages of other settings, or without --resume, are not reused
    p = Partial(str(out / "units" / "y-seed0.partial.pt"), "f", resume=True)
    p.keep("meta_test", "1", {"a": 1.0}, 2.0, 1.0)
    assert Partial(p.path, "g", resume=True).kept("meta_test", "1") is None
    assert Partial(p.path, "f", resume=False).kept("meta_test", "1") is None
    again = Partial(p.path, "f", resume=True)
    assert again.kept("meta_test", "1") == {"a": 1.0} and again.reused == {"meta_test": {"seconds": 2.0, "cpu_seconds": 1.0}}


@pytest.mark.parametrize("fused", [False, True])
def test_the_optimizer_state_round_trips_bitwise(fused):
    """What a partial state keeps of ordinary training's Adam (PlainAdam, or torch.optim's with the
    fused_adam knob) continues exactly as the optimiser that was not stopped."""
    import io

    import torch

    from croma.baselines.ordinary import _load_optimizer, _optimizer_state, make_adam

    def make():
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(5, 3))
        return w, make_adam([w], 1e-2, fused=fused)

    def step(w, opt, i):
        opt.zero_grad()
        (w.sin() * (i + 1)).sum().backward()
        opt.step()

    w1, o1 = make()
    for i in range(3):
        step(w1, o1, i)
    buf = io.BytesIO()  # through a file, as croma.unit_partial.Partial keeps it
    torch.save(_optimizer_state(o1), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    w2, o2 = make()
    with torch.no_grad():
        w2.copy_(w1)
    _load_optimizer(o2, state)
    for i in range(3, 5):
        step(w1, o1, i)
        step(w2, o2, i)
    assert torch.equal(w1, w2)
