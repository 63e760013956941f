"""Checkpoints: atomic save, safe load (``weights_only=True``), exact resume.

A checkpoint is a dict of tensors and plain Python types only, so ``torch.load(path,
weights_only=True)`` can read it and a shared file cannot run code on the machine loading it::

    {"format": "croma-checkpoint/1",
     "model": {name: tensor},        # meta-parameters (state_dict of the trainable params), CPU
     "iteration": int,               # outer iterations completed
     "config": {...},                # TrainConfig as plain types (rebuilds model and benchmark)
     "rng": {"torch_cpu": ByteTensor, "task_seed": LongTensor [1]},
     "outer_state": {"epsilon": tensor, ...},
     "best_val": float | None, "best_iteration": int | None,
     "head_init": str,               # the meta-test head initialisation chosen/selected
     "history": [ {plain dict}, ... ],
     "kind": "last" | "best"}

Files are written to a temporary file in the same directory and moved into place with
``os.replace``: a crash (even SIGKILL) leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from croma.errors import CromaError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "plain", "checkpoint_path"]

FORMAT = "croma-checkpoint/1"


def plain(value: Any) -> Any:
    """Convert ``value`` to plain types (dict/list/str/int/float/bool/None) for a checkpoint.

    Tuples become lists; tensors are left as they are. Raises TypeError for other objects.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint (plain types and tensors only)")


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same directory + ``os.replace``).

    Tensors are moved to CPU. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _to_cpu(plain(dict(payload)))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        CromaError: the file is missing, unreadable, or not a croma checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CromaError(f"checkpoint {path} not found (train first with 'croma train ... --checkpoint-dir {path.parent}')")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, unsafe content
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CromaError(f"checkpoint {path} could not be read safely: {first}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CromaError(f"{path} is not a croma checkpoint (expected format {FORMAT!r})")
    return ckpt


def checkpoint_path(path_or_dir: str | os.PathLike, which: str = "best") -> Path:
    """``DIR/<which>.pt`` for a run directory, or the path itself when it is a file."""
    p = Path(path_or_dir)
    if p.is_dir():
        return p / f"{which}.pt"
    if p.suffix == ".pt":
        return p
    raise CromaError(f"{p} is neither a run directory nor a .pt checkpoint file")


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value
