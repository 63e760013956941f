"""Atomic writes and safe reads of files, for the feature cache and every other file croma writes.

Writes (:func:`atomic_write`, :func:`atomic_write_set`) go to a temporary file in the same folder,
flushed and fsynced, then moved into place with ``os.replace``; new files get ``0o666 & ~umask``
like any other file. An error names the target (:func:`write_error`), never the temporary file.

Temporary files
    ``.<name>.<host>.<pid>.<random>.tmp`` next to the target. A writer killed mid-write (SIGKILL)
    leaves one behind; the next write to the same target removes those whose process is gone
    (same host) or that are older than a day (:func:`remove_stale_temps`), never a live writer's.

Reads: :func:`_open_regular` opens a path only when it is a regular file (not a symbolic link,
FIFO, device or folder), checked on the opened file, never blocking.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn

__all__ = ["atomic_write", "atomic_write_set", "write_error", "remove_stale_temps", "STALE_TEMP_AGE_S"]


STALE_TEMP_AGE_S = 24 * 3600.0  # a temporary file this old is left over whatever its name says


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(target: str | os.PathLike) -> int:
    """Remove temporary files a killed writer left next to ``target``; returns how many.

    A temporary file of ``target`` is ``.<name>.*.tmp`` in the same folder. It is removed when its
    name records this host and a process id that no longer runs, or when it is older than
    :data:`STALE_TEMP_AGE_S` (other hosts, older names); a live writer's file is kept.
    """
    target = Path(target)
    prefix, host, now, removed = f".{target.name}.", _host(), time.time(), 0
    try:
        names = os.listdir(target.parent)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        parts = name[len(prefix):-len(".tmp")].split(".")
        path = target.parent / name
        stale = False
        if len(parts) >= 3 and parts[0] == host and parts[1].isdigit():
            stale = int(parts[1]) != os.getpid() and not _pid_alive(int(parts[1]))
        if not stale:
            try:
                stale = now - path.lstat().st_mtime > STALE_TEMP_AGE_S
            except OSError:
                continue
        if stale:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


class _WriteRecorder:
    """The temporary file as ``write(fh)`` sees it: every attribute is the file's, and the first
    ``OSError`` its ``write`` raised is kept, because ``torch.save`` turns a failed write (a full
    disk) into ``RuntimeError('... unexpected pos ...')``, which names neither the cause nor the path."""

    def __init__(self, fh) -> None:
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._fh.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def write_error(exc: OSError, target: str | os.PathLike) -> OSError:
    """``exc`` (raised while writing ``target``) as an ``OSError`` of the same errno that names
    ``target`` (instead of a temporary file's name, or none); a full disk or quota says so in words
    and how much space is left: filename ``str(target)``, strerror ``"no space left on device (12.0
    KiB free there)"``. An error naming another path (a folder in the way) is returned as it is."""
    target = Path(target)
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        what = what[:1].lower() + what[1:]
        try:
            st = os.statvfs(target.parent)
            what += f" ({_human_bytes(st.f_bavail * st.f_frsize)} free there)"
        except (OSError, AttributeError):  # no statvfs (Windows) or the folder is gone
            pass
    else:
        named = exc.filename if exc.filename2 is None else exc.filename2
        ours = named is None or str(named) == str(target) or Path(str(named)).name.startswith(f".{target.name}.")
        if not ours:
            return exc  # it names another path (e.g. a folder in the way): that is the culprit
    out = OSError(exc.errno, what, str(target))  # OSError(errno, ...) picks the subclass (PermissionError...)
    return out


_TORCH_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed writing")


