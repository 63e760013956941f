"""The ``croma`` command line: thin parsers that build configs and call the library.

Each subcommand lives in its own module in this package and exposes
``add_parser(subparsers)``; the parser it adds sets ``func`` to a handler
``(args) -> int``. Library exceptions become one line ``error: ...`` and exit
code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from croma import __version__

SUBCOMMANDS = ("losses", "data", "train", "evaluate", "benchmark", "bench")


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="croma",
        description="Cross-modal few-shot generalization by meta-alignment (CROMA).",
    )
    parser.add_argument("--version", action="version", version=f"croma {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"croma.cli.{name}")
        module.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from croma.errors import CromaError
    from episodes.errors import DataError

    return (CromaError, DataError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
