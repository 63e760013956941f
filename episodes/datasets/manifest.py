"""``manifest``: any user data set described by a JSONL file.

One item per line::

    {"id": "a1", "label": "dog", "cluster": "animals", "text": "a dog barks", "audio": "wav/a1.wav"}

``id`` and ``label`` are required; ``cluster`` is optional; every other key must be a modality
name (``text``, ``image``, ``audio``; ``speech`` is an alias of ``audio``). A text value is the
string; an image / audio value is a path relative to the manifest's folder (or absolute).
Items holding both the source and the target modality are strong pairs; ``cluster`` gives weak
pairs (used when there are no strong pairs). Blank lines and lines starting with ``#`` are
ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from episodes.data import CrossModalDataset, Item, canonical_modality
from episodes.errors import DataError

__all__ = ["load_manifest"]

_FORMAT = 'one JSON object per line: {"id": ..., "label": ..., "cluster": optional, "<modality>": value}'


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a valid value")


def _name(value: object, key: str, where: str) -> str:
    """A manifest ``id`` / ``label`` / ``cluster``: a non-empty string or an integer, as text."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: {key} must be a non-empty string or an integer (got {type(value).__name__} "
                    f"{json.dumps(value)[:40] if not isinstance(value, str) else repr(value)})")


def load_manifest(manifest: str | os.PathLike | None, *, source: str | None, target: str | None,
                  skip_bad: bool = False, progress: bool = False, **_: object) -> CrossModalDataset:
    """Read a JSONL manifest.

    Args:
        manifest: the ``.jsonl`` file (``--manifest PATH``).
        source, target: modality names (``--source M --target M``), different.
        skip_bad: leave out items whose image / audio file is missing (counted in ``meta["skipped"]``).

    Returns:
        :class:`CrossModalDataset` named ``manifest``; ``meta["align_mode"]`` is ``"strong"`` when
        some item holds both modalities, else ``"weak"`` when clusters exist on both sides.

    Raises:
        DataError: missing flag / file, malformed line (names file and line), duplicate id,
            unknown modality, no item of the source or target modality.
    """
    if manifest is None:
        raise DataError("manifest: --manifest PATH is required (a JSONL file, " + _FORMAT + ")")
    if source is None or target is None:
        raise DataError("manifest: --source MOD and --target MOD are required (text, image or audio)")
    src, tgt = canonical_modality(source), canonical_modality(target)
    if src == tgt:
        raise DataError(f"manifest: --source and --target must differ (both {src})")
    path = Path(manifest).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: manifest file not found (expected {_FORMAT})")
    base = path.parent
    items: list[Item] = []
    seen: set[str] = set()
    skipped = 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from None
    for n, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{path}: line {n}"
        try:
            rec = json.loads(s, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"{where}: not JSON (nested too deeply)") from None
        except ValueError as exc:  # NaN / Infinity
            raise DataError(f"{where}: not JSON ({exc})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object ({_FORMAT})")
        for key in ("id", "label"):
            if key not in rec or rec[key] is None or str(rec[key]) == "":
                raise DataError(f"{where}: missing {key!r} ({_FORMAT})")
        item_id, label = _name(rec["id"], "id", where), _name(rec["label"], "label", where)
        if item_id in seen:
            raise DataError(f"{where}: duplicate id {item_id!r}")
        seen.add(item_id)
        cluster = rec.get("cluster")
        mods: dict[str, str] = {}
        bad = False
        for key, value in rec.items():
            if key in ("id", "label", "cluster"):
                continue
            try:
                mod = canonical_modality(key)
            except DataError:
                raise DataError(f"{where}: unknown key {key!r}; modalities are text, image, audio (or speech)") from None
            if not isinstance(value, str) or value == "":
                raise DataError(f"{where}: {key} value must be a non-empty string")
            if mod == "text":
                mods[mod] = value
                continue
            fp = Path(value) if os.path.isabs(value) else base / value
            if not fp.is_file():
                if skip_bad:
                    bad = True
                    break
                raise DataError(f"{fp}: {key} file of item {item_id!r} ({where}) not found; paths are relative to "
                                "the manifest's folder (use --skip-bad to leave it out)")
            mods[mod] = str(fp)
        if bad:
            skipped += 1
            continue
        mods = {m: v for m, v in mods.items() if m in (src, tgt)}
        if not mods:
            continue
        items.append(Item(id=item_id, label=label, modalities=mods,
                          cluster=None if cluster in (None, "") else _name(cluster, "cluster", where)))
    for mod, flag in ((src, "--source"), (tgt, "--target")):
        if not any(mod in it.modalities for it in items):
            raise DataError(f"{path}: no item holds the {flag} modality {mod!r}")
    has_pairs = any(src in it.modalities and tgt in it.modalities for it in items)
    return CrossModalDataset(
        name="manifest", source=src, target=tgt, items=items,
        meta={"skipped": skipped, "manifest": str(path), "align_mode": "strong" if has_pairs else "weak"},
    )
