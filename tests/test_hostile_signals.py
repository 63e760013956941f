"""Signals end a run cleanly (issue 21, items 7 and 8).

* Ctrl-C (SIGINT) or SIGTERM during speech synthesis cancels the pending utterances, stops the worker
  pool and exits within seconds with one line (130 / 143), leaving no empty --out; a SIGKILLed parent
  takes its workers along.
* SIGTERM is handled like Ctrl-C: one line, the same clean-up, exit code 128 + 15.
* Killing the ``--nproc N`` launcher kills its ranks (even with SIGKILL: PR_SET_PDEATHSIG) and
  removes its temporary folder.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import clean_env

TIMEOUT = 40


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc: these tests run on Linux)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _gone(pids: list[int], timeout: float = 5.0) -> bool:
    t0 = time.monotonic()
    while any(_alive(p) for p in pids):
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.05)
    return True


def _kill_all(proc: subprocess.Popen, pids: list[int]) -> None:
    for pid in [proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


# ---------------------------------------------------------------------- item 7: speech synthesis
SLOW_SYNTHESIS = textwrap.dedent("""
    import sys, time, types
    import episodes.datasets.udhr_speech as u
    marker = sys.argv[1]
    def slow(job):  # a synthesis that takes 0.3 s per utterance: 1,760 of them would take minutes
        open(marker, "a").close()
        time.sleep(0.3)
        return (job[0], 100, None)
    u._synthesize_one = slow
    u.get_backend = lambda *a, **k: types.SimpleNamespace(name="fake", cache_id="fake-1")
    u._backend_id = lambda: "fake-1"
    from croma.cli import main
    sys.exit(main(["benchmark", "udhr-speech", "--quiet", "--cache-dir", sys.argv[2], "--out", sys.argv[3]]))
""")


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "error: interrupted"),
                                             (signal.SIGTERM, 143, "error: terminated by SIGTERM"),
                                             (signal.SIGKILL, -9, None)])
def test_signal_during_speech_synthesis_stops_the_pool_within_seconds(tmp_path, sig, code, line):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SYNTHESIS)
    marker, out_dir = tmp_path / "started", tmp_path / "new" / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(marker), str(tmp_path / "cache"), str(out_dir)], env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: list[int] = []
    try:
        _wait_for(marker.exists, TIMEOUT, "the first utterance", proc)
        workers = _children(proc.pid)
        assert workers  # the pool's processes
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal reaches the whole foreground group
        else:
            proc.send_signal(sig)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=30)  # before: all 1,760 utterances (minutes), or never
        took = time.monotonic() - t0
        assert took < 10.0, (took, err)  # ~1 s on an idle machine; headroom for a loaded one
    finally:
        _kill_all(proc, workers)
    assert proc.returncode == code, err
    if line is not None:
        assert err.strip().splitlines() == [line], err
    assert _gone(workers), "a synthesis worker outlived its parent"
    if line is not None:  # a benchmark interrupted before it wrote anything leaves no empty --out
        assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------- item 8: SIGTERM like SIGINT
def test_sigterm_ends_a_command_like_ctrl_c(tmp_path):
    """In-process: the handler croma.cli.main installs raises through the command's clean-up; 143, one line."""
    script = tmp_path / "term.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        import croma.cli.data as d
        def run(args):  # the command receives SIGTERM while working
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                return 0
            finally:
                open(sys.argv[1], "w").write("cleaned up")
        d.run_inspect = run
        from croma.cli import main
        sys.exit(main(["data", "inspect", "udhr-speech"]))
    """))
    done = tmp_path / "cleanup"
    res = subprocess.run([sys.executable, str(script), str(done)], env=clean_env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert res.returncode == 143, res.stderr
    assert res.stderr.strip().splitlines() == ["error: terminated by SIGTERM"]
    assert done.read_text() == "cleaned up"
    # a disposition someone else chose (nohup's ignored SIGHUP) is left alone
    from episodes.signals import raise_on_termination, restore_handlers

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        changed = raise_on_termination()
        assert signal.SIGHUP not in changed and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        restore_handlers(changed)
    finally:
        signal.signal(signal.SIGHUP, old)


FLAGS = [
    "synthetic", "--loss", "cwcl", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "3", "--finetune-steps", "1", "--seed", "1", "--iterations", "100000000",
    "--eval-every", "0", "--checkpoint-every", "0", "--dist-timeout", "20",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_nproc_launcher_kills_its_ranks_and_removes_its_folder(tmp_path, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "croma", "train", *FLAGS, "--checkpoint-dir", str(tmp_path / "run"), "--nproc", "2"]
    proc = subprocess.Popen(cmd, env=clean_env(TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    ranks: list[int] = []
    try:
        _wait_for(lambda: len(_children(proc.pid)) >= 2, TIMEOUT, "two ranks", proc)
        ranks = _children(proc.pid)
        assert [p.name for p in tmp.iterdir()][0].startswith("croma-nproc-")  # the launcher's folder
        time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
        assert _gone(ranks), "a rank outlived its launcher"
    finally:
        _kill_all(proc, ranks)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert err.strip().splitlines() == ["error: terminated by SIGTERM"], err
        assert list(tmp.iterdir()) == []  # the temporary launcher folder is gone
    else:
        assert proc.returncode == -9


def test_ranks_temporary_files_live_in_the_launchers_folder(tmp_path):
    """A rank killed mid-way (even inside Python's own temp-folder probe) leaves nothing behind the launcher."""
    from croma.launcher import launch_local, python_cmd

    code = "import os, sys, tempfile; open(sys.argv[1] + os.environ['RANK'], 'w').write(tempfile.gettempdir())"
    own = tmp_path / "own"
    own.mkdir()
    rc, codes = launch_local(python_cmd(code, str(tmp_path / "seen")), 2, env=clean_env(), tmpdir=str(own))
    assert (rc, codes) == (0, [0, 0])
    assert [(tmp_path / f"seen{r}").read_text() for r in range(2)] == [str(own)] * 2


# ---------------------------------------------------------------------- croma benchmark --jobs workers
BENCH_FLAGS = ["benchmark", "synthetic", "--quiet", "--ways", "3", "--methods", "croma,align-classify",
               "--budget-steps", "100000", "--eval-tasks", "4", "--train-seeds", "2", "--jobs", "2", "--shots", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, line, wait", [(signal.SIGINT, 130, "error: interrupted", 2.0),
                                                   (signal.SIGINT, 130, "error: interrupted", 0.0),
                                                   (signal.SIGTERM, 143, "error: terminated by SIGTERM", 2.0),
                                                   (signal.SIGKILL, -9, None, 2.0)])
def test_a_signal_stops_the_benchmark_workers_with_one_line(tmp_path, sig, code, line, wait):
    """wait 0: Ctrl-C while the workers are still starting (importing croma, before their own
    handlers): they started with SIGINT ignored, so no traceback, one line from the parent."""
    out_dir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "croma", *BENCH_FLAGS, "--out", str(out_dir)], env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: list[int] = []
    try:
        # the two workers (the resource tracker is a child too: wait for three)
        _wait_for(lambda: len(_children(proc.pid)) >= 3, TIMEOUT, "two workers", proc)
        time.sleep(wait)  # 2 s: inside the units' training
        workers = _children(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground group; workers leave it to the parent
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
        assert _gone(workers), "a worker outlived the run"
    finally:
        _kill_all(proc, workers)
    assert proc.returncode == code
    if line is not None:
        assert err.strip().splitlines() == [line], err
    assert not (out_dir / "results.json").exists()
