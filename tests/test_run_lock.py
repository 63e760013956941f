"""One writer per run folder (croma.runlock): a second writer is refused with one line, the lock
goes with its holder (even SIGKILL), files of two runs in one folder are detected (run_id), a
resume keeps its run id and its metrics.csv rows; run-folder paths that cannot work are refused
before training."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch

from croma.checkpoint import load_checkpoint
from croma.config import TrainConfig
from croma.errors import CromaError
from croma.fit import train
from croma.runlog import METRICS_FILE, RunLog, read_metrics

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the lock is tested with fcntl (Linux)")

TINY = [
    "--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--iterations", "2", "--eval-every", "2",
]
LOCK = ".croma.lock"
SINCE = "2030-01-02 03:04:05 +0000"

# another process holding a run folder's lock the way croma does (fcntl.flock + pid/host/time text);
# plain Python, so that it starts in a moment
HOLDER = f"""
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, ("pid=%d\\nhost=%s\\nstarted={SINCE}\\n" % (os.getpid(), socket.gethostname())).encode())
print("locked", flush=True)
time.sleep(120)
"""
# exit 0 when the lock of argv[1] is free, 3 when another process holds it
PROBE = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError as e:
    sys.exit(3 if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else 4)
os.unlink(sys.argv[1])
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / LOCK)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _probe(folder) -> int:
    return subprocess.run([sys.executable, "-c", PROBE, str(folder / LOCK)], timeout=60).returncode


def _cfg(d, **kw):
    base = dict(iterations=4, meta_batch=4, task_mix=0.5, inner_steps=2, inner_lr=0.01, align_batch=8, ways=5, shots=2,
                queries=2, eval_every=2, eval_tasks=2, checkpoint_every=1, checkpoint_dir=str(d), seed=3,
                model={"embed_dim": 8, "hidden": 16}, finetune_steps=2, finetune_lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def test_a_second_writer_is_refused_and_the_lock_goes_with_a_killed_holder(tmp_path, run_cli, bench):
    torch.set_num_threads(1)
    d = tmp_path / "run"
    d.mkdir()
    holder = _holder(d)
    try:
        argv = ["train", "synthetic", *TINY, "--checkpoint-dir", str(d)]
        for extra in ([], ["--resume"]):
            rc, out, err = run_cli(argv + extra)
            assert rc == 2 and out == ""
            assert err == (f"error: --checkpoint-dir {d} is in use by another croma run (pid {holder.pid} on "
                           f"{socket.gethostname()} since {SINCE}); wait for it to finish or choose another folder\n")
        with pytest.raises(CromaError, match=r"^checkpoint_dir .* is in use by another croma run \(pid "):
            train(_cfg(d), bench)  # the Python API too
        rc, _, err = run_cli(["benchmark", "synthetic", "--out", str(d)])  # a benchmark writing there as well
        assert rc == 2 and err.startswith(f"error: --out {d} is in use by another croma run")
        assert os.listdir(d) == [LOCK]  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without cleaning up: its lock went with it, the stale file does not block
    rc, out, _ = run_cli(argv)
    assert rc == 0 and "trained 2/2" in out
    assert sorted(os.listdir(d)) == ["best.pt", "last.pt", "metrics.csv"]  # the lock file goes with a normal exit


def test_a_training_run_holds_the_lock_until_it_ends(tmp_path, bench):
    torch.set_num_threads(1)
    d = tmp_path / "run"
    seen = []
    train(_cfg(d, iterations=2), bench, callback=lambda row: seen.append(_probe(d)) if not seen else None)
    assert seen == [3]  # another process could not take it while the run trained
    assert not (d / LOCK).exists() and _probe(d) == 0  # released at the end


def test_evaluate_and_resume_refuse_a_folder_mixing_two_runs(tmp_path, run_cli):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, seed in ((a, "1"), (b, "2")):
        assert run_cli(["train", "synthetic", *TINY, "--seed", seed, "--checkpoint-dir", str(d)])[0] == 0
    ev = ["evaluate", str(a), "--shots", "1", "--repeats", "1", "--eval-tasks", "2", "--device", "cpu"]
    good = (a / "best.pt").read_bytes()
    shutil.copy(b / "best.pt", a / "best.pt")  # what two runs on one folder used to leave behind
    for which in ([], ["--checkpoint", "last"]):
        rc, _, err = run_cli(ev + which)
        assert rc == 2 and err.count("\n") == 1 and "different croma runs" in err
        assert str(a / "best.pt") in err and str(a / "last.pt") in err
    rc, _, err = run_cli(["train", "synthetic", *TINY, "--seed", "1", "--checkpoint-dir", str(a), "--resume"])
    assert rc == 2 and str(a / "best.pt") in err and str(a / "last.pt") in err
    (a / "best.pt").write_bytes(good)
    shutil.copy(b / METRICS_FILE, a / METRICS_FILE)  # the log of another run
    rc, _, err = run_cli(ev)
    assert rc == 2 and err.count("\n") == 1 and str(a / METRICS_FILE) in err and str(a / "last.pt") in err
    # files written before run ids existed carry none: nothing to compare, accepted
    for name in ("best.pt", METRICS_FILE):
        shutil.copy(b / name, a / name)
    old = load_checkpoint(a / "best.pt")
    del old["run_id"]
    torch.save(old, a / "best.pt")
    lines = (a / METRICS_FILE).read_text().splitlines()
    (a / METRICS_FILE).write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in lines))
    assert run_cli(ev)[0] == 0
    old["run_id"] = "not hex"
    torch.save(old, a / "best.pt")
    with pytest.raises(CromaError, match="run_id"):
        load_checkpoint(a / "best.pt")


def test_resume_keeps_the_run_id_and_the_rows_of_metrics_csv(tmp_path, bench):
    torch.set_num_threads(1)
    d = tmp_path / "run"
    train(_cfg(d, stop_after=3), bench)
    rid = load_checkpoint(d / "last.pt")["run_id"]
    assert len(rid) == 16 and load_checkpoint(d / "best.pt")["run_id"] == rid
    first = read_metrics(d / METRICS_FILE)
    assert [r["iteration"] for r in first] == [1, 2, 3] and {r["run_id"] for r in first} == {rid}
    train(_cfg(d), bench, resume=True)
    rows = read_metrics(d / METRICS_FILE)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4] and rows[:3] == first
    assert {r["run_id"] for r in rows} == {rid}
    assert load_checkpoint(d / "last.pt")["run_id"] == load_checkpoint(d / "best.pt")["run_id"] == rid
    other = tmp_path / "other"
    train(_cfg(other), bench)
    assert load_checkpoint(other / "last.pt")["run_id"] != rid  # a new run, a new id


def test_runlog_never_cuts_the_rows_of_another_run(tmp_path):
    log = RunLog(tmp_path, ["iteration", "a_loss"], run_id="aa")
    log.write({"iteration": 1, "a_loss": 0.5})
    log.write({"iteration": 2, "a_loss": 0.25})
    log.close()
    text = (tmp_path / METRICS_FILE).read_text()
    assert text == "iteration,a_loss,run_id\n1,0.5,aa\n2,0.25,aa\n"
    with pytest.raises(CromaError, match="another croma run"):
        RunLog(tmp_path, ["iteration", "a_loss"], start_iteration=1, run_id="bb")
    assert (tmp_path / METRICS_FILE).read_text() == text
    again = RunLog(tmp_path, ["iteration", "a_loss"], start_iteration=2, run_id="aa")  # the same run resumes
    again.write({"iteration": 3, "a_loss": 0.125})
    again.close()
    assert (tmp_path / METRICS_FILE).read_text() == text + "3,0.125,aa\n"


def test_run_folder_paths_that_cannot_work_are_refused_before_training(tmp_path, run_cli):
    f = tmp_path / "last.pt"
    f.write_bytes(b"x")
    rc, _, err = run_cli(["train", "synthetic", *TINY, "--checkpoint-dir", str(f), "--resume"])
    assert rc == 2 and err.startswith(f"error: --checkpoint-dir {f}") and err.count("\n") == 1
    d = tmp_path / "run"
    (d / "last.pt").mkdir(parents=True)  # a folder named last.pt: used to train the whole budget, then fail
    rc, _, err = run_cli(["train", "synthetic", *TINY, "--iterations", "40", "--checkpoint-dir", str(d), "--resume"])
    assert rc == 2 and err.count("\n") == 1 and "--checkpoint-dir" in err and str(d / "last.pt") in err
    assert sorted(os.listdir(d)) == ["last.pt"]  # nothing trained, nothing written


def test_metrics_csv_that_is_not_utf8_is_named(tmp_path, run_cli):
    d = tmp_path / "run"
    argv = ["train", "synthetic", *TINY, "--eval-every", "0", "--checkpoint-dir", str(d)]
    assert run_cli(argv)[0] == 0
    (d / METRICS_FILE).write_bytes(b"\xff\xfeiteration\n")
    rc, _, err = run_cli(argv + ["--resume"])
    assert rc == 2 and err.count("\n") == 1 and str(d / METRICS_FILE) in err and "UTF-8" in err
    with pytest.raises(CromaError, match="metrics.csv"):
        read_metrics(d / METRICS_FILE)
