"""``manifest``: any user data set described by a JSONL file.

One item per line::

    {"id": "a1", "label": "dog", "cluster": "animals", "text": "a dog barks", "audio": "wav/a1.wav"}

``id`` and ``label`` are required; ``cluster`` is optional; every other key must be a modality
name (``text``, ``image``, ``audio``; ``speech`` is an alias of ``audio``) or a named modality of
a kind, ``<kind>:<name>`` (``image:ct`` beside ``image:mri``, ``text:en`` beside ``text:sw``). A
text value is the string; an image / audio value is a path relative to the manifest's folder (or absolute).
Items holding both the source and the target modality are strong pairs; ``cluster`` gives weak
pairs (used when there are no strong pairs). Blank lines and lines starting with ``#`` are
ignored. The file is UTF-8 (a byte-order mark and ``\\r\\n`` line ends are fine); a key given twice
in one line, two keys for one modality (``audio`` and ``speech``), control characters in an id /
label / cluster and unpaired surrogate escapes are refused with the file and line.

A row may carry a third modality (text, image and audio, any of them absent): the modalities
besides ``--source`` / ``--target`` are kept as *extra* modalities (``extra=``; by default every
one the manifest holds), which alignment tasks use (every modality pair present) and
classification never does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from episodes.data import CrossModalDataset, Item, canonical_modality, modality_kind, modality_order
from episodes.errors import DataError

__all__ = ["load_manifest", "records_to_dataset"]

_FORMAT = 'one JSON object per line: {"id": ..., "label": ..., "cluster": optional, "<modality>": value}'


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a valid value")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a JSON object naming one key twice is ambiguous (which value wins?)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in one object")
        out[key] = value
    return out


def _encodable(value: str, key: str, where: str) -> str:
    """``value`` when it encodes as UTF-8; a lone surrogate (JSON ``"\\ud800"``) is refused here,
    naming the line, rather than failing later in a front-end or when printing."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: {key} holds an unpaired UTF-16 surrogate escape (e.g. \\ud800), "
                        "which is not text") from None
    return value


def _missing_file_reason(fp: Path) -> str:
    """Why ``fp`` (not a regular file) cannot be read: a folder, a broken / looping link, a device,
    a named pipe or socket (through a link: what the link points to)."""
    import stat

    try:
        link = f"is a symbolic link to {os.readlink(fp)}, " if fp.is_symlink() else "is "
        if fp.is_dir():
            return f"{link}a folder, not a file"
        if fp.exists():
            mode = fp.stat().st_mode
            kinds = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                     (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))
            kind = next((name for test, name in kinds if test(mode)), "something")
            return f"{link}{kind}, not a regular file"
        if fp.is_symlink():
            return "is a broken or looping symbolic link"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return "not found"


def _decoded_array(value: object, mod: str, where: str):
    """An in-memory image / audio value, checked: an image ``[H, W, 3]`` of 0-255 values (``uint8``
    as documented; other numeric dtypes holding such values pass unchanged); audio a 1-D float
    waveform. Torch tensors become numpy arrays. Anything else is refused naming the record,
    instead of failing later in a front-end (or silently wrapping / truncating to ``uint8``)."""
    import numpy as np

    kind = modality_kind(mod)
    shape_doc = "uint8 [H, W, 3] with values 0-255" if kind == "image" else "a 1-D float waveform"
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where}: {mod} value must be a file path or a numpy array ({shape_doc}); "
                        f"got {type(value).__name__}")
    a = value
    if a.dtype.kind not in ("u", "i", "f"):
        raise DataError(f"{where}: {mod} array has dtype {a.dtype}; expected {shape_doc}")
    if a.size == 0:
        raise DataError(f"{where}: {mod} array is empty (shape {tuple(a.shape)})")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{where}: {mod} array holds NaN or infinite values")
    if kind == "image":
        if a.ndim != 3 or a.shape[-1] != 3:
            raise DataError(f"{where}: image array has shape {tuple(a.shape)}; expected {shape_doc} "
                            "(convert greyscale / RGBA to RGB first)")
        lo, hi = a.min(), a.max()
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: image array values span [{lo}, {hi}]; expected {shape_doc}")
        if a.dtype.kind == "f" and hi <= 1.0 and not np.array_equal(a, np.floor(a)):
            raise DataError(f"{where}: image array holds floats in [0, 1]; expected {shape_doc} "
                            "(multiply by 255 and convert to uint8)")
    elif a.ndim != 1 or a.dtype.kind != "f":
        raise DataError(f"{where}: {mod} array has shape {tuple(a.shape)} and dtype {a.dtype}; expected {shape_doc} "
                        "in [-1, 1] at the front-end's sample rate (16 kHz by default)")
    return value


