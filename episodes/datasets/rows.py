"""Manifest-format rows of one modality, for a trained run: :func:`load_rows` (``croma predict``,
``croma embed``). Same line format and checks as :func:`episodes.datasets.manifest.load_manifest`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from episodes.data import canonical_modality
from episodes.datasets.manifest import _FORMAT, _item, _missing_file_reason, manifest_records
from episodes.errors import DataError

__all__ = ["load_rows"]


def load_rows(path: str | os.PathLike, modality: str, *, labels: str = "optional",
              flag: str = "--input", skipped: list[str] | None = None,
              wheres: list[str] | None = None) -> tuple[list[str], list[Any], list[str] | None]:
    """Manifest-format rows of one modality, for a trained run (``croma predict`` / ``croma embed``).

    Each line is ``{"id": ..., "label": ..., "<modality>": value}`` as in :func:`load_manifest`
    (paths relative to the file's folder); other modality keys are ignored. ``labels``:
    ``required`` (every row has one), ``optional`` (all rows or none; a mix is refused), or
    ``ignore``. ``skipped``: a list that, when given, receives the rows (``file: line N``) that
    hold no ``modality`` value, which are then left out instead of refused. ``wheres``: a list
    that, when given, receives each returned row's ``file: line N`` (for messages about its item).

    Returns:
        ``(ids, values, labels or None)``.

    Raises:
        DataError: a missing file, a malformed line, a row without ``modality`` or a label where
            one is required (names the file, line and flag), a missing image / audio file, no rows.
    """
    mod = canonical_modality(modality)
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{flag} {p}: file {_missing_file_reason(p)} (expected {_FORMAT})")
    ids: list[str] = []
    values: list[Any] = []
    labs: list[str | None] = []
    seen: set[str] = set()
    for where, rec in manifest_records(p):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object ({_FORMAT})")
        keys = [k for k in rec if k not in ("id", "label", "cluster") and _canonical_or_none(k) == mod]
        if not keys and skipped is not None:
            skipped.append(where)
            continue
        if not keys:
            raise DataError(f"{where}: no {mod!r} value (the run's {mod} modality; {flag} rows are {_FORMAT})")
        has_label = rec.get("label") not in (None, "")
        if labels == "required" and not has_label:
            raise DataError(f"{where}: missing 'label' ({flag} rows need one)")
        sub = {"id": rec.get("id"), "label": rec["label"] if has_label and labels != "ignore" else "?",
               keys[0]: rec[keys[0]]}
        try:
            item = _item(sub, where, p.parent, seen, skip_bad=False)
        except DataError as exc:  # these commands have no --skip-bad: the row is to be fixed or removed
            raise DataError(str(exc).replace("(use --skip-bad to leave it out)", f"(fix or remove that {flag} row)")) from None
        assert item is not None
        ids.append(item.id)
        if wheres is not None:
            wheres.append(where)
        values.append(item.modalities[mod])
        labs.append(item.label if has_label and labels != "ignore" else None)
    if not ids and skipped:
        raise DataError(f"{flag} {p}: none of its {len(skipped)} rows holds a value of the asked modality {mod!r}")
    if not ids:
        raise DataError(f"{flag} {p}: holds no rows ({_FORMAT})")
    given = [x is not None for x in labs]
    if labels == "optional" and any(given) and not all(given):
        first = given.index(False)
        raise DataError(f"{flag} {p}: row {first + 1} has no 'label' while others do; label every row or none")
    return ids, values, ([str(x) for x in labs] if all(given) and labels != "ignore" else None)


def _canonical_or_none(key: str) -> str | None:
    try:
        return canonical_modality(key)
    except DataError:
        return None
