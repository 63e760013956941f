"""The ``serving`` section of a checkpoint: what a run folder needs to be used without its data.

:func:`serving_card` (written by the trainer into every checkpoint) holds the modalities and their
input shapes, the class names and split, a data identity (:func:`data_identity`), the fitted
front-end of every modality (:mod:`episodes.transform`) and the task sizes the run used;
:func:`finetune_choice` adds meta-val's fine-tuning choice. :mod:`croma.runmodel` loads it
(``croma.load_model``); :func:`croma.runs.check_same_data` compares it with data given to
``croma evaluate``. Pure functions of a benchmark: this module imports nothing else of croma (but its errors).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import torch

from episodes.data import SPLITS, PreparedBenchmark

__all__ = ["SERVING_FORMAT", "serving_card", "data_identity", "class_split_names", "finetune_choice",
           "split_changes", "check_card", "nearest_k"]

SERVING_FORMAT = "croma-serving/1"


def data_identity(bench: PreparedBenchmark) -> dict[str, Any]:
    """What data a benchmark was made of: ``{"name", "digest", "items": {modality: n}}``.

    ``digest``: BLAKE2b of every ``(modality, id, label)`` row, sorted, so the same items with
    the same labels give the same digest whatever their order, and a relabelled, added or
    removed item changes it."""
    h = hashlib.blake2b(digest_size=16)
    counts = {}
    for m in sorted(bench.data):
        d = bench.data[m]
        rows = sorted(f"{m}\t{i}\t{bench.class_names[int(c)]}" for i, c in zip(d.ids, d.labels.tolist()))
        counts[m] = len(rows)
        for r in rows:
            h.update(r.encode("utf-8", "surrogatepass"))
            h.update(b"\n")
    return {"name": bench.name, "digest": h.hexdigest(), "items": counts}


def class_split_names(bench: PreparedBenchmark) -> dict[str, list[str]]:
    """``{split: [class names]}`` for meta_train / meta_val / meta_test / source_train."""
    return {k: [bench.class_names[int(c)] for c in bench.splits.get(k, [])] for k in (*SPLITS, "source_train")}


def serving_card(bench: PreparedBenchmark) -> dict[str, Any]:
    """The ``serving`` section of a checkpoint (module docstring): plain types and CPU tensors."""
    transform = bench.info.get("transform") or {}
    mods = list(bench.modalities)
    return {
        "format": SERVING_FORMAT,
        "name": bench.name,
        "source": bench.source,
        "target": bench.target,
        "modalities": mods,
        "inputs": {m: {"shape": [int(s) for s in bench.data[m].features.shape[1:]],
                       "dtype": str(bench.data[m].features.dtype).replace("torch.", "")} for m in mods},
        "class_names": list(bench.class_names),
        "split": class_split_names(bench),
        "data": data_identity(bench),
        "transform": {m: _cpu(transform[m]) for m in mods if m in transform},
        "features": str(bench.info.get("features") or ""),
        "task_sizes": bench.info.get("task_sizes"),
    }


def finetune_choice(cfg: Any, head_init: str | None) -> dict[str, Any]:
    """Meta-test fine-tuning of a ``croma train`` run, per meta-val shot: ``{"default": {...},
    "per_k": {"k": {...}}}`` with ``head_init`` (the checkpoint's, chosen on meta-val when trained
    with ``auto``), ``finetune``, ``finetune_steps``, ``finetune_lr``, ``finetune_optimizer``."""
    head = head_init if head_init and head_init != "auto" else "meta"
    one = {"head_init": head, "finetune": cfg.finetune, "finetune_steps": int(cfg.finetune_steps),
           "finetune_lr": float(cfg.finetune_lr if cfg.finetune_lr is not None else cfg.inner_lr),
           "finetune_optimizer": cfg.finetune_optimizer or cfg.inner_optimizer}
    return {"default": one, "per_k": {str(int(k)): dict(one) for k in cfg.eval_shots}}


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, Mapping):
        return {str(k): _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cpu(v) for v in value]
    return value


def nearest_k(per_k: Mapping[int, Any], shots: int) -> int:
    """The k of ``per_k`` (a card's per-k fine-tuning) nearest ``shots``; ties go to the smaller k."""
    return min(per_k, key=lambda c: (abs(c - int(shots)), c))


def split_changes(stored: Mapping[str, Sequence[str]], now: Mapping[str, Sequence[str]]) -> list[str]:
    """Classes whose split differs between a run's stored split and a new one, as phrases
    (``'cow' new in meta_val``; ``'dog' gone from meta_test``; ``'cat' meta_test -> meta_train``): the
    classes new to the split and gone from it first (the user's own change: a rename is both), then
    the classes that change moved between splits."""
    where_s = {c: k for k in SPLITS for c in stored.get(k, [])}
    where_n = {c: k for k in SPLITS for c in now.get(k, [])}
    moved, new, gone = [], [], []
    for c in sorted(set(where_s) | set(where_n)):
        a, b = where_s.get(c), where_n.get(c)
        if a == b:
            continue
        if a is None:
            new.append(f"{c!r} new in {b}")
        elif b is None:
            gone.append(f"{c!r} gone from {a}")
        else:
            moved.append(f"{c!r} {a} -> {b}")
    return new + gone + moved


def check_card(card: Mapping[str, Any], path: Any) -> None:
    """Raise :class:`croma.errors.CromaError` naming ``path`` when a checkpoint's serving section is malformed."""
    from croma.errors import CromaError

    def bad(what: str) -> CromaError:
        return CromaError(f"{path}: malformed 'serving' section: {what} (re-create the run with 'croma train')")

    for key in ("source", "target", "name"):
        if not isinstance(card.get(key), str):
            raise bad(f"{key!r} must be text")
    mods = card.get("modalities")
    if not isinstance(mods, list) or card["source"] not in mods or card["target"] not in mods:
        raise bad("'modalities' must list the source and the target")
    inputs = card.get("inputs")
    if not isinstance(inputs, dict) or any(
            not isinstance(inputs.get(m), dict) or not isinstance(inputs[m].get("shape"), list)
            or not all(isinstance(s, int) and s >= 1 for s in inputs[m]["shape"])
            or inputs[m].get("dtype") not in ("float32", "float64", "int64", "uint8") for m in mods):
        raise bad("'inputs' must give a shape and dtype per modality")
    if not isinstance(card.get("class_names"), list) or not isinstance(card.get("split"), dict):
        raise bad("'class_names' and 'split' are required")
    if not isinstance(card.get("transform"), dict) or not isinstance(card.get("data"), dict):
        raise bad("'transform' and 'data' are required")
