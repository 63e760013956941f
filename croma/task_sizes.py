"""Task sizes that fit the data: lower what small data sets cannot fill, in a stated order.

A small data set (say 15 classes of 6 items) cannot fill the presets' 5-way 5-shot 5-query tasks:
half of each class's paired source items go to alignment, so a 6-item class has 3 source
classification items. :func:`fit_task_sizes` computes, from the item counts per class of the rows
each task family samples from, the sizes to use, in this order (``ways`` is never changed):

* **meta-training** classification tasks (``source_cls``, ``target_cls``): queries are lowered
  first, down to 0 (a meta-training task's loss uses its support and query items alike, so this
  keeps the most shots), then shots, down to 1;
* **alignment** tasks of strong pairs: ``align_batch`` is lowered to the number of alignment
  pairs (at least 2);
* **meta-val** (the k-shot episodes that select parameters during training): ``eval_queries`` is
  lowered first, down to 1; then the eval shots that cannot be served with one query are dropped;
  when none can, the largest k the meta-val classes can serve is used (never an empty list);
* **meta-test**: a k the user asked for is never lowered. A k that fewer than ``ways`` meta-test
  classes can serve (k + 1 items; in ``croma benchmark`` also fewer than ``ways`` meta-val classes,
  where its fine-tuning is chosen) is dropped, with the reason; one query count for every kept k
  (so the accuracies of different k rest on the same number of queries), lowered to what the
  largest kept k allows.

An error (:class:`~croma.errors.CromaError`, with the class counts) comes only when a family cannot
be filled even at its floor (meta-training 1-shot 0-query, meta-val and meta-test 1 query, 2
pairs). With ``strict`` nothing is changed and the samplers refuse sizes the data cannot fill, as
before. :func:`fit_run_sizes` applies this to a run's configurations (a copy; the caller's objects
are never changed) and records the result in ``bench.info["task_sizes"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch

from croma.errors import CromaError

__all__ = ["TaskSizes", "fit_task_sizes", "capacity", "class_counts", "align_pair_count", "fit_run_sizes"]

# meta-training classification families (episodes of ways x (shots + queries) items)
TRAIN_FAMILIES = ("source_cls", "target_cls")
_LABELS = {"source_cls": "source classification tasks for meta-training (source-train classes)",
           "target_cls": "target classification tasks for meta-training (meta-train classes)",
           "meta_val": "meta-val episodes", "meta_test": "meta-test episodes"}


_NOUNS = {"source_cls": ("source-train classes", "classification items"),
          "target_cls": ("meta-train classes", "target items")}


def capacity(counts: Sequence[int], ways: int) -> int:
    """Items per class that ``ways`` classes all have: the ``ways``-th largest count (0 when fewer
    than ``ways`` classes). A ``ways``-way task of ``n`` items per class fits iff ``n <= capacity``."""
    c = sorted((int(x) for x in counts), reverse=True)
    return c[ways - 1] if len(c) >= ways else 0


def _having(counts: Sequence[int], n: int) -> int:
    return sum(1 for x in counts if int(x) >= n)


def _largest(counts: Sequence[int], ways: int) -> str:
    top = sorted((int(x) for x in counts), reverse=True)[:ways]
    few = f" (only {len(top)} classes)" if len(top) < ways else ""
    return (", ".join(map(str, top)) or "none") + few


@dataclass
class TaskSizes:
    """The sizes a run uses (see the module docstring for the rule).

    Attributes:
        ways: N (never changed). shots, queries: meta-training classification tasks.
        align_batch: pairs per alignment task. eval_shots, eval_queries: meta-val during training
            (None: not fitted, e.g. meta-val unused). test_shots, test_queries: meta-test (None:
            no meta-test in this run). requested: the asked sizes, same keys. dropped: ``[{"split",
            "k", "why"}]``. reasons: why each lowered size was lowered. capacity: per family, the
            items per class ``ways`` classes have (``align_pairs``: alignment pairs). strict: sizes
            kept as asked.
    """

    ways: int
    shots: int
    queries: int
    align_batch: int | None = None
    eval_shots: list[int] | None = None
    eval_queries: int | None = None
    test_shots: list[int] | None = None
    test_queries: int | None = None
    requested: dict[str, Any] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    capacity: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    align_clusters: int | None = None  # weak alignment: concept clusters with items on both sides

    def used(self) -> dict[str, Any]:
        """The sizes used, per family (plain types)."""
        out: dict[str, Any] = {"meta_train": {"ways": self.ways, "shots": self.shots, "queries": self.queries,
                                              "align_batch": self.align_batch}}
        out["meta_val"] = None if self.eval_shots is None else {"shots": list(self.eval_shots),
                                                                "queries": self.eval_queries}
        out["meta_test"] = None if self.test_shots is None else {"shots": list(self.test_shots),
                                                                 "queries": self.test_queries}
        return out

    @property
    def changed(self) -> bool:
        """Whether any size differs from the asked one (lowered or dropped)."""
        return self.used() != self.requested

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"ways", "strict", "changed", "requested", "used", "dropped", "reasons",
        "capacity"}`` (``bench.info["task_sizes"]``, results.json's ``task_sizes``)."""
        return {"ways": self.ways, "strict": self.strict, "changed": self.changed, "requested": self.requested,
                "used": self.used(), "dropped": [dict(d) for d in self.dropped], "reasons": list(self.reasons),
                "capacity": dict(self.capacity),
                **({"align_clusters": self.align_clusters} if self.align_clusters is not None else {})}

    def line(self) -> str:
        """One line: the sizes used, what was asked where they differ, and why."""
        req = self.requested
        r_tr = req["meta_train"]
        train = f"meta-train {self.ways}-way {self.shots}-shot {self.queries}-query"
        if self.align_batch is not None and self.align_clusters is not None:  # the sampler takes one pair per cluster
            train += (f", weak alignment: {min(self.align_batch, self.align_clusters)} pairs per task, one per concept "
                      f"cluster ({self.align_clusters} clusters have both modalities)")
        elif self.align_batch is not None:
            train += f", {self.align_batch} pairs per alignment task"
        asked = [f"{r_tr['ways']}-way"] if r_tr.get("ways", self.ways) != self.ways else []
        if (r_tr["shots"], r_tr["queries"]) != (self.shots, self.queries):
            asked.append(f"{r_tr['shots']}-shot {r_tr['queries']}-query")
        if r_tr["align_batch"] != self.align_batch:
            asked.append(f"{r_tr['align_batch']} pairs")
        why = f": {'; '.join(self.reasons)}" if self.reasons and asked else ""
        parts = [train + (f" (asked {', '.join(asked)}{why})" if asked else "")]
        for key, name, shots, q in (("meta_val", "meta-val shots", self.eval_shots, self.eval_queries),
                                    ("meta_test", "meta-test k=", self.test_shots, self.test_queries)):
            if shots is None:
                continue
            sep = " " if name.endswith("shots") else ""
            text = f"{name}{sep}{','.join(map(str, shots))} with {q} quer{'y' if q == 1 else 'ies'}"
            notes = []
            if req[key]["queries"] != q:
                notes.append(f"asked {req[key]['queries']}")
            notes += [f"k={d['k']} dropped: {d['why']}" for d in self.dropped if d["split"] == key]
            notes += [f"k={k} instead, the largest its classes serve" for k in shots if k not in req[key]["shots"]]
            parts.append(text + (f" ({'; '.join(notes)})" if notes else ""))
        return "task sizes: " + "; ".join(parts)


