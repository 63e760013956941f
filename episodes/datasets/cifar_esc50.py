"""``cifar-esc50``: CIFAR-10 / CIFAR-100 images (source) -> ESC-50 sounds (target), weak pairs.

Layout under the data root (published folder names, read-only)::

    cifar-10-batches-py/   batches.meta, data_batch_1 .. data_batch_5, test_batch
    cifar-100-python/      meta, train, test
    ESC-50-master/         meta/esc50.csv (filename, fold, target, category, ...), audio/*.wav

At least one of the two CIFAR folders must be present; a present folder must be complete. The
CIFAR files are Python pickles and are read with :mod:`episodes.pickle_safe` (no torchvision,
no md5 checks, no code execution).

Items
    Every image of the CIFAR sets present (60,000 per set) and every ESC-50 clip (2,000) is
    an item. Labels are namespaced so the two label spaces never merge:
    ``cifar/<class>`` (e.g. ``cifar/dog``) for images and ``esc50/<category>`` (e.g.
    ``esc50/dog``) for clips. Source classification tasks may use any CIFAR class.

Weak pairs
    The 17 concept clusters of :data:`CLUSTERS` (CIFAR classes | ESC-50 categories); an image
    and a clip are a weak pair when their classes are in the same cluster. Classes outside the
    clusters get no cluster.

Split of the target (ESC-50) categories (:func:`esc50_class_split`)
    The 35 ESC-50 categories that belong to a cluster are always **meta-train** (so every
    cluster can be aligned). The other 15 categories (rain, wind, siren, chainsaw, ...) are
    held out: sorted, shuffled by a generator seeded from ``seed``, the first
    ``max(1, round(n/3))`` are **meta-val** and the rest **meta-test** (5 / 10 on the full
    data). Meta-test categories therefore share no cluster with anything seen in
    meta-training. If fewer than two non-cluster categories are present (tiny copies), the
    seeded 60/20/20 split over all present categories is used instead.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from episodes.data import CrossModalDataset, Item
from episodes.datasets.roots import require_dir, require_file, resolve_data_root
from episodes.errors import DataError
from episodes.pickle_safe import load_restricted_pickle

__all__ = ["CLUSTERS", "CIFAR10_FILES", "CIFAR100_FILES", "load_cifar_batches", "esc50_class_split", "load_cifar_esc50"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
ESC50_URL = "https://github.com/karolpiczak/ESC-50"

CLUSTERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "automobile": (("automobile", "truck", "streetcar", "bus", "motorcycle", "pickup_truck"), ("car_horn", "engine")),
    "baby": (("baby",), ("crying_baby",)),
    "bird": (("bird",), ("rooster", "hen", "crow", "chirping_birds")),
    "cat": (("cat",), ("cat",)),
    "cattle": (("cattle", "horse"), ("pig", "cow", "sheep")),
    "clock": (("clock",), ("clock_alarm", "clock_tick")),
    "computer": (("keyboard",), ("mouse_click", "keyboard_typing")),
    "containers_can": (("can",), ("can_opening",)),
    "containers_glass": (("bottle", "bowl", "cup", "plate"), ("glass_breaking",)),
    "dog": (("dog",), ("dog",)),
    "frog": (("frog",), ("frog",)),
    "furniture": (("chair", "table", "wardrobe"), ("door_wood_creaks", "door_wood_knock")),
    "human": (("boy", "girl", "man", "woman"), ("sneezing", "clapping", "breathing", "coughing", "footsteps",
                                                 "laughing", "brushing_teeth", "snoring", "drinking_sipping")),
    "insect": (("bee", "beetle", "butterfly", "cockroach"), ("insects", "crickets")),
    "plane": (("airplane",), ("airplane",)),
    "sea": (("sea",), ("sea_waves",)),
    "train": (("train",), ("train",)),
}
CIFAR_CLUSTER = {c: k for k, (cs, _) in CLUSTERS.items() for c in cs}
ESC_CLUSTER = {e: k for k, (_, es) in CLUSTERS.items() for e in es}

CIFAR10_DIR, CIFAR100_DIR, ESC50_DIR = "cifar-10-batches-py", "cifar-100-python", "ESC-50-master"
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR100_FILES = ("train", "test")
ESC50_COLUMNS = ("filename", "fold", "target", "category")
_LAYOUT = (f"<root>/{CIFAR10_DIR}/{{batches.meta,data_batch_1..5,test_batch}} and/or "
           f"<root>/{CIFAR100_DIR}/{{meta,train,test}}, plus <root>/{ESC50_DIR}/meta/esc50.csv and audio/*.wav")


def _dec(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def load_cifar_batches(folder: str | os.PathLike, *, cifar100: bool) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read one CIFAR python-pickle folder.

    Args:
        folder: ``cifar-10-batches-py`` or ``cifar-100-python`` directory.
        cifar100: read CIFAR-100 (``fine_labels``, ``meta``) instead of CIFAR-10.

    Returns:
        ``(images uint8 [n, 32, 32, 3] HWC (a transposed view of the contiguous CHW rows), labels
        int64 [n], class names, batch file name per row)`` in the order of the published files.

    Raises:
        DataError: a missing or malformed file (named), or a refused pickle.
    """
    folder = Path(folder)
    files = CIFAR100_FILES if cifar100 else CIFAR10_FILES
    meta_name, names_key, labels_key = ("meta", b"fine_label_names", b"fine_labels") if cifar100 else (
        "batches.meta", b"label_names", b"labels")
    published = CIFAR_URL
    meta_path = require_file(folder / meta_name, layout=_LAYOUT, published=published)
    meta = load_restricted_pickle(meta_path)
    if not isinstance(meta, dict) or names_key not in meta:
        raise DataError(f"{meta_path}: malformed CIFAR meta file (no {names_key.decode()!r} entry)")
    raw_names = meta[names_key]
    if not isinstance(raw_names, (list, tuple)) or not raw_names or not all(isinstance(n, (str, bytes)) for n in raw_names):
        raise DataError(f"{meta_path}: malformed CIFAR meta file ({names_key.decode()!r} must be a non-empty list "
                        f"of class names, got {type(raw_names).__name__})")
    names = [_dec(n) for n in raw_names]
    images, labels, origin = [], [], []
    for fname in files:
        path = require_file(folder / fname, layout=_LAYOUT, published=published)
        batch = load_restricted_pickle(path)
        if not isinstance(batch, dict) or b"data" not in batch or labels_key not in batch:
            raise DataError(f"{path}: malformed CIFAR batch (needs b'data' and {labels_key!r})")
        data, raw_lab = batch[b"data"], batch[labels_key]
        if not isinstance(data, np.ndarray) or not isinstance(raw_lab, (list, tuple, np.ndarray)):
            raise DataError(f"{path}: malformed CIFAR batch: b'data' must be an array and {labels_key!r} a list "
                            f"(got {type(data).__name__} and {type(raw_lab).__name__})")
        lab = np.asarray(raw_lab)
        if lab.ndim != 1 or (lab.size and lab.dtype.kind not in "iu"):
            raise DataError(f"{path}: malformed CIFAR batch: {labels_key!r} must be a flat list of integers "
                            f"(got {lab.dtype} {tuple(lab.shape)})")
        lab = lab.astype(np.int64, copy=False)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != lab.shape[0]:
            raise DataError(f"{path}: malformed CIFAR batch: data {data.dtype} {tuple(data.shape)}, "
                            f"{lab.shape[0]} labels (expected uint8 [n, 3072] and n labels)")
        if lab.size and (lab.min() < 0 or lab.max() >= len(names)):
            raise DataError(f"{path}: label out of range 0..{len(names) - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
        origin.extend([fname] * lab.shape[0])
    # [n, 3, 32, 32] contiguous (the published row layout); the HWC result is a view of it, so
    # each row's CHW transpose (what the image front-end stacks) is contiguous again: no copies.
    return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels), names, origin


