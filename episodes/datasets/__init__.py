"""Data set registry: ``load_dataset(name, ...)`` -> :class:`CrossModalDataset` and
``load_benchmark(name, ...)`` -> :class:`PreparedBenchmark`.

Names: ``udhr-speech`` (embedded, offline default), ``cifar-esc50``, ``yummly``,
``wilderness``, ``manifest`` (JSONL, with ``manifest=`` / ``source=`` / ``target=``) and
``synthetic`` (tiny generated benchmark for tests; it has no item-level form, so only
:func:`load_benchmark` accepts it). Loader modules are imported lazily, so importing this
package is cheap and an optional dependency of one loader never breaks another.

A new data set is one file plus one import line::

    @register_dataset("toy", prepared=True)          # or: needs_data_root=True, for item loaders
    def load_toy(*, seed: int = 0) -> PreparedBenchmark: ...

after which ``croma train toy`` / ``croma benchmark toy`` accept it (the CLI reads
:func:`list_datasets` when it builds its parser).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from episodes.data import CrossModalDataset, PreparedBenchmark
from episodes.errors import DataError
from episodes.registry import Registry

__all__ = ["DATASETS", "DatasetSpec", "dataset_info", "list_datasets", "register_dataset", "load_dataset",
           "load_benchmark", "check_split_classes", "FIXED_SPLITS"]

CALLS = ("data_root", "manifest", "cache_dir", "prepared")


@dataclass(frozen=True)
class DatasetSpec:
    """How a registered data set is loaded.

    Attributes:
        module, function: where the loader lives (imported on first use), or ``None`` with ``loader``.
        call: how the loader is called: ``data_root`` (``fn(data_root, seed=, skip_bad=, progress=, **kw)``),
            ``manifest`` (``fn(manifest, source=, target=, skip_bad=, progress=, **kw)``), ``cache_dir``
            (``fn(cache_dir=, seed=, progress=, skip_bad=, **kw)``) -> a :class:`CrossModalDataset`; or
            ``prepared`` (``fn(seed=, **kw)`` -> a :class:`PreparedBenchmark`, no item-level form).
        loader: the loader itself (data sets registered with the decorator).
    """

    module: str | None
    function: str | None
    call: str
    loader: Callable[..., Any] | None = None

    @property
    def needs_data_root(self) -> bool:
        return self.call == "data_root"

    @property
    def prepared(self) -> bool:
        return self.call == "prepared"

    def resolve(self) -> Callable[..., Any]:
        """The loader function (imports its module)."""
        if self.loader is not None:
            return self.loader
        return getattr(importlib.import_module(str(self.module)), str(self.function))


DATASETS: Registry[DatasetSpec] = Registry("data set")
"""The data set registry: name -> :class:`DatasetSpec` (registration order)."""

for _name, _module, _function, _call in (
    ("udhr-speech", "episodes.datasets.udhr_speech", "load_udhr_speech", "cache_dir"),
    ("cifar-esc50", "episodes.datasets.cifar_esc50", "load_cifar_esc50", "data_root"),
    ("yummly", "episodes.datasets.yummly", "load_yummly", "data_root"),
    ("wilderness", "episodes.datasets.wilderness", "load_wilderness", "data_root"),
    ("manifest", "episodes.datasets.manifest", "load_manifest", "manifest"),
    ("synthetic", "episodes.datasets.synthetic", "make_synthetic_benchmark", "prepared"),
):
    DATASETS.register(_name, DatasetSpec(_module, _function, _call))
del _name, _module, _function, _call

# built-in data sets whose loader fixes the class split (``meta["class_split"]``): --split-classes is
# refused for them before anything is loaded (for other loaders, once their split is seen)
FIXED_SPLITS = frozenset({"udhr-speech", "cifar-esc50"})


def list_datasets(*, items_only: bool = False) -> list[str]:
    """Registered names, in registry order; ``items_only``: leave out ``prepared`` ones (e.g. ``synthetic``)."""
    return [n for n, spec in DATASETS.items() if not (items_only and spec.prepared)]


def register_dataset(
    name: str,
    module: str | Callable[..., Any] | None = None,
    function: str | None = None,
    *,
    needs_data_root: bool = False,
    prepared: bool = False,
) -> Any:
    """Add a data set loader.

    Three forms:

    * ``register_dataset(name, "pkg.mod", "load_x", needs_data_root=...)``: a lazily imported
      loader ``load_x(data_root, seed=..., skip_bad=..., progress=...)`` (``needs_data_root``) or
      ``load_x(cache_dir=..., seed=..., progress=..., skip_bad=...)``, returning a CrossModalDataset;
      with ``prepared=True``, ``load_x(seed=..., **kw)`` returning a PreparedBenchmark.
    * ``register_dataset(name, loader, ...)``: the same with the function itself.
    * ``@register_dataset(name, ...)``: decorator form of the previous one (returns the function).

    Args:
        name: the registry key (the ``BENCH`` argument of ``croma train`` / ``croma benchmark``).
        module: the loader's module name (imported when first used), or the loader itself.
        function: the loader's name in ``module`` (with a module name).
        needs_data_root: the loader reads files under ``data_root``.
        prepared: the loader returns a PreparedBenchmark (its own features and splits).

    Returns:
        None, or (decorator form) the decorator, which returns the function unchanged.

    Raises:
        ValueError: ``name`` already registered, or ``module`` given without ``function``.
    """
    call = "prepared" if prepared else ("data_root" if needs_data_root else "cache_dir")
    if name in DATASETS:
        raise ValueError(f"data set {name!r} is already registered")
    if module is None:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            register_dataset(name, fn, needs_data_root=needs_data_root, prepared=prepared)
            return fn

        return deco
    if callable(module):
        DATASETS.register(name, DatasetSpec(None, None, call, loader=module))
        return None
    if not function:
        raise ValueError(f"register_dataset({name!r}, {module!r}): name the loader function too")
    DATASETS.register(name, DatasetSpec(str(module), str(function), call))
    return None


def dataset_info(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; DataError listing the names when unknown."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS.get(name)


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
    spec = dataset_info(name)
    if spec.prepared:
        raise DataError(f"{name!r} is a generated PreparedBenchmark with no items; use load_benchmark({name!r})")
    fn = spec.resolve()
    if spec.needs_data_root:
        ds = fn(data_root, seed=seed, skip_bad=skip_bad, progress=progress, **kw)
    elif spec.call == "manifest":
        ds = fn(manifest, source=source, target=target, skip_bad=skip_bad, progress=progress, **kw)
    else:
        ds = fn(cache_dir=cache_dir, seed=seed, progress=progress, skip_bad=skip_bad, **kw)
    if spec.call != "manifest":  # modalities are fixed by the data set; a given --source/--target must match
        from episodes.data import canonical_modality

        for given, have, flag in ((source, ds.source, "--source"), (target, ds.target, "--target")):
            if given is not None and canonical_modality(given) != have:
                raise DataError(f"{name}: {flag} {given} does not match the data set ({have}); "
                                f"{name} is {ds.source} -> {ds.target}")
    return ds


def check_split_classes(name: str, split_classes: Any) -> None:
    """Refuse ``--split-classes`` for a data set whose class split is generated or fixed
    (``synthetic``, :data:`FIXED_SPLITS`), before anything is loaded.

    Raises:
        DataError: naming the flag and the data set.
    """
    if split_classes is None:
        return
    spec = dataset_info(name)
    if spec.prepared or name in FIXED_SPLITS:
        how = "is generated with its own class split" if spec.prepared else "has a fixed, documented class split"
        raise DataError(f"--split-classes: {name} {how}; the counts apply only to data sets split by seed "
                        "(manifest, yummly, wilderness)")


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
    fit_ways: bool = False,
    **kw: Any,
) -> PreparedBenchmark:
    """Load a data set and prepare it (:func:`episodes.prepare.prepare_benchmark`): front-ends
    applied, feature cache used, splits made, ``validate()`` passed.

    ``synthetic`` (and every data set registered with ``prepared=True``) calls its loader,
    :func:`episodes.datasets.synthetic.make_synthetic_benchmark`, with ``seed`` (and ``**kw``);
    the other arguments are ignored for it.

    Args:
        name: a registered data set (:func:`list_datasets`).
        data_root: folder holding the data sets (None: ``$CROMA_DATA``) for those read from disk.
        manifest: the JSONL manifest of ``name="manifest"``.
        source: the source modality of a manifest.
        target: the target modality of a manifest.
        seed: seed of the class split (and of a generated data set).
        skip_bad: leave out unreadable image / audio files, saying how many.
        cache_dir: feature cache folder (None: the default cache).
        progress: show progress while features are built.
        frontend: :class:`~episodes.frontends.FrontendSettings` (None: the defaults with the
            loader's overrides).
        split_fractions: meta-train / meta-val / meta-test fractions of the target classes.
        embedders: ``{modality: Embedder}`` frozen pretrained backbones whose embeddings replace
            the front-end's features.
        ways: the N of the tasks the split is sized for (at least N classes in meta-val and meta-test
            when the data set has enough).
        split_classes: ``(TRAIN, VAL, TEST)`` class counts instead of ``split_fractions``.
        fit_ways: size a seeded split that cannot hold ``ways``-way tasks for the largest N-way that
            fits, recorded in ``info["ways"]`` (:func:`episodes.prepare.prepare_benchmark`).
        **kw: passed to the data set's loader.

    Returns:
        A validated :class:`~episodes.data.PreparedBenchmark`.
    """
    spec = dataset_info(name)
    check_split_classes(name, split_classes)  # before any loading or speech synthesis
    if spec.prepared:
        return spec.resolve()(seed=seed, **kw)
    ds = load_dataset(name, data_root=data_root, manifest=manifest, source=source, target=target, seed=seed,
                      skip_bad=skip_bad, cache_dir=cache_dir, progress=progress, **kw)
    from episodes.prepare import prepare_benchmark

    return prepare_benchmark(ds, seed=seed, split_fractions=split_fractions, frontend=frontend, cache_dir=cache_dir,
                             skip_bad=skip_bad, progress=progress, embedders=embedders, ways=ways,
                             split_classes=split_classes, fit_ways=fit_ways)