def fit_task_sizes(
    counts: Mapping[str, Sequence[int]],
    *,
    ways: int,
    shots: int,
    queries: int,
    align_batch: int | None = None,
    align_pairs: int | None = None,
    eval_shots: Sequence[int] | None = None,
    eval_queries: int | None = None,
    test_shots: Sequence[int] | None = None,
    test_queries: int | None = None,
    val_serves_test: bool = False,
    strict: bool = False,
) -> TaskSizes:
    """The task sizes to use, lowered where the data cannot fill the asked ones (module docstring).

    Args:
        counts: items per class of the rows each family samples from, over the classes of its
            split: ``source_cls`` / ``target_cls`` (the meta-training families that run; others
            left out), ``meta_val`` (needed with ``eval_shots`` or ``val_serves_test``),
            ``meta_test`` (needed with ``test_shots``).
        ways: N-way of every family (never changed).
        shots, queries: meta-training classification tasks.
        align_batch, align_pairs: pairs per alignment task and the pairs available (None: no
            pair-limited alignment task in this run).
        eval_shots, eval_queries: meta-val during training (None: no meta-val to fit).
        test_shots, test_queries: meta-test (None: no meta-test in this run).
        val_serves_test: meta-test's k are also drawn on meta-val with ``test_queries`` (croma
            benchmark chooses each k's fine-tuning there): a k meta-val cannot serve is dropped.
        strict: keep every size as asked (the samplers then refuse what does not fit).

    Returns:
        :class:`TaskSizes`.

    Raises:
        CromaError: a family that cannot be filled even at its floor (the class counts named).
    """
    requested: dict[str, Any] = {
        "meta_train": {"ways": ways, "shots": shots, "queries": queries, "align_batch": align_batch},
        "meta_val": None if eval_shots is None else {"shots": [int(k) for k in eval_shots], "queries": eval_queries},
        "meta_test": None if test_shots is None else {"shots": [int(k) for k in test_shots], "queries": test_queries},
    }
    out = TaskSizes(ways=ways, shots=shots, queries=queries, align_batch=align_batch,
                    eval_shots=None if eval_shots is None else [int(k) for k in eval_shots], eval_queries=eval_queries,
                    test_shots=None if test_shots is None else [int(k) for k in test_shots], test_queries=test_queries,
                    requested=requested, strict=bool(strict))
    fams = [f for f in TRAIN_FAMILIES if f in counts]
    cap = {f: capacity(counts[f], ways) for f in counts}
    out.capacity = dict(cap) if align_pairs is None else {**cap, "align_pairs": int(align_pairs)}
    if strict:
        return out

    # meta-training classification: queries (down to 0), then shots (down to 1)
    if fams:
        c = min(cap[f] for f in fams)
        worst = min(fams, key=lambda f: cap[f])
        if c < 1:
            raise CromaError(
                f"task sizes: {_LABELS[worst]} cannot be filled even at {ways}-way 1-shot: only "
                f"{_having(counts[worst], 1)} of {len(counts[worst])} classes have an item (the largest: "
                f"{_largest(counts[worst], ways)}); use fewer --ways or more classes")
        if shots + queries > c:
            out.queries = max(0, c - shots)
            out.shots = min(shots, c)
            noun = _NOUNS[worst]
            out.reasons.append(f"only {_having(counts[worst], c + 1)} of {len(counts[worst])} {noun[0]} have "
                               f"{c + 1} {noun[1]}" + (" (half of a class's alignable source items are kept for alignment)"
                                                      if worst == "source_cls" else ""))

    # alignment batch: at most the pairs available (>= 2)
    if align_batch is not None and align_pairs is not None and align_batch > align_pairs:
        if align_pairs < 2:
            raise CromaError(f"task sizes: alignment tasks need >= 2 pairs of meta-train classes; {align_pairs} "
                             "available (give more items holding both modalities)")
        out.align_batch = int(align_pairs)
        out.reasons.append(f"{align_pairs} alignment pairs in all")

    # meta-val during training: eval queries (down to 1), then drop the shots one query cannot serve
    if eval_shots is not None:
        v = cap.get("meta_val", 0)
        mv = counts.get("meta_val", ())
        if v < 2:
            raise CromaError(
                f"task sizes: {_LABELS['meta_val']} cannot be filled even at {ways}-way 1-shot 1-query: only "
                f"{_having(mv, 2)} of {len(mv)} meta-val classes have 2 items (the largest: {_largest(mv, ways)}); "
                "use fewer --ways or more items per class")
        ks, q = out.eval_shots, int(eval_queries or 1)
        if max(ks) + q > v:
            if v - max(ks) >= 1:
                out.eval_queries = v - max(ks)
            else:
                out.eval_queries = 1
                keep = [k for k in ks if k + 1 <= v]
                for k in ks:
                    if k + 1 > v:
                        out.dropped.append({"split": "meta_val", "k": k,
                                            "why": f"only {_having(mv, k + 1)} of {len(mv)} meta-val classes have "
                                                   f"{k + 1} items"})
                out.eval_shots = keep or [v - 1]

    # meta-test: never lower a k; drop the ones that cannot be served; one query count for all
    if test_shots is not None:
        mt = counts.get("meta_test", ())
        t = cap.get("meta_test", 0)
        v = cap.get("meta_val", 0) if val_serves_test else None
        mv = counts.get("meta_val", ())
        keep = []
        for k in out.test_shots:
            if k + 1 > t:
                why = f"only {_having(mt, k + 1)} of {len(mt)} meta-test classes have {k + 1} items"
            elif v is not None and k + 1 > v:
                why = (f"only {_having(mv, k + 1)} of {len(mv)} meta-val classes (where its fine-tuning is chosen) "
                       f"have {k + 1} items")
            else:
                keep.append(k)
                continue
            out.dropped.append({"split": "meta_test", "k": k, "why": why})
        if not keep:
            raise CromaError(
                f"task sizes: no meta-test k of {','.join(map(str, test_shots))} can be served: {ways}-way k-shot "
                f"episodes need k + 1 items in {ways} classes; items in the largest meta-test classes: "
                f"{_largest(mt, ways)}" + (f", meta-val classes: {_largest(mv, ways)}" if v is not None else "")
                + "; use fewer --ways, a smaller --shots, or more items per class")
        limit = min(t, v) if v is not None else t
        out.test_shots = keep
        out.test_queries = min(int(test_queries or 1), min(limit - k for k in keep))
    return out


