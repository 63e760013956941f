"""Hugging Face ``datasets`` folders (written by ``save_to_disk``) -> a :class:`CrossModalDataset`:
:func:`from_hf_dataset` (optional extra ``[hf]``); the item conversions are those of
:mod:`episodes.datasets.adapters`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from episodes.data import CrossModalDataset
from episodes.datasets.adapters import _META_KEYS, _check_classes, _fields, _finish, item_records
from episodes.datasets.manifest import records_to_dataset
from episodes.errors import DataError

__all__ = ["from_hf_dataset"]


def from_hf_dataset(path: str | os.PathLike, *, source: str, target: str, fields: Mapping[str, Any] | None = None,
                    split: str | None = None, name: str | None = None, classes: Sequence[str] | None = None,
                    sample_rate: int | None = None, audio_rate: int = 16000,
                    extra: Sequence[str] | str | None = None) -> CrossModalDataset:
    """A Hugging Face ``datasets`` folder written by ``save_to_disk`` -> a :class:`CrossModalDataset`.

    Needs the extra ``[hf]`` (``pip install 'croma-meta[hf]'``); ``Image`` columns need Pillow
    (``[vision]``). Columns are named by ``fields`` as for :func:`from_torch_dataset` (only the
    named columns are read, in one pass). ``ClassLabel`` columns (label, cluster) map to their names
    (``classes=`` overrides for the label); ``Image`` columns decode to PIL images -> ``uint8 [H, W,
    3]``; ``Audio`` columns are read undecoded (no torchcodec needed): embedded bytes are decoded with
    soundfile, mixed to mono and resampled to ``audio_rate``; a path-only value is left to the
    front-end, which resamples files itself.

    Args:
        path: the folder (``dataset.save_to_disk(path)``).
        split: the split of a ``DatasetDict`` folder (required there, refused for a ``Dataset``).
        name: data set name (default: the folder name, plus ``/split``).
        source, target, fields, classes, sample_rate, audio_rate, extra: as :func:`from_torch_dataset`.

    Returns:
        The :class:`CrossModalDataset`.

    Raises:
        MissingExtraError: ``datasets`` is not installed (names the extra).
        DataError: not such a folder, a missing / unknown split, a field naming no column, and the
            per-item errors of :func:`from_torch_dataset`.
    """
    from episodes.extras import require

    hf = require("datasets", purpose="from_hf_dataset (Hugging Face data set folders)", extra="hf")
    p = Path(path).expanduser()
    label = name or p.name or "hf-dataset"
    if not p.is_dir():
        raise DataError(f"{p}: not a folder; give the folder that Dataset.save_to_disk / DatasetDict.save_to_disk wrote")
    try:
        obj = hf.load_from_disk(str(p))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{p}: not a Hugging Face data set folder written by save_to_disk "
                        f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
    if isinstance(obj, hf.DatasetDict):
        names = ", ".join(obj.keys())
        if split is None:
            raise DataError(f"{p}: a DatasetDict with splits {names}; pass split= one of them")
        if split not in obj:
            raise DataError(f"{p}: no split {split!r}; the splits are {names}")
        ds = obj[split]
        label = name or f"{p.name}/{split}"
    else:
        if split is not None:
            raise DataError(f"{p}: holds one Dataset, not a DatasetDict; leave split= out (got {split!r})")
        ds = obj
    fingerprint = getattr(ds, "_fingerprint", None)
    fmap = _fields(fields, source, target, label)
    columns = list(ds.column_names)
    wanted = []
    for key, col in fmap.items():
        if col is None:
            continue
        if not isinstance(col, str) or col not in columns:
            raise DataError(f"{label}: fields[{key!r}] = {col!r} names no column; the columns are {', '.join(columns)}")
        if col not in wanted:
            wanted.append(col)
    if len(ds) == 0:
        raise DataError(f"{label}: the data set is empty (0 rows)")
    ds = ds.select_columns(wanted).with_format(None)
    feats = ds.features
    for key in fmap:
        col = fmap.get(key)
        if key in _META_KEYS or col is None:
            continue
        if isinstance(feats[col], hf.Audio):
            ds = ds.cast_column(col, hf.Audio(decode=False))  # decoded here: soundfile, not torchcodec
        elif isinstance(feats[col], hf.Image):
            require("PIL", purpose=f"the Image column {col!r}")

    def names_of(key: str) -> list[str] | None:
        col = fmap.get(key)
        return list(feats[col].names) if col is not None and isinstance(feats[col], hf.ClassLabel) else None

    recs = item_records(iter(ds), fmap, name=label, sample_rate=sample_rate, audio_rate=audio_rate,
                        classes=_check_classes(classes, label) or names_of("label"),
                        cluster_classes=names_of("cluster"))
    out = records_to_dataset(recs, source=source, target=target, name=label, extra=extra)
    return _finish(out, audio_rate, {"format": "huggingface", "path": str(p), "split": split,
                                     "fingerprint": fingerprint, "length": len(ds)})
