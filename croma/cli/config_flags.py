"""``--config FILE`` with flags on top, ``--loss-hp KEY=VALUE``, ``--task-weights FAMILY=W``, and
``croma benchmark``'s ``--method-hp METHOD.KEY=VALUE``.

A flag overrides the file only when it was given on the command line. To know which were, the
subcommands that accept ``--config`` wrap their option defaults in :class:`Default` (see
:func:`mark_defaults`); :func:`croma.cli.main` unwraps them after parsing and records the given
destinations in ``args.given`` (:func:`unwrap_defaults`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from typing import Any

__all__ = ["Default", "mark_defaults", "unwrap_defaults", "add_config_flags", "given", "read_config", "benchmark_names",
           "apply_flags", "add_method_hp_flag", "parse_method_hp", "merge_method_hp", "method_hp"]


def benchmark_names() -> list[str]:
    """Names a data-set argument accepts: every registered data set (:func:`episodes.datasets.list_datasets`)."""
    from episodes.datasets import list_datasets

    return list_datasets()


class Default:
    """A parser default, marked so that it can be told apart from the same value given as a flag."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Default) and self.value == other.value

    def __hash__(self) -> int:
        return hash(("croma-default", repr(self.value)))


def mark_defaults(p: argparse.ArgumentParser) -> None:
    """Wrap every option default of ``p`` in :class:`Default` (``None`` defaults and repeatable
    flags stay as they are: ``None`` or an empty list means "not given")."""
    for action in p._actions:
        if not action.option_strings or action.dest in ("help", "config"):
            continue
        if action.default is None or action.default is argparse.SUPPRESS or isinstance(action.default, Default):
            continue
        if isinstance(action, argparse._AppendAction):
            continue
        action.default = Default(action.default)


def unwrap_defaults(args: argparse.Namespace) -> None:
    """Replace :class:`Default` values by their value; ``args.given``: the destinations the
    command line set (values not ``None``, not ``[]``, not defaults)."""
    seen = set()
    for k, v in list(vars(args).items()):
        if isinstance(v, Default):
            setattr(args, k, v.value)
        elif v is not None and v != []:
            seen.add(k)
    args.given = frozenset(seen)


def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether ``--dest`` was given on the command line."""
    return dest in getattr(args, "given", frozenset(vars(args)))


def add_config_flags(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--config``, ``--loss-hp`` and ``--task-weights`` (``what``: the file's kind, for help)."""
    p.add_argument("--config", default=None, metavar="FILE",
                   help=f"read {what} settings from FILE: JSON or TOML (nested sections or flat names as the flags), "
                   "a results.json or a checkpoint (its stored settings"
                   + ("; a croma benchmark results.json gives the settings its croma row was trained with"
                      if what == "training" else "") + "); flags given on the command line override it")
    p.add_argument("--loss-hp", action="append", default=None, metavar="KEY=VALUE",
                   help="hyper-parameter of the alignment objective (repeatable or comma-separated), e.g. "
                   "--loss-hp temperature=0.05; 'croma losses' lists each objective's settings")
    p.add_argument("--task-weights", action="append", default=None, metavar="FAMILY=W",
                   help="meta-batch mix over task families (repeatable or comma-separated; replaces --task-mix), e.g. "
                   "--task-weights align=0.5,source_cls=0.5 (target_recon needs croma train --reconstruction)")


def task_weights(args: argparse.Namespace) -> dict[str, float] | None:
    """``--task-weights`` as ``{family: weight}`` (None when not given).

    Raises:
        ValueError: a weight that is not a finite number >= 0, naming the flag.
    """
    from croma.config import parse_key_values

    if not args.task_weights:
        return None
    raw = parse_key_values(args.task_weights, "--task-weights")
    out = {}
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
            raise ValueError(f"--task-weights {k}: the weight must be a finite number >= 0 (got {v!r})")
        out[k] = float(v)
    return out


