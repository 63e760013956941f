"""`croma bench meta` (filled by its issue)."""

from __future__ import annotations

from croma.errors import CromaError


def add_parser(sub) -> None:
    p = sub.add_parser("meta", help="meta speed benchmark")
    p.set_defaults(func=run)


def run(args) -> int:
    raise CromaError("'croma bench meta' is not implemented yet")
