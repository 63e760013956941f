"""The data model shared by every loader, sampler and the meta-learner.

Two levels:

* :class:`Item` / :class:`CrossModalDataset` — what a loader reads from disk: items with one
  or more modalities (``text``, ``image``, ``audio``), a class label and an optional concept
  cluster. Raw values: a text string, or a path to an image / audio file.
* :class:`PreparedBenchmark` — what the meta-learner consumes: per modality a fixed-shape
  feature tensor (front-end output, see :mod:`episodes.frontends`), integer labels and
  clusters, the strong pairs, and the class splits. Everything is a tensor or a plain list,
  so tasks are index arithmetic and the whole thing can be cached.

Modality names are exactly ``text``, ``image`` and ``audio`` (``speech`` is an alias for
``audio`` accepted on input).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from episodes.errors import DataError

MODALITIES = ("text", "image", "audio")
_ALIASES = {"speech": "audio", "sound": "audio", "img": "image"}
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")

SPLITS = ("meta_train", "meta_val", "meta_test")


def canonical_modality(name: str) -> str:
    """Return the canonical modality name (``speech`` -> ``audio``); raise on unknown.

    A modality is a kind (``text``, ``image``, ``audio``) or a **named modality of a kind**,
    ``<kind>:<name>`` (``image:ct``, ``text:en``, ``speech:sw`` -> ``audio:sw``): two modalities
    of one kind (CT and MRI images, English and Swahili text) in one data set. A named modality
    is read and featurised as its kind; ``--backbone <kind>=...`` applies to every modality of
    that kind unless ``--backbone <kind>:<name>=...`` names it.
    """
    kind, sep, tag = name.partition(":") if isinstance(name, str) else (name, "", "")
    key = _ALIASES.get(kind, kind)
    if key not in MODALITIES:
        raise DataError(f"unknown modality {name!r}; expected one of {', '.join(MODALITIES)} (or 'speech'), "
                        "or <kind>:<name> for two modalities of one kind (e.g. image:ct, text:en)")
    if not sep:
        return key
    if not _TAG.fullmatch(tag):
        raise DataError(f"modality {name!r}: the name after {kind}: must be letters, digits, '_' or '-' "
                        "(starting with a letter or digit), e.g. image:ct")
    return f"{key}:{tag}"


def modality_kind(name: str) -> str:
    """The kind of a modality: ``text``, ``image`` or ``audio`` (``image:ct`` -> ``image``,
    ``speech:sw`` -> ``audio``). It does not validate: a name of no known kind (a prepared
    benchmark's own, say) comes back as its part before ``:``."""
    kind = name.partition(":")[0]
    return _ALIASES.get(kind, kind)


def modality_order(name: str) -> tuple[int, str]:
    """Sort key of modalities: kinds in ``text, image, audio`` order, a kind before its named
    modalities, names of no known kind last."""
    kind = modality_kind(name)
    if kind not in MODALITIES:
        return len(MODALITIES), name
    return MODALITIES.index(kind), "" if name == kind else name


def by_modality(settings: Mapping[str, Any], modality: str) -> Any:
    """A per-modality setting (``--backbone``, ``--encoder``, embedders): ``modality``'s own entry,
    else its kind's (``image`` for ``image:ct``), else None."""
    own = settings.get(modality)
    return own if own is not None else settings.get(modality_kind(modality))


@dataclass
class Item:
    """One data item.

    Attributes:
        id: unique identifier within the data set.
        label: class name (e.g. a language code, an ESC-50 category).
        modalities: ``{modality: value}``; text -> ``str``; image/audio -> file path (str)
            or an already-decoded array.
        cluster: concept-cluster name for weak pairs, or ``None``.
    """

    id: str
    label: str
    modalities: dict[str, Any]
    cluster: str | None = None


@dataclass
class CrossModalDataset:
    """Items of a data set plus which modality is the source and which the target.

    Strong pairs are the items that hold both the source and the target modality. Weak pairs
    come from ``cluster``: any source item and any target item of the same cluster.

    Attributes:
        name: the data set's name (in errors and the feature cache's keys).
        source: the source modality (labelled, plentiful).
        target: the target modality (few labels; meta-test classifies it).
        items: the :class:`Item` list.
        meta: loader notes (e.g. ``align_mode``, ``frontend`` overrides, counts).
        extra: further modalities the items may hold (e.g. ``("image",)`` for a text -> audio task
            whose manifest rows also carry images); they only feed alignment tasks.
    """

    name: str
    source: str
    target: str
    items: list[Item]
    meta: dict[str, Any] = field(default_factory=dict)
    extra: tuple[str, ...] = ()

    @property
    def modalities(self) -> tuple[str, ...]:
        """``(source, target, *extra)``."""
        return (self.source, self.target, *self.extra)

    def items_with(self, modality: str) -> list[Item]:
        return [it for it in self.items if modality in it.modalities]

    def strong_pair_items(self) -> list[Item]:
        return [it for it in self.items if self.source in it.modalities and self.target in it.modalities]


@dataclass
class ModalityData:
    """Front-end features of all items that hold one modality.

    Attributes:
        features: ``[n, *shape]`` tensor, fixed shape per modality (text: ``long [n, L]``
            byte ids, 0 = padding; audio: ``float [n, n_mels, T]`` log-mel; image:
            ``float [n, 3, H, W]``; or ``float [n, D]`` frozen features).
        labels: ``long [n]`` class ids into ``PreparedBenchmark.class_names``.
        clusters: ``long [n]`` cluster ids into ``PreparedBenchmark.cluster_names``; -1 = none.
        ids: item ids, length n.
    """

    features: torch.Tensor
    labels: torch.Tensor
    clusters: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class PreparedBenchmark:
    """Everything the meta-learner needs, as tensors.

    Attributes:
        name: benchmark name (``udhr-speech``, ``cifar-esc50``, ...).
        source, target: modality names.
        class_names: all class names; labels of both modalities index into it (a class
            present in both modalities, e.g. a language, has one id).
        cluster_names: concept-cluster names (may be empty).
        data: ``{modality: ModalityData}`` for the source and target modalities, plus any
            *extra* modality the data set carries (alignment only, see :attr:`modalities`).
        pairs: ``long [P, 2]`` strong pairs as (source row, target row) into ``data``;
            shape ``[0, 2]`` when the data set only has weak pairs.
        splits: class ids per split. Keys:
            ``meta_train`` / ``meta_val`` / ``meta_test``: **target-modality** classes,
            pairwise disjoint; meta-test classes are never seen in meta-training.
            ``source_train``: source-modality classes usable for source classification tasks
            (never contains a meta-val or meta-test class).
        align_source_rows: ``long`` source rows usable by alignment tasks in meta-training
            (disjoint from ``classify_source_rows``; never of a meta-val or meta-test class).
        align_target_rows: ``long`` target rows usable by alignment tasks in meta-training (the
            same rules). With extra modalities, :meth:`alignment_tuples` gives the multi-way rows
            (derived from item ids, so every copy of the benchmark keeps them).
        classify_source_rows: ``long`` source rows usable by source classification tasks.
        align_mode: ``"strong"`` or ``"weak"``.
        info: free-form provenance (data root, front-end settings, counts).
    """

    name: str
    source: str
    target: str
    class_names: list[str]
    cluster_names: list[str]
    data: dict[str, ModalityData]
    pairs: torch.Tensor
    splits: dict[str, list[int]]
    align_source_rows: torch.Tensor
    align_target_rows: torch.Tensor
    classify_source_rows: torch.Tensor
    align_mode: str = "strong"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """``(source, target, *extra)``: the extra modalities of ``data`` in ``text, image,
        audio`` order; the column order of :meth:`alignment_tuples`."""
        rest = sorted((m for m in self.data if m not in (self.source, self.target)), key=modality_order)
        return (self.source, self.target, *rest)

    def alignment_tuples(self) -> torch.Tensor:
        """Multi-way alignment rows: ``long [P, M]`` over :attr:`modalities`, ``-1`` = absent.

        Two modalities: the strong pairs whose source row is an alignment row (``[P, 2]``,
        ``[0, 2]`` for weak data). More: one row per item (matched by id across modalities)
        of a **meta-train** class holding at least two modalities, where a source entry is
        kept only when it is an alignment source row (so it never serves classification).
        Rows follow the order of first appearance (source rows, then target, then extras).

        Raises:
            DataError: one id carries different labels in two modalities.
        """
        mods = self.modalities
        if len(mods) <= 2:
            if self.pairs.numel() == 0:
                return torch.zeros(0, 2, dtype=torch.long)
            return self.pairs[torch.isin(self.pairs[:, 0], self.align_source_rows.to(self.pairs.device))].cpu()
        train = set(int(c) for c in self.splits.get("meta_train", []))
        align_src = set(self.align_source_rows.tolist())
        table: dict[str, list[int]] = {}
        label_of: dict[str, int] = {}
        for col, mod in enumerate(mods):
            d = self.data[mod]
            for row, (iid, lab) in enumerate(zip(d.ids, d.labels.tolist())):
                if label_of.setdefault(iid, lab) != lab:
                    raise DataError(f"{self.name}: item {iid!r} has label {self.class_names[label_of[iid]]!r} in one "
                                    f"modality and {self.class_names[lab]!r} in {mod}")
                if lab not in train or (mod == self.source and row not in align_src):
                    continue
                table.setdefault(iid, [-1] * len(mods))[col] = row
        rows = [r for r in table.values() if sum(v >= 0 for v in r) >= 2]
        return torch.tensor(rows, dtype=torch.long).reshape(-1, len(mods))

    def rows_of_classes(self, modality: str, classes: list[int]) -> torch.Tensor:
        """Rows of ``modality`` whose label is in ``classes`` (``long [m]``, ascending)."""
        labels = self.data[modality].labels
        mask = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
        return torch.nonzero(mask, as_tuple=False).flatten()

    def validate(self) -> None:
        """Check split disjointness and leakage rules; raise :class:`DataError` if broken."""
        tr, va, te = (set(self.splits.get(k, [])) for k in SPLITS)
        if tr & va or tr & te or va & te:
            raise DataError(f"{self.name}: meta-train/val/test classes overlap")
        held_out = va | te
        if set(self.splits.get("source_train", [])) & held_out:
            raise DataError(f"{self.name}: source_train contains a meta-val/meta-test class")
        for mod, rows in ((self.source, self.align_source_rows), (self.target, self.align_target_rows)):
            if rows.numel() and set(self.data[mod].labels[rows].tolist()) & held_out:
                raise DataError(f"{self.name}: alignment rows of {mod} include a held-out class")
        if self.align_source_rows.numel() and self.classify_source_rows.numel():
            inter = set(self.align_source_rows.tolist()) & set(self.classify_source_rows.tolist())
            if inter:
                raise DataError(f"{self.name}: {len(inter)} source rows used for both alignment and classification")
        mods = self.modalities
        if len(mods) > 2:
            tuples = self.alignment_tuples()
            for col, mod in enumerate(mods):
                rows = tuples[:, col][tuples[:, col] >= 0]
                if rows.numel() and set(self.data[mod].labels[rows].tolist()) - tr:
                    raise DataError(f"{self.name}: alignment tuples of {mod} include a class outside meta-train")
                if mod == self.source and set(rows.tolist()) & set(self.classify_source_rows.tolist()):
                    raise DataError(f"{self.name}: source rows used for both multi-way alignment and classification")
