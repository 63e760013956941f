"""Data in other shapes -> :class:`~episodes.data.CrossModalDataset`, in one pass over the items.

* :func:`from_torch_dataset`: a map-style ``torch.utils.data.Dataset`` (anything with ``len`` and
  integer indexing, e.g. a list) whose items are dicts, tuples / lists or objects with attributes.
* :func:`from_hf_dataset`: a Hugging Face ``datasets`` folder written by ``save_to_disk`` (a
  ``Dataset``, or a ``DatasetDict`` with ``split=``); needs the optional extra ``[hf]``.

``fields`` says which entry of an item means what: ``{"text": "caption", "image": "img",
"label": "label", "id": None, "cluster": None}`` for dict items (keys), ``{"image": 0, "label":
1}`` for tuple items (indices). Keys: the modalities ``text`` / ``image`` / ``audio`` (``speech``
is an alias), ``label``, ``id`` (``None``: the item's index), ``cluster`` (weak-pair concept, optional)
and ``sample_rate`` (the rate of an in-memory waveform, optional). Unset keys default to
``label`` -> ``"label"`` and the source / target modality -> its own name; a modality mapped to an
entry that holds ``None`` is absent from that item (items may hold one modality only).

Values, converted to what the front-ends (:mod:`episodes.frontends`) read:

* text: ``str`` (``bytes`` are decoded as UTF-8).
* image: a file path (relative to ``root`` when given); a PIL image (-> RGB); a torch tensor or
  numpy array ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C in 1 / 3 / 4 (tensors are read as
  ``[C, H, W]``, torchvision's layout, when the first dimension is 1 / 3 / 4; arrays as ``[H, W,
  C]`` when the last one is). Greyscale is repeated to RGB, an alpha channel dropped. Integer
  values must lie in 0-255; float values in [0, 1] (``ToTensor`` output) and are scaled by 255.
  The result is ``uint8 [H, W, 3]``.
* audio: a file path (the front-end reads and resamples it); a 1-D float waveform, or ``[C, T]``
  / ``[T, C]`` (the smaller dimension is the channels; mixed to mono); a dict ``{"array",
  "sampling_rate"}`` or ``{"bytes", "path"}`` (Hugging Face ``Audio`` values). A waveform whose
  rate is known (the ``sample_rate`` field, the dict, or the ``sample_rate=`` argument) is
  resampled to ``audio_rate`` (the front-end's rate, 16 kHz by default) with
  ``torchaudio.functional.resample``; without a known rate it is taken to be at ``audio_rate``.
* label / cluster: a string, or an integer (mapped through ``classes=[names]`` when given; a
  Hugging Face ``ClassLabel`` column maps through its names); a 0-d integer tensor counts as an
  integer. Floats and booleans are refused.

Errors are one :class:`~episodes.errors.DataError` line naming the item index and the field.
Never imports ``croma``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from episodes.data import MODALITIES, CrossModalDataset, canonical_modality, modality_kind, modality_order
from episodes.datasets.manifest import records_to_dataset
from episodes.errors import DataError
from episodes.frontends import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, mono_waveform

__all__ = ["from_torch_dataset", "item_records"]  # from_hf_dataset: episodes.datasets.adapters_hf

_META_KEYS = ("id", "label", "cluster", "sample_rate")


def _fields(fields: Mapping[str, Any] | None, source: str, target: str, name: str) -> dict[str, Any]:
    """``fields`` with aliases resolved and defaults filled: ``{key: entry or None}``."""
    src, tgt = canonical_modality(source), canonical_modality(target)
    if fields is not None and not isinstance(fields, Mapping):
        raise DataError(f"{name}: fields must be a dict such as {{'text': 'caption', 'image': 0, 'label': 'label'}} "
                        f"(got {type(fields).__name__})")
    out: dict[str, Any] = {"id": None, "label": "label", "cluster": None, "sample_rate": None, src: src, tgt: tgt}
    given: dict[str, str] = {}
    for key, entry in (fields or {}).items():
        if not isinstance(key, str):
            raise DataError(f"{name}: fields key {key!r} is not a string; keys are {', '.join(_META_KEYS + MODALITIES)}")
        if key in _META_KEYS:
            canon = key
        else:
            try:
                canon = canonical_modality(key)
            except DataError:
                raise DataError(f"{name}: unknown fields key {key!r}; keys are "
                                f"{', '.join(_META_KEYS + MODALITIES)} (or speech)") from None
        if canon in given:
            raise DataError(f"{name}: fields keys {given[canon]!r} and {key!r} both give {canon}; keep one")
        given[canon] = key
        if entry is not None and (isinstance(entry, bool) or not isinstance(entry, (str, int))):
            raise DataError(f"{name}: fields[{key!r}] must be a dict key (str), a tuple index (int) or None "
                            f"(got {type(entry).__name__})")
        out[canon] = entry
    for key, role in (("label", "label"), (src, "source modality"), (tgt, "target modality")):
        if out[key] is None:
            raise DataError(f"{name}: fields[{key!r}] is None, but the {role} is required")
    return out


def _get(item: Any, entry: str | int, field: str, where: str) -> Any:
    """The value of ``entry`` in one item (dict key, tuple index, namedtuple / attribute name)."""
    if isinstance(item, Mapping):
        if entry in item:
            return item[entry]
        keys = ", ".join(repr(k) for k in list(item)[:12])
        hint = f" (an item without {field} holds None there)" if field not in _META_KEYS[:2] + ("sample_rate",) else ""
        raise DataError(f"{where}: no entry {entry!r} for {field} (fields[{field!r}]); the item has {keys}{hint}")
    if isinstance(item, (tuple, list)):
        if isinstance(entry, int):
            if -len(item) <= entry < len(item):
                return item[entry]
            raise DataError(f"{where}: fields[{field!r}] = {entry} is out of range (the item has {len(item)} entries)")
        if entry in getattr(item, "_fields", ()):  # a namedtuple
            return getattr(item, entry)
        raise DataError(f"{where}: the item is a {type(item).__name__}: fields[{field!r}] must be an integer index "
                        f"(got {entry!r})")
    if isinstance(entry, str) and hasattr(item, entry):
        return getattr(item, entry)
    raise DataError(f"{where}: the item is a {type(item).__name__} without {entry!r} for {field}; items must be "
                    "dicts, tuples / lists or objects with attributes")


def _scalar(value: Any) -> Any:
    """A 0-d / one-element tensor or numpy scalar -> a Python scalar; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dim() <= 1:
        return value.item()
    if isinstance(value, np.ndarray) and value.size == 1 and value.ndim <= 1:
        return value.reshape(()).item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _name(value: Any, field: str, where: str, classes: Sequence[str] | None = None) -> str:
    """A label / cluster / id: a string, or an integer (through ``classes`` when given)."""
    value = _scalar(value)
    if isinstance(value, bool):
        raise DataError(f"{where}: {field} is a boolean ({value}); give a class name or an integer class id")
    if isinstance(value, int):
        if classes is not None:
            if not 0 <= value < len(classes):
                raise DataError(f"{where}: {field} {value} is outside classes (ids 0..{len(classes) - 1})")
            return classes[value]
        return str(value)
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: {field} is an empty string")
        return value
    if isinstance(value, float):
        what = "a non-finite value" if not math.isfinite(value) else f"a float ({value})"
        raise DataError(f"{where}: {field} is {what}; give a class name or an integer class id")
    if value is None:
        raise DataError(f"{where}: {field} is None")
    raise DataError(f"{where}: {field} must be a string or an integer (got {type(value).__name__})")


