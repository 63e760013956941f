"""What the cache holds, and removing it: per data set, per modality or backbone.

The cache root (:func:`episodes.cache.default_cache_dir`: ``$CROMA_CACHE`` or ``~/.cache/croma``)
holds two kinds of entries:

* ``features/<data set>/<modality or backbone>[/...]/<key>.pt`` -- front-end outputs and frozen
  backbone embeddings (:class:`episodes.cache.FeatureCache`);
* ``<data set>/<version>/...`` -- generated raw data, e.g. the synthesised speech of udhr-speech
  (``udhr-speech/v1/<lang>/<k>.wav`` + ``index.json``).

Removal touches only those two layouts (``*.pt`` / ``*.wav`` / ``index.json`` and the writers'
temporary files), never anything else that happens to live under the root, and deletes folders
only once they are empty.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from episodes.cache import default_cache_dir
from episodes.errors import DataError

__all__ = ["CacheGroup", "cache_groups", "clear_cache"]

#: data sets that keep generated raw data at ``<root>/<name>/`` (not only features)
GENERATED = ("udhr-speech",)
_GENERATED_FILES = (".wav", ".json")


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


def _walk_files(folder: Path):
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            yield Path(dirpath) / name


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _is_feature_file(path: Path) -> bool:
    return path.suffix == ".pt" or (path.name.startswith(".") and path.name.endswith(".tmp"))


def _is_generated_file(path: Path) -> bool:
    return path.suffix in _GENERATED_FILES or (path.name.startswith(".") and path.name.endswith(".tmp"))


def cache_groups(root: str | os.PathLike | None = None) -> list[CacheGroup]:
    """Entries under ``root`` grouped by data set and modality / backbone, sorted by name.

    Features are grouped by the folder that directly holds the ``.pt`` files, relative to
    ``features/<data set>/``. A missing root gives an empty list.
    """
    base = _root(root)
    groups: dict[tuple[str, str, str], list] = {}
    features = base / "features"
    if features.is_dir():
        for path in _walk_files(features):
            if not _is_feature_file(path):
                continue
            rel = path.parent.relative_to(features).parts
            if not rel:
                continue
            key = (rel[0], "features", "/".join(rel[1:]) or "-")
            g = groups.setdefault(key, [0, 0, features.joinpath(*rel)])
            g[0] += path.suffix == ".pt"
            g[1] += _size(path)
    for name in GENERATED:
        folder = base / name
        if not folder.is_dir():
            continue
        for version in sorted(p for p in folder.iterdir() if p.is_dir()):
            g = [0, 0, version]
            for path in _walk_files(version):
                if _is_generated_file(path):
                    g[0] += path.suffix == ".wav"
                    g[1] += _size(path)
            if g[0] or g[1]:
                groups[(name, "generated", version.name)] = g
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


def clear_cache(root: str | os.PathLike | None = None, dataset: str | None = None) -> tuple[int, int]:
    """Remove the cache's entries: all of them, or one data set's.

    Args:
        root: cache root (default :func:`episodes.cache.default_cache_dir`).
        dataset: only this data set's features and generated data (``None``: every data set).

    Returns:
        ``(files removed, bytes freed)``.

    Raises:
        DataError: ``dataset`` has no entries in this cache (the message lists those that do).
    """
    base = _root(root)
    targets: list[tuple[Path, object]] = []
    if dataset is None:
        targets.append((base / "features", _is_feature_file))
        targets.extend((base / name, _is_generated_file) for name in GENERATED)
    else:
        present = known_datasets(base)
        if dataset not in present:
            have = ", ".join(present) if present else "none"
            raise DataError(f"cache {base}: no entries for data set {dataset!r} (data sets with entries: {have})")
        targets.append((base / "features" / dataset, _is_feature_file))
        if dataset in GENERATED:
            targets.append((base / dataset, _is_generated_file))
    files = freed = 0
    for folder, wanted in targets:
        if not folder.is_dir():
            continue
        for path in list(_walk_files(folder)):
            if not wanted(path):
                continue
            size = _size(path)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            files, freed = files + 1, freed + size
        _prune_empty(folder, base)
    return files, freed
