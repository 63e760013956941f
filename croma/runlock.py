"""One writer per run folder, and a run identity that tells a run folder's files apart.

**The lock.** Every command that writes into a run folder (``croma train --checkpoint-dir DIR``,
:func:`croma.fit.train` with ``checkpoint_dir``, ``croma benchmark --out DIR``) first takes an
exclusive lock on ``DIR/.croma.lock`` (:func:`lock_run_folder`): ``fcntl.flock`` on POSIX,
``msvcrt.locking`` on Windows, an ``O_EXCL`` file with a stale-pid check where neither works. The
file holds the holder's pid, host and start time (text, for the refusal message). The operating
system drops the lock when the holder exits, however it ends (even ``SIGKILL``); a holder that ends
normally also removes the file. A second writer is refused at once with one line
(:class:`RunFolderInUse`). The lock is re-entrant within one process (``croma train`` takes it
before loading data, :class:`croma.fit.CromaTrainer` takes it again around its loop), and an
``--nproc`` launcher hands it to its rank 0 (:func:`adopt`). Readers (``croma evaluate``) take no
lock.

**The run identity.** A run gets a random ``run_id`` (:func:`new_run_id`) when it starts in a
folder; ``--resume`` keeps the one stored in ``last.pt``. Every checkpoint it writes carries it,
and ``metrics.csv`` has a last ``run_id`` column. :func:`check_same_run` refuses a folder whose
``last.pt``, ``best.pt`` and ``metrics.csv`` name different runs; files without a run id (written
before it existed) are accepted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from croma.errors import CromaError

__all__ = ["LOCK_FILE", "RunFolderInUse", "RunLock", "lock_run_folder", "adopt", "new_run_id", "check_run_files",
           "check_same_run", "RUN_FILES"]

LOCK_FILE = ".croma.lock"
RUN_FILES = ("last.pt", "best.pt", "metrics.csv")


class RunFolderInUse(CromaError):
    """Another process holds the run folder's lock."""


def new_run_id() -> str:
    """A fresh run identity: 16 random hex digits."""
    return secrets.token_hex(8)


def _holder_text() -> str:
    return (f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
            f"started={time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime())}\n")


