"""Fixtures shared by the test modules.

* one torch thread for the whole run (the figures the tests compare are computed single-threaded,
  and the CI machines have few cores);
* ``bench``: the tiny synthetic benchmark most training tests use (one per module);
* ``run_cli``: run ``croma ...`` in-process, returning ``(exit code, stdout, stderr)``;
* :func:`clean_env`: the environment for a ``croma`` subprocess (one thread, no inherited
  torch.distributed variables);
* :func:`load_tool`: a script of ``experiments/tools/`` imported as a module.

Tests over ~5 s carry ``@pytest.mark.slow``; ``make test`` runs everything, ``pytest -m "not slow"``
is the fast loop.

A shell that starts the suite in the background (``make test &``, ``nohup``) hands it SIGINT
ignored, and every ``croma`` subprocess would inherit that: the tests that press Ctrl-C on one
would wait for an exit that cannot come. The suite restores Python's own Ctrl-C handler first, so
its subprocesses start with the disposition a terminal gives them.
"""

import signal

import pytest
import torch

from episodes.datasets.synthetic import make_synthetic_benchmark

torch.set_num_threads(1)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def bench():
    """30 classes x 16 items, 12-d source / 10-d target features from a 4-d latent (seed 0)."""
    return make_synthetic_benchmark(num_classes=30, per_class=16, source_dim=12, target_dim=10, latent_dim=4, seed=0)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(argv) -> (rc, out, err)``: ``croma.cli.main(argv)``, argparse's ``SystemExit`` included."""
    from croma.cli import main

    def run(argv):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            rc = exc.code
        cap = capsys.readouterr()
        return rc, cap.out, cap.err

    return run


def clean_env(*drop: str, **extra: str) -> dict:
    """``os.environ`` with ``OMP_NUM_THREADS=1`` and ``extra``, without the torch.distributed
    variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
    ``drop`` unless ``extra`` sets them."""
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", *drop):
        if k not in extra:
            env.pop(k, None)
    return env


@pytest.fixture(autouse=True)
def _benchmark_one_seed_one_process(request, monkeypatch):
    """``croma benchmark`` in tests: 1 training seed and no worker processes (``CROMA_JOBS=1``) unless
    a test is marked ``real_presets``; the quick preset's 3 seeds and a worker per core would triple
    a tiny test's time (tests/test_bench_units.py checks seeds and workers themselves)."""
    if request.node.get_closest_marker("real_presets"):
        return
    from croma.benchmark_config import PRESETS

    monkeypatch.setitem(PRESETS["quick"], "train_seeds", 1)
    monkeypatch.setenv("CROMA_JOBS", "1")


def load_tool(name: str):
    """``experiments/tools/<name>.py`` imported as a module (the tools are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def result_numbers(res: dict, clock: tuple[str, ...]) -> dict:
    """A benchmark's results.json without the keys in ``clock`` (what depends on the clock, the
    memory, the worker count or where a run ran), at any depth; the per-method facts included."""
    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in clock}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip({k: v for k, v in res.items() if k not in ("config", "machine")}) | {
        "methods": strip(res["config"]["methods"])}
