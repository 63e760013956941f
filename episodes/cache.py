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
    treated as missing, deleted, and rebuilt. Writes go to a temporary file in the same
    directory and are moved into place with ``os.replace`` (:func:`atomic_write`).

Temporary files
    ``.<name>.<host>.<pid>.<random>.tmp`` next to the target. A writer killed mid-write (SIGKILL)
    leaves one behind; the next write to the same target removes those whose process is gone
    (same host) or that are older than a day (:func:`remove_stale_temps`), never a live writer's.

Default root: ``$CROMA_CACHE`` or ``~/.cache/croma``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from episodes.errors import DataError

__all__ = ["MAGIC", "default_cache_dir", "hash_key", "file_identity", "inputs_digest", "FeatureCache",
           "atomic_write", "remove_stale_temps", "STALE_TEMP_AGE_S"]

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


def atomic_write(target: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write ``target`` atomically: ``write(fh)`` fills a temporary file in the same folder, which is
    flushed, fsynced and moved into place with ``os.replace``; on any error (disk full, read-only)
    the temporary file is removed and the old ``target`` is untouched. Left-over temporary files of
    killed writers are removed first (:func:`remove_stale_temps`).

    Raises:
        OSError: the folder cannot be created or written (names the path).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        raise IsADirectoryError(21, "is a folder, not a file (remove it or choose another path)", str(target))
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_host()}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def default_cache_dir() -> Path:
    """``$CROMA_CACHE`` if set, else ``~/.cache/croma``."""
    env = os.environ.get("CROMA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "croma"


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
        """The entry's tensors, or ``None`` when absent, truncated or corrupt (a bad file is removed)."""
        p = self.path(namespace, key)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return None
        out = self._decode(raw)
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