def loss_hp(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--loss-hp`` as a dict (None when not given)."""
    from croma.config import parse_key_values

    return parse_key_values(args.loss_hp, "--loss-hp") if args.loss_hp else None


def add_method_hp_flag(p: argparse.ArgumentParser) -> None:
    """``--method-hp`` (``croma benchmark``: per-method hyper-parameters, :func:`parse_method_hp`)."""
    p.add_argument("--method-hp", action="append", default=None, metavar="METHOD.KEY=VALUE",
                   help="a method's own hyper-parameter, merged over the preset's tuned ones for that method "
                   "(repeatable or comma-separated; VALUE as in --loss-hp; dotted keys nest), e.g. "
                   "--method-hp croma.inner_lr=0.001 --method-hp croma.loss_hp.memory=256, or a JSON object "
                   "--method-hp '{\"croma\": {\"inner_lr\": 0.001}}'; merged over --config's method_hp")


def merge_method_hp(base: dict[str, Any] | None, over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in key by key, nested objects (``loss_hp``) too."""
    import copy

    out = copy.deepcopy(dict(base or {}))
    for k, v in over.items():
        out[k] = merge_method_hp(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def parse_method_hp(items: list[str] | None, flag: str = "--method-hp") -> dict[str, dict[str, Any]]:
    """``--method-hp`` items as ``{method: {key: value}}``, merged in order (later wins, nested
    objects merged key by key).

    An item is either ``METHOD.KEY=VALUE`` (comma-separated items allowed; VALUE parsed as
    ``--loss-hp`` values: JSON when it parses, else text; ``METHOD.A.B=V`` sets ``{"A": {"B": V}}``;
    ``METHOD={...}`` a JSON object of the method's settings) or a JSON object ``{"METHOD": {"KEY": VALUE}}``. Method names and keys are checked later
    (:meth:`croma.benchmark_config.BenchmarkConfig.validate`).

    Raises:
        ValueError: an item of neither form, naming ``flag``.
    """
    from croma.config import parse_key_values
    from croma.keyvalues import NestingError, loads_json

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        text = item.strip()
        if text.startswith("{"):
            try:
                data = loads_json(text, flag)
            except NestingError:
                raise
            except ValueError as exc:
                raise ValueError(f"{flag}: not a JSON object ({exc}) (got {text!r})") from None
            if not all(isinstance(v, dict) for v in data.values()):
                raise ValueError(f'{flag} expects a JSON object {{"METHOD": {{"KEY": VALUE}}}} (got {text!r})')
            out = merge_method_hp(out, data)
            continue
        for key, value in parse_key_values([item], flag).items():
            path = key.split(".")
            if not all(path) or (len(path) < 2 and not isinstance(value, dict)):
                raise ValueError(f"{flag} expects METHOD.KEY=VALUE, e.g. croma.inner_lr=0.001 (got {key!r})")
            node: Any = value
            for part in reversed(path):
                node = {part: node}
            out = merge_method_hp(out, node)
    return out


def method_hp(args: argparse.Namespace) -> dict[str, dict[str, Any]] | None:
    """``--method-hp`` as ``{method: {key: value}}`` (None when not given)."""
    items = getattr(args, "method_hp", None)
    return parse_method_hp(items) if items else None


def read_config(path: str | None) -> tuple[dict[str, Any], str]:
    """``(settings, kind)`` of ``--config`` (``({}, "")`` without it; :func:`croma.factory.read_settings`).
    ``kind``: ``results`` for a results.json, ``checkpoint`` for a ``.pt``, ``file`` otherwise."""
    if not path:
        return {}, ""
    from croma.factory import read_settings

    return read_settings(path)


@contextlib.contextmanager
def from_file(args: argparse.Namespace, file: dict[str, Any]):
    """Around a configuration's ``validate()``: a ``ValueError`` that names a flag (``--shots must
    ...``) whose value came from ``--config FILE`` (and not from the command line) says so, as
    ``--config FILE: --shots must ...`` (as ``croma train`` does), so that the user edits the file."""
    try:
        yield
    except ValueError as exc:
        text = str(exc)
        m = re.match(r"--([a-z][a-z0-9-]*)\b", text)
        dest = m.group(1).replace("-", "_") if m else None
        if dest is None or dest not in file or given(args, dest) or not getattr(args, "config", None):
            raise
        raise ValueError(f"--config {args.config}: {text}") from None


def apply_flags(args: argparse.Namespace, settings: dict[str, Any], *, direct: tuple[str, ...], lists: tuple[str, ...],
                name: str | None, label: str) -> dict[str, Any]:
    """Put the flags given on the command line over ``settings`` (defaults and ``--config``), the
    same way for ``croma train`` and ``croma benchmark``.

    ``direct``: destinations that set the setting of the same name (``lists``: those copied as
    lists); ``name``: the data-set argument (``label`` names it in errors); then the front-end
    flags (backbones, model), ``--loss-hp`` (merged over the file's) and ``--task-weights``.

    Raises:
        ValueError: no data set named, or one that is not registered.
    """
    from croma.cli.frontend_flags import frontend_settings

    for dest in direct:  # not given: the file's value, else the default
        if given(args, dest):
            settings[dest] = list(getattr(args, dest)) if dest in lists else getattr(args, dest)
    if name is not None:
        settings["benchmark"] = name
    elif "benchmark" not in settings:
        raise ValueError(f"{label} is required (or --config FILE naming a benchmark)")
    if settings["benchmark"] not in benchmark_names():
        raise ValueError(f"{label} must be one of {', '.join(benchmark_names())} (got {settings['benchmark']!r})")
    front = frontend_settings(args)
    if front["backbones"]:
        settings["backbones"] = front["backbones"]
    if front["model"]:
        settings["model"] = {**settings.get("model", {}), **front["model"]}
    hp = loss_hp(args)
    if hp is not None:
        settings["loss_hp"] = {**settings.get("loss_hp", {}), **hp}
    tw = task_weights(args)
    if tw is not None:
        settings["task_weights"] = tw
    return settings