def _seeded_perm(n: int, *key: object) -> np.ndarray:
    digest = hashlib.sha256(":".join(str(k) for k in key).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little"))).permutation(n)


def esc50_class_split(categories, seed: int = 0) -> dict[str, list[str]]:
    """Split ESC-50 categories into meta-train / meta-val / meta-test (see module docstring).

    Args:
        categories: ESC-50 category names present (order and duplicates irrelevant).
        seed: split seed.

    Returns:
        ``{"meta_train", "meta_val", "meta_test"}`` -> sorted category names, pairwise disjoint.
    """
    cats = sorted(set(categories))
    pool = [c for c in cats if c not in ESC_CLUSTER]
    if len(pool) >= 2:
        perm = [pool[i] for i in _seeded_perm(len(pool), "esc50-split", seed)]
        n_val = max(1, round(len(pool) / 3))
        return {"meta_train": sorted(c for c in cats if c in ESC_CLUSTER),
                "meta_val": sorted(perm[:n_val]), "meta_test": sorted(perm[n_val:])}
    if len(cats) < 3:
        return {"meta_train": cats, "meta_val": [], "meta_test": []}
    perm = [cats[i] for i in _seeded_perm(len(cats), "esc50-split-all", seed)]
    n_val, n_test = max(1, round(0.2 * len(cats))), max(1, round(0.2 * len(cats)))
    return {"meta_train": sorted(perm[n_val + n_test:]), "meta_val": sorted(perm[:n_val]),
            "meta_test": sorted(perm[n_val:n_val + n_test])}


def _read_esc50(root: Path, skip_bad: bool) -> tuple[list[Item], int]:
    base = require_dir(root / ESC50_DIR, layout=_LAYOUT, published=ESC50_URL)
    csv_path = require_file(base / "meta" / "esc50.csv", layout=_LAYOUT, published=ESC50_URL)
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            missing = [c for c in ESC50_COLUMNS if c not in cols]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected columns "
                                f"{', '.join(ESC50_COLUMNS)}, ... (published at {ESC50_URL})")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not a UTF-8 CSV file ({exc})") from None
    except csv.Error as exc:  # e.g. a field longer than csv.field_size_limit(), a NUL byte
        line = getattr(reader, "line_num", "?")
        raise DataError(f"{csv_path}: line {line}: malformed CSV ({exc}); expected the published ESC-50 "
                        f"esc50.csv ({ESC50_URL})") from None
    items, skipped = [], 0
    for n, row in enumerate(rows, start=2):
        fname, cat = (row.get("filename") or "").strip(), (row.get("category") or "").strip()
        if not fname or not cat:
            raise DataError(f"{csv_path}: line {n}: empty filename or category")
        path = base / "audio" / fname
        if not path.is_file():
            if skip_bad:
                skipped += 1
                continue
            raise DataError(f"{path}: audio file listed in {csv_path} not found (use --skip-bad to leave it out)")
        items.append(Item(id=f"esc50/{fname}", label=f"esc50/{cat}", modalities={"audio": str(path)},
                          cluster=ESC_CLUSTER.get(cat)))
    if not items:
        raise DataError(f"{csv_path}: no ESC-50 clips listed")
    return items, skipped