# ---------------------------------------------------------------- from a benchmark
def class_counts(bench: Any, family: str) -> list[int]:
    """Items per class (one count per class of the family's split, zeros included) of the rows
    ``family`` samples from: ``source_cls`` (source classification rows of source-train classes),
    ``target_cls`` (target rows of meta-train classes), ``meta_val`` / ``meta_test`` (target rows
    of those classes)."""
    if family == "source_cls":
        labels = bench.data[bench.source].labels.cpu()[torch.as_tensor(bench.classify_source_rows).long().cpu()]
        classes = bench.splits.get("source_train", [])
    else:
        labels = bench.data[bench.target].labels.cpu()
        classes = bench.splits.get("meta_train" if family == "target_cls" else family, [])
    n = int(max([*classes, int(labels.max()) if labels.numel() else 0])) + 1
    per = torch.bincount(labels, minlength=n) if labels.numel() else torch.zeros(n, dtype=torch.long)
    return [int(per[c]) for c in sorted(set(int(c) for c in classes))]


def align_pair_count(bench: Any) -> int | None:
    """Strong pairs alignment tasks draw from (both rows alignment rows); None when alignment is not
    limited by pairs (weak alignment, or multi-way alignment over 3+ modalities, which caps its batch)."""
    from croma.meta.multimodal import uses_multi_alignment

    if bench.align_mode != "strong" or uses_multi_alignment(bench):
        return None
    p = torch.as_tensor(bench.pairs, dtype=torch.long).cpu().reshape(-1, 2)
    keep = torch.isin(p[:, 0], torch.as_tensor(bench.align_source_rows).cpu())
    keep &= torch.isin(p[:, 1], torch.as_tensor(bench.align_target_rows).cpu())
    return int(keep.sum())


