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
     "kind": "last" | "best",
     "run_id": str}                  # the run that wrote it (croma.runlock); absent in older files

Files are written to a temporary file in the same directory and moved into place with
``os.replace``: a crash (even SIGKILL) leaves either the old or the new file, never half of one;
the next write to the same place removes a killed writer's temporary file
(:func:`episodes.cache.atomic_write`).

:func:`load_checkpoint` checks the whole layout above (:func:`validate_checkpoint`): types of every
field, parameters that are finite floating-point tensors; shapes are checked against the model by
its users (:func:`check_parameters`). :func:`ensure_output_dir` checks an output folder before
any work is done.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from croma.config import RUNTIME_FIELDS, TrainConfig, plain
from croma.errors import CromaError
from episodes.cache import atomic_write

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "plain", "checkpoint_path", "validate_checkpoint",
           "check_parameters", "ensure_output_dir", "train_config", "Checkpointer"]

FORMAT = "croma-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same directory + ``os.replace``).

    Tensors are moved to CPU. Returns the path written.
    """
    data = _to_cpu(plain(dict(payload)))
    return atomic_write(path, lambda fh: torch.save(data, fh))


def ensure_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Create the output folder ``path`` (given by ``flag``) and prove it writable, before any work.

    Raises:
        CromaError: ``path`` is a file, or cannot be created or written (read-only, full disk);
            the message names the flag and the path.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise CromaError(f"{flag} {p}: is a file, not a folder (choose a folder for the outputs)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".croma-write-check.", suffix=".tmp")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as exc:
        where = exc.filename or p
        raise CromaError(f"{flag} {where}: cannot write there ({exc.strerror or exc}); choose a writable folder") from exc
    return p


def new_folders(*paths: str | os.PathLike) -> list[Path]:
    """The folders among ``paths`` and their parents that do not exist yet, deepest first (what
    ``mkdir(parents=True)`` would make): hand them to :func:`remove_if_empty` when the command fails."""
    out: set[Path] = set()
    for path in paths:
        p = Path(path).expanduser()
        while not p.exists() and p != p.parent:
            out.add(p)
            p = p.parent
    return sorted(out, key=lambda f: (-len(f.parts), str(f)))


def remove_if_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first, from :func:`new_folders`) that is empty: a command
    refused before it wrote anything leaves no empty folder behind; anything written is kept."""
    for folder in folders:
        try:
            os.rmdir(folder)  # only an empty folder
        except OSError:
            continue