def _name(value: object, key: str, where: str) -> str:
    """A manifest ``id`` / ``label`` / ``cluster``: a non-empty string or an integer, as text."""
    if isinstance(value, str) and value.strip():
        bad = next((ch for ch in value if ord(ch) < 32 or ord(ch) == 127), None)
        if bad is not None:  # a newline or tab in a class name breaks every table and log line it appears in
            raise DataError(f"{where}: {key} holds a control character ({bad!r})")
        return _encodable(value, key, where)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: {key} must be a non-empty string or an integer (got {type(value).__name__} "
                    f"{json.dumps(value)[:40] if not isinstance(value, str) else repr(value)})")


def _item(rec: object, where: str, base: Path | None, seen: set[str], skip_bad: bool) -> Item | None:
    """One record -> an :class:`Item` holding all its modality values (:func:`_finish` keeps the
    chosen ones); None when ``skip_bad`` leaves it out (a missing file)."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object ({_FORMAT})")
    for key in ("id", "label"):
        if key not in rec or rec[key] is None:
            raise DataError(f"{where}: missing {key!r} ({_FORMAT})")
        if str(rec[key]) == "":
            raise DataError(f"{where}: empty {key!r}: {key} must be a non-empty string or an integer")
    item_id, label = _name(rec["id"], "id", where), _name(rec["label"], "label", where)
    if item_id in seen:
        raise DataError(f"{where}: duplicate id {item_id!r}")
    seen.add(item_id)
    cluster = rec.get("cluster")
    mods: dict[str, Any] = {}
    names: dict[str, str] = {}  # modality -> the key that gave it ("speech" and "audio" are one modality)
    for key, value in rec.items():
        if key in ("id", "label", "cluster"):
            continue
        try:
            mod = canonical_modality(key)
        except DataError as exc:
            if ":" in key:  # a named modality with a bad kind or name: say which
                raise DataError(f"{where}: key {key!r}: {exc}") from None
            raise DataError(f"{where}: unknown key {key!r}; modalities are text, image, audio (or speech), or "
                            "<kind>:<name> for two of one kind (e.g. image:ct)") from None
        if mod in mods or mod in names:
            raise DataError(f"{where}: {names.get(mod, mod)!r} and {key!r} both give the {mod} modality; keep one")
        names[mod] = key
        kind = modality_kind(mod)
        if kind != "text" and base is None and not isinstance(value, str):  # in-memory records: decoded arrays
            mods[mod] = _decoded_array(value, mod, where)
            continue
        if not isinstance(value, str) or value == "":
            raise DataError(f"{where}: {key} value must be a non-empty string")
        _encodable(value, key, where)
        if kind == "text":
            mods[mod] = value
            continue
        bad = next((ch for ch in value if ord(ch) < 32 or ord(ch) == 127), None)
        if bad is not None:  # a NUL or newline in a path: never a real file, and it garbles the error line
            if skip_bad:
                return None
            raise DataError(f"{where}: {key} path holds a control character ({bad!r})")
        fp = Path(value) if os.path.isabs(value) or base is None else base / value
        try:
            is_file = fp.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            if skip_bad:
                return None
            raise DataError(f"{where}: {key} path of item {item_id!r} cannot be used ({exc.strerror or exc}): "
                            f"{str(fp)[:120]}{'...' if len(str(fp)) > 120 else ''}") from None
        if not is_file:
            if skip_bad:
                return None
            hint = ""
            if "\\" in value and os.sep != "\\":
                hint = "; write paths with / (this one has \\ separators, as on Windows)"
            elif value.startswith("~"):
                hint = "; ~ is not expanded in a manifest: give the path relative to the manifest or absolute"
            raise DataError(f"{fp}: {key} file of item {item_id!r} ({where}) {_missing_file_reason(fp)}; paths are "
                            f"relative to the manifest's folder (use --skip-bad to leave it out){hint}")
        mods[mod] = str(fp)
    return Item(id=item_id, label=label, modalities=mods,
                cluster=None if cluster in (None, "") else _name(cluster, "cluster", where))


def _extra(extra: Sequence[str] | str | None, items: list[Item], src: str, tgt: str, where: str) -> tuple[str, ...]:
    """The extra modalities: ``None`` -> every one the items hold besides ``src`` / ``tgt``."""
    present = {m for it in items for m in it.modalities}
    if extra is None:
        return tuple(sorted((m for m in present if m not in (src, tgt)), key=modality_order))
    names = [extra] if isinstance(extra, str) else list(extra)
    out: list[str] = []
    for name in names:
        mod = canonical_modality(name)
        if mod in (src, tgt):
            raise DataError(f"{where}: extra modality {mod!r} is already the source or the target")
        if mod not in present:
            raise DataError(f"{where}: no item holds the extra modality {mod!r}")
        if mod not in out:
            out.append(mod)
    return tuple(sorted(out, key=modality_order))


def _finish(name: str, raw: list[Item], src: str, tgt: str, where: str, meta: dict[str, Any],
            extra: Sequence[str] | str | None) -> CrossModalDataset:
    """Keep each item's source / target / extra values; drop items left with none."""
    extras = _extra(extra, raw, src, tgt, where)
    held = sorted({m for it in raw for m in it.modalities}, key=modality_order)  # before the filter below
    keep = (src, tgt, *extras)
    items = []
    for it in raw:
        it.modalities = {m: v for m, v in it.modalities.items() if m in keep}
        if it.modalities:
            items.append(it)
    if not raw:
        skipped = int(meta.get("skipped", 0) or 0)
        why = f"all {skipped} left out by --skip-bad (missing files)" if skipped else _FORMAT
        raise DataError(f"{where}: holds no items ({why})")
    for mod, flag in ((src, "--source"), (tgt, "--target")):
        if not any(mod in it.modalities for it in items):
            raise DataError(f"{where}: no item holds the {flag} modality {mod!r}"
                            + (f" (its items hold {', '.join(held)})" if held else ""))
    has_pairs = any(src in it.modalities and tgt in it.modalities for it in items)
    return CrossModalDataset(name=name, source=src, target=tgt, items=items,
                             meta={**meta, "align_mode": "strong" if has_pairs else "weak"}, extra=extras)