def align_cluster_count(bench: Any) -> int | None:
    """Concept clusters with alignment rows of both modalities (a weak alignment task draws one pair
    from each); None for strong or multi-way alignment. Raises CromaError under 2 (before training)."""
    from croma.meta.multimodal import uses_multi_alignment

    if bench.align_mode != "weak" or uses_multi_alignment(bench):
        return None
    sc, tc = (torch.as_tensor(bench.data[m].clusters, dtype=torch.long).cpu() for m in (bench.source, bench.target))
    srows, trows = (torch.as_tensor(r, dtype=torch.long).cpu() for r in (bench.align_source_rows, bench.align_target_rows))
    both = set(sc[srows].tolist()) & set(tc[trows].tolist()) - {-1}
    if len(both) < 2:
        raise CromaError(f"task sizes: weak alignment needs >= 2 concept clusters with {bench.source} and {bench.target} "
                         f"items of meta-train classes; {len(both)} found (give the rows a 'cluster' shared across "
                         "the modalities, or items holding both modalities: strong pairs)")
    return len(both)


def fitted_ways(cfg: Any, bench: Any) -> Any:
    """``cfg`` at the N-way the data's class split was sized for when it lowered ``cfg.ways``
    (``bench.info["ways"]``: :func:`episodes.class_split.fit_ways`), else ``cfg`` itself."""
    fit = bench.info.get("ways") if isinstance(getattr(bench, "info", None), dict) else None
    if not fit or getattr(cfg, "strict_sizes", False) or cfg.ways != fit["asked"]:
        return cfg
    return cfg.replace(ways=int(fit["used"]))


