"""The ``croma`` command line: thin parsers that build configs and call the library.

Each subcommand lives in its own module in this package and exposes
``add_parser(subparsers)``; the parser it adds sets ``func`` to a handler
``(args) -> int``. Library exceptions become one line ``error: ...`` and exit
code 2 (``--debug`` shows the traceback).

Numeric flags are checked in one place, before any work: every ``int`` / ``float`` flag of every
subcommand must be finite and lie in the range :data:`NUMERIC_BOUNDS` gives for its name (the range
is appended to its ``--help`` text as ``range [LO, HI]``); flags without an entry must still be finite and fit in 64
bits. ``OSError`` (a read-only or full disk, a path that is a file where a folder belongs) becomes
the same one-line error naming the path.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
from typing import Iterator, Sequence

from croma import __version__
from croma.bounds import BOUNDS, INT64_MAX, WEEK_S  # noqa: F401 - INT64_MAX, WEEK_S re-exported

SUBCOMMANDS = ("losses", "data", "train", "evaluate", "predict", "embed", "benchmark", "bench", "cache", "report")

# flag destination -> (low, low inclusive, high, high inclusive): croma.bounds.BOUNDS, one table for
# every subcommand and for settings from files, results.json and the Python API (with their types).
# Maxima keep memory and time bounded (e.g. --hidden 16384 is a 16384 x 16384 float32 layer, 1 GiB).
NUMERIC_BOUNDS = BOUNDS


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {self.prog}: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


PLUGIN_GROUP = "croma.plugins"  # the entry-point group an installed package registers its plugins under


def _import_plugin(where: str, name: str, load) -> None:
    """``load()`` (the import of plugin ``name``, from ``where``), a failure turned into one
    :class:`CromaError` line naming both."""
    from croma.errors import CromaError

    try:
        load()
    except Exception as exc:  # noqa: BLE001 - any failure of a user's module: one line naming it
        raise CromaError(f"{where}: cannot import {name!r} ({type(exc).__name__}: {exc})") from exc
    except (SystemExit, KeyboardInterrupt) as exc:  # a plugin that exits (or is interrupted) on import
        from episodes.signals import Terminated

        if isinstance(exc, Terminated):  # SIGTERM / SIGHUP: end as signals do
            raise
        stopped = f"it called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else "KeyboardInterrupt"
        raise CromaError(f"{where}: importing {name!r} stopped ({stopped}); croma did not start") from None


def load_plugins() -> list[str]:
    """Import the plugins of installed packages (entry points of the group ``croma.plugins``) and
    the modules named in ``$CROMA_PLUGINS`` (comma-separated, e.g. ``mylab.objectives``; they must be
    importable: installed, or on ``PYTHONPATH``), so that what they register (objectives, encoders,
    data sets, methods, task families, outer algorithms, backbones) appears in every choice list of
    the command line.

    Each entry point names a module, imported as a ``$CROMA_PLUGINS`` module is (what it
    registers at import time is the plugin). In the plugin package's ``pyproject.toml``::

        [project.entry-points."croma.plugins"]
        objectives = "mylab.objectives"

    Returns:
        What was loaded, in order: each entry point's value, then each ``$CROMA_PLUGINS`` module.

    Raises:
        CromaError: a plugin that cannot be imported (named, with the reason), in one line.
    """
    import os
    from importlib.metadata import entry_points

    loaded = []
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: (e.name, e.value)):
        dist = f" of {ep.dist.name}" if getattr(ep, "dist", None) is not None else ""
        _import_plugin(f"entry point {ep.name!r}{dist} (group {PLUGIN_GROUP})", ep.value, ep.load)
        loaded.append(ep.value)
    for name in [n.strip() for n in os.environ.get("CROMA_PLUGINS", "").split(",") if n.strip()]:
        _import_plugin("CROMA_PLUGINS", name, lambda: importlib.import_module(name))
        loaded.append(name)
    return loaded


def build_parser() -> argparse.ArgumentParser:
    load_plugins()
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
    for _, action in numeric_actions(parser):
        if action.help != argparse.SUPPRESS:
            action.help = f"{action.help}; range {_range_text(action)}" if action.help else f"range {_range_text(action)}"
    return parser


def numeric_actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.Action]]:
    """``(subcommand path, action)`` for every ``int`` / ``float`` option of ``parser`` and its subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield from numeric_actions(sp, path + (name,))
        elif action.option_strings and action.type in (int, float):
            yield path, action


def _bounds(action: argparse.Action) -> tuple[float, bool, float, bool]:
    if action.dest in NUMERIC_BOUNDS:
        return NUMERIC_BOUNDS[action.dest]
    if action.type is int:
        return (-INT64_MAX - 1, True, INT64_MAX, True)
    return (-math.inf, False, math.inf, False)


