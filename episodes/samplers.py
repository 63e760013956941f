"""Seeded task samplers: episode ``i`` is a pure function of ``(seed, i)``.

Samplers never touch the global ``random`` / ``numpy`` / ``torch`` RNG state: each episode
draws from its own ``torch.Generator`` seeded with a hash of ``(seed, i)``. They return row
indices into a :class:`episodes.data.ModalityData` (never data), so tasks are cheap to make,
to stack for batched inner loops, and to split across processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from episodes.errors import DataError

__all__ = [
    "ClassificationTask",
    "AlignmentTask",
    "ClassificationTaskSampler",
    "AlignmentTaskSampler",
    "TupleTask",
    "TupleTaskSampler",
    "episode_generator",
]


def episode_generator(seed: int, index: int, stream: str = "") -> torch.Generator:
    """A CPU generator seeded by a stable hash of ``(seed, index, stream)``."""
    digest = hashlib.blake2b(f"{int(seed)}:{int(index)}:{stream}".encode(), digest_size=8).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return g


@dataclass
class ClassificationTask:
    """An N-way K-shot episode (rows into one modality's features); shapes without / with the
    leading task dimension ``T`` of ``sample_many``.

    Attributes:
        support_rows: ``long [N*K]`` / ``[T, N*K]``, class-major order.
        support_labels: ``long [N*K]`` in ``0..N-1`` (possibly noisy).
        query_rows: ``long [N*Q]``.
        query_labels: ``long [N*Q]`` in ``0..N-1`` (always clean).
        classes: ``long [N]`` global class ids; task label ``c`` means ``classes[c]``.
    """

    support_rows: torch.Tensor
    support_labels: torch.Tensor
    query_rows: torch.Tensor
    query_labels: torch.Tensor
    classes: torch.Tensor


@dataclass
class AlignmentTask:
    """A batch of cross-modal pairs: ``source_rows[b]`` goes with ``target_rows[b]``.

    Attributes:
        source_rows: ``long [B]`` (or ``[T, B]`` when stacked) rows into the source features.
        target_rows: ``long [B]`` (or ``[T, B]``) rows into the target features.
    """

    source_rows: torch.Tensor
    target_rows: torch.Tensor


def _stack(tasks, cls):
    fields = cls.__dataclass_fields__.keys()
    return cls(**{f: torch.stack([getattr(t, f) for t in tasks]) for f in fields})


class ClassificationTaskSampler:
    """N-way K-shot episodes with Q queries per class from a class subset.

    Args:
        labels: ``long [n]`` labels of every row of the modality.
        classes: class ids tasks may use (the split).
        ways, shots, queries: N, K, Q.
        seed: base seed; episode ``i`` depends only on ``(seed, i)``.
        rows: optional ``long [m]`` rows allowed (e.g. source rows reserved for classification).
        label_noise: probability that a support label is replaced by one of the other N-1 task
            labels (symmetric noise); query labels stay clean.

    Raises:
        DataError: fewer than ``ways`` classes have at least ``shots + queries`` rows.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        classes: Sequence[int],
        *,
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        rows: torch.Tensor | None = None,
        label_noise: float = 0.0,
    ) -> None:
        if ways < 2:
            raise ValueError(f"ways must be >= 2 (got {ways})")
        if shots < 1 or queries < 0:
            raise ValueError(f"shots must be >= 1 and queries >= 0 (got shots={shots}, queries={queries})")
        if not 0.0 <= float(label_noise) < 1.0:
            raise ValueError(f"label_noise must be in [0, 1) (got {label_noise})")
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        allowed = torch.arange(labels.numel()) if rows is None else torch.as_tensor(rows, dtype=torch.long).cpu()
        need = shots + queries
        self._rows_by_class: list[torch.Tensor] = []
        kept: list[int] = []
        largest = 0
        for c in sorted(set(int(c) for c in classes)):
            r = allowed[labels[allowed] == c]
            largest = max(largest, int(r.numel()))
            if r.numel() >= need:
                kept.append(c)
                self._rows_by_class.append(r.sort().values)
        if len(kept) < ways:
            raise DataError(
                f"{ways}-way tasks need {ways} classes with >= {need} items (shots {shots} + queries "
                f"{queries}); only {len(kept)} of {len(set(classes))} classes qualify (the largest has {largest} items)"
            )
        self.classes = torch.tensor(kept, dtype=torch.long)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.seed = int(seed)
        self.label_noise = float(label_noise)

    @property
    def num_classes(self) -> int:
        return int(self.classes.numel())

    def sample(self, i: int) -> ClassificationTask:
        """Episode ``i`` (pure function of ``(seed, i)``)."""
        g = episode_generator(self.seed, i, "cls")
        pick = torch.randperm(self.num_classes, generator=g)[: self.ways]
        s_rows, q_rows = [], []
        for c in pick.tolist():
            r = self._rows_by_class[c]
            perm = torch.randperm(r.numel(), generator=g)[: self.shots + self.queries]
            s_rows.append(r[perm[: self.shots]])
            q_rows.append(r[perm[self.shots :]])
        ways = torch.arange(self.ways)
        support_labels = ways.repeat_interleave(self.shots)
        if self.label_noise > 0:
            flip = torch.rand(support_labels.numel(), generator=g) < self.label_noise
            offset = torch.randint(1, self.ways, (support_labels.numel(),), generator=g)
            support_labels = torch.where(flip, (support_labels + offset) % self.ways, support_labels)
        return ClassificationTask(
            support_rows=torch.cat(s_rows),
            support_labels=support_labels,
            query_rows=torch.cat(q_rows) if self.queries else torch.zeros(0, dtype=torch.long),
            query_labels=ways.repeat_interleave(self.queries),
            classes=self.classes[pick],
        )

    def sample_many(self, start: int, count: int) -> ClassificationTask:
        """Episodes ``start .. start+count-1`` stacked along a leading task dimension."""
        return _stack([self.sample(start + k) for k in range(count)], ClassificationTask)