def records_to_dataset(records: Iterable[Mapping[str, Any]], *, source: str, target: str, name: str = "records",
                       base_dir: str | os.PathLike | None = None, skip_bad: bool = False,
                       extra: Sequence[str] | str | None = None) -> CrossModalDataset:
    """Records (dicts shaped like manifest lines) -> a :class:`CrossModalDataset`.

    Each record has ``id``, ``label``, optional ``cluster`` and a value per modality: text as a
    string; image / audio as a file path (relative to ``base_dir`` when given) or, without
    ``base_dir``, an already-decoded array (an image ``uint8 [H, W, 3]``, a waveform). Checks as
    :func:`load_manifest` does (names the record number).

    Args:
        records: the records, e.g. a list of dicts.
        source: the source modality.
        target: the target modality (different from ``source``).
        name: the data set's name (in errors and the cache's keys).
        base_dir: folder that relative file paths are under (None: values are decoded data).
        skip_bad: leave out unreadable files, saying how many.
        extra: further modalities to keep for alignment, as :func:`load_manifest`.

    Returns:
        The :class:`CrossModalDataset`, ready for :func:`~episodes.prepare.prepare_benchmark`.

    Raises:
        DataError: a malformed record, a duplicate id, a missing file, no item of a modality.
    """
    src, tgt = canonical_modality(source), canonical_modality(target)
    if src == tgt:
        raise DataError(f"{name}: source and target must differ (both {src})")
    base = Path(base_dir).expanduser() if base_dir is not None else None
    items: list[Item] = []
    seen: set[str] = set()
    skipped = 0
    for n, rec in enumerate(records):
        item = _item(dict(rec) if isinstance(rec, Mapping) else rec, f"{name}: record {n}", base, seen, skip_bad)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return _finish(name, items, src, tgt, name, {"skipped": skipped}, extra)


