"""Data set registry: ``load_dataset(name, ...)`` -> :class:`CrossModalDataset` and
``load_benchmark(name, ...)`` -> :class:`PreparedBenchmark`.

Names: ``udhr-speech`` (embedded, offline default), ``cifar-esc50``, ``yummly``,
``wilderness``, ``manifest`` (JSONL, with ``manifest=`` / ``source=`` / ``target=``) and
``synthetic`` (tiny generated benchmark for tests; it has no item-level form, so only
:func:`load_benchmark` accepts it). Loader modules are imported lazily, so importing this
package is cheap and an optional dependency of one loader never breaks another.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from episodes.data import CrossModalDataset, PreparedBenchmark
from episodes.errors import DataError

__all__ = ["DATASETS", "list_datasets", "register_dataset", "load_dataset", "load_benchmark"]

# name -> (module, function, needs_data_root)
DATASETS: dict[str, tuple[str, str, bool]] = {
    "udhr-speech": ("episodes.datasets.udhr_speech", "load_udhr_speech", False),
    "cifar-esc50": ("episodes.datasets.cifar_esc50", "load_cifar_esc50", True),
    "yummly": ("episodes.datasets.yummly", "load_yummly", True),
    "wilderness": ("episodes.datasets.wilderness", "load_wilderness", True),
    "manifest": ("episodes.datasets.manifest", "load_manifest", False),
    "synthetic": ("episodes.datasets.synthetic", "make_synthetic_benchmark", False),
}


def list_datasets() -> list[str]:
    """Registered names, in registry order."""
    return list(DATASETS)


def register_dataset(name: str, module: str, function: str, *, needs_data_root: bool = False) -> None:
    """Add a loader ``module.function(data_root=..., seed=..., skip_bad=..., progress=...)``."""
    if name in DATASETS:
        raise ValueError(f"data set {name!r} is already registered")
    DATASETS[name] = (module, function, needs_data_root)


def _resolve(name: str) -> tuple[Callable[..., Any], bool]:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    module, function, needs_root = DATASETS[name]
    return getattr(importlib.import_module(module), function), needs_root


def load_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    source: str | None = None,
    target: str | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    **kw: Any,
) -> CrossModalDataset:
    """Read a data set's items (no front-ends).

    Args:
        name: one of :func:`list_datasets` (not ``synthetic``).
        data_root: folder with the published layouts (default ``$CROMA_DATA``); for
            ``cifar-esc50``, ``yummly``, ``wilderness``.
        manifest, source, target: for ``manifest``.
        seed: loader seed (splits, capping, synthesis parameters).
        skip_bad: leave out missing / unreadable items instead of raising.
        cache_dir: cache root (``udhr-speech`` keeps its synthesised wavs there).
        progress: progress bars.
        **kw: passed to the loader (e.g. ``min_count`` for yummly, ``chunks_per_language`` for
            udhr-speech).

    Raises:
        DataError: unknown name, missing data root / files, malformed data.
    """
    fn, needs_root = _resolve(name)
    if name == "synthetic":
        raise DataError("'synthetic' is a generated PreparedBenchmark with no items; use load_benchmark('synthetic')")
    if needs_root:
        ds = fn(data_root, seed=seed, skip_bad=skip_bad, progress=progress, **kw)
    elif name == "manifest":
        ds = fn(manifest, source=source, target=target, skip_bad=skip_bad, progress=progress, **kw)
    else:
        ds = fn(cache_dir=cache_dir, seed=seed, progress=progress, skip_bad=skip_bad, **kw)
    if name != "manifest":  # modalities are fixed by the data set; a given --source/--target must match
        from episodes.data import canonical_modality

        for given, have, flag in ((source, ds.source, "--source"), (target, ds.target, "--target")):
            if given is not None and canonical_modality(given) != have:
                raise DataError(f"{name}: {flag} {given} does not match the data set ({have}); "
                                f"{name} is {ds.source} -> {ds.target}")
    return ds


def load_benchmark(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    source: str | None = None,
    target: str | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    frontend: Any = None,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    embedders: dict[str, Any] | None = None,
    ways: int | None = None,
    split_classes: tuple[int, int, int] | None = None,
    **kw: Any,
) -> PreparedBenchmark:
    """Load a data set and prepare it (:func:`episodes.prepare.prepare_benchmark`): front-ends
    applied, feature cache used, splits made, ``validate()`` passed.

    ``synthetic`` calls :func:`episodes.datasets.synthetic.make_synthetic_benchmark` with
    ``seed`` (and ``**kw``); the other arguments are ignored for it. ``embedders`` (frozen
    pretrained backbones per modality), ``ways`` and ``split_classes`` (class split sizes) are
    passed to :func:`~episodes.prepare.prepare_benchmark`.
    """
    if name == "synthetic":
        fn, _ = _resolve(name)
        return fn(seed=seed, **kw)
    ds = load_dataset(name, data_root=data_root, manifest=manifest, source=source, target=target, seed=seed,
                      skip_bad=skip_bad, cache_dir=cache_dir, progress=progress, **kw)
    from episodes.prepare import prepare_benchmark

    return prepare_benchmark(ds, seed=seed, split_fractions=split_fractions, frontend=frontend, cache_dir=cache_dir,
                             skip_bad=skip_bad, progress=progress, embedders=embedders, ways=ways,
                             split_classes=split_classes)
