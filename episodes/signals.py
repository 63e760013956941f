"""How signals end a run: SIGTERM and SIGHUP unwind like Ctrl-C; child processes die with their parent.

* :func:`raise_on_termination` makes SIGTERM (and SIGHUP) raise :class:`Terminated`, a subclass of
  :class:`KeyboardInterrupt`, so every ``except KeyboardInterrupt`` / ``finally`` clean-up that
  Ctrl-C runs (temporary files, launcher folders, worker pools, empty output folders) also runs
  when a process is killed politely. Dispositions that are not the default (``nohup``'s ignored
  SIGHUP, a handler someone else installed) are left alone.
* :func:`die_with_parent` (Linux: ``prctl(PR_SET_PDEATHSIG)`` through ctypes) makes a child
  process receive a signal when its parent dies, even by SIGKILL, so worker processes never
  outlive the command that started them. Elsewhere it does nothing and returns False.

Exit codes: a command ended by signal ``N`` exits with ``128 + N`` (130 for SIGINT, 143 for
SIGTERM, 129 for SIGHUP), as a shell reports it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

__all__ = ["Terminated", "raise_on_termination", "restore_handlers", "die_with_parent", "exit_code", "signal_name"]

PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """Raised by the handler :func:`raise_on_termination` installs; ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, ``"signal 42"`` for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(exc: KeyboardInterrupt) -> int:
    """``128 + N`` for the signal that raised ``exc`` (:class:`Terminated`), 130 for a plain Ctrl-C."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))


def _raise(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    raise Terminated(signum)


def raise_on_termination(signals: tuple[str, ...] = ("SIGTERM", "SIGHUP")) -> dict[int, Any]:
    """Make each of ``signals`` whose disposition is the default raise :class:`Terminated`.

    Only in the main thread (Python delivers signals there); elsewhere nothing changes.

    Returns:
        ``{signum: previous handler}`` for :func:`restore_handlers`.
    """
    changed: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return changed
    for name in signals:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous = signal.getsignal(signum)
        if previous is signal.SIG_DFL:
            signal.signal(signum, _raise)
            changed[int(signum)] = previous
    return changed


def restore_handlers(changed: dict[int, Any]) -> None:
    """Undo :func:`raise_on_termination` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in changed.items():
        signal.signal(signum, previous)


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent_pid: int | None = None, sig: int = int(signal.SIGKILL)) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    If the parent is already gone (``os.getppid()`` differs from ``parent_pid``), the process
    exits at once.

    Returns:
        True when the request is in place, False where the platform cannot do it.
    """
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:  # died before the request was in place
        os._exit(128 + int(sig))
    return True


def child_preexec(parent_pid: int, ignore_sigint: bool = True) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child dies with ``parent_pid`` (SIGKILL)
    and, with ``ignore_sigint``, ignores Ctrl-C (the parent, which gets it too, stops the children
    itself and reports it once). Resolved in the parent, so the child only makes two system calls."""
    prctl = _prctl()

    def preexec() -> None:
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent_pid:
                os._exit(137)

    return preexec
