"""On-disk feature cache: content-hashed keys, atomic writes, verified reads.

One entry holds the front-end output of a whole modality of a data set (a dict of tensors,
e.g. ``{"features": float [n, n_mels, T], "ok": bool [n]}``), not one file per item.

Key
    :func:`hash_key` of a JSON-able description: the data set name, the modality, the
    front-end settings and an *input identity* digest (:func:`inputs_digest`: every item's id
    and, for files, resolved path + size + mtime; for text, the string itself). Any change
    of input or settings gives a new key.

File format (``<root>/features/<namespace>/<key>.pt``)
    One header line ``CROMAFEAT1 <sha256 hex of payload> <payload length>\\n`` followed by the
    payload, which is ``torch.save`` of the tensor dict. Reads check the length and the
    checksum before ``torch.load(..., weights_only=True)``; a truncated or corrupt entry is
    treated as missing, deleted, and rebuilt. Only a regular file of at most
    :data:`MAX_ENTRY_BYTES` is read (:func:`read_entry`): a symbolic link, FIFO or device there
    is named in a one-line warning and treated like a corrupt entry. Writes go to a temporary
    file in the same directory and are moved into place with ``os.replace``
    (:func:`atomic_write`); new files get ``0o666 & ~umask`` like any other file.

Temporary files
    ``.<name>.<host>.<pid>.<random>.tmp`` next to the target. A writer killed mid-write (SIGKILL)
    leaves one behind; the next write to the same target removes those whose process is gone
    (same host) or that are older than a day (:func:`remove_stale_temps`), never a live writer's.

Default root: ``$CROMA_CACHE`` or ``~/.cache/croma``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from episodes.errors import DataError

__all__ = ["MAGIC", "default_cache_dir", "hash_key", "file_identity", "inputs_digest", "FeatureCache",
           "atomic_write", "atomic_write_set", "write_error", "remove_stale_temps", "STALE_TEMP_AGE_S", "MAX_ENTRY_BYTES",
           "is_entry_file"]

MAGIC = b"CROMAFEAT1"
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
        err = write_error(exc, target)
        if err is exc:
            raise
        raise err from exc
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
            err = write_error(exc, target)
            if err is exc:
                raise
            raise err from exc
        if isinstance(exc, RuntimeError) and rec is not None and rec.error is not None:
            raise write_error(rec.error, target) from exc  # torch.save: "unexpected pos 704 vs 598"
        if isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_FAILED):
            raise write_error(_torch_write_failure(exc, target), target) from exc
        raise
    return tmp


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
            err = write_error(exc, target)
            if err is exc:
                raise
            raise err from exc
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


def default_cache_dir() -> Path:
    """The cache root: ``$CROMA_CACHE`` if set, else ``$XDG_CACHE_HOME/croma`` (the XDG base-directory
    convention), else ``~/.cache/croma``. An empty variable counts as unset; the one place that decides."""
    env = os.environ.get("CROMA_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(os.path.expanduser(xdg)):  # the spec: a relative value is ignored
        return Path(xdg).expanduser() / "croma"
    return Path.home() / ".cache" / "croma"


def hash_key(obj: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``obj`` (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, size in bytes, mtime in ns)``; ``("<missing>", -1, -1)``-style when absent."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return (str(p), -1, -1)
    return (str(p.resolve()), int(st.st_size), int(st.st_mtime_ns))


def inputs_digest(entries: Iterable[tuple[str, Any]]) -> str:
    """Digest of ``(item id, value)`` pairs, in order.

    A ``str`` value that names an existing file contributes its :func:`file_identity`; other
    strings contribute themselves; numpy arrays / tensors contribute their bytes, shape and dtype.
    """
    import numpy as np

    h = hashlib.blake2b(digest_size=32)
    for item_id, value in entries:
        h.update(str(item_id).encode("utf-8", "surrogatepass") + b"\0")
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            h.update(repr(file_identity(value)).encode("utf-8", "surrogatepass"))
        elif isinstance(value, str):
            h.update(b"s:" + value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, (np.ndarray, torch.Tensor)):
            a = value.numpy() if isinstance(value, torch.Tensor) else value
            h.update(f"a:{a.shape}:{a.dtype}:".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        else:
            h.update(b"r:" + repr(value).encode("utf-8", "surrogatepass"))
        h.update(b"\1")
    return h.hexdigest()


#: the largest entry :meth:`FeatureCache.load` reads: the biggest real one (CIFAR-100's 60000 32x32
#: images as uint8, ~180 MiB; ESC-50 log-mel features, ~250 MiB) is far below it, and a bigger
#: file would need twice its size in memory to decode
MAX_ENTRY_BYTES = 16 * 2**30
_HEADER_MAX = 200  # the header line is 10 + 1 + 64 + 1 + at most 20 digits + 1 bytes


class _NotAnEntry(OSError):
    """The entry's path holds something that is not a readable entry (the message says what)."""