def _range_text(action: argparse.Action) -> str:
    lo, lo_in, hi, hi_in = _bounds(action)
    if action.dest not in NUMERIC_BOUNDS:
        return "a 64-bit integer" if action.type is int else "a finite number"
    fmt = (lambda v: str(int(v))) if action.type is int else (lambda v: f"{v:g}")
    return f"{'[' if lo_in else '('}{fmt(lo)}, {fmt(hi)}{']' if hi_in else ')'}"


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Raise ValueError naming the flag when a parsed numeric flag is non-finite or out of range.

    Messages: ``--FLAG must be >= LO (got V)``, ``--FLAG must be <= HI (got V)``, ``--FLAG must be
    in [LO, HI) (got V)``, ``--FLAG must be a finite number (got nan)``; ``must all be`` for lists.
    """
    if not hasattr(args, "given"):
        from croma.cli.config_flags import unwrap_defaults

        unwrap_defaults(args)
    seen: set[str] = set()
    for _, action in numeric_actions(parser):
        if action.dest in seen or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value is action.default:
            continue
        seen.add(action.dest)
        flag = max(action.option_strings, key=len)
        values = value if isinstance(value, (list, tuple)) else [value]
        each = "all " if isinstance(value, (list, tuple)) else ""
        lo, lo_in, hi, hi_in = _bounds(action)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{flag} must {each}be a finite number in {_range_text(action)} (got {v})")
            if v < lo or (v == lo and not lo_in):
                what = f">= {lo:g}" if lo_in else f"> {lo:g}"
                if action.type is int:
                    what = f">= {int(lo)}"
                if not hi_in:
                    what = f"in {_range_text(action)}"
                raise ValueError(f"{flag} must {each}be {what} (got {v})")
            if v > hi or (v == hi and not hi_in):
                what = f"<= {int(hi) if action.type is int else f'{hi:g}'}" if hi_in else f"in {_range_text(action)}"
                raise ValueError(f"{flag} must {each}be {what} (got {v})")


# path flags whose empty value ("" from an unset shell variable) would silently mean the current
# folder (Path("") is "."): `croma cache clear --all --cache-dir "$UNSET"` must not clear ./features
PATH_DESTS = ("cache_dir", "data_root", "manifest", "out", "config", "image_weights", "text_model", "audio_model")


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Raise ValueError naming the flag when a path flag of :data:`PATH_DESTS` was given as an empty string."""
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.dest in PATH_DESTS:
                value = getattr(args, action.dest, None)
                if isinstance(value, str) and not value.strip():
                    flag = max(action.option_strings, key=len)
                    raise ValueError(f"{flag} is empty: give a path, or leave the flag out")


def os_error_message(exc: OSError) -> str:
    """One line for an ``OSError``: the path(s) it names and what went wrong."""
    import errno

    what = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG) and exc.filename is not None:
        return f"cannot write {exc.filename2 or exc.filename}: {what}"  # a full disk: the file being written
    if exc.filename is not None and exc.filename2 is not None:
        return f"{exc.filename2}: {what} (writing from {exc.filename})"
    if exc.filename is not None:
        return f"{exc.filename}: {what}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first


def _user_errors() -> tuple[type[BaseException], ...]:
    from croma.errors import CromaError
    from episodes.errors import DataError

    return (CromaError, DataError, OSError, ValueError)


def error_line(exc: BaseException) -> str:
    """The one line ``error: ...`` prints for a user error (no traceback)."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) or (
        isinstance(exc, FileNotFoundError) and exc.filename is not None
    ):
        return os_error_message(exc)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """The ``croma`` command: exit 0, 2 for a user error (one line ``error: ...``), ``128 + N`` when
    signal N ended it (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP: one line ``error: interrupted`` /
    ``error: terminated by SIGTERM``, after the same clean-up; see :mod:`episodes.signals`)."""
    from episodes.signals import raise_on_termination, restore_handlers

    changed = raise_on_termination()
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:  # a signal during start-up or in the error path itself
        return _interrupted(exc)
    finally:
        restore_handlers(changed)


def _interrupted(exc: KeyboardInterrupt) -> int:
    from episodes.signals import Terminated, exit_code

    what = f"terminated by {exc}" if isinstance(exc, Terminated) else "interrupted"
    sys.stderr.write(f"error: {what}\n")
    return exit_code(exc)


@contextlib.contextmanager
def _messages(args: argparse.Namespace) -> Iterator[None]:
    """Messages and progress bars for one command: croma's messages go through the ``croma`` logger
    (:mod:`croma.log`, printed as plain lines); ``--quiet`` keeps errors only and no bars;
    ``--progress`` draws tqdm bars even when stderr is not a terminal (else a line per ~10 %)."""
    from croma.log import quiet
    from episodes.progress import bars

    silent = bool(getattr(args, "quiet", False))
    force = True if getattr(args, "force_progress", False) and not silent else None
    with quiet(silent):
        with bars(force) if force else contextlib.nullcontext():
            yield


def _main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except _user_errors() as exc:  # a CROMA_PLUGINS module that does not import
        sys.stderr.write(f"error: {error_line(exc)}\n")
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from croma.cli.config_flags import unwrap_defaults

    unwrap_defaults(args)  # which flags were given (for --config) and the plain defaults
    try:
        check_numbers(parser, args)
        check_paths(parser, args)
        with _messages(args):
            return int(args.func(args) or 0)
    except _user_errors() as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: {error_line(exc)}\n")
        return 2
    except ModuleNotFoundError as exc:  # an optional package: name the extra that installs it
        from episodes.extras import missing_extra_message

        msg = missing_extra_message(exc)
        if msg is None or args.debug:
            raise
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except (MemoryError, RuntimeError) as exc:  # out of memory: one line naming the run's sizes
        from croma.errors import out_of_memory_message

        msg = out_of_memory_message(exc)
        if msg is None or args.debug:
            raise
        sys.stderr.write(f"error: {msg}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