def _path(value: Any, field: str, where: str, root: Path | None) -> str:
    p = Path(os.fspath(value)).expanduser()
    if root is not None and not p.is_absolute():
        p = root / p
    try:
        ok = p.is_file()
    except OSError as exc:
        raise DataError(f"{where}: {field} path cannot be used ({exc.strerror or exc}): {str(p)[:120]}") from None
    if not ok:
        raise DataError(f"{where}: {field} file not found: {p}" + ("" if root is not None else
                        " (relative paths are taken from the working folder; pass root=FOLDER)"))
    return str(p.resolve())


def _as_array(value: Any, field: str, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return (t.float() if t.is_floating_point() and t.dtype != torch.float64 else t).numpy()
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value)
        except ValueError:
            raise DataError(f"{where}: {field} is a ragged list; give an array") from None
    if isinstance(value, np.ndarray):
        return value
    raise DataError(f"{where}: {field} must be a file path, an array or a tensor (got {type(value).__name__})")


def _image(value: Any, where: str, root: Path | None) -> Any:
    """An image value -> a resolved path or ``uint8 [H, W, 3]``."""
    if isinstance(value, (str, os.PathLike)):
        return _path(value, "image", where, root)
    if hasattr(value, "convert") and hasattr(value, "getbands"):  # a PIL image
        return np.asarray(value.convert("RGB"), dtype=np.uint8).copy()
    is_tensor = isinstance(value, torch.Tensor)
    a = _as_array(value, "image", where)
    if a.dtype.kind not in "uif":
        raise DataError(f"{where}: image has dtype {a.dtype}; expected integers 0-255 or floats in [0, 1]")
    if a.size == 0:
        raise DataError(f"{where}: image is empty (shape {tuple(a.shape)})")
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim == 3:
        chw = a.shape[0] in (1, 3, 4) and (is_tensor or a.shape[-1] not in (1, 3, 4))
        if chw:
            a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where}: image has shape {tuple(a.shape)}; expected [H, W], [H, W, C] or [C, H, W] with "
                        "C = 1, 3 or 4")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{where}: image holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{where}: float image values span [{lo:.3g}, {hi:.3g}]; expected [0, 1] (undo any "
                            "Normalize, or give uint8 values 0-255)")
        a = np.rint(a * 255.0)
    else:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: image values span [{lo}, {hi}]; expected 0-255")
    a = a.astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[:, :, :3])


