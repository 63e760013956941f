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
    (:func:`episodes.atomic.atomic_write`); new files get ``0o666 & ~umask`` like any other file.

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
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from episodes.atomic import (  # noqa: F401  (re-exported: moved from here, imported as episodes.cache.*)
    _TORCH_WRITE_FAILED,
    STALE_TEMP_AGE_S,
    _create_temp,
    _host,
    _human_bytes,
    _NotAnEntry,
    _open_regular,
    _pid_alive,
    _replace,
    _torch_write_failure,
    _unlink_quietly,
    _write_temp,
    _WriteRecorder,
    atomic_write,
    atomic_write_set,
    remove_stale_temps,
    write_error,
)
from episodes.errors import DataError

__all__ = ["MAGIC", "default_cache_dir", "hash_key", "file_identity", "inputs_digest", "FeatureCache",
           "atomic_write", "atomic_write_set", "write_error", "remove_stale_temps", "STALE_TEMP_AGE_S", "MAX_ENTRY_BYTES",
           "is_entry_file"]

MAGIC = b"CROMAFEAT1"


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
    strings contribute themselves; numpy arrays / tensors contribute their bytes, shape and dtype,
    PIL images their mode, size and pixels.
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
            # arrays other than uint8: "a2", since image arrays of other dtypes are scaled by dtype
            # (episodes.images.as_uint8) where they were once cast, so entries built before are not reused
            h.update(f"{'a' if a.dtype == np.uint8 else 'a2'}:{a.shape}:{a.dtype}:".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        elif type(value).__module__.startswith("PIL.") and hasattr(value, "tobytes"):  # a PIL image: its pixels
            h.update(f"p:{value.mode}:{value.size}:".encode())
            h.update(value.tobytes())
        else:
            h.update(b"r:" + repr(value).encode("utf-8", "surrogatepass"))
        h.update(b"\1")
    return h.hexdigest()


#: the largest entry :meth:`FeatureCache.load` reads: the biggest real one (CIFAR-100's 60000 32x32
#: images as uint8, ~180 MiB; ESC-50 log-mel features, ~250 MiB) is far below it, and a bigger
#: file would need twice its size in memory to decode
MAX_ENTRY_BYTES = 16 * 2**30
_HEADER_MAX = 200  # the header line is 10 + 1 + 64 + 1 + at most 20 digits + 1 bytes


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
