"""``yummly``: Yummly-28K recipes, ingredient text (source) -> dish photo (target), strong pairs.

Layout under the data root::

    Yummly28K/metadata27638/meta<ID>.json   {"attributes": {"cuisine": [...], "course": [...]},
                                             "ingredientLines": [...], ...}
    Yummly28K/images27638/img<ID>.jpg

Rules (as in the CROMA paper's setup):

* label = ``"_".join(sorted(cuisines)) + "_" + "_".join(sorted(courses))``;
* text = ``", ".join(ingredientLines)``;
* keep labels with at least ``min_count`` (100) recipes; then, after a shuffle seeded from
  ``seed``, cap each kept label at ``floor(mean + std)`` recipes (mean and population std of
  the kept labels' counts). The real data gives 44 classes.

Every kept recipe holds both modalities, so every item is a strong pair.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from episodes.data import CrossModalDataset, Item
from episodes.datasets.roots import require_dir, resolve_data_root
from episodes.errors import DataError

__all__ = ["yummly_label", "load_yummly"]

YUMMLY_URL = "http://isis-data.science.uva.nl/yummly28k/ (Min et al., 'Being a Supertaster', 2016)"
_LAYOUT = "<root>/Yummly28K/metadata27638/meta<ID>.json and <root>/Yummly28K/images27638/img<ID>.jpg"
_META_RE = re.compile(r"^meta(.+)\.json$")


def _as_list(value, path: Path, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}: {field} must be a list of strings")
    return value


def yummly_label(cuisines: list[str], courses: list[str]) -> str:
    """``"_".join(sorted(cuisines)) + "_" + "_".join(sorted(courses))``."""
    return "_".join(sorted(cuisines)) + "_" + "_".join(sorted(courses))


def load_yummly(data_root: str | os.PathLike | None = None, *, seed: int = 0, skip_bad: bool = False,
                min_count: int = 100, progress: bool = False, **_: object) -> CrossModalDataset:
    """Load Yummly-28K (see module docstring for the label and capping rules).

    Args:
        data_root: folder holding ``Yummly28K/`` (default ``$CROMA_DATA``).
        seed: seed of the shuffle before capping.
        skip_bad: leave out recipes whose JSON is unreadable or whose image is missing (counted
            in ``meta["skipped"]``) instead of raising.
        min_count: least recipes a label needs to be kept.

    Returns:
        :class:`CrossModalDataset` ``yummly`` (source ``text``, target ``image``).

    Raises:
        DataError: missing folders / files, malformed JSON, or no label with ``min_count`` recipes.
    """
    root = resolve_data_root(data_root, dataset="yummly")
    base = require_dir(root / "Yummly28K", layout=_LAYOUT, published=YUMMLY_URL)
    meta_dir = require_dir(base / "metadata27638", layout=_LAYOUT, published=YUMMLY_URL)
    img_dir = require_dir(base / "images27638", layout=_LAYOUT, published=YUMMLY_URL)
    files = sorted(p for p in meta_dir.iterdir() if _META_RE.match(p.name))
    if not files:
        raise DataError(f"{meta_dir}: no meta<ID>.json files; expected layout {_LAYOUT} (published at {YUMMLY_URL})")
    it = files
    if progress:
        from episodes.progress import progress_bar as tqdm

        it = tqdm(files, desc="yummly: reading metadata", unit="recipe")
    by_label: dict[str, list[Item]] = defaultdict(list)
    skipped = 0
    for path in it:
        rid = _META_RE.match(path.name).group(1)
        img = img_dir / f"img{rid}.jpg"
        try:
            try:
                with open(path, encoding="utf-8") as fh:
                    rec = json.load(fh)
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}: unreadable recipe JSON ({exc})") from None
            except RecursionError:
                raise DataError(f"{path}: unreadable recipe JSON (nested too deeply)") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}: recipe JSON must be an object")
            attrs = rec.get("attributes") or {}
            if not isinstance(attrs, dict):
                raise DataError(f"{path}: 'attributes' must be an object")
            lines = _as_list(rec.get("ingredientLines"), path, "ingredientLines")
            if not lines:
                raise DataError(f"{path}: no ingredientLines")
            label = yummly_label(_as_list(attrs.get("cuisine"), path, "attributes.cuisine"),
                                 _as_list(attrs.get("course"), path, "attributes.course"))
            if not img.is_file():
                raise DataError(f"{img}: image of recipe {path.name} not found (expected layout {_LAYOUT})")
        except DataError:
            if not skip_bad:
                raise
            skipped += 1
            continue
        by_label[label].append(Item(id=rid, label=label, modalities={"text": ", ".join(lines), "image": str(img)}))
    kept = {lab: v for lab, v in by_label.items() if len(v) >= min_count}
    if not kept:
        raise DataError(f"{base}: no label has >= {min_count} recipes ({len(by_label)} labels, "
                        f"{sum(map(len, by_label.values()))} recipes read)")
    counts = np.array([len(v) for v in kept.values()], dtype=np.float64)
    cap = int(np.floor(counts.mean() + counts.std()))
    items: list[Item] = []
    for lab in sorted(kept):
        group = kept[lab]
        digest = hashlib.sha256(f"yummly-cap:{seed}:{lab}".encode()).digest()
        perm = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little"))).permutation(len(group))
        items.extend(sorted((group[i] for i in perm[:cap]), key=lambda x: x.id))
    return CrossModalDataset(
        name="yummly", source="text", target="image", items=items,
        meta={"skipped": skipped, "cap": cap, "min_count": min_count, "labels_read": len(by_label),
              "data_root": str(root)},
    )
