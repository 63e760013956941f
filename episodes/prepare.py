"""CrossModalDataset -> PreparedBenchmark: front-ends, feature cache, labels, pairs and splits.

:func:`prepare_benchmark` does, in order:

1. **Front-ends** per modality (source, target and the data set's ``extra`` modalities;
   :func:`~episodes.modality_features.compute_features`): text -> :func:`text_to_bytes`;
   audio -> :func:`load_audio` + :class:`LogMel`; image -> decoded ``uint8`` (from arrays, or
   from files via :func:`load_image_uint8`) then ImageNet normalisation. Audio and image
   *files* are expensive, so their whole-modality output (``features`` + an ``ok`` mask) is
   one :class:`~episodes.cache.FeatureCache` entry keyed by (data set, modality, front-end
   settings, input identity). Images are cached as ``uint8`` and normalised after loading.
2. **Bad items**: an unreadable / truncated file raises a :class:`DataError` naming it, or,
   with ``skip_bad``, the item is dropped (from every modality) and counted in
   ``info["skipped_bad"]``.
3. **Labels / clusters / pairs**: ``class_names`` = sorted union of both modalities' labels
   (a class present in both, e.g. a language, has one id); ``cluster_names`` sorted; strong
   pairs are the items holding both modalities. Items of an extra modality whose class is
   neither a source nor a target class are left out (counted in ``info["extra_dropped"]``).
4. **Class split** (:func:`~episodes.class_split.make_class_split`) over **target** classes: an explicit
   ``class_split``, else ``dataset.meta["class_split"]`` (the loader's documented split), else
   a seeded split by ``split_fractions`` (``n < 3`` classes: all meta-train).
   ``source_train`` = source classes not in meta-val / meta-test.
5. **Alignment vs classification rows** (disjoint): a source row is *alignment-eligible* when
   its class is in ``source_train`` and (strong) it is paired with a target row of a
   meta-train class, or (weak) its cluster also has target rows of meta-train classes. Per
   source class, the eligible rows are shuffled (seeded) and the first half (``n // 2``) go to
   alignment; all other source rows of ``source_train`` classes go to classification. Target
   alignment rows: (strong) the partners of the alignment source rows; (weak) target rows of
   meta-train classes in a usable cluster.
6. Extra modalities join ``data`` (front-ended like the others); their alignment rows are
   :meth:`PreparedBenchmark.alignment_tuples` (items of meta-train classes, matched by id).
7. :meth:`PreparedBenchmark.validate`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, replace
from typing import Any, Sequence

import torch

from episodes.cache import FeatureCache
from episodes.class_split import dataset_ways, make_class_split, split_counts  # noqa: F401 - split_counts re-exported
from episodes.data import SPLITS, CrossModalDataset, ModalityData, PreparedBenchmark, by_modality, modality_kind
from episodes.embedding import Embedder
from episodes.errors import DataError
from episodes.frontends import FrontendSettings
from episodes.modality_features import CACHE_FORMAT, compute_features, embedding_cache_key  # noqa: F401 - re-exported
from episodes.samplers import episode_generator
from episodes.transform import initial_state

__all__ = ["CACHE_FORMAT", "make_class_split", "compute_features", "prepare_benchmark", "dataset_summary"]


def _label_rows(labels: torch.Tensor, classes: set[int]) -> torch.Tensor:
    if not classes:
        return torch.zeros(0, dtype=torch.long)
    return torch.nonzero(torch.isin(labels, torch.tensor(sorted(classes), dtype=torch.long)), as_tuple=False).flatten()


def prepare_benchmark(
    dataset: CrossModalDataset,
    *,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    class_split: dict[str, Sequence[str]] | None = None,
    frontend: FrontendSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    skip_bad: bool = False,
    progress: bool = False,
    embedders: dict[str, Embedder] | None = None,
    ways: int | None = None,
    split_classes: Sequence[int] | None = None,
    fit_ways: bool = False,
) -> PreparedBenchmark:
    """Apply front-ends, build labels / clusters / pairs / splits, and validate (see module doc).

    Args:
        dataset: loaded items (source and target modality set).
        seed: seed of the class split (when not explicit) and of the alignment/classification
            row split.
        split_fractions: meta-train / meta-val / meta-test fractions of target classes.
        class_split: explicit ``{split: [label names]}`` (overrides the loader's).
        frontend: front-end settings (default: :class:`FrontendSettings` with the loader's
            ``dataset.meta["frontend"]`` overrides, e.g. 500 frames for 5 s ESC-50 clips).
        cache_dir: feature cache root (default ``$CROMA_CACHE`` or ``~/.cache/croma``).
        use_cache: set ``False`` to compute features without the cache.
        skip_bad: drop items whose file is unreadable instead of raising.
        progress: tqdm bars while computing features.
        embedders: ``{modality: Embedder}``: frozen pretrained backbones whose embeddings replace
            that modality's front-end (cached; then standardised with the mean / std of the rows
            of meta-train and source-train classes only, so nothing of held-out classes leaks).
        ways: the N of N-way tasks: seeded splits give meta-val and meta-test at least ``ways``
            classes when there are ``3 x ways`` (see :func:`split_counts`).
        split_classes: ``(TRAIN, VAL, TEST)`` class counts of a seeded split (``--split-classes``).
        fit_ways: when a seeded split of these classes cannot hold ``ways``-way tasks in every split,
            size it for the largest N-way that fits (:func:`episodes.class_split.fit_ways`) and record
            ``info["ways"] = {"asked", "used", "why"}``; the caller runs its tasks at ``used``.

    Returns:
        A validated :class:`PreparedBenchmark`; ``info`` holds ``frontend``, ``cache``
        (status per modality), ``skipped_bad``, ``class_split`` (names) and the loader's meta.

    Raises:
        DataError: unreadable file (without ``skip_bad``), a modality without items, a broken split.
    """
    src, tgt = dataset.source, dataset.target
    if src == tgt:
        raise DataError(f"{dataset.name}: source and target modality are both {src!r}")
    if frontend is None:
        frontend = replace(FrontendSettings(), **dict(dataset.meta.get("frontend", {})))
    cache = FeatureCache(cache_dir) if use_cache else None
    extras = tuple(m for m in getattr(dataset, "extra", ()) if m not in (src, tgt))
    mods = (src, tgt, *extras)
    given = dict(embedders or {})  # {modality or kind: Embedder}: a kind's applies to its named modalities
    embedders = {m: e for m in mods if (e := by_modality(given, m)) is not None}
    extra = sorted(k for k in given if k not in mods and k not in {modality_kind(m) for m in mods})
    if extra:
        raise DataError(f"{dataset.name}: --backbone {extra[0]}=...: the task has no {extra[0]} modality "
                        f"(source {src}, target {tgt})")
    per_mod_items = {m: dataset.items_with(m) for m in mods}
    for m in mods:
        if not per_mod_items[m]:
            role = {src: "source", tgt: "target"}.get(m, "extra")
            raise DataError(f"{dataset.name}: no item holds the {role} modality {m!r}")
    if split_classes is not None and not skip_bad:  # a bad --split-classes: refused before the features are built
        make_class_split(dataset, seed=seed, split_fractions=split_fractions, class_split=class_split, ways=ways,
                         split_classes=split_classes)
    feats: dict[str, torch.Tensor] = {}
    oks: dict[str, torch.Tensor] = {}
    status: dict[str, str] = {}
    for m in mods:
        feats[m], oks[m], status[m] = compute_features(dataset.name, m, per_mod_items[m], frontend, cache=cache,
                                                       skip_bad=skip_bad, progress=progress,
                                                       embedder=embedders.get(m))
    bad_ids = set()
    for m in mods:
        bad_ids.update(it.id for it, ok in zip(per_mod_items[m], oks[m].tolist()) if not ok)
    keep = {m: [i for i, it in enumerate(per_mod_items[m]) if it.id not in bad_ids] for m in mods}
    items = {m: [per_mod_items[m][i] for i in keep[m]] for m in mods}
    for m in mods:
        if not items[m]:
            raise DataError(f"{dataset.name}: every {m} item was unreadable ({len(bad_ids)} skipped)")
        if len(keep[m]) != len(per_mod_items[m]):
            feats[m] = feats[m][torch.tensor(keep[m], dtype=torch.long)]

    class_names = sorted({it.label for m in (src, tgt) for it in items[m]})
    cluster_names = sorted({it.cluster for m in (src, tgt) for it in items[m] if it.cluster is not None})
    extra_dropped = 0
    for m in extras:  # an extra modality's items of classes neither side has cannot be aligned
        known = [i for i, it in enumerate(items[m]) if it.label in class_names]
        if len(known) != len(items[m]):
            extra_dropped += len(items[m]) - len(known)
            items[m] = [items[m][i] for i in known]
            feats[m] = feats[m][torch.tensor(known, dtype=torch.long)]
    cid = {c: i for i, c in enumerate(class_names)}
    kid = {k: i for i, k in enumerate(cluster_names)}
    data: dict[str, ModalityData] = {}
    for m in mods:
        data[m] = ModalityData(
            features=feats[m],
            labels=torch.tensor([cid[it.label] for it in items[m]], dtype=torch.long),
            clusters=torch.tensor([kid.get(it.cluster, -1) if it.cluster is not None else -1 for it in items[m]],
                                  dtype=torch.long),
            ids=[it.id for it in items[m]],
        )
    trow = {it.id: r for r, it in enumerate(items[tgt])}
    pair_list = [(r, trow[it.id]) for r, it in enumerate(items[src]) if it.id in trow and tgt in it.modalities]
    pairs = torch.tensor(pair_list, dtype=torch.long).reshape(-1, 2)

    kept_ds = CrossModalDataset(dataset.name, src, tgt, items[tgt], dict(dataset.meta))
    ways_fit = None
    if fit_ways and ways is not None:
        used, why = dataset_ways(kept_ds, int(ways), fractions=split_fractions, split_classes=split_classes,
                                 class_split=class_split)
        if why is not None:
            ways_fit, ways = {"asked": int(ways), "used": used, "why": why}, used
    split_names = make_class_split(kept_ds, seed=seed, split_fractions=split_fractions, class_split=class_split,
                                   ways=ways, split_classes=split_classes)
    splits = {k: sorted(cid[c] for c in split_names[k]) for k in SPLITS}
    held_out = set(splits["meta_val"]) | set(splits["meta_test"])
    src_classes = sorted(set(data[src].labels.tolist()))
    splits["source_train"] = [c for c in src_classes if c not in held_out]
    train_t, src_ok = set(splits["meta_train"]), set(splits["source_train"])
    transform = {m: initial_state(frontend, embedder=embedders.get(m)) for m in mods}
    for m in embedders:  # standardise embeddings with statistics of training classes only
        ref = _label_rows(data[m].labels, train_t | src_ok)
        if ref.numel() >= 2:
            f = data[m].features
            mean = f[ref].mean(dim=0, keepdim=True)
            std = f[ref].std(dim=0, keepdim=True).clamp_min(1e-6)
            data[m].features = (f - mean) / std
            transform[m]["steps"].append({"op": "standardize", "mean": mean, "std": std})

    align_mode = dataset.meta.get("align_mode") or ("strong" if pairs.shape[0] else "weak")
    if align_mode not in ("strong", "weak"):
        raise DataError(f"{dataset.name}: align_mode must be 'strong' or 'weak', got {align_mode!r}")
    s_lab, t_lab = data[src].labels, data[tgt].labels
    s_clu, t_clu = data[src].clusters, data[tgt].clusters
    if align_mode == "strong":
        partner = {s: t for s, t in pair_list}
        eligible = [s for s, t in pair_list if int(s_lab[s]) in src_ok and int(t_lab[t]) in train_t]
        usable: set[int] = set()
    else:
        t_train = _label_rows(t_lab, train_t)
        usable_t = set(t_clu[t_train].tolist()) - {-1}
        s_train = _label_rows(s_lab, src_ok)
        usable = usable_t & (set(s_clu[s_train].tolist()) - {-1})
        eligible = [int(r) for r in s_train.tolist() if int(s_clu[r]) in usable]
    by_class: dict[int, list[int]] = {}
    for r in eligible:
        by_class.setdefault(int(s_lab[r]), []).append(r)
    align_src: list[int] = []
    for c, rows in sorted(by_class.items()):
        rows = sorted(rows)
        perm = torch.randperm(len(rows), generator=episode_generator(seed, c, "align-split")).tolist()
        align_src.extend(rows[i] for i in perm[: len(rows) // 2])
    align_src.sort()
    src_rows = _label_rows(s_lab, src_ok)
    align_t = torch.tensor(align_src, dtype=torch.long)
    classify = src_rows[~torch.isin(src_rows, align_t)].tolist() if align_src else src_rows.tolist()
    if align_mode == "strong":
        align_tgt = sorted(partner[s] for s in align_src)
    else:
        t_rows = _label_rows(t_lab, train_t).tolist()
        align_tgt = [r for r in t_rows if int(t_clu[r]) in usable]

    skipped_loader = int(dataset.meta.get("skipped", 0) or 0)
    info: dict[str, Any] = {
        "frontend": asdict(frontend),
        "cache": {"dir": str(cache.root) if cache else None, **status},
        "skipped_bad": len(bad_ids),
        "skipped_total": len(bad_ids) + skipped_loader,
        "class_split": split_names,
        "backbones": {m: e.name for m, e in embedders.items()},
        "seed": seed,
        "dataset_meta": {k: v for k, v in dataset.meta.items() if k not in ("class_split", "clusters")},
        "transform": transform,  # the fitted front-end, replayable on new items (episodes.transform)
    }
    if ways_fit is not None:
        info["ways"] = ways_fit
    quiet = {m: q for m in mods if m not in embedders and (q := quiet_audio(m, data[m], frontend)) is not None}
    if quiet:
        info["quiet_audio"] = quiet
    if extras:
        info["extra_modalities"] = list(extras)
        info["extra_dropped"] = extra_dropped
    bench = PreparedBenchmark(
        name=dataset.name, source=src, target=tgt, class_names=class_names, cluster_names=cluster_names,
        data=data, pairs=pairs, splits=splits,
        align_source_rows=torch.tensor(align_src, dtype=torch.long),
        align_target_rows=torch.tensor(align_tgt, dtype=torch.long),
        classify_source_rows=torch.tensor(classify, dtype=torch.long),
        align_mode=align_mode, info=info,
    )
    bench.validate()
    return bench


def quiet_audio(modality: str, md: ModalityData, frontend: FrontendSettings, *, min_seconds: float = 0.04):
    """Audio items whose log-mel holds under ``min_seconds`` of frames that differ from the clip's
    mean by more than 1e-4 (a silent clip is ~0 after the per-clip mean is taken off; padding is 0):
    ``{"count", "of", "ids", "seconds"}`` (the first three ids), or None when there are none or it
    is no log-mel. A clip shorter than one window still makes a few frames, so 0.04 s is the
    shortest length this tells apart."""
    f = md.features
    if modality_kind(modality) != "audio" or f.dim() != 3 or not f.dtype.is_floating_point or not len(f):
        return None
    frames = (f.abs().amax(dim=1) > 1e-4).sum(dim=1)
    need = max(1, round(min_seconds * frontend.sample_rate / frontend.hop_length))
    bad = torch.nonzero(frames < need).flatten().tolist()
    if not bad:
        return None
    return {"count": len(bad), "of": int(f.shape[0]), "ids": [md.ids[i] for i in bad[:3]], "seconds": float(min_seconds)}


def dataset_summary(dataset: CrossModalDataset, *, seed: int = 0, split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
                    class_split: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Counts for ``croma data inspect`` (no front-ends run).

    Returns:
        ``{"name", "source", "target", "items": {modality: count}, "classes": {modality:
        distinct labels}, "strong_pairs", "clusters" (clusters with items on both sides),
        "extra_modalities" (those besides source and target that join the alignment tasks),
        "splits": {"meta_train", "meta_val", "meta_test", "source_train": class counts}}``.
    """
    src, tgt = dataset.source, dataset.target
    counts: Counter = Counter()
    labels: dict[str, set[str]] = {}
    for it in dataset.items:
        for m in it.modalities:
            counts[m] += 1
            labels.setdefault(m, set()).add(it.label)
    order = [m for m in ("text", "image", "audio") if m in counts] + sorted(set(counts) - {"text", "image", "audio"})
    src_clusters = {it.cluster for it in dataset.items if src in it.modalities and it.cluster is not None}
    tgt_clusters = {it.cluster for it in dataset.items if tgt in it.modalities and it.cluster is not None}
    split = make_class_split(dataset, seed=seed, split_fractions=split_fractions, class_split=class_split)
    held_out = set(split["meta_val"]) | set(split["meta_test"])
    return {
        "name": dataset.name,
        "source": src,
        "target": tgt,
        "items": {m: counts[m] for m in order},
        "classes": {m: len(labels[m]) for m in order},
        "strong_pairs": len(dataset.strong_pair_items()),
        "clusters": len(src_clusters & tgt_clusters),
        "extra_modalities": [m for m in dataset.extra if m not in (src, tgt)],
        "splits": {**{k: len(split[k]) for k in SPLITS},
                   "source_train": len(labels.get(src, set()) - held_out)},
    }
