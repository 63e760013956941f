"""``KEY=VALUE`` flag values (``--loss-hp``, ``--task-weights``, ``--method-hp``): parsing shared by
the commands; re-exported by :mod:`croma.config`."""

from __future__ import annotations

import json
from typing import Any


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.1"`` -> 0.1, ``"true"`` -> True, ``"none"`` -> None, JSON lists/objects;
    anything else stays text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
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
            out[k.strip()] = parse_value(v.strip())
    return out
