"""`croma bench losses` (filled by its issue)."""

from __future__ import annotations

from croma.errors import CromaError


def add_parser(sub) -> None:
    p = sub.add_parser("losses", help="losses speed benchmark")
    p.set_defaults(func=run)


def run(args) -> int:
    raise CromaError("'croma bench losses' is not implemented yet")