def missing_checkpoint(path: Path) -> str:
    """What to say for a checkpoint that is not there; a ``croma benchmark`` folder (results.json,
    no model) is named as such, with the command that trains its croma row as a model."""
    if (path.parent / "results.json").is_file():
        return (f"{path.parent} is a croma benchmark results folder (a table, no model): train its croma row as a "
                f"model with 'croma train ... --config {path.parent / 'results.json'} --checkpoint-dir DIR', then use DIR")
    return f"checkpoint {path} not found (train first with 'croma train ... --checkpoint-dir {path.parent}')"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises:
        CromaError: the file is missing, unreadable, or not a croma checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CromaError(missing_checkpoint(path))
    try:
        import warnings

        with warnings.catch_warnings():  # e.g. torch's pickle-protocol notice: the error line says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle errors, truncated files, unsafe content
        from croma.errors import torch_load_problem

        raise CromaError(f"checkpoint {path} could not be read safely: {torch_load_problem(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise CromaError(f"{path} is not a croma checkpoint (expected format {FORMAT!r})")
    validate_checkpoint(ckpt, path)
    return ckpt


_HEAD_INITS = ("meta", "zero", "prototype", "auto")


def validate_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Check a loaded checkpoint against the layout in the module docstring.

    Raises:
        CromaError: naming the file and the first field that is missing, wrongly typed, or (for
            parameters) not a finite floating-point tensor.
    """

    def bad(what: str) -> CromaError:
        return CromaError(f"{path}: malformed croma checkpoint: {what} (re-create it with 'croma train')")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    model = ckpt.get("model")
    if not isinstance(model, dict) or not model:
        raise bad(f"'model' must be a non-empty dict of parameter tensors (got {type(model).__name__})")
    for name, t in model.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise bad(f"parameter {name!r} is not a floating-point tensor")
        if not bool(torch.isfinite(t).all()):
            raise bad(f"parameter {name!r} holds NaN or infinite values (a diverged run; use an earlier checkpoint)")
    config = ckpt.get("config", {})  # required where a run is rebuilt: see train_config
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise bad(f"'config' must be a dict of training settings (got {type(config).__name__})")
    it = ckpt.get("iteration", 0)
    if not is_int(it) or it < 0:
        raise bad(f"'iteration' must be an integer >= 0 (got {it!r})")
    for key in ("best_val",):
        if ckpt.get(key) is not None and not is_num(ckpt[key]):
            raise bad(f"{key!r} must be a finite number or None (got {ckpt[key]!r})")
    if ckpt.get("best_iteration") is not None and not (is_int(ckpt["best_iteration"]) and ckpt["best_iteration"] >= 0):
        raise bad(f"'best_iteration' must be an integer >= 0 or None (got {ckpt['best_iteration']!r})")
    if ckpt.get("head_init") is not None and ckpt["head_init"] not in _HEAD_INITS:
        raise bad(f"'head_init' must be one of {', '.join(_HEAD_INITS)} (got {ckpt['head_init']!r})")
    hs = ckpt.get("head_scores")
    if hs is not None and not (isinstance(hs, dict) and all(isinstance(k, str) and isinstance(v, (int, float))
                                                              and not isinstance(v, bool) for k, v in hs.items())):
        raise bad("'head_scores' must be a dict of numbers or None")
    hist = ckpt.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
        raise bad("'history' must be a list of dicts")
    if ckpt.get("kind") is not None and ckpt["kind"] not in ("last", "best"):
        raise bad(f"'kind' must be 'last' or 'best' (got {ckpt['kind']!r})")
    rid = ckpt.get("run_id")
    if rid is not None and not (isinstance(rid, str) and 0 < len(rid) <= 64 and all(c in "0123456789abcdef" for c in rid)):
        raise bad(f"'run_id' must be up to 64 lowercase hex digits or absent (got {rid!r:.80})")


def check_parameters(params: Mapping[str, Any], expected: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise CromaError naming ``path`` when ``params`` (a checkpoint's ``model``) does not have
    exactly the names and shapes of ``expected`` (the model's parameters)."""
    diff = sorted(set(params) ^ set(expected))
    if diff:
        raise CromaError(f"{path}: parameters do not match the model its config describes "
                         f"(names differ: {', '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})")
    for k, v in expected.items():
        if tuple(params[k].shape) != tuple(v.shape):
            raise CromaError(f"{path}: parameter {k!r} has shape {tuple(params[k].shape)}, the model "
                             f"its config describes needs {tuple(v.shape)}")


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


def train_config(ckpt: Mapping[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The :class:`croma.config.TrainConfig` stored in a checkpoint, type-checked and validated.

    The stored ``config`` may be nested (sections) or flat (checkpoints written before the
    sections existed); every setting must have its type (integers for counts, numbers for rates,
    text for names, ...) and no key may be unknown.

    Raises:
        CromaError: naming the file and the setting.
    """
    stored = ckpt.get("config")
    if not isinstance(stored, dict) or "iteration" not in ckpt:
        what = "no 'iteration'" if isinstance(stored, dict) else f"'config' must be a dict of training settings (got {type(stored).__name__})"
        raise CromaError(f"{path}: malformed croma checkpoint: {what} (re-create it with 'croma train')")
    try:
        cfg = TrainConfig.from_dict(stored)
        cfg.check_types("config")
    except (TypeError, ValueError) as exc:
        raise CromaError(f"{path}: malformed croma checkpoint: {exc}") from exc
    try:
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise CromaError(f"{path}: malformed croma checkpoint: stored config is invalid ({exc})") from exc
    return cfg


class Checkpointer:
    """``last.pt`` and ``best.pt`` of one run directory.

    Args:
        run_dir: the directory (None: no files are written or read).
        cfg: the run's configuration (stored in every checkpoint; compared on resume).
        is_writer: only the writer (rank 0) writes.
    """

    def __init__(self, run_dir: str | os.PathLike | None, cfg: TrainConfig, *, is_writer: bool = True) -> None:
        self.dir = Path(run_dir) if run_dir else None
        self.cfg = cfg
        self.is_writer = is_writer
        self.run_id: str | None = None  # stored in every checkpoint written (croma.runlock)
        self.serving: dict[str, Any] | None = None  # croma.runmodel.serving_card of the run's benchmark

    def path(self, name: str) -> Path | None:
        """``<run_dir>/<name>`` (None without a run directory)."""
        return self.dir / name if self.dir is not None else None

    def state(self, kind: str, theta: Mapping[str, torch.Tensor], progress: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint payload. ``progress``: ``iteration``, ``epsilon_next``, ``best_val``,
        ``best_iteration``, ``head_init``, ``head_scores``, ``history``."""
        return {
            "format": FORMAT,
            "kind": kind,
            "model": {k: v.detach().cpu().clone() for k, v in theta.items()},
            "iteration": int(progress["iteration"]),
            "config": self.cfg.to_dict(),
            "rng": {
                "torch_cpu": torch.get_rng_state(),
                "task_seed": torch.tensor([int(self.cfg.seed)], dtype=torch.long),
            },
            "outer_state": {
                "epsilon_next": torch.tensor(float(progress["epsilon_next"]), dtype=torch.float64),
                "iteration": torch.tensor(int(progress["iteration"]), dtype=torch.long),
            },
            "best_val": progress.get("best_val"),
            "best_iteration": progress.get("best_iteration"),
            "head_init": progress.get("head_init", self.cfg.head_init),
            "head_scores": progress.get("head_scores"),
            "history": [dict(h) for h in progress.get("history", [])],
            # the family losses summed since the last history entry (non-empty only in a checkpoint
            # written between entries, croma.fit.CHECKPOINT_SECONDS): a resumed history is the same
            **({"acc": {k: [float(x) for x in v] for k, v in progress["acc"].items()}} if progress.get("acc") else {}),
            **self._serving(progress),
            **({"run_id": self.run_id} if self.run_id else {}),
        }

    def _serving(self, progress: Mapping[str, Any]) -> dict[str, Any]:
        """``{"serving": card}`` (the front-end, split and data identity, plus meta-val's
        fine-tuning choice) when the trainer set one; see :mod:`croma.runmodel`."""
        if self.serving is None:
            return {}
        from croma.runcard import finetune_choice

        return {"serving": {**self.serving, "finetune": finetune_choice(self.cfg, progress.get("head_init", self.cfg.head_init))}}

    def save(self, kind: str, theta: Mapping[str, torch.Tensor], progress: Mapping[str, Any]) -> None:
        """Write ``<kind>.pt`` atomically (nothing without a run directory or when not the writer)."""
        path = self.path(f"{kind}.pt")
        if path is not None and self.is_writer:
            save_checkpoint(path, self.state(kind, theta, progress))

    def last_good(self) -> str:
        """Where the last good state is, for error messages ("" without a run directory)."""
        last = self.path("last.pt")
        if last is None:
            return ""
        if last.is_file():
            return f"; the last good checkpoint {last} is intact"
        return f"; no checkpoint was written to {last.parent} yet"

    def load_resume(self, template: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, Any] | None:
        """The state stored in ``last.pt`` (and ``best.pt`` when meta-val selected one) as
        ``{"theta", "best_theta" (or None), "iteration", "best_val", "best_iteration",
        "head_init", "head_scores", "history"}``; None when there is no ``last.pt``.

        Raises:
            CromaError: the checkpoint was made with different settings (named), its parameters
            do not fit ``template``, or the selected ``best.pt`` is missing.
        """
        last = self.path("last.pt")
        if last is None or not last.is_file():
            return None
        ckpt = load_checkpoint(last)
        stored = train_config(ckpt, last).flat()
        mine = self.cfg.flat()
        diff = [k for k in mine if k not in RUNTIME_FIELDS and stored.get(k) != mine[k]]
        if diff:
            k = diff[0]
            raise CromaError(
                f"cannot --resume {last}: it was trained with {k}={stored.get(k)!r}, not {mine[k]!r} "
                f"(pass the same settings, or a new --checkpoint-dir)"
            )
        check_parameters(ckpt["model"], template, last)

        def params(model: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: model[k].to(device=device, dtype=v.dtype) for k, v in template.items()}

        out = {"theta": params(ckpt["model"]), "best_theta": None, "iteration": int(ckpt["iteration"]),
               "best_val": ckpt.get("best_val"), "best_iteration": ckpt.get("best_iteration"),
               "head_init": ckpt.get("head_init", self.cfg.head_init), "head_scores": ckpt.get("head_scores"),
               "history": list(ckpt.get("history", [])), "run_id": ckpt.get("run_id"),
               "acc": {k: list(v) for k, v in dict(ckpt.get("acc") or {}).items()}}
        best = self.path("best.pt")
        if out["best_val"] is not None and (best.is_file() or self.is_writer):
            if not best.is_file():
                raise CromaError(
                    f"cannot --resume {last}: meta-val selected iteration {out['best_iteration']} but {best} is missing, "
                    f"so the selected parameters are lost (restore {best.name}, or start a new --checkpoint-dir)"
                )
            b = load_checkpoint(best)
            check_parameters(b["model"], template, best)
            out["best_theta"] = params(b["model"])
        return out
