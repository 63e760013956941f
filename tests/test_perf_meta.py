"""`croma bench meta`: the naive (learn2learn-style) path, FLOP counts, peak fraction and the
last lines (no timings are asserted)."""

import importlib.util

import torch

from croma.cli import main
from croma.perf.meta import _workload, count_flops, matmul_peak, naive_task_deltas

TINY = ["--repeats", "1", "--meta-batch", "2", "--inner-steps", "1", "--hidden", "16"]


def test_naive_learn2learn_style_deltas_equal_the_batched_path():
    kw = dict(repeats=1, meta_batch=3, device="cpu", inner_steps=3, inner_optimizer="adam", ways=3, shots=2, queries=1,
              feature_dim=12, hidden=16, embed_dim=8, seed=0)
    for opt in ("adam", "sgd"):
        tr = _workload("batched", **{**kw, "inner_optimizer": opt})
        ref = tr.task_deltas(tr.theta, 1)[0]
        before = {k: v.clone() for k, v in tr.model.state_dict().items()}
        got = naive_task_deltas(tr, tr.theta, 1)
        assert set(got) == set(ref)
        assert any(float(v.abs().max()) > 0 for v in got.values())
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5)
        assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())  # copies only


def test_count_flops_counts_matrix_products_and_peak_times_are_positive():
    a, b = torch.randn(8, 5), torch.randn(5, 3)
    assert count_flops(lambda: a @ b) == 2 * 8 * 5 * 3
    times = matmul_peak(n=64, reps=2)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_bench_meta_prints_gflops_naive_path_and_the_three_last_lines(capsys):
    rc = main(["bench", "meta", *TINY])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert [l.split(":")[0] for l in lines[-3:]] == ["speedup_vs_naive", "peak_fraction", "speedup"]
    for l in lines[-3:]:
        assert float(l.split()[1]) > 0
    assert any(l.startswith("matmul peak:") and "GFLOP/s" in l for l in lines)
    paths = ["batched", "sequential", "naive"] + (["higher"] if importlib.util.find_spec("higher") else [])
    for p in paths:
        row = next(l for l in lines if l.startswith(p) and "tasks/s" in l)
        assert "GFLOP/s" in row and "% of peak" in row
    for p in paths[1:]:
        diff = next(l for l in lines if l.startswith(f"max |batched - {p}|"))
        assert float(diff.split()[-1]) < 1e-5  # every path computes the same Reptile deltas


def test_bench_meta_no_higher_and_task_chunk(capsys):
    rc = main(["bench", "meta", *TINY, "--no-higher", "--task-chunk", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("speedup: ")
    assert not any(l.startswith("higher") for l in lines)
    assert "task chunks of 1" in lines[0]
    rc = main(["bench", "meta", *TINY, "--task-chunk", "-1"])
    assert rc == 2 and "--task-chunk" in capsys.readouterr().err


def test_compiled_batched_step_equals_eager(monkeypatch):
    """The torch.compile lever: graph capture of the vmapped step (backend "eager" keeps the test fast;
    `croma bench meta --compile` times inductor)."""
    import torch.nn.functional as F
    from torch import nn

    import croma.meta.inner as inner
    from croma.config import TrainConfig
    from croma.meta.functional import FunctionalModel, meta_parameters

    monkeypatch.setattr(inner, "_COMPILE_BACKEND", "eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))
    fm = FunctionalModel(net)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(3, 9, 6, generator=g), "y": torch.randint(0, 3, (3, 9), generator=g)}

    def loss_fn(p, b):
        return fm(p, lambda m, x: F.cross_entropy(m(x["x"]), x["y"]), b)

    theta = meta_parameters(net)
    got, got_l = inner.run_batched(loss_fn, theta, {}, batch, inner.InnerConfig(steps=3, lr=0.05, compile=True))
    ref, ref_l = inner.run_batched(loss_fn, theta, {}, batch, inner.InnerConfig(steps=3, lr=0.05))
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_l, ref_l, atol=1e-6, rtol=1e-5)
    tr = _workload("batched", repeats=1, meta_batch=2, device="cpu", inner_steps=1, inner_optimizer="adam", ways=3, shots=2,
                   queries=1, feature_dim=12, hidden=16, embed_dim=8, seed=0, compile_inner=True)
    assert tr.inner_cfg.compile and not TrainConfig().compile_inner


def test_compile_failure_is_one_error_naming_the_flag(monkeypatch):
    """A backend that cannot build code (inductor without a C++ compiler) ends in a CromaError that
    names --compile-inner, not PyTorch's traceback."""
    import pytest

    import croma.meta.inner as inner
    from croma.errors import CromaError

    def broken_backend(gm, example_inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(inner, "_COMPILE_BACKEND", broken_backend)
    torch._dynamo.reset()
    theta = {"w": torch.ones(3, 2)}
    batch = {"x": torch.ones(2, 4, 3)}

    def loss_fn(p, b):
        return (b["x"] @ p["w"]).square().mean()

    with pytest.raises(CromaError, match="--compile-inner") as err:
        inner.run_batched(loss_fn, theta, {}, batch, inner.InnerConfig(steps=1, compile=True))
    assert "\n" not in str(err.value) and "C++ compiler" in str(err.value)


def test_benchmark_compile_inner_reaches_the_reptile_methods():
    from croma.benchmark import PRESETS, _contexts
    from croma.benchmark_config import BenchmarkConfig

    for flag in (False, True):
        train, _, _ = _contexts(BenchmarkConfig(benchmark="synthetic", compile_inner=flag), None, PRESETS["quick"])
        assert train.compile_inner is flag


def test_benchmark_flag_compile_inner_sets_the_config():
    from croma.cli import build_parser
    from croma.cli.benchmark import config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["benchmark", "synthetic", *argv]))

    assert cfg("--compile-inner").compile_inner is True and cfg().compile_inner is False