class AlignmentTaskSampler:
    """Batches of cross-modal pairs for alignment tasks.

    Args:
        mode: ``"strong"`` (B distinct one-to-one pairs) or ``"weak"`` (each row from a distinct
            concept cluster; the source item and the target item are drawn independently from
            that cluster's members).
        batch_size: B. For weak mode, B is capped at the number of clusters usable on both sides.
        seed: base seed.
        pairs: ``long [P, 2]`` (source row, target row), strong mode.
        source_rows, target_rows: rows allowed (strong: a pair is kept when both rows are allowed;
            weak: candidate members).
        source_clusters, target_clusters: ``long`` cluster id per row of each modality (weak).

    Raises:
        DataError: not enough pairs / clusters for one batch.
    """

    def __init__(
        self,
        mode: str,
        *,
        batch_size: int,
        seed: int,
        pairs: torch.Tensor | None = None,
        source_rows: torch.Tensor | None = None,
        target_rows: torch.Tensor | None = None,
        source_clusters: torch.Tensor | None = None,
        target_clusters: torch.Tensor | None = None,
    ) -> None:
        if mode not in ("strong", "weak"):
            raise ValueError(f"alignment mode must be 'strong' or 'weak' (got {mode!r})")
        if batch_size < 2:
            raise ValueError(f"alignment batch size must be >= 2 (got {batch_size})")
        self.mode, self.seed = mode, int(seed)
        if mode == "strong":
            if pairs is None or pairs.numel() == 0:
                raise DataError("strong alignment needs cross-modal pairs; this data set has none")
            p = torch.as_tensor(pairs, dtype=torch.long).cpu()
            if source_rows is not None:
                p = p[torch.isin(p[:, 0], torch.as_tensor(source_rows).cpu())]
            if target_rows is not None:
                p = p[torch.isin(p[:, 1], torch.as_tensor(target_rows).cpu())]
            if p.shape[0] < batch_size:
                raise DataError(f"alignment batch of {batch_size} pairs needs >= {batch_size} pairs; {p.shape[0]} available "
                                f"(lower --align-batch to at most {max(2, int(p.shape[0]))}, or give more items holding "
                                "both modalities)")
            self.pairs = p
            self.batch_size = batch_size
        else:
            if source_clusters is None or target_clusters is None:
                raise DataError("weak alignment needs concept clusters on both modalities")
            sc = torch.as_tensor(source_clusters, dtype=torch.long).cpu()
            tc = torch.as_tensor(target_clusters, dtype=torch.long).cpu()
            srows = torch.arange(sc.numel()) if source_rows is None else torch.as_tensor(source_rows).cpu()
            trows = torch.arange(tc.numel()) if target_rows is None else torch.as_tensor(target_rows).cpu()
            self._members: list[tuple[torch.Tensor, torch.Tensor]] = []
            both = sorted(set(sc[srows].tolist()) & set(tc[trows].tolist()) - {-1})
            for k in both:
                self._members.append((srows[sc[srows] == k], trows[tc[trows] == k]))
            if len(self._members) < 2:
                raise DataError(f"weak alignment needs >= 2 concept clusters with items on both sides; {len(self._members)} "
                                "found (a manifest needs items holding both the source and the target modality, or "
                                "a 'cluster' shared by source and target items)")
            self.batch_size = min(batch_size, len(self._members))

    def sample(self, i: int) -> AlignmentTask:
        """Alignment task ``i`` (pure function of ``(seed, i)``)."""
        g = episode_generator(self.seed, i, "align")
        if self.mode == "strong":
            pick = torch.randperm(self.pairs.shape[0], generator=g)[: self.batch_size]
            chosen = self.pairs[pick]
            return AlignmentTask(source_rows=chosen[:, 0].clone(), target_rows=chosen[:, 1].clone())
        clusters = torch.randperm(len(self._members), generator=g)[: self.batch_size]
        s, t = [], []
        for k in clusters.tolist():
            sm, tm = self._members[k]
            s.append(sm[torch.randint(sm.numel(), (1,), generator=g)])
            t.append(tm[torch.randint(tm.numel(), (1,), generator=g)])
        return AlignmentTask(source_rows=torch.cat(s), target_rows=torch.cat(t))

    def sample_many(self, start: int, count: int) -> AlignmentTask:
        """Tasks ``start .. start+count-1`` stacked along a leading task dimension."""
        return _stack([self.sample(start + k) for k in range(count)], AlignmentTask)


