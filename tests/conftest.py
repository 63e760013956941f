"""Fixtures shared by the test modules.

* one torch thread for the whole run (the figures the tests compare are computed single-threaded,
  and the CI machines have few cores);
* ``bench``: the tiny synthetic benchmark most training tests use (one per module);
* ``run_cli``: run ``croma ...`` in-process, returning ``(exit code, stdout, stderr)``.

Tests over ~5 s carry ``@pytest.mark.slow``; ``make test`` runs everything, ``pytest -m "not slow"``
is the fast loop.
"""

import pytest
import torch

from episodes.datasets.synthetic import make_synthetic_benchmark

torch.set_num_threads(1)


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
