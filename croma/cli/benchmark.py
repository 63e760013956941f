"""`croma benchmark` (filled by its issue)."""

from __future__ import annotations

from croma.errors import CromaError


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="benchmark (not yet available)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise CromaError("'croma benchmark' is not implemented yet")