def load_cifar_esc50(data_root: str | os.PathLike | None = None, *, seed: int = 0, skip_bad: bool = False,
                     progress: bool = False, **_: object) -> CrossModalDataset:
    """Load CIFAR-10 and/or CIFAR-100 images and ESC-50 clips (weak pairs by cluster).

    Args:
        data_root: folder holding the published folders (default ``$CROMA_DATA``).
        seed: seed of the ESC-50 category split (:func:`esc50_class_split`).
        skip_bad: leave out clips listed in ``esc50.csv`` whose file is missing (counted in
            ``meta["skipped"]``) instead of raising.

    Returns:
        :class:`CrossModalDataset` ``cifar-esc50`` (source ``image``, target ``audio``); image
        values are ``uint8 [32, 32, 3]`` arrays, audio values are wav paths; ``meta`` holds
        ``class_split`` (label names per split), ``align_mode="weak"``, ``clusters``,
        ``cifar_sets`` and ``skipped``.

    Raises:
        DataError: missing root / folder / file, malformed file, refused pickle.
    """
    root = resolve_data_root(data_root, dataset="cifar-esc50")
    sets = [(d, d == CIFAR100_DIR) for d in (CIFAR10_DIR, CIFAR100_DIR) if (root / d).is_dir()]
    if not sets:
        raise DataError(f"{root}: neither {CIFAR10_DIR}/ nor {CIFAR100_DIR}/ found; expected layout {_LAYOUT} "
                        f"(published at {CIFAR_URL} and {ESC50_URL})")
    esc_items, skipped = _read_esc50(root, skip_bad)  # check ESC-50 before the slow CIFAR read
    items: list[Item] = []
    for folder, is100 in sets:
        images, labels, names, origin = load_cifar_batches(root / folder, cifar100=is100)
        tag = "cifar100" if is100 else "cifar10"
        label_of = [f"cifar/{n}" for n in names]
        cluster_of = [CIFAR_CLUSTER.get(n) for n in names]
        per_file: dict[str, int] = {}
        for i, (f, c) in enumerate(zip(origin, labels.tolist())):
            j = per_file.get(f, 0)
            per_file[f] = j + 1
            items.append(Item(id=f"{tag}/{f}/{j}", label=label_of[c], modalities={"image": images[i]},
                              cluster=cluster_of[c]))
    items.extend(esc_items)
    cats = sorted({it.label.split("/", 1)[1] for it in esc_items})
    split = esc50_class_split(cats, seed)
    return CrossModalDataset(
        name="cifar-esc50", source="image", target="audio", items=items,
        meta={
            "class_split": {k: [f"esc50/{c}" for c in v] for k, v in split.items()},
            "align_mode": "weak",
            "clusters": {k: {"cifar": list(cs), "esc50": list(es)} for k, (cs, es) in CLUSTERS.items()},
            "cifar_sets": [d for d, _ in sets],
            "skipped": skipped,
            "data_root": str(root),
            "frontend": {"max_frames": 500},  # 5 s clips at 10 ms hops
        },
    )