def fit_run_sizes(cfg: Any, bench: Any, *, families: Sequence[str], meta_val: bool = True,
                  eval_cfg: Any = None, record: bool = True) -> tuple[Any, Any, TaskSizes]:
    """Fit a run's :class:`~croma.config.TrainConfig` (and a meta-test
    :class:`~croma.evaluate.EvalConfig`) to ``bench`` and record the sizes in ``bench.info["task_sizes"]``
    (not with ``record=False``: sizes computed beside the run's own).

    Args:
        cfg: the training configuration (never changed; a changed copy is returned).
        bench: the prepared benchmark.
        families: the task families the run samples (``align``, ``source_cls``, ``target_cls``...).
        meta_val: whether meta-val episodes of ``cfg.eval_shots`` are drawn.
        eval_cfg: the meta-test configuration (croma benchmark: its k are also drawn on meta-val).

    Returns:
        ``(cfg', eval_cfg', sizes)``: the same objects when nothing changed, else changed copies.
    """
    asked = cfg.ways
    cfg = fitted_ways(cfg, bench)  # fewer classes than 3 x ways: the split was sized for fewer ways
    if eval_cfg is not None and cfg.ways != asked:
        eval_cfg = replace(eval_cfg, ways=cfg.ways)
    fams = [f for f in TRAIN_FAMILIES if f in families]
    wanted = set(fams) | ({"meta_val"} if meta_val or eval_cfg is not None else set())
    wanted |= {"meta_test"} if eval_cfg is not None else set()
    counts = {f: class_counts(bench, f) for f in sorted(wanted)}
    uses_align = "align" in families
    sizes = fit_task_sizes(
        counts, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries,
        align_batch=cfg.align_batch if uses_align else None,
        align_pairs=align_pair_count(bench) if uses_align else None,
        eval_shots=list(cfg.eval_shots) if meta_val else None, eval_queries=cfg.eval_queries if meta_val else None,
        test_shots=None if eval_cfg is None else list(eval_cfg.shots),
        test_queries=None if eval_cfg is None else eval_cfg.queries,
        val_serves_test=eval_cfg is not None, strict=bool(getattr(cfg, "strict_sizes", False)),
    )
    if uses_align:
        sizes.align_clusters = align_cluster_count(bench)
    if cfg.ways != asked:
        sizes.requested["meta_train"]["ways"] = asked
        sizes.reasons.insert(0, bench.info["ways"]["why"])
    if sizes.changed:
        over: dict[str, Any] = {"shots": sizes.shots, "queries": sizes.queries}
        if sizes.align_batch is not None:
            over["align_batch"] = sizes.align_batch
        if sizes.eval_shots is not None:
            over.update(eval_shots=list(sizes.eval_shots), eval_queries=sizes.eval_queries)
        cfg = cfg.replace(**over)
        if eval_cfg is not None:
            eval_cfg = replace(eval_cfg, shots=list(sizes.test_shots), queries=sizes.test_queries)
    new, old = sizes.to_dict(), (bench.info.get("task_sizes") if isinstance(bench.info, dict) else None)
    if record and not (old and not sizes.changed and _agrees(old, new)):  # keep a fuller record of the same sizes
        bench.info["task_sizes"] = new
    return cfg, eval_cfg, sizes


def _agrees(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the sizes ``new`` uses are those ``old`` says were used (``old`` may hold more:
    the sizes asked before a benchmark fitted them, and its meta-test)."""
    o, n = old.get("used") or {}, new.get("used") or {}
    if n.get("meta_val") is not None and o.get("meta_val") != n["meta_val"]:
        return False
    mine = {k: v for k, v in (n.get("meta_train") or {}).items() if v is not None}
    return all((o.get("meta_train") or {}).get(k) == v for k, v in mine.items())
