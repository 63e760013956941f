"""croma benchmark's (method, training seed) runs: the same numbers in one process or in workers."""

import json

import pytest
import torch
from conftest import result_numbers

from croma.bench_units import UNIT_THREADS, auto_jobs, unit_threads
from croma.benchmark import BenchmarkConfig, run_benchmark
from croma.benchmark_config import PRESETS, seeds_of
from croma.cli import main
from episodes.datasets.synthetic import make_synthetic_benchmark

_TIMING = ("train_seconds", "eval_seconds", "meta_val_seconds", "seconds", "wall_seconds", "peak_rss_mib", "jobs",
           "cpu_seconds", "eval_cpu_seconds",
           "data_load_seconds", "unit_seconds")


def _numbers(res: dict) -> dict:
    return result_numbers(res, _TIMING)


@pytest.mark.slow
def test_workers_give_the_numbers_of_one_process_bitwise(tmp_path):
    bench = make_synthetic_benchmark(num_classes=25, per_class=24, seed=0)
    base = dict(benchmark="synthetic", methods=["pretrain", "croma", "align-classify"], shots=[1, 3], repeats=1,
                eval_tasks=4, ways=3, budget_steps=40, train_seeds=2, device="cpu", progress=False)
    one = run_benchmark(BenchmarkConfig(**base, jobs=1, out=str(tmp_path / "one")), bench=bench)
    two = run_benchmark(BenchmarkConfig(**base, jobs=2, out=str(tmp_path / "two")), bench=bench)
    assert one["jobs"] == 1 and two["jobs"] == 2 and one["unit_threads"] == UNIT_THREADS
    assert _numbers(one) == _numbers(two)
    assert (tmp_path / "one" / "episodes.csv").read_bytes() == (tmp_path / "two" / "episodes.csv").read_bytes()
    rows = [r for r in one["rows"] if r["method"] == "croma"]
    assert all(r["train_seeds"] == 2 and len(r["accuracy_per_seed"]) == 2 for r in rows)
    data = json.loads((tmp_path / "two" / "results.json").read_text())
    assert set(data["peak_rss_mib"]) == {"main", "largest_worker"} and data["peak_rss_mib"]["largest_worker"] > 0


@pytest.mark.real_presets
def test_the_quick_preset_trains_three_seeds_and_a_flag_overrides_it():
    assert PRESETS["quick"]["train_seeds"] == 3 and PRESETS["paper"]["train_seeds"] == 1
    assert BenchmarkConfig().resolved_seeds() == 3
    assert BenchmarkConfig(train_seeds=1).resolved_seeds() == 1
    assert seeds_of(BenchmarkConfig(preset="paper"), PRESETS["paper"]) == 1


def test_unit_threads_are_restored():
    before = torch.get_num_threads()
    with unit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.real_presets
def test_auto_jobs_is_bounded_by_runs_and_one_on_a_gpu(monkeypatch):
    monkeypatch.delenv("CROMA_JOBS", raising=False)
    assert auto_jobs(1) == 1
    assert 1 <= auto_jobs(30) <= 30
    assert auto_jobs(30, "cuda") == 1 and auto_jobs(30, "cuda:1") == 1


@pytest.mark.parametrize("value", ["0", "-2", "x", "2000"])
def test_bad_jobs_flag_is_one_line_exit_2(value, capsys, tmp_path):
    try:
        code = main(["benchmark", "synthetic", "--jobs", value, "--out", str(tmp_path / "o"), "--quiet"])
    except SystemExit as exc:  # argparse's own type error (the flag's value is not an integer)
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--jobs" in err and len(err.splitlines()) == 1


def test_croma_jobs_sets_the_default_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv("CROMA_JOBS", "3")
    assert auto_jobs(30) == 3 and auto_jobs(2) == 2
    for bad in ("0", "x", "5000"):
        monkeypatch.setenv("CROMA_JOBS", bad)
        with pytest.raises(ValueError, match="CROMA_JOBS"):
            auto_jobs(4)


def test_a_bad_croma_jobs_is_named_before_the_data_loads(monkeypatch):
    from croma.benchmark import check_settings

    monkeypatch.setenv("CROMA_JOBS", "lots")
    with pytest.raises(ValueError, match="CROMA_JOBS must be an integer"):
        check_settings(BenchmarkConfig(benchmark="udhr-speech", progress=False))
    check_settings(BenchmarkConfig(benchmark="udhr-speech", progress=False, jobs=2))  # --jobs wins: env unread


def test_a_unit_in_a_worker_reports_its_phases(monkeypatch, capsys):
    """Worker units have no progress bars: heartbeat lines say where a long run is (at most one a
    minute; every note here with the interval at 0)."""
    import croma.log as log
    from croma.bench_units import Unit, run_unit
    from croma.benchmark import _contexts, _knobs

    monkeypatch.setattr(log, "UNIT_NOTE_EVERY_S", 0.0)
    bench = make_synthetic_benchmark(num_classes=25, per_class=24, seed=0)
    cfg = BenchmarkConfig(benchmark="synthetic", methods=["croma"], shots=[1], eval_tasks=3, ways=3, budget_steps=40,
                          device="cpu", progress=False, out=None)
    train, ev, _ = _contexts(cfg, bench, PRESETS["quick"])
    unit = Unit("croma", 0, shots=(1,), ctx=dict(train=train, eval=ev, budget_steps=40, knobs=_knobs(cfg, PRESETS["quick"])))
    with log.unit_progress("[croma] seed 0:"):
        run_unit(bench, unit)
    lines = capsys.readouterr().out.splitlines()
    assert all(ln.startswith("[croma] seed 0: ") and ln.endswith(" in)") for ln in lines), lines
    text = "\n".join(lines)
    for phase in ("training: meta-val check", "trained in", "meta-val choice: scoring setting 1 of", "meta-test, 1-shot"):
        assert phase in text, (phase, lines)
    log.unit_note("outside a unit")  # silent
    assert capsys.readouterr().out == ""
