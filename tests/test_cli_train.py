"""`croma train` / `croma evaluate` / `croma bench meta` end to end on the synthetic benchmark."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from croma.checkpoint import load_checkpoint
from croma.cli import main
from croma.meta.functional import tree_equal

TINY = [
    "--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--seed", "1",
]


def _main(argv):
    """``croma`` exit code, whether the error came from argparse (SystemExit) or a library check."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_train_then_evaluate(tmp_path, capsys):
    d = tmp_path / "run"
    rc = main(["train", "synthetic", *TINY, "--iterations", "4", "--eval-every", "2", "--checkpoint-every", "2",
               "--checkpoint-dir", str(d), "--head-init", "auto"])
    out = capsys.readouterr().out
    assert rc == 0 and "trained 4/4 iterations" in out
    assert sorted(os.listdir(d)) == ["best.pt", "last.pt", "metrics.csv"]
    last = load_checkpoint(d / "last.pt")
    assert last["iteration"] == 4 and last["config"]["data"]["benchmark"] == "synthetic"
    assert last["head_init"] in ("meta", "zero", "prototype")

    rc = main(["evaluate", str(d), "--shots", "1", "2", "--repeats", "2", "--eval-tasks", "2", "--device", "cpu", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    table, js = out.split("\n{", 1)
    res = json.loads("{" + js)
    assert "accuracy" in table and "retrieval" in table
    assert [r["shots"] for r in res["rows"]] == [1, 2] and res["ways"] == 3 and res["iteration"] >= 2
    assert res["head_init"] == last["head_init"] and res["split"] == "meta_test"
    assert all(len(r["accuracies"]) == 2 for r in res["rows"])


def test_train_says_which_inner_loop_path_runs(tmp_path, run_cli):
    """One line names the path (batched eager / compiled / sequential) before training; --quiet hides it."""
    quiet = [f for f in TINY if f != "--quiet"]
    for extra, said in (([], "inner loop: batched (torch.func vmap over up to 32 tasks per call), eager"),
                        (["--inner-loop", "sequential"], "inner loop: sequential"),
                        (["--quiet"], None)):
        d = tmp_path / f"run{len(extra)}{said is None}"
        rc, out, err = run_cli(["train", "synthetic", *quiet, "--iterations", "1", "--checkpoint-dir", str(d), *extra])
        assert rc == 0, err
        assert (said in err) if said else ("inner loop" not in err + out)


@pytest.mark.parametrize(
    "flags, name",
    [(["--meta-lr", "-1"], "--meta-lr"), (["--task-mix", "2"], "--task-mix"), (["--inner-steps", "0"], "--inner-steps"),
     (["--embed-dim", "0"], "--embed-dim"), (["--encoder", "audio"], "--encoder")],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, name):
    rc = _main(["train", "synthetic", *TINY, "--iterations", "2", "--checkpoint-dir", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and name in err and err.count("\n") == 1
    assert not (tmp_path / "x" / "last.pt").exists()


def test_evaluate_missing_run_is_one_line_error(tmp_path, capsys):
    rc = main(["evaluate", str(tmp_path / "nothing.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing.pt" in err and err.count("\n") == 1


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    flags = [*TINY, "--iterations", "30", "--eval-every", "0", "--checkpoint-every", "2", "--inner-steps", "3"]
    ref = tmp_path / "ref"
    assert main(["train", "synthetic", *flags, "--checkpoint-dir", str(ref)]) == 0

    run = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "croma", "train", "synthetic", *flags, "--checkpoint-dir", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (run / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    it = load_checkpoint(run / "last.pt")["iteration"]
    assert 2 <= it < 30, f"the run was not interrupted mid-way (checkpoint at iteration {it})"
    assert main(["train", "synthetic", *flags, "--checkpoint-dir", str(run), "--resume"]) == 0
    a, b = load_checkpoint(ref / "last.pt"), load_checkpoint(run / "last.pt")
    assert a["iteration"] == b["iteration"] == 30
    assert tree_equal(a["model"], b["model"])


def test_bench_meta_prints_speedup_last(capsys):
    rc = main(["bench", "meta", "--repeats", "1", "--meta-batch", "2", "--inner-steps", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("speedup: ") and float(lines[-1].split()[1]) > 0
    assert any(l.startswith("batched") and "tasks/s" in l for l in lines)
    assert any(l.startswith("sequential") and "tasks/s" in l for l in lines)
    rc = main(["bench", "meta", "--nproc", "0"])  # --nproc 2 (scaling) is tested in test_distributed.py
    assert rc == 2 and "--nproc" in capsys.readouterr().err


def test_existing_run_needs_resume(tmp_path, capsys):
    d = tmp_path / "r"
    assert main(["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "0", "--checkpoint-dir", str(d)]) == 0
    capsys.readouterr()
    rc = main(["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "0", "--checkpoint-dir", str(d)])
    assert rc == 2 and "--resume" in capsys.readouterr().err
    rc = main(["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "0", "--checkpoint-dir", str(d), "--resume",
               "--inner-lr", "0.5"])
    assert rc == 2 and "inner_lr" in capsys.readouterr().err
