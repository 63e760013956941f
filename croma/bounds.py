"""One table of ranges and one type check for every setting, whichever way it comes in.

Flags (:func:`croma.cli.check_numbers`), settings files, a ``results.json``, a checkpoint's stored
configuration and the Python API (:class:`~croma.config.TrainConfig`,
:class:`~croma.evaluate.EvalConfig`, :class:`~croma.benchmark_config.BenchmarkConfig`) all reach
:func:`check_value`: the type the dataclass field declares (a count is an ``int``, not ``"8"``,
``8.0`` or ``True``; a rate a finite number; a flag ``true``/``false``, never ``"no"``) and the range
:data:`BOUNDS` gives for the setting's name. One line names the setting as its flag.

Maxima keep memory and time bounded one setting at a time (``hidden = 16384`` is a 16384 x 16384
float32 layer, 1 GiB). Products of in-range sizes can still exceed the machine: :func:`train_memory`
and :func:`eval_memory` give a lower bound of what a run allocates (its largest tensors, from the
settings alone: feature sizes are not known before the data is loaded), and :func:`check_memory`
refuses a run whose lower bound exceeds this machine's memory, naming the sizes.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import fields
from typing import Any, Mapping

__all__ = ["BOUNDS", "INT64_MAX", "WEEK_S", "range_text", "check_value", "check_dataclass", "machine_memory",
           "train_memory", "eval_memory", "check_memory", "format_bytes"]

INT64_MAX = 2**63 - 1
WEEK_S = 7 * 24 * 3600.0

# setting / flag destination -> (low, low inclusive, high, high inclusive); one table for the flags
# of every subcommand (croma.cli.NUMERIC_BOUNDS is this table) and for every configuration class.
BOUNDS: dict[str, tuple[float, bool, float, bool]] = {
    "seed": (0, True, 2**62, True),  # headroom for derived seeds (seed + k) in 64-bit tensors
    "iterations": (1, True, 10**9, True),  # as budget_steps: a time-budgeted method runs "unlimited" 10**9
    "stop_after": (1, True, 10**9, True),
    "budget_steps": (1, True, 10**9, True),
    "train_seeds": (1, True, 100, True),
    "jobs": (1, True, 1024, True),  # croma benchmark's worker processes
    "meta_batch": (1, True, 65536, True),
    "task_mix": (0.0, True, 1.0, True),
    "task_weights": (0.0, True, 1e9, True),  # each family's weight (relative; the sum stays finite)
    "inner_steps": (1, True, 10000, True),
    "task_chunk": (0, True, 65536, True),
    "inner_lr": (0.0, False, 1e4, True),
    "meta_lr": (0.0, False, 1e4, True),
    "meta_lr_final": (0.0, True, 1e4, True),
    "finetune_lr": (0.0, False, 1e4, True),
    "ordinary_lr": (0.0, False, 1e4, True),
    "ordinary_batch": (2, True, 10**6, True),
    "align_weight": (0.0, True, 1e4, True),
    "confusion_weight": (0.0, True, 1e4, True),
    "prototype_scale": (0.0, False, 1e4, True),
    "ways": (2, True, 1000, True),
    "shots": (1, True, 1000, True),
    "eval_shots": (1, True, 1000, True),
    "queries": (0, True, 1000, True),
    "eval_queries": (1, True, 1000, True),  # meta-val / meta-test queries per class (at least one)
    "align_batch": (2, True, 65536, True),
    "eval_every": (0, True, 10**8, True),
    "eval_tasks": (1, True, 100000, True),
    "val_episodes": (1, True, 100000, True),  # meta-val episodes per candidate fine-tuning setting
    "repeats": (1, True, 10000, True),
    "retrieval_gallery": (2, True, 10**6, True),
    "finetune_steps": (0, True, 100000, True),
    "checkpoint_every": (0, True, 10**8, True),
    "embed_dim": (1, True, 16384, True),
    "hidden": (1, True, 16384, True),
    "dim": (1, True, 16384, True),
    "sizes": (2, True, 16384, True),
    "threads": (1, True, 1024, True),
    "nproc": (1, True, 1024, True),
    "dist_timeout": (0.0, False, WEEK_S, True),
    "budget_seconds": (0.0, False, WEEK_S, True),
    "time_budget_s": (0.0, False, 52 * WEEK_S, True),
    "label_noise": (0.0, True, 1.0, False),
    "split_classes": (1, True, 100000, True),  # each of TRAIN,VAL,TEST
}


def range_text(bound: tuple[float, bool, float, bool], integer: bool) -> str:
    """``[1, 65536]``, ``(0, 10000]``, ``[0, 1)``."""
    lo, lo_in, hi, hi_in = bound
    fmt = (lambda v: str(int(v))) if integer else (lambda v: f"{v:g}")
    return f"{'[' if lo_in else '('}{fmt(lo)}, {fmt(hi)}{']' if hi_in else ')'}"


def _in(v: float, bound: tuple[float, bool, float, bool]) -> bool:
    lo, lo_in, hi, hi_in = bound
    return (v > lo or (lo_in and v == lo)) and (v < hi or (hi_in and v == hi))


def _what(hint: Any, bound: tuple[float, bool, float, bool] | None) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_what(a, bound) for a in inner)
        return f"{text} or None" if len(inner) < len(args) else text
    if hint is bool:
        return "true or false"
    if hint is int:
        return f"an integer in {range_text(bound, True)}" if bound else "an integer"
    if hint is float:
        return f"a finite number in {range_text(bound, False)}" if bound else "a finite number"
    if hint is str:
        return "text"
    if origin in (list, tuple):
        each = _what(args[0], bound) if args else "anything"
        each = {"an integer": "integers", "text": "names", "a finite number": "finite numbers"}.get(each, each)
        for a, b in (("an integer in", "integers in"), ("a finite number in", "finite numbers in")):
            each = each.replace(a, b)
        return f"a list of {each}"
    if origin is dict or hint is dict:
        val = _what(args[1], bound) if len(args) == 2 else "anything"
        return f"a table of {{name: {val}}}"
    return getattr(hint, "__name__", str(hint))


def _ok(v: Any, hint: Any, bound: tuple[float, bool, float, bool] | None) -> bool:
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_ok(v, a, bound) for a in args)
    if hint is type(None):
        return v is None
    if hint is bool:
        return isinstance(v, bool)
    if hint is int:
        return isinstance(v, int) and not isinstance(v, bool) and (bound is None or _in(v, bound))
    if hint is float:
        return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (bound is None or _in(v, bound)))
    if hint is str:
        return isinstance(v, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(v, (list, tuple)) and (not args or all(_ok(x, args[0], bound) for x in v))
    if origin is dict or hint is dict:
        return isinstance(v, Mapping) and (len(args) != 2 or all(
            _ok(k, args[0], None) and _ok(x, args[1], bound) for k, x in v.items()))
    return isinstance(v, hint) if isinstance(hint, type) else True


def _shown(v: Any) -> str:
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def check_value(value: Any, hint: Any, flag: str, bound_name: str | None = None) -> None:
    """Raise ValueError ``FLAG must be WHAT (got V)`` unless ``value`` has type ``hint`` (a field's
    type hint: ``int``, ``float | None``, ``list[int]``, ``dict[str, float]``, ...) and lies in
    ``BOUNDS[bound_name]`` (each element for lists and tables)."""
    bound = BOUNDS.get(bound_name) if bound_name else None
    if _ok(value, hint, bound):
        return
    inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    if len(inner) == 1 and typing.get_origin(inner[0]) is dict and isinstance(value, Mapping):
        key_hint, val_hint = typing.get_args(inner[0]) or (str, Any)
        for k, x in value.items():  # name the entry: --task-weights align must be ...
            if not _ok(k, key_hint, None):
                raise ValueError(f"{flag}: the names must be {_what(key_hint, None)} (got {_shown(k)})")
            if not _ok(x, val_hint, bound):
                raise ValueError(f"{flag} {k} must be {_what(val_hint, bound)} (got {_shown(x)})")
    raise ValueError(f"{flag} must be {_what(hint, bound)} (got {_shown(value)})")


def flag_of(name: str) -> str:
    """``meta_batch`` -> ``--meta-batch``."""
    return "--" + name.replace("_", "-")


def check_dataclass(obj: Any, *, names: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None,
                    bounds: Mapping[str, str] | None = None, cls: type | None = None) -> None:
    """:func:`check_value` for every field of the dataclass instance ``obj`` (or of ``cls``, reading
    ``obj[name]`` from a mapping): its declared type and its range in :data:`BOUNDS`.

    Args:
        names: field -> the setting's public name (default: the field's name).
        flags: public name -> the flag that names it in errors (default ``--public-name``).
        bounds: public name -> its :data:`BOUNDS` entry (default: the public name's own, if any).
    """
    cls = cls or type(obj)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        name = (names or {}).get(f.name, f.name)
        if isinstance(obj, Mapping) and f.name not in obj:
            continue
        value = obj[f.name] if isinstance(obj, Mapping) else getattr(obj, f.name)
        bound = (bounds or {}).get(name, name if name in BOUNDS else None)
        check_value(value, hints[f.name], (flags or {}).get(name, flag_of(name)), bound)


# ------------------------------------------------------------------ memory a product of sizes implies
def machine_memory(device: str = "cpu") -> tuple[int, str] | None:
    """``(bytes, "GPU" | "machine")``: the memory a run on ``device`` can use: the GPU's for
    ``cuda`` (``auto`` with a GPU), else this machine's physical memory; None when unknown."""
    try:
        import torch

        if device != "cpu" and torch.cuda.is_available() and (device == "auto" or device.startswith("cuda")):
            index = int(device.split(":")[1]) if ":" in device else 0
            return int(torch.cuda.get_device_properties(index).total_memory), "GPU"
    except Exception:  # noqa: BLE001 - no usable GPU description: fall back to the host's memory
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES")), "machine"
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    """``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # pragma: no cover


def eval_memory(tasks: int, ways: int, shots: int, queries: int) -> tuple[float, str]:
    """``(bytes, sizes)``: one meta-val / meta-test call gathers ``tasks x ways x (shots + queries)``
    items at once (their int64 row indices and at least one float32 per item), and fine-tunes
    chunks of episodes (:data:`croma.finetune.CHUNK`)."""
    items = float(tasks) * ways * (shots + queries)
    return items * (8 + 4), f"eval tasks={tasks} x ways={ways} x (shots={shots} + queries={queries}) items"


def train_memory(cfg: Any) -> tuple[float, str]:
    """``(bytes, sizes)``: a lower bound of what one outer step of the :class:`~croma.config.TrainConfig`
    ``cfg`` allocates: the tasks of a batched chunk (``task_chunk``, all of a family's tasks when 0;
    one at a time with the sequential loop) each hold a copy of the parameters every encoder has
    (the ``embed_dim x embed_dim`` alignment layer and the classifier) with their gradient and,
    with Adam, two moments, plus their items' embeddings; the meta-batch's items are gathered too."""
    e = int(cfg.model.get("embed_dim", 128))
    chunk = 1 if cfg.inner_loop in ("sequential", "higher") else (
        cfg.meta_batch if cfg.task_chunk == 0 else min(cfg.task_chunk, cfg.meta_batch))
    items = max(cfg.ways * (cfg.shots + cfg.queries), cfg.align_batch)
    params = float(e) * e + e * (cfg.ways + 2)
    copies = 4 if cfg.inner_optimizer == "adam" else 2
    need = chunk * (copies * params + 2 * items * e) * 4 + float(cfg.meta_batch) * items * (8 + 4)
    sizes = (f"meta_batch={cfg.meta_batch} (task_chunk={cfg.task_chunk}) x ways={cfg.ways} x (shots={cfg.shots} + "
             f"queries={cfg.queries}) / align_batch={cfg.align_batch} x embed_dim={e} (inner optimizer "
             f"{cfg.inner_optimizer})")
    return need, sizes


def check_memory(need: float, sizes: str, device: str, advice: str, *, what: str = "these settings") -> None:
    """Raise ValueError when ``need`` bytes exceed this machine's memory for ``device``; remember
    ``sizes`` for an out-of-memory error later (:func:`croma.errors.out_of_memory_message`)."""
    from croma.errors import note_sizes

    note_sizes(what, sizes)
    mem = machine_memory(device)
    if mem is not None and need > mem[0]:
        have, where = mem
        raise ValueError(f"{what} need at least {format_bytes(need)} of memory ({sizes}), more than this {where}'s "
                         f"{format_bytes(have)}: {advice}")


# ------------------------------------------------------------------ TrainConfig's settings
# flat setting -> its flag where that is not --flat-name; flat setting -> its BOUNDS entry where the names differ
TRAIN_FLAGS = {"algorithm": "--outer", "val_label_noise": "--label-noise", "encoders": "--encoder",
               "backbones": "--backbone"}
TRAIN_BOUNDS = {"val_label_noise": "label_noise"}


def check_train_types(cfg: Any, flat: Mapping[str, tuple[str, str]], sections: Mapping[str, type],
                      where: str | None = None) -> None:
    """Type and range of every setting of the :class:`~croma.config.TrainConfig` ``cfg`` (``flat``,
    ``sections``: :data:`croma.config.FLAT`, :data:`croma.config.SECTIONS`) and of its ``model``
    settings (:class:`~croma.model.ModelConfig` types). ``where``: a prefix for the message
    (``config`` for a checkpoint's stored settings, where tensors are refused too)."""
    from croma.model import ModelConfig

    inverse = {v: k for k, v in flat.items()}
    try:
        for sec, cls in sections.items():
            check_dataclass(getattr(cfg, sec), names={f.name: inverse[(sec, f.name)] for f in fields(cls)},
                            flags=TRAIN_FLAGS, bounds=TRAIN_BOUNDS)
        if not isinstance(cfg.model, Mapping):
            raise ValueError(f"--model must be a table of model settings (got {_shown(cfg.model)})")
        known = {f.name for f in fields(ModelConfig)} - {"num_classes"}
        check_dataclass({k: v for k, v in cfg.model.items() if k in known}, cls=ModelConfig, flags=TRAIN_FLAGS)
        if where is not None:  # a checkpoint's settings are plain values (croma.config.plain)
            import torch

            for name in ("loss_hp", "task_weights", "backbones"):
                if any(isinstance(v, torch.Tensor) for v in (getattr(cfg, name) or {}).values()):
                    raise ValueError(f"{flag_of(name)} must hold plain values, not tensors")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}" if where else str(exc)) from None


# ------------------------------------------------------------------ EvalConfig's settings
EVAL_FLAGS = {"tasks": "--eval-tasks"}
EVAL_BOUNDS = {"tasks": "eval_tasks", "queries": "eval_queries"}


def check_eval(cfg: Any, head_inits: tuple[str, ...], finetune_modes: tuple[str, ...]) -> None:
    """Types, :data:`BOUNDS`, choices and the memory of one call of the
    :class:`~croma.evaluate.EvalConfig` ``cfg`` (named as ``croma evaluate``'s flags)."""
    check_dataclass(cfg, flags=EVAL_FLAGS, bounds=EVAL_BOUNDS)
    if not cfg.shots:
        raise ValueError(f"--shots must be a list of one or more integers in {range_text(BOUNDS['shots'], True)} "
                         f"(got {cfg.shots})")
    for name, choices in (("split", ("meta_test", "meta_val")), ("head_init", head_inits),
                          ("finetune", finetune_modes), ("inner_loop", ("batched", "sequential"))):
        if getattr(cfg, name) not in choices:
            raise ValueError(f"{flag_of(name)} must be one of {', '.join(choices)} (got {getattr(cfg, name)!r})")
    need, sizes = eval_memory(cfg.tasks, cfg.ways, max(cfg.shots), cfg.queries)
    check_memory(need, sizes, "cpu", "lower --eval-tasks, --ways, --shots or --queries", what=cfg.split)


def check_objective(loss: str, hp: Mapping[str, Any]) -> None:
    """Build the objective ``loss`` with ``hp`` (each objective's own ranges,
    :class:`croma.losses.registry.HyperRange`); ValueError ``--loss-hp KEY=VALUE: ...``."""
    from croma.losses import get_loss, list_losses
    from croma.losses.registry import HyperParameterError

    if loss not in list_losses():
        raise ValueError(f"--loss must be one of {', '.join(list_losses())} (a plugin's objective: load it with "
                         f"CROMA_PLUGINS) (got {_shown(loss)})")
    try:
        get_loss(loss, **hp)
    except (TypeError, ValueError) as exc:
        what = f"{exc.key}={exc.value!r}" if isinstance(exc, HyperParameterError) else f"(--loss {loss})"
        raise ValueError(f"--loss-hp {what}: {exc}") from None