def _parse_holder(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _read_holder(path: Path) -> dict[str, str]:
    """The holder's pid / host / start time (waits briefly: a holder writes them right after locking)."""
    info: dict[str, str] = {}
    for _ in range(20):
        try:
            with open(path, "rb") as fh:
                info = _parse_holder(fh.read(4096).decode("utf-8", "replace"))
        except OSError:
            info = {}
        if info.get("pid"):
            break
        time.sleep(0.01)
    return info


def _in_use(flag: str, folder: Path, info: Mapping[str, str]) -> RunFolderInUse:
    who = ""
    if info.get("pid"):
        who = f" (pid {info['pid']} on {info.get('host', '?')} since {info.get('started', '?')})"
    return RunFolderInUse(f"{flag} {folder} is in use by another croma run{who}; "
                          f"wait for it to finish or choose another folder")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None
try:  # Windows
    import msvcrt as _msvcrt  # type: ignore[import-not-found]
except ImportError:
    _msvcrt = None

_WIN_BYTE = 1 << 20  # Windows: lock a byte past the text, so that others can still read who holds it


class RunLock:
    """The exclusive lock on one run folder (see the module docstring); use :func:`lock_run_folder`.

    Args:
        folder: the run folder (created when missing).
        flag: how the folder was named to the user (``--checkpoint-dir``, ``checkpoint_dir``,
            ``--out``), for messages.
    """

    def __init__(self, folder: str | os.PathLike, flag: str = "--checkpoint-dir") -> None:
        self.folder = Path(folder).expanduser()
        self.flag = flag
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._mode = ""

    @property
    def held(self) -> bool:
        return self._mode != ""

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunFolderInUse` at once (no waiting).

        Raises:
            RunFolderInUse: another process holds it (the message names it).
            CromaError: the folder is a file or cannot be created or written (naming the flag).
        """
        if self.folder.exists() and not self.folder.is_dir():
            raise CromaError(f"{self.flag} {self.folder}: is a file, not a folder (choose a folder for the outputs)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if _fcntl is not None or _msvcrt is not None:
                try:
                    self._acquire_os()
                    return self
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    # a file system without locks (some network mounts): the O_EXCL file below
            self._acquire_excl()
        except RunFolderInUse:
            raise
        except OSError as exc:
            raise CromaError(f"{self.flag} {self.folder}: cannot lock the run folder "
                             f"({exc.strerror or exc}); choose a writable folder") from exc
        return self

    def _acquire_os(self) -> None:
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                if _fcntl is not None:
                    _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
                else:  # pragma: no cover - Windows
                    os.lseek(fd, _WIN_BYTE, os.SEEK_SET)
                    _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                    raise _in_use(self.flag, self.folder, _read_holder(self.path)) from None
                raise
            # a holder that ends removes the file while it still holds the lock: when the file we
            # locked is no longer the one at the path, start again on the new one
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            text = _holder_text().encode()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, text)
            self._fd, self._mode = fd, "os"
            return
        raise OSError(errno.EAGAIN, "the lock file keeps changing", str(self.path))

    def _acquire_excl(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                info = _read_holder(self.path)
                pid = int(info["pid"]) if info.get("pid", "").isdigit() else 0
                if info.get("host") == socket.gethostname() and pid and not _pid_alive(pid):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)  # a holder that died without removing it
                    continue
                raise _in_use(self.flag, self.folder, info) from None
            os.write(fd, _holder_text().encode())
            os.close(fd)
            self._mode = "excl"
            return
        raise _in_use(self.flag, self.folder, _read_holder(self.path))

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing when not held)."""
        mode, fd = self._mode, self._fd
        self._mode, self._fd = "", None
        if mode == "os" and fd is not None:
            try:
                if os.name != "nt":  # unlink while still holding it (see _acquire_os)
                    with contextlib.suppress(OSError):
                        if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                            os.unlink(self.path)
            finally:
                os.close(fd)
            if os.name == "nt":  # pragma: no cover - Windows cannot remove an open file
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        elif mode == "excl":
            with contextlib.suppress(OSError):
                if _parse_holder(self.path.read_text(encoding="utf-8", errors="replace")).get("pid") == str(os.getpid()):
                    os.unlink(self.path)


# locks this process holds, by real folder path: [RunLock or None (adopted), count]
_HELD: dict[str, list[Any]] = {}
_GUARD = threading.Lock()


def _key(folder: str | os.PathLike) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(folder)))


@contextlib.contextmanager
def lock_run_folder(folder: str | os.PathLike, flag: str = "--checkpoint-dir") -> Iterator[None]:
    """Hold the run folder's lock for the ``with`` block (re-entrant within this process).

    Raises:
        RunFolderInUse: another process writes there.
        CromaError: the folder is a file or cannot be created or written.
    """
    key = _key(folder)
    with _GUARD:
        entry = _HELD.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            lock = RunLock(folder, flag).acquire()
            entry = _HELD[key] = [lock, 1]
    try:
        yield
    finally:
        with _GUARD:
            entry[1] -= 1
            if entry[1] == 0:
                _HELD.pop(key, None)
                if entry[0] is not None:
                    entry[0].release()


def adopt(folder: str | os.PathLike, owner_pid: int) -> bool:
    """Treat the lock of ``folder`` as held by this process when ``owner_pid`` (the ``--nproc``
    launcher that started it) holds it, so that rank 0 may write there; True when adopted."""
    path = Path(folder).expanduser() / LOCK_FILE
    info = _read_holder(path) if path.is_file() else {}
    if info.get("pid") != str(owner_pid) or info.get("host") != socket.gethostname():
        return False
    with _GUARD:
        _HELD.setdefault(_key(folder), [None, 0])[1] += 1  # never released: the launcher owns it
    return True


def check_run_files(folder: str | os.PathLike, flag: str = "--checkpoint-dir") -> None:
    """Refuse a run folder whose ``last.pt`` / ``best.pt`` / ``metrics.csv`` is not a regular file
    (a folder of that name would make the run fail only when it first writes there)."""
    for name in RUN_FILES:
        p = Path(folder).expanduser() / name
        if (p.exists() or p.is_symlink()) and not p.is_file():
            what = "a folder" if p.is_dir() else "not a regular file"
            raise CromaError(f"{flag} {Path(folder)}: {p} is {what}, not a croma {name} "
                             f"(remove or rename it, or choose another folder)")


def _checkpoint_run_id(path: Path) -> str | None:
    """The ``run_id`` stored in a checkpoint, or None (none stored, or unreadable: nothing to compare)."""
    try:
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable file is reported by whoever loads it
        return None
    rid = ckpt.get("run_id") if isinstance(ckpt, dict) else None
    return rid if isinstance(rid, str) and rid else None


def metrics_run_ids(path: str | os.PathLike) -> list[str]:
    """The distinct run ids in ``metrics.csv``'s ``run_id`` column, in order (empty: none recorded)."""
    import csv

    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        if "run_id" not in header:
            return []
        col = header.index("run_id")
        ids = [row[col] for row in reader if len(row) == len(header) and row[col]]
    return list(dict.fromkeys(ids))


def check_same_run(folder: str | os.PathLike, known: Mapping[str, str | None] | None = None) -> str | None:
    """Refuse a run folder whose ``last.pt``, ``best.pt`` and ``metrics.csv`` come from different
    runs; returns the folder's run id (None when no file records one).

    ``known``: run ids already read, by file name (``{"last.pt": ckpt.get("run_id")}``).

    Raises:
        CromaError: naming the two files and what to do.
    """
    folder = Path(folder).expanduser()
    known = dict(known or {})
    seen: list[tuple[str, str]] = []
    for name in RUN_FILES:
        p = folder / name
        if name in known:
            rid = known[name]
            ids = [rid] if rid else []
        elif not p.is_file():
            continue
        elif name == "metrics.csv":
            try:
                ids = metrics_run_ids(p)
            except OSError:
                ids = []
        else:
            rid = _checkpoint_run_id(p)
            ids = [rid] if rid else []
        for rid in ids:
            for other_name, other in seen:
                if other != rid:
                    raise CromaError(
                        f"{folder / other_name} and {p} come from different croma runs (run_id {other} and {rid}): "
                        f"two runs wrote to {folder}; keep one run per folder (retrain there, or copy the checkpoint "
                        f"you trust to a folder of its own)"
                    )
            seen.append((name, rid))
    return seen[0][1] if seen else None
