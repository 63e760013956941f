"""`croma evaluate --nproc 2` (and under torchrun): episodes split across 2 gloo processes, gathered.

The per-episode accuracies are gathered exactly (each rank fills its share of a zero vector, one
all_reduce sums them), so the distributed result must equal the single-process one.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from conftest import clean_env

from croma.cli import main
from croma.distributed import TEST_EXIT_ENV

TIMEOUT = 50  # seconds any one subprocess may take before the test fails

TRAIN = [
    "train", "synthetic", "--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--seed", "1", "--iterations", "2",
    "--eval-every", "2", "--checkpoint-every", "2",
]
# 5 episodes per repeat: an odd count, so the 2 ranks get shares of 3 and 2
EVAL = ["--shots", "1", "2", "--repeats", "2", "--eval-tasks", "5", "--queries", "2", "--finetune-steps", "3",
        "--device", "cpu", "--json"]


def _env():
    return clean_env(TEST_EXIT_ENV)


def _split(out: str) -> tuple[str, dict]:
    table, js = out.split("\n{", 1)
    return table, json.loads("{" + js)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaldist") / "run"
    assert main([*TRAIN, "--checkpoint-dir", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def single(run_dir):
    """The single-process result (in this process)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["evaluate", str(run_dir), *EVAL]) == 0
    return _split(buf.getvalue())


def _same(a: dict, b: dict) -> None:
    assert [r["shots"] for r in a["rows"]] == [r["shots"] for r in b["rows"]] == [1, 2]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert len(ra["accuracies"]) == 2
        assert ra["accuracies"] == rb["accuracies"]  # exact: gathered per-episode accuracies
        assert ra["centroid_accuracies"] == rb["centroid_accuracies"]
        assert ra["accuracy_mean"] == rb["accuracy_mean"] and ra["centroid_mean"] == rb["centroid_mean"]
    assert a == b  # everything else too (retrieval, config, head init, iteration)


@pytest.mark.slow
def test_nproc_2_equals_one_process(run_dir, single):
    table1, res1 = single
    two = subprocess.run([sys.executable, "-m", "croma", "evaluate", str(run_dir), *EVAL, "--nproc", "2",
                          "--dist-timeout", "20"], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("meta_test:") == 1 and two.stdout.count('"rows"') == 1  # only rank 0 prints
    head, table2 = two.stdout.split("\n", 1)
    assert head == "meta_test episodes split across 2 processes (gloo)"
    table2, res2 = _split(table2)
    assert table2 == table1
    assert res1["tasks"] == 5 and res1["ways"] == 3 and res1["iteration"] == 2
    # a hand check of the aggregation: each repeat's accuracy is a mean of 5 episodes of 3x2
    # queries, i.e. a multiple of 100/30 percent
    for r in res1["rows"]:
        for acc in r["accuracies"]:
            assert abs(acc * 0.3 - round(acc * 0.3)) < 1e-4  # float32 means
    _same(res1, res2)


@pytest.mark.slow
def test_torchrun_2_processes_equals_one_process(run_dir, single):
    _, res1 = single
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "croma", "evaluate", str(run_dir), *EVAL, "--dist-timeout", "20"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("meta_test:") == 1 and res.stdout.startswith("meta_test episodes split across 2 processes")
    _same(res1, _split(res.stdout)[1])


def test_nproc_errors_are_one_line(tmp_path, capsys, monkeypatch, run_dir):
    # a missing run is reported once, before any process starts
    rc = main(["evaluate", str(tmp_path / "nothing"), "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing" in err and err.count("\n") == 1
    rc = main(["evaluate", str(run_dir), "--nproc", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--nproc" in err and err.count("\n") == 1
    rc = main(["evaluate", str(run_dir), "--dist-timeout", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--dist-timeout" in err and err.count("\n") == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rc = main(["evaluate", str(run_dir), "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "--nproc" in err and "torchrun" in err and err.count("\n") == 1


def test_nproc_error_found_by_every_rank_is_printed_once(run_dir, capsys, monkeypatch):
    """Head init 'meta' with 4 ways on a 3-way classifier: every rank fails the same way, one line.

    The ranks run in this process (a stand-in for launch_local calls each one's worker_main with
    its RANK), so the test checks the error files and their de-duplication, not process start-up.
    """
    import croma.cli.evaluate as ev
    import croma.distributed as cd

    def fake_launch(cmd, nproc, grace_s, tmpdir=None):
        assert tmpdir == os.path.dirname(cmd[-1])  # the ranks' temporary files go with the launcher's folder
        codes = []
        for rank in range(nproc):
            monkeypatch.setenv("RANK", str(rank))
            codes.append(ev.worker_main(cmd[-1]))
        monkeypatch.delenv("RANK")
        assert sorted(os.listdir(os.path.dirname(cmd[-1]))) == ["error.0", "error.1", "payload.json"]
        return codes[0], codes

    monkeypatch.setattr(cd, "launch_local", fake_launch)
    rc = main(["evaluate", str(run_dir), "--ways", "4", "--head-init", "meta", "--shots", "1", "--device", "cpu",
               "--nproc", "2"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: head init 'meta' needs 3-way tasks") and "--ways 3" in err