def _header_length(head: bytes) -> tuple[int, int] | None:
    """``(header bytes incl. newline, declared payload length)`` of a ``CROMAFEAT1`` header, or None."""
    nl = head.find(b"\n", 0, _HEADER_MAX)
    if nl < 0:
        return None
    parts = head[:nl].split(b" ")
    if len(parts) != 3 or parts[0] != MAGIC or len(parts[1]) != 64 or not parts[2].isdigit():
        return None
    if parts[1].strip(b"0123456789abcdef"):
        return None
    return nl + 1, int(parts[2])


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


def is_entry_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a feature cache entry :class:`FeatureCache` wrote: a regular file (not a
    symbolic link) named ``*.pt`` whose first line is a ``CROMAFEAT1 <sha256 hex> <length>`` header
    (a truncated or corrupt entry still is one; a checkpoint or any other file is not). Reads at
    most 200 bytes; never raises."""
    path = Path(path)
    if path.suffix != ".pt":
        return False
    try:
        fd, _ = _open_regular(path)
    except OSError:
        return False
    try:
        head = os.read(fd, _HEADER_MAX)
    except OSError:
        return False
    finally:
        os.close(fd)
    return _header_length(head) is not None


def read_entry(path: str | os.PathLike) -> bytes:
    """The bytes of the entry file ``path`` (header and payload), read only from a regular file whose
    size is at most :data:`MAX_ENTRY_BYTES` and, when its header is readable, exactly the header
    plus the payload length it declares (a longer file is never read whole: ``b""`` is returned,
    which decodes as corrupt).

    Raises:
        FileNotFoundError: absent. OSError: unreadable; a subclass naming what is there instead of a
        regular file (symbolic link, FIFO, device) or a size over the bound.
    """
    path = Path(path)
    fd, st = _open_regular(path)
    try:
        if st.st_size > MAX_ENTRY_BYTES:
            raise _NotAnEntry(f"is {_human_bytes(st.st_size)}, over the {_human_bytes(MAX_ENTRY_BYTES)} an entry may hold")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            head = fh.read(_HEADER_MAX)
            got = _header_length(head)
            if got is None or st.st_size != got[0] + got[1]:
                return b""  # truncated, padded or not an entry: corrupt
            return head + fh.read(st.st_size - len(head))
    finally:
        os.close(fd)


class FeatureCache:
    """A directory of verified tensor-dict entries.

    Args:
        root: cache root (default :func:`default_cache_dir`); entries live under
            ``<root>/features/``.

    Attributes:
        stats: counts of ``hit`` / ``built`` / ``rebuilt`` (corrupt entry replaced) lookups.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        if root is not None and not str(root).strip():  # Path("") is the current folder: features/ would land there
            raise DataError("--cache-dir is empty: give a folder, or leave the flag out for $CROMA_CACHE or "
                            "~/.cache/croma")
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.stats = {"hit": 0, "built": 0, "rebuilt": 0}

    def path(self, namespace: str, key: str) -> Path:
        """File of entry ``key`` in ``namespace`` (namespace: e.g. ``cifar-esc50/audio``)."""
        safe = "/".join("".join(c if c.isalnum() or c in "-_." else "_" for c in part) for part in namespace.split("/"))
        return self.root / "features" / safe / f"{key}.pt"

    def load(self, namespace: str, key: str) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, or ``None`` when absent, truncated or corrupt (a bad file is removed).

        Only a regular file is read (:func:`read_entry`): a symbolic link, FIFO or device at the
        entry's path, or a file larger than its header says or than :data:`MAX_ENTRY_BYTES`, is
        reported in one ``warning:`` line on stderr naming it and treated like a corrupt entry
        (removed -- the link itself, never its target -- and rebuilt)."""
        p = self.path(namespace, key)
        try:
            raw = read_entry(p)
        except FileNotFoundError:
            return None
        except _NotAnEntry as exc:
            sys.stderr.write(f"warning: feature cache entry {p}: {exc}; ignored and rebuilt\n")
            sys.stderr.flush()
            raw = b""
        except OSError:
            return None
        out = self._decode(raw) if raw else None
        if out is None:
            try:
                p.unlink()
            except OSError:
                pass
        return out

    @staticmethod
    def _decode(raw: bytes) -> dict[str, torch.Tensor] | None:
        nl = raw.find(b"\n", 0, 200)
        if nl < 0:
            return None
        parts = raw[:nl].split(b" ")
        if len(parts) != 3 or parts[0] != MAGIC:
            return None
        payload = raw[nl + 1 :]
        try:
            length = int(parts[2])
        except ValueError:
            return None
        if len(payload) != length or hashlib.sha256(payload).hexdigest().encode() != parts[1]:
            return None
        try:
            obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception:
            return None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            return None
        return obj

    def save(self, namespace: str, key: str, tensors: dict[str, torch.Tensor]) -> Path:
        """Write an entry atomically (temp file in the same directory + ``os.replace``)."""
        if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise DataError("feature cache entries hold tensors only")
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, buf)
        payload = buf.getvalue()
        header = MAGIC + b" " + hashlib.sha256(payload).hexdigest().encode() + b" " + str(len(payload)).encode() + b"\n"
        p = self.path(namespace, key)

        def write(fh) -> None:
            fh.write(header)
            fh.write(payload)

        try:
            atomic_write(p, write)
        except OSError as exc:
            where = exc.filename or p
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise DataError(f"cannot write {where}: {exc.strerror} (the feature cache entry needs "
                                f"{_human_bytes(len(header) + len(payload))}); free space or choose another "
                                "--cache-dir / $CROMA_CACHE") from exc
            raise DataError(f"{where}: cannot write the feature cache entry ({exc.strerror or exc}); make "
                            f"{self.root} writable or choose another --cache-dir / $CROMA_CACHE") from exc
        return p

    def check_writable(self, entry: Path) -> None:
        """Raise DataError naming the path when ``entry`` cannot be written (read-only or full disk,
        a file where a folder belongs, a folder where the entry belongs)."""
        hint = f"make {self.root} writable or choose another --cache-dir / $CROMA_CACHE"
        if entry.is_dir():
            raise DataError(f"{entry}: feature cache entry is a folder, not a file (remove it, or {hint})")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.{_host()}.{os.getpid()}.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise DataError(f"{exc.filename or entry.parent}: feature cache is not writable "
                            f"({exc.strerror or exc}); {hint}") from exc

    def get_or_build(
        self, namespace: str, key: str, build: Callable[[], dict[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], str]:
        """Load the entry, or call ``build()`` and save its result.

        Returns:
            ``(tensors, status)`` with status ``"hit"``, ``"built"`` (absent before) or
            ``"rebuilt"`` (a truncated / corrupt entry was replaced).
        """
        p = self.path(namespace, key)
        existed = p.exists()
        got = self.load(namespace, key)
        if got is not None:
            self.stats["hit"] += 1
            return got, "hit"
        self.check_writable(p)  # before the (possibly long) build, not after it
        tensors = build()
        self.save(namespace, key, tensors)
        status = "rebuilt" if existed else "built"
        self.stats[status] += 1
        return tensors, status