def _torch_write_failure(exc: RuntimeError, target: Path) -> OSError:
    """An ``OSError`` for torch's own report of a failed write whose cause was not seen: ENOSPC when
    the file system of ``target`` has (almost) no space left, else EIO quoting torch."""
    try:
        st = os.statvfs(target.parent)
        full = st.f_bavail * st.f_frsize < 2**20
    except (OSError, AttributeError):
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OSError(errno.EIO, f"the write failed (torch: {first[:120]})")


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create ``.<name>.<host>.<pid>.<random>.tmp`` next to ``target`` with ``O_CREAT | O_EXCL`` and
    mode ``0o666``: the kernel applies the umask (and a folder's default ACL) exactly as for any
    new file, so the final file gets ``0o666 & ~umask`` (0644 under umask 022, 0664 under 002).
    ``tempfile.mkstemp`` would give 0600 whatever the umask, and reading the umask instead
    (``os.umask(x)`` then restoring it) is not thread-safe: another thread creating a file in
    between would get ``x``. Returns ``(fd, path)``."""
    import secrets

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    prefix = f".{target.name}.{_host()}.{os.getpid()}."
    for _ in range(100):
        path = target.parent / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))  # pragma: no cover


def _write_temp(target: Path, write: Callable[[Any], None]) -> Path:
    """``write(fh)`` into a new temporary file next to ``target``, flushed and fsynced; returns its
    path. On any error the temporary file is removed and the error names ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file (remove it or choose another path)", str(target))
    remove_stale_temps(target)
    try:
        fd, tmp = _create_temp(target)
    except OSError as exc:
        _raise_named(exc, target)
    rec = None
    try:
        with os.fdopen(fd, "wb") as fh:
            rec = _WriteRecorder(fh)
            write(rec)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            _raise_named(exc, target)
        if isinstance(exc, RuntimeError) and rec is not None and rec.error is not None:
            raise write_error(rec.error, target) from exc  # torch.save: "unexpected pos 704 vs 598"
        if isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_FAILED):
            raise write_error(_torch_write_failure(exc, target), target) from exc
        raise
    return tmp


def _raise_named(exc: OSError, target: Path) -> NoReturn:
    """Raise ``exc`` as :func:`write_error` names it (``target`` in the message, same errno)."""
    err = write_error(exc, target)
    if err is exc:
        raise exc
    raise err from exc


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _replace(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            _raise_named(exc, target)
        raise


def atomic_write(target: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write ``target`` atomically: ``write(fh)`` fills a temporary file in the same folder, which is
    flushed, fsynced and moved into place with ``os.replace``; on any error (disk full, read-only)
    the temporary file is removed and the old ``target`` is untouched. Left-over temporary files of
    killed writers are removed first (:func:`remove_stale_temps`). The new file's mode honours the
    umask (``0o666 & ~umask``), like any file the process creates.

    Raises:
        OSError: the folder cannot be created or written, or the disk is full (also when
            ``torch.save`` reports it as ``RuntimeError('unexpected pos')``); the error names
            ``target`` (see :func:`write_error`) and keeps its errno.
    """
    target = Path(target)
    _replace(_write_temp(target, write), target)
    return target


def atomic_write_set(writes: Mapping[str | os.PathLike, Callable[[Any], None]]) -> list[Path]:
    """Write several files as one set: every ``write(fh)`` fills its own temporary file (as in
    :func:`atomic_write`) and only when all of them are written are they moved into place, so a
    failure (a full disk, a plot that cannot be drawn) leaves none of the new files and every old
    one untouched. Should a move itself fail (it needs no space; rare), the files of the set moved
    before it that did not exist before are removed again.

    Returns:
        the target paths, in the order given.

    Raises:
        OSError: as :func:`atomic_write`, naming the file that could not be written.
    """
    targets = [Path(t) for t in writes]
    temps: list[Path] = []
    try:
        for target, write in zip(targets, writes.values()):
            temps.append(_write_temp(target, write))
    except BaseException:
        for tmp in temps:
            _unlink_quietly(tmp)
        raise
    fresh = [not os.path.lexists(t) for t in targets]
    for i, (tmp, target) in enumerate(zip(temps, targets)):
        try:
            _replace(tmp, target)
        except BaseException:
            for later in temps[i + 1:]:
                _unlink_quietly(later)
            for earlier, new in zip(targets[:i], fresh[:i]):
                if new:
                    _unlink_quietly(earlier)
            raise
    return targets


class _NotAnEntry(OSError):
    """The entry's path holds something that is not a readable entry (the message says what)."""


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading only if it is a regular file (not a symbolic link, FIFO, device or
    folder); the check is made on the opened file (no race), and opening never blocks (a FIFO
    without a writer would). Returns ``(fd, fstat)``.

    Raises:
        FileNotFoundError: nothing there. _NotAnEntry: something that is not a regular file.
    """
    st = os.lstat(path)  # FileNotFoundError: absent
    if stat.S_ISLNK(st.st_mode):
        raise _NotAnEntry(f"is a symbolic link (to {os.readlink(path)}), not a regular file")
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symbolic link since the lstat
            raise _NotAnEntry("is a symbolic link, not a regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise _NotAnEntry(f"is {kind}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd, st
