"""The ``--nproc N`` launcher: N local processes as the ranks of one torch.distributed group.

:func:`launch_local` starts them (rank environment, a free port, one thread each), waits, and takes
them down with it: on Linux each rank asks the kernel for SIGKILL when the launcher dies, ranks
ignore Ctrl-C, and a launcher interrupted by Ctrl-C or SIGTERM terminates them. Used by ``croma
train --nproc`` and ``croma evaluate --nproc`` (:mod:`croma.distributed` re-exports it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Mapping, Sequence

from episodes.signals import child_preexec

__all__ = ["launch_local", "python_cmd", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the --nproc launcher
def launch_local(
    cmd: Sequence[str],
    nproc: int,
    *,
    env: Mapping[str, str] | None = None,
    grace_s: float = 30.0,
    threads: int | None = 1,
    tmpdir: str | None = None,
) -> tuple[int, list[int]]:
    """Run ``cmd`` as ranks ``0 .. nproc-1`` of one local process group and wait for them.

    Each process gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT`` (and ``OMP_NUM_THREADS=threads`` unless
    already set, as torchrun does); stdout/stderr are inherited. When a process fails, the
    others get ``grace_s`` seconds to notice (collective error or timeout) and exit with their
    own message; survivors are then terminated. Ranks die with the launcher: on Linux each asks the
    kernel for SIGKILL when the launcher dies (``PR_SET_PDEATHSIG``, so not even a SIGKILLed launcher
    leaves them training), they ignore Ctrl-C, and a launcher interrupted by Ctrl-C or SIGTERM
    terminates them (SIGKILL after 5 s) before the exception goes on. With ``tmpdir`` (a folder the
    caller removes after this returns) the ranks' ``TMPDIR`` points there, so what a rank killed
    mid-way leaves in its temporary folder (Python's own probe file included) goes with it.

    Returns:
        ``(exit code, per-rank exit codes)``: 0 when all succeeded, else rank 0's code when it
        failed, else the first failing rank's code (negative: killed by that signal).
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (got {nproc})")
    base = dict(os.environ if env is None else env)
    port = free_port()
    procs: list[subprocess.Popen] = []
    # ranks die with the launcher (even a SIGKILLed one) and leave Ctrl-C to it: it stops them and says so once
    preexec = child_preexec(os.getpid()) if os.name == "posix" else None
    for rank in range(nproc):
        e = dict(base, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
                 GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if threads is not None and "OMP_NUM_THREADS" not in base:
            e["OMP_NUM_THREADS"] = str(threads)
        if tmpdir is not None:
            e["TMPDIR"] = str(tmpdir)
        procs.append(subprocess.Popen(list(cmd), env=e, preexec_fn=preexec))
    failed_at: float | None = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if failed_at is None and any(c not in (None, 0) for c in codes):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > grace_s:
                _stop(procs)
                break
            time.sleep(0.05)
    except BaseException:  # Ctrl-C, SIGTERM (episodes.signals.Terminated): take the children down with us
        _stop(procs)
        raise
    codes = [int(p.returncode) for p in procs]
    if all(c == 0 for c in codes):
        return 0, codes
    if codes[0] != 0:
        return codes[0], codes
    return next(c for c in codes if c != 0), codes


def _stop(procs: Sequence[subprocess.Popen], grace_s: float = 5.0) -> None:
    """SIGTERM every live process, SIGKILL those still alive after ``grace_s``; reap them all."""
    for p in procs:
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:  # already gone
                pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def python_cmd(code: str, *args: str) -> list[str]:
    """``[python, -c, code, *args]`` with this interpreter (for :func:`launch_local`)."""
    return [sys.executable, "-c", code, *args]
