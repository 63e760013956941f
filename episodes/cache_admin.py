"""What the cache holds, and removing it: per data set, per modality or backbone.

The cache root (:func:`episodes.cache.default_cache_dir`: ``$CROMA_CACHE`` or ``~/.cache/croma``)
holds two kinds of entries:

* ``features/<data set>/<modality or backbone>[/...]/<key>.pt`` -- front-end outputs and frozen
  backbone embeddings (:class:`episodes.cache.FeatureCache`);
* ``<data set>/<version>/...`` -- generated raw data, e.g. the synthesised speech of udhr-speech
  (``udhr-speech/v1/<lang>/<k>.wav`` + ``index.json``).

Removal touches only verified entries of those two layouts, never anything else that happens to
live under the root, and deletes folders only once they are empty:

* a feature entry is a regular file ``*.pt`` that starts with the ``CROMAFEAT1 <sha256> <length>``
  header :class:`~episodes.cache.FeatureCache` writes and has the size it declares
  (:func:`episodes.cache.is_entry_file`); any other ``*.pt`` (a croma checkpoint put there) stays;
* generated data is ``<version>/<lang>/<k>.wav`` starting with ``RIFF`` and ``<version>/index.json``;
* a writer's temporary file (``.<entry name>.<host>.<pid>.<random>.tmp``) whose content so far is
  such an entry's, unless its writer runs on this host;
* nothing is reached through a symbolic link: a symlinked ``features/``, data set folder, sub-folder
  or entry is neither followed nor removed, and is reported (:attr:`Cleared.skipped`). The root
  itself may be a symbolic link (e.g. ``~/.cache/croma`` -> a larger disk).
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from episodes.cache import MAGIC, default_cache_dir, is_entry_file
from episodes.errors import DataError

__all__ = ["CacheGroup", "Cleared", "cache_groups", "clear_cache"]

#: data sets that keep generated raw data at ``<root>/<name>/`` (not only features)
GENERATED = ("udhr-speech",)


@dataclass(frozen=True)
class CacheGroup:
    """One group of cache entries.

    Attributes:
        dataset: data set name (``udhr-speech``, ``cifar-esc50``...).
        kind: ``"features"`` (front-end / backbone outputs) or ``"generated"`` (raw data made here).
        part: modality or backbone (``audio``, ``text/bert``...) for features; the version for
            generated data.
        entries: number of entries (``.pt`` files; ``.wav`` files).
        bytes: total size on disk of the group's files, temporary files included.
        path: the group's folder.
    """

    dataset: str
    kind: str
    part: str
    entries: int
    bytes: int
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


def _root(root: str | os.PathLike | None) -> Path:
    if root is not None and not str(root).strip():  # Path("") is the current folder: never clear that
        raise DataError("--cache-dir is empty: give the cache folder, or leave the flag out for $CROMA_CACHE or "
                        "~/.cache/croma")
    return Path(root).expanduser() if root is not None else default_cache_dir()


def _walk(folder: Path, skipped: list[tuple[str, str]] | None = None):
    """Regular files under ``folder`` (itself not a symbolic link), never through a symbolic link:
    links (to folders or files) and other non-regular things are appended to ``skipped`` as
    ``(path, why)`` and not entered."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in sorted(entries, key=lambda e: e.name):
        path = Path(e.path)
        try:
            if e.is_symlink():
                if skipped is not None:
                    skipped.append((str(path), f"symbolic link to {os.readlink(path)}, not followed"))
            elif e.is_dir(follow_symlinks=False):
                yield from _walk(path, skipped)
            elif e.is_file(follow_symlinks=False):
                yield path
            elif skipped is not None:
                skipped.append((str(path), "not a regular file"))
        except OSError:
            continue


def _real_dir(folder: Path, base: Path, skipped: list[tuple[str, str]] | None = None) -> bool:
    """``folder`` is a folder reached from ``base`` without a symbolic link on the way (a symlinked
    one is appended to ``skipped``)."""
    p = folder
    while p != base:
        try:
            st = os.lstat(p)
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            if skipped is not None:
                skipped.append((str(p), f"symbolic link to {os.readlink(p)}, not followed"))
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        if base not in p.parents:
            return False
        p = p.parent
    return True


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def _head(path: Path, n: int) -> bytes | None:
    """The first ``n`` bytes of the regular file ``path`` (None when it cannot be opened as one)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, n)
    except OSError:
        return None
    finally:
        os.close(fd)


def _temp_verdict(path: Path, suffixes: tuple[str, ...], magic: bytes) -> str | None:
    """None when ``path`` is a writer's temporary file of an entry named ``*<suffix>`` whose content
    so far starts like one (``magic``) and whose writer is not a live process on this host; else
    why it is kept."""
    m = _TEMP.match(path.name)
    if m is None or not m.group("name").endswith(suffixes):
        return _FOREIGN
    head = _head(path, len(magic))
    if head is None or not magic.startswith(head):
        return _FOREIGN
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"
    if m.group("host") == host and int(m.group("pid")) != os.getpid():
        try:
            os.kill(int(m.group("pid")), 0)
        except ProcessLookupError:
            return None
        except OSError:
            pass
        return f"being written by process {m.group('pid')}"  # removing it would fail that write
    return None


_FOREIGN = "not a cache entry"


def _feature_verdict(path: Path) -> str | None:
    """None for a verified feature entry (:func:`episodes.cache.is_entry_file`) or its writer's
    temporary file; else why it is kept."""
    if path.suffix == ".pt":
        return None if is_entry_file(path) else f"{_FOREIGN} (no {MAGIC.decode()} header)"
    return _temp_verdict(path, (".pt",), MAGIC + b" ")


def _generated_verdict(path: Path, version: Path) -> str | None:
    """None for ``<version>/<lang>/<k>.wav`` starting with ``RIFF``, ``<version>/index.json``, or their
    writers' temporary files; else why it is kept."""
    depth = len(path.relative_to(version).parts)
    if path.suffix == ".wav":
        return None if depth == 2 and _head(path, 4) == b"RIFF" else _FOREIGN
    if path.name == "index.json":
        return None if depth == 1 and _head(path, 0) is not None else _FOREIGN
    return _temp_verdict(path, (".wav",), b"RIFF") if depth == 2 else _temp_verdict(path, ("index.json",), b"")