def _flag_modality(name: str, flag: str) -> str:
    try:
        return canonical_modality(name)
    except DataError as exc:
        raise DataError(f"{flag}: {exc}") from None


def _manifest_lines(path: Path) -> list[str]:
    """The manifest's lines: UTF-8 (a leading byte-order mark is dropped), split at ``\\n`` only
    (``\\r\\n`` too), so that characters such as U+2028 or form feeds inside a JSON string stay in
    their line. Non-UTF-8 bytes: one line naming the file and line number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: unreadable manifest ({exc.strerror or exc})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: manifest is UTF-16 text; save it as UTF-8 (one JSON object per line)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the manifest "
                        "as UTF-8") from None
    return text.split("\n")


def _looks_tabular(path: Path, line: str) -> bool:
    return path.suffix.lower() in (".csv", ".tsv") or (not line.startswith(("{", "[")) and ("," in line or "\t" in line))


def manifest_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each JSON line of a manifest-format file (blank and ``#`` lines
    skipped; ``where`` is ``"PATH: line N"``), parsed strictly: NaN / Infinity, a key given twice
    and nesting too deep are refused, and a first line that looks like CSV / TSV says so.

    Raises:
        DataError: an unreadable or non-UTF-8 file, a line that is not JSON (names file and line).
    """
    first = True
    for n, line in enumerate(_manifest_lines(path), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{path}: line {n}"
        try:
            rec = json.loads(s, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates)
        except json.JSONDecodeError as exc:
            hint = ("; a manifest is JSONL, one JSON object per line (CSV / TSV files are not read)"
                    if first and _looks_tabular(path, s) else "")
            raise DataError(f"{where}: not JSON ({exc.msg}){hint}") from None
        except RecursionError:
            raise DataError(f"{where}: not JSON (nested too deeply)") from None
        except ValueError as exc:  # NaN / Infinity
            raise DataError(f"{where}: not JSON ({exc})") from None
        first = False
        yield where, rec


def load_manifest(manifest: str | os.PathLike | None, *, source: str | None, target: str | None,
                  skip_bad: bool = False, progress: bool = False, extra: Sequence[str] | str | None = None,
                  **_: object) -> CrossModalDataset:
    """Read a JSONL manifest.

    Args:
        manifest: the ``.jsonl`` file (``--manifest PATH``).
        source, target: modality names (``--source M --target M``), different.
        skip_bad: leave out items whose image / audio file is missing (counted in ``meta["skipped"]``).
        extra: further modalities to keep for alignment (``None``: every modality the manifest
            holds besides source and target; ``()``: none).

    Returns:
        :class:`CrossModalDataset` named ``manifest``; ``meta["align_mode"]`` is ``"strong"`` when
        some item holds both modalities, else ``"weak"`` when clusters exist on both sides;
        ``extra`` the extra modalities kept (``text, image, audio`` order).

    Raises:
        DataError: missing flag / file, malformed line (names file and line), duplicate id,
            unknown modality, no item of the source or target modality.
    """
    if manifest is None or not str(manifest).strip():
        raise DataError("manifest: --manifest PATH is required (a JSONL file, " + _FORMAT + ")")
    if source is None or target is None:
        raise DataError("manifest: --source MOD and --target MOD are required (text, image or audio)")
    src, tgt = _flag_modality(source, "--source"), _flag_modality(target, "--target")
    if src == tgt:
        raise DataError(f"manifest: --source and --target must differ (both {src})")
    path = Path(manifest).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: manifest file {_missing_file_reason(path)} (expected {_FORMAT})")
    base = path.parent
    items: list[Item] = []
    seen: set[str] = set()
    skipped = 0
    for where, rec in manifest_records(path):
        item = _item(rec, where, base, seen, skip_bad)
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return _finish("manifest", items, src, tgt, str(path), {"skipped": skipped, "manifest": str(path)}, extra)

