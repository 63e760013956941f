"""`croma losses` (filled by its issue)."""

from __future__ import annotations

from croma.errors import CromaError


def add_parser(sub) -> None:
    p = sub.add_parser("losses", help="losses (not yet available)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise CromaError("'croma losses' is not implemented yet")