def _link_note(path: Path) -> str:
    try:
        return f"symbolic link to {os.readlink(path)}, not followed"
    except OSError:
        return "symbolic link, not followed"


def _scan(base: Path, dataset: str | None, skipped: list[tuple[str, str]] | None):
    """``(group key, group folder, file, verdict)`` for every regular file in the cache's layouts
    (all data sets, or ``dataset``'s), never through a symbolic link (those go to ``skipped``).
    ``verdict`` is None for a cache entry, else why the file is not one."""
    features = base / "features"
    if _real_dir(features, base, skipped):
        top = features if dataset is None else features / dataset
        if top == features or _real_dir(top, base, skipped):
            for path in _walk(top, skipped):
                rel = path.parent.relative_to(features).parts
                if not rel:  # directly in features/: FeatureCache never writes there
                    yield None, None, path, _FOREIGN
                    continue
                key = (rel[0], "features", "/".join(rel[1:]) or "-")
                yield key, features.joinpath(*rel), path, _feature_verdict(path)
    for name in GENERATED:
        if dataset is not None and dataset != name:
            continue
        folder = base / name
        if not _real_dir(folder, base, skipped):
            continue
        try:
            versions = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for v in versions:
            version = Path(v.path)
            if v.is_symlink():
                if skipped is not None:
                    skipped.append((str(version), _link_note(version)))
            elif v.is_dir(follow_symlinks=False):
                for path in _walk(version, skipped):
                    yield (name, "generated", version.name), version, path, _generated_verdict(path, version)
            elif skipped is not None:
                skipped.append((str(version), _FOREIGN))


def cache_groups(root: str | os.PathLike | None = None) -> list[CacheGroup]:
    """Verified entries under ``root`` grouped by data set and modality / backbone, sorted by name.

    Features are grouped by the folder that directly holds the ``.pt`` files, relative to
    ``features/<data set>/``. Files that are not cache entries and anything behind a symbolic link
    are not counted. A missing root gives an empty list.
    """
    base = _root(root)
    groups: dict[tuple[str, str, str], list] = {}
    for key, folder, path, verdict in _scan(base, None, None):
        if verdict is not None:
            continue
        g = groups.setdefault(key, [0, 0, folder])
        g[0] += path.suffix in (".pt", ".wav")
        g[1] += _size(path)
    return [
        CacheGroup(dataset=d, kind=k, part=p, entries=int(v[0]), bytes=int(v[1]), path=str(v[2]))
        for (d, k, p), v in sorted(groups.items())
    ]


def known_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """Data sets with at least one group in the cache."""
    return sorted({g.dataset for g in cache_groups(root)})


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``stop`` while they are empty."""
    for dirpath, _dirs, _files in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    p = folder.parent
    while p != stop and stop in p.parents:
        try:
            p.rmdir()
        except OSError:
            break
        p = p.parent


class Cleared(tuple):
    """``(files removed, bytes freed)`` of :func:`clear_cache`, with ``skipped``: ``(path, why)`` for
    each symbolic link not followed and each file left because it is not a cache entry."""

    skipped: list[tuple[str, str]]

    def __new__(cls, files: int, freed: int, skipped: list[tuple[str, str]]) -> "Cleared":
        out = super().__new__(cls, (files, freed))
        out.skipped = skipped
        return out


def clear_cache(root: str | os.PathLike | None = None, dataset: str | None = None) -> Cleared:
    """Remove the cache's verified entries: all of them, or one data set's (see the module's
    docstring for what is an entry; nothing is reached through a symbolic link).

    Args:
        root: cache root (default :func:`episodes.cache.default_cache_dir`).
        dataset: only this data set's features and generated data (``None``: every data set).

    Returns:
        ``(files removed, bytes freed)``; its ``skipped`` attribute lists ``(path, why)`` for what
        was left: symbolic links (not followed) and files under the cache's folders that are not
        cache entries (e.g. a checkpoint someone put in ``features/``).

    Raises:
        DataError: ``dataset`` has no entries in this cache (the message lists those that do).
    """
    base = _root(root)
    if dataset is not None:
        present = known_datasets(base)
        if dataset not in present:
            have = ", ".join(present) if present else "none"
            raise DataError(f"cache {base}: no entries for data set {dataset!r} (data sets with entries: {have})")
    skipped: list[tuple[str, str]] = []
    files = freed = 0
    for _key, _folder, path, verdict in list(_scan(base, dataset, skipped)):
        if verdict is not None:
            skipped.append((str(path), verdict))
            continue
        size = _size(path)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        files, freed = files + 1, freed + size
    tops = [base / "features"] if dataset is None else [base / "features" / dataset]
    tops += [base / name for name in GENERATED if dataset in (None, name)]
    for folder in tops:
        if _real_dir(folder, base):
            _prune_empty(folder, base)
    return Cleared(files, freed, skipped)
