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

from dataclasses import dataclass, field
from typing import Any

import torch

from episodes.errors import DataError

MODALITIES = ("text", "image", "audio")
_ALIASES = {"speech": "audio", "sound": "audio", "img": "image"}

SPLITS = ("meta_train", "meta_val", "meta_test")


def canonical_modality(name: str) -> str:
    """Return the canonical modality name (``speech`` -> ``audio``); raise on unknown."""
    key = _ALIASES.get(name, name)
    if key not in MODALITIES:
        raise DataError(f"unknown modality {name!r}; expected one of {', '.join(MODALITIES)} (or 'speech')")
    return key


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
    """

    name: str
    source: str
    target: str
    items: list[Item]
    meta: dict[str, Any] = field(default_factory=dict)

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
        data: ``{modality: ModalityData}`` for the source and target modalities.
        pairs: ``long [P, 2]`` strong pairs as (source row, target row) into ``data``;
            shape ``[0, 2]`` when the data set only has weak pairs.
        splits: class ids per split. Keys:
            ``meta_train`` / ``meta_val`` / ``meta_test``: **target-modality** classes,
            pairwise disjoint; meta-test classes are never seen in meta-training.
            ``source_train``: source-modality classes usable for source classification tasks
            (never contains a meta-val or meta-test class).
        align_source_rows / align_target_rows: ``long`` rows usable by alignment tasks in
            meta-training (disjoint from ``classify_source_rows``; never of a meta-val or
            meta-test class).
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
