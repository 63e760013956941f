"""`croma bench losses|meta|eval`: speed benchmarks that print figures (one module per target)."""

from __future__ import annotations

import importlib

TARGETS = {"losses": "croma.cli.bench_losses", "meta": "croma.cli.bench_meta", "eval": "croma.cli.bench_eval"}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (objectives, meta-learning, evaluation)")
    inner = p.add_subparsers(dest="bench_target", metavar="TARGET", parser_class=type(p))
    inner.required = True
    for name, modname in TARGETS.items():
        importlib.import_module(modname).add_parser(inner)