def _rate(value: Any, where: str) -> int:
    value = _scalar(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: sample_rate must be an integer in Hz (got {value!r})")
    if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise DataError(f"{where}: sample rate {value} Hz is outside the supported {MIN_SAMPLE_RATE}-"
                        f"{MAX_SAMPLE_RATE} Hz")
    return value


def _decode_bytes(data: bytes, where: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        a, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError on bad data
        raise DataError(f"{where}: audio bytes cannot be decoded ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    if a.shape[1] > MAX_CHANNELS:
        raise DataError(f"{where}: audio has {a.shape[1]} channels; at most {MAX_CHANNELS} are supported")
    return a.mean(axis=1), int(sr)


def _audio(value: Any, where: str, root: Path | None, rate: int | None, audio_rate: int) -> Any:
    """An audio value -> a resolved path or ``float32 [samples]`` at ``audio_rate``."""
    if isinstance(value, (str, os.PathLike)):
        return _path(value, "audio", where, root)
    if isinstance(value, Mapping):
        if "array" in value:
            if value.get("sampling_rate") is not None:
                rate = _rate(value["sampling_rate"], where)
            value = value["array"]
        elif value.get("bytes"):
            value, rate = _decode_bytes(value["bytes"], where)
        elif value.get("path"):
            return _path(value["path"], "audio", where, root)
        else:
            raise DataError(f"{where}: audio dict holds none of 'array', 'bytes', 'path' (keys: {', '.join(map(str, value))})")
    a = _as_array(value, "audio", where)
    return mono_waveform(a, audio_rate if rate is None else rate, audio_rate, where)


def item_records(items: Iterable[Any], fields: Mapping[str, Any], *, name: str, classes: Sequence[str] | None = None,
                 cluster_classes: Sequence[str] | None = None, sample_rate: int | None = None,
                 audio_rate: int = 16000, root: str | os.PathLike | None = None) -> Iterator[dict[str, Any]]:
    """Items -> manifest-shaped records (``id``, ``label``, ``cluster``, a value per modality), lazily.

    ``fields`` must already be resolved (:func:`_fields`). Record ``n`` is item ``n``.
    """
    base = Path(root).expanduser() if root is not None else None
    default_rate = None if sample_rate is None else _rate(sample_rate, f"{name}: sample_rate=")
    mods = sorted((m for m in fields if m not in _META_KEYS and fields.get(m) is not None), key=modality_order)
    for i, item in enumerate(items):
        where = f"{name}: item {i}"
        rec: dict[str, Any] = {
            "id": str(i) if fields["id"] is None else _name(_get(item, fields["id"], "id", where), "id", where),
            "label": _name(_get(item, fields["label"], "label", where), "label", where, classes),
        }
        if fields["cluster"] is not None:
            c = _scalar(_get(item, fields["cluster"], "cluster", where))
            if c is not None and c != "":
                rec["cluster"] = _name(c, "cluster", where, cluster_classes)
        rate = default_rate
        if fields["sample_rate"] is not None:
            r = _get(item, fields["sample_rate"], "sample_rate", where)
            rate = rate if r is None else _rate(r, where)
        for m in mods:
            value = _get(item, fields[m], m, where)
            if value is None:
                continue
            kind = modality_kind(m)  # a named modality (image:ct) is read as its kind
            if kind == "text":
                if isinstance(value, bytes):
                    try:
                        value = value.decode("utf-8")
                    except UnicodeDecodeError:
                        raise DataError(f"{where}: text bytes are not UTF-8") from None
                if not isinstance(value, str):
                    raise DataError(f"{where}: text must be a string (got {type(value).__name__})")
                if not value:
                    raise DataError(f"{where}: text is an empty string")
                rec[m] = value
            elif kind == "image":
                rec[m] = _image(value, where, base)
            else:
                rec[m] = _audio(value, where, base, rate, audio_rate)
        yield rec


def _check_classes(classes: Sequence[str] | None, name: str) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise DataError(f"{name}: classes must be a list of class names (got {type(classes).__name__})")
    out = list(classes)
    for c in out:
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"{name}: classes must be non-empty strings (got {c!r})")
    dup = next((c for k, c in enumerate(out) if c in out[:k]), None)
    if dup is not None:
        raise DataError(f"{name}: classes names {dup!r} twice")
    return out


def _finish(ds: CrossModalDataset, audio_rate: int, origin: dict[str, Any]) -> CrossModalDataset:
    ds.meta["origin"] = origin
    if audio_rate != 16000 and "audio" in ds.modalities:
        ds.meta["frontend"] = {"sample_rate": int(audio_rate)}  # prepare_benchmark front-ends at the same rate
    return ds


def from_torch_dataset(dataset: Any, *, source: str, target: str, fields: Mapping[str, Any] | None = None,
                       name: str = "torch-dataset", classes: Sequence[str] | None = None,
                       sample_rate: int | None = None, audio_rate: int = 16000, root: str | os.PathLike | None = None,
                       extra: Sequence[str] | str | None = None) -> CrossModalDataset:
    """A map-style ``torch.utils.data.Dataset`` -> a :class:`CrossModalDataset` (one pass, ``dataset[i]``
    for ``i`` in ``range(len(dataset))``).

    Args:
        dataset: anything with ``len`` and integer indexing (a ``Dataset``, a list); items are dicts,
            tuples / lists, namedtuples or objects with attributes.
        source, target: modality names (``text`` / ``image`` / ``audio``), different.
        fields: which entry of an item means what (module doc); e.g. ``{"image": 0, "label": 1,
            "text": 2}`` for tuples. Default: ``label`` and the two modalities under their own names.
        name: the data set's name (cache keys, messages).
        classes: class names; integer labels ``c`` become ``classes[c]`` (else ``str(c)``).
        sample_rate: rate (Hz) of in-memory waveforms when neither a ``sample_rate`` field nor the
            value gives it; ``None``: taken to be ``audio_rate``.
        audio_rate: the front-end's sample rate; waveforms are resampled to it (and a rate other than
            16000 is recorded in ``meta["frontend"]`` so :func:`prepare_benchmark` uses it).
        root: folder that relative image / audio paths are relative to (default: the working folder).
        extra: further modalities to keep for alignment (``None``: every one ``fields`` maps and the
            items hold).

    Returns:
        A :class:`CrossModalDataset`; ids default to the item index; ``meta["origin"]`` records
        the type and length.

    Raises:
        DataError: not a map-style data set, an unknown fields key, an item without a mapped entry,
            a value of the wrong type / shape, a non-finite value, a missing file (each names the item
            index and field), a duplicate id, no item of the source / target modality.
    """
    if isinstance(dataset, torch.utils.data.IterableDataset) or not (hasattr(dataset, "__len__")
                                                                     and hasattr(dataset, "__getitem__")):
        raise DataError(f"{name}: from_torch_dataset needs a map-style data set (len(ds) and ds[i]); got "
                        f"{type(dataset).__name__} (collect an iterable data set into a list first)")
    fmap = _fields(fields, source, target, name)
    n = len(dataset)
    if n == 0:
        raise DataError(f"{name}: the data set is empty (len 0)")
    items = (dataset[i] for i in range(n))
    recs = item_records(items, fmap, name=name, classes=_check_classes(classes, name), sample_rate=sample_rate,
                        audio_rate=audio_rate, root=root)
    ds = records_to_dataset(recs, source=source, target=target, name=name, extra=extra)
    return _finish(ds, audio_rate, {"format": "torch", "type": type(dataset).__name__, "length": n})
