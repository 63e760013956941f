"""``KEY=VALUE`` flag values (``--loss-hp``, ``--task-weights``, ``--method-hp``): parsing shared by
the commands; re-exported by :mod:`croma.config`."""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of lists / tables a setting may have (croma's own need at most 4:
``method_hp.croma.loss_hp.temperature``); deeper input is refused before it can exhaust the stack."""


class NestingError(ValueError):
    """Settings nested deeper than :data:`MAX_DEPTH`."""


def nesting_depth(value: Any) -> int:
    """How deeply lists / dicts nest in ``value`` (0 for a plain value), without recursion."""
    depth, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            depth = max(depth, d + 1)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            depth = max(depth, d + 1)
            stack.extend((x, d + 1) for x in v)
    return depth


def check_depth(value: Any, where: str) -> None:
    """Raise ValueError naming ``where`` when ``value`` nests deeper than :data:`MAX_DEPTH`."""
    if nesting_depth(value) > MAX_DEPTH:
        raise NestingError(f"{where}: settings nested deeper than {MAX_DEPTH} levels (croma's settings need at most 4)")


def loads_json(text: str, where: str) -> Any:
    """``json.loads`` with a deep nesting (a RecursionError) refused as ValueError naming ``where``."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise NestingError(f"{where}: settings nested deeper than {MAX_DEPTH} levels (croma's settings need at "
                         "most 4)") from None
    check_depth(data, where)
    return data


def parse_value(text: str, where: str = "a KEY=VALUE value") -> Any:
    """``"3"`` -> 3, ``"0.1"`` -> 0.1, ``"true"`` -> True, ``"none"`` -> None, JSON lists/objects;
    anything else stays text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return loads_json(text, where)
    except NestingError:
        raise
    except ValueError:
        return text


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["temperature=0.1", "a=1,b=2"]`` -> ``{"temperature": 0.1, "a": 1, "b": 2}``.

    Raises:
        ValueError: an item without ``=``, naming ``flag``.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        for part in [p for p in item.split(",") if p.strip()] if "[" not in item and "{" not in item else [item]:
            if "=" not in part:
                raise ValueError(f"{flag} expects KEY=VALUE (got {part!r})")
            k, v = part.split("=", 1)
            if not k.strip():
                raise ValueError(f"{flag} expects KEY=VALUE (got {part!r})")
            out[k.strip()] = parse_value(v.strip(), f"{flag} {k.strip()}")
    return out