@dataclass
class TupleTask:
    """A batch of multi-way alignment rows: row ``b`` is one item seen in every modality.

    Attributes (``[T, ...]`` when stacked):
        rows: ``long [B, M]`` rows into each modality's features; absent entries hold row 0 (a
            placeholder: use ``present``).
        present: ``bool [B, M]`` whether item ``b`` has modality ``m``.
    """

    rows: torch.Tensor
    present: torch.Tensor


class TupleTaskSampler:
    """Batches of multi-way alignment rows (items holding two or more of M modalities).

    Args:
        tuples: ``long [P, M]`` rows per item into each modality, ``-1`` = absent
            (:meth:`episodes.data.PreparedBenchmark.alignment_tuples`).
        batch_size: B, capped at P (and, per pair, at that pair's row count).
        seed: base seed.

    Two kinds of task, each a pure function of ``(seed, i)``:

    * :meth:`sample`: B distinct tuples (any modalities present) -- for objectives that align
      all modalities at once with a presence mask.
    * :meth:`sample_pairs`: for every modality pair ``(a, b)`` in :attr:`pair_list` (the pairs
      with >= 2 tuples holding both), ``min(B, n_ab)`` distinct tuples holding both -- fixed
      sizes per pair, so tasks stack.

    Raises:
        DataError: fewer than 2 tuples, or no modality pair with 2 tuples.
    """

    def __init__(self, tuples: torch.Tensor, *, batch_size: int, seed: int) -> None:
        if batch_size < 2:
            raise ValueError(f"alignment batch size must be >= 2 (got {batch_size})")
        t = torch.as_tensor(tuples, dtype=torch.long).cpu()
        if t.dim() != 2 or t.shape[1] < 2:
            raise DataError(f"multi-way alignment needs tuples [P, M >= 2] (got shape {tuple(t.shape)})")
        if t.shape[0] < 2:
            raise DataError(f"multi-way alignment needs >= 2 items holding two modalities; {t.shape[0]} available")
        self.tuples, self.seed = t, int(seed)
        self.present = t >= 0
        self.batch_size = min(int(batch_size), t.shape[0])
        m = t.shape[1]
        self.pair_list: list[tuple[int, int]] = []
        self._pair_rows: list[torch.Tensor] = []
        for a in range(m):
            for b in range(a + 1, m):
                idx = torch.nonzero(self.present[:, a] & self.present[:, b], as_tuple=False).flatten()
                if idx.numel() >= 2:
                    self.pair_list.append((a, b))
                    self._pair_rows.append(idx)
        if not self.pair_list:
            raise DataError("multi-way alignment needs a modality pair held by >= 2 items; none found")
        self.pair_sizes = [min(self.batch_size, int(idx.numel())) for idx in self._pair_rows]

    def sample(self, i: int) -> TupleTask:
        """Task ``i``: B distinct tuples with their presence mask."""
        g = episode_generator(self.seed, i, "align-tuples")
        pick = torch.randperm(self.tuples.shape[0], generator=g)[: self.batch_size]
        rows = self.tuples[pick]
        return TupleTask(rows=rows.clamp(min=0), present=rows >= 0)

    def sample_pairs(self, i: int) -> list[torch.Tensor]:
        """Task ``i``: per pair of :attr:`pair_list`, ``long [B_ab, 2]`` rows into modalities a and b."""
        out = []
        for k, ((a, b), idx) in enumerate(zip(self.pair_list, self._pair_rows)):
            g = episode_generator(self.seed, i, f"align-pair-{a}-{b}")
            pick = idx[torch.randperm(idx.numel(), generator=g)[: self.pair_sizes[k]]]
            out.append(self.tuples[pick][:, [a, b]].clone())
        return out

    def sample_many(self, start: int, count: int) -> TupleTask:
        """Tasks ``start .. start+count-1`` (:meth:`sample`) stacked along a leading task dimension."""
        return _stack([self.sample(start + k) for k in range(count)], TupleTask)
