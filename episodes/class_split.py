"""Class splits: which target classes are meta-train, meta-val and meta-test.

:func:`make_class_split` uses an explicit split, else the loader's documented
``dataset.meta["class_split"]``, else a seeded split whose sizes :func:`split_counts` gives
(``split_fractions``, raised so that ``ways``-way episodes exist in every split, or the exact
``--split-classes`` counts). :func:`episodes.prepare.prepare_benchmark` (step 4) and
:func:`episodes.prepare.dataset_summary` call it; both names are re-exported there.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from episodes.data import SPLITS, CrossModalDataset
from episodes.errors import DataError
from episodes.samplers import episode_generator

__all__ = ["split_counts", "make_class_split", "fit_ways", "dataset_ways", "single_item_classes", "cluster_overlaps"]


def split_counts(n: int, *, fractions: Sequence[float] = (0.6, 0.2, 0.2), ways: int | None = None,
                 counts: Sequence[int] | None = None, name: str = "data set") -> tuple[int, int, int]:
    """How many of ``n`` target classes go to meta-train / meta-val / meta-test.

    ``counts`` (``--split-classes TRAIN,VAL,TEST``) is used as given (it must sum to ``n``).
    Otherwise ``fractions`` decide (at least one class each for a non-zero fraction; ``n < 3``:
    all meta-train), and when ``ways`` is given and ``n >= 3 * ways`` meta-val and meta-test are
    raised to at least ``ways`` classes each (taken from meta-train), so ``ways``-way episodes
    exist in every split (22 classes, 5-way: 12 / 5 / 5).

    Raises:
        DataError: ``counts`` that do not sum to ``n`` or leave a split empty, or (with ``ways``)
            a split with fewer than ``ways`` classes; the message names the numbers.
    """
    if counts is not None:
        counts = tuple(int(c) for c in counts)
        if len(counts) != 3 or min(counts) < 1:
            raise DataError(f"--split-classes needs three positive counts TRAIN,VAL,TEST (got {','.join(map(str, counts))})")
        if sum(counts) != n:
            raise DataError(f"--split-classes {','.join(map(str, counts))} sums to {sum(counts)}, but {name} has {n} "
                            f"target classes")
        if ways is not None and min(counts) < ways:
            part = ("meta-train", "meta-val", "meta-test")[counts.index(min(counts))]
            raise DataError(f"--split-classes {','.join(map(str, counts))}: {part} has {min(counts)} classes; "
                            f"{ways}-way tasks need {ways} in each split (lower --ways)")
        return counts
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split_fractions must be three non-negative numbers, got {tuple(fractions)}")
    if n < 3:
        return n, 0, 0
    total = float(sum(fractions))
    n_val = max(1, round(fractions[1] / total * n)) if fractions[1] > 0 else 0
    n_test = max(1, round(fractions[2] / total * n)) if fractions[2] > 0 else 0
    if ways is not None and n >= 3 * ways:
        n_val, n_test = max(n_val, ways), max(n_test, ways)
    if n - n_val - n_test < 1:
        raise ValueError(f"split_fractions {tuple(fractions)} leave no meta-train class out of {n}")
    if ways is not None and min(n - n_val - n_test, n_val, n_test) < ways:
        fix = (f"lower --ways (at most {n // 3}) or choose the counts with --split-classes TRAIN,VAL,TEST" if n >= 6 else
               "even 2-way tasks need 2 classes in each split, 6 in all: add classes")
        raise DataError(
            f"{name}: {n} target classes split {n - n_val - n_test}/{n_val}/{n_test} (meta-train/val/test) cannot give "
            f"{ways}-way tasks in every split, which needs 3 x {ways} = {3 * ways} classes: {fix}")
    return n - n_val - n_test, n_val, n_test


def fit_ways(n: int, ways: int, *, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> tuple[int, str | None]:
    """The N-way a seeded split of ``n`` target classes can serve in meta-train, meta-val and meta-test:
    ``ways`` when it fits, else the largest smaller N >= 2 that does, with the reason (``None``: unchanged).
    When not even 2-way fits, ``ways`` is returned and :func:`split_counts` raises its error."""
    def fits(w: int) -> bool:
        try:
            split_counts(n, fractions=fractions, ways=w)
        except (DataError, ValueError):
            return False
        return True

    if fits(ways):
        return ways, None
    for w in range(int(ways) - 1, 1, -1):
        if fits(w):
            return w, (f"{n} target classes cannot give {ways} classes to each of meta-train, meta-val and meta-test "
                       f"(3 x {ways} = {3 * ways}); --split-classes TRAIN,VAL,TEST chooses the counts")
    return ways, None


def dataset_ways(dataset: CrossModalDataset, ways: int, *, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                 split_classes: Sequence[int] | None = None,
                 class_split: dict[str, Sequence[str]] | None = None) -> tuple[int, str | None]:
    """:func:`fit_ways` for ``dataset``'s target classes when :func:`make_class_split` would split
    them by seed; an explicit split (``class_split``, the loader's, or ``split_classes`` counts)
    keeps ``ways`` (``(ways, None)``)."""
    if split_classes is not None or class_split is not None or "class_split" in dataset.meta:
        return ways, None
    n = len({it.label for it in dataset.items if dataset.target in it.modalities})
    return fit_ways(n, ways, fractions=fractions)


def _seeded_split(classes: list[str], seed: int, fractions: Sequence[float], *, ways: int | None = None,
                  counts: Sequence[int] | None = None, name: str = "data set",
                  single: Sequence[str] = ()) -> dict[str, list[str]]:
    n = len(classes)
    _, n_val, n_test = split_counts(n, fractions=fractions, ways=ways, counts=counts, name=name)
    if n_val == 0 and n_test == 0:
        return {"meta_train": list(classes), "meta_val": [], "meta_test": []}
    # a class with one target item cannot serve a meta-val / meta-test episode (k >= 1 plus a query):
    # it stays in meta-train, where its pairs still align, when the others can fill meta-val and meta-test
    few = set(single) if len(classes) - len(set(single)) >= n_val + n_test else set()
    drawn = [c for c in classes if c not in few]
    perm = torch.randperm(len(drawn), generator=episode_generator(seed, 0, "class-split")).tolist()
    shuffled = [drawn[i] for i in perm]
    return {
        "meta_train": sorted(shuffled[n_val + n_test:] + sorted(few)),
        "meta_val": sorted(shuffled[:n_val]),
        "meta_test": sorted(shuffled[n_val:n_val + n_test]),
    }


def single_item_classes(dataset: CrossModalDataset) -> list[str]:
    """Target classes with fewer than 2 target-modality items (no k-shot episode can use them)."""
    per = Counter(it.label for it in dataset.items if dataset.target in it.modalities)
    return sorted(c for c, v in per.items() if v < 2)


def cluster_overlaps(dataset: CrossModalDataset, split: dict[str, Sequence[str]]) -> list[tuple[str, str]]:
    """``(source class, held-out target class)`` pairs of different names whose items share a concept
    cluster and that look like one concept labelled per modality (``img/cat`` / ``aud/cat``): the
    source class has no target items and the held-out class no source items. The source class is
    not held out (its name is no meta-val / meta-test class), so source classification trains on a
    concept whose target items are held out. Different concepts that share a cluster and label both
    modalities alike (``mail-send`` / ``mail-unread`` in ``mail``) are not such pairs."""
    held = set(split.get("meta_val", [])) | set(split.get("meta_test", []))
    held_clusters: dict[str, set[str]] = {}
    src_clusters: dict[str, set[str]] = {}
    with_source = {it.label for it in dataset.items if dataset.source in it.modalities}
    with_target = {it.label for it in dataset.items if dataset.target in it.modalities}
    for it in dataset.items:
        if it.cluster is None:
            continue
        if dataset.target in it.modalities and it.label in held and it.label not in with_source:
            held_clusters.setdefault(it.cluster, set()).add(it.label)
        if dataset.source in it.modalities and it.label not in held and it.label not in with_target:
            src_clusters.setdefault(it.label, set()).add(it.cluster)
    return sorted({(s, t) for s, cl in src_clusters.items() for c in cl for t in held_clusters.get(c, ()) if s != t})


def make_class_split(dataset: CrossModalDataset, *, seed: int = 0, split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
                     class_split: dict[str, Sequence[str]] | None = None, ways: int | None = None,
                     split_classes: Sequence[int] | None = None) -> dict[str, list[str]]:
    """Split the **target** classes (label names) into meta-train / meta-val / meta-test.

    Uses ``class_split`` if given, else ``dataset.meta["class_split"]`` (the loader's documented
    split; ``split_classes`` then does not apply), else a seeded split whose sizes
    :func:`split_counts` gives (``split_fractions``, raised to ``ways`` classes per split when
    there are ``3 x ways`` classes, or exactly ``split_classes``); there, classes with one target
    item stay in meta-train when the others fill meta-val and meta-test (:func:`single_item_classes`;
    with none, the split is as before). Classes not present among the target items are dropped
    from an explicit split.

    Returns:
        ``{"meta_train", "meta_val", "meta_test"}`` -> sorted label names, pairwise disjoint.

    Raises:
        DataError: an explicit split whose parts overlap; ``split_classes`` for a data set with
        a fixed split; sizes that cannot hold ``ways``-way tasks (names the numbers).
    """
    targets = sorted({it.label for it in dataset.items if dataset.target in it.modalities})
    explicit = class_split if class_split is not None else dataset.meta.get("class_split")
    if explicit is None:
        return _seeded_split(targets, seed, split_fractions, ways=ways, counts=split_classes, name=dataset.name,
                             single=single_item_classes(dataset))
    if split_classes is not None:
        raise DataError(f"--split-classes: {dataset.name} has a fixed, documented class split; the counts apply only "
                        "to data sets split by seed (manifest, ...)")
    present = set(targets)
    out = {k: sorted(set(explicit.get(k, [])) & present) for k in SPLITS}
    a, b, c = (set(out[k]) for k in SPLITS)
    if a & b or a & c or b & c:
        raise DataError(f"{dataset.name}: class split parts overlap")
    return out
