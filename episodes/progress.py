"""Progress bars that do not spam log files: one policy for every bar croma and episodes draw.

:func:`progress_bar` takes tqdm's arguments and returns

* a tqdm bar (``tqdm.auto``: a widget in Jupyter) when stderr is a terminal, in a notebook, or
  when bars are forced (:func:`set_bars`, the CLI's ``--progress``);
* otherwise (stderr redirected to a file or a pipe: a batch job's log) a bar that writes one plain
  line per ~10 % instead of carriage-return updates;
* nothing (a disabled bar) when bars are switched off (``set_bars(False)``, ``disable=True``).

The policy is process-wide state set by the command line for the duration of one command; library
callers choose with their own ``progress=`` arguments as before.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any, Iterator

__all__ = ["progress_bar", "set_bars", "bars", "bar_mode"]

_FORCE: bool | None = None  # True: tqdm bars whatever stderr is; False: no bars; None: decide per stream


def set_bars(force: bool | None) -> bool | None:
    """Force bars on (``True``), off (``False``) or back to the automatic choice (``None``);
    returns the previous setting."""
    global _FORCE
    old, _FORCE = _FORCE, force
    return old


@contextlib.contextmanager
def bars(force: bool | None) -> Iterator[None]:
    """:func:`set_bars` for the duration of a ``with`` block."""
    old = set_bars(force)
    try:
        yield
    finally:
        set_bars(old)


def _in_notebook() -> bool:
    from tqdm.auto import tqdm

    return any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)  # tqdm.auto chose the Jupyter widget


def bar_mode(file: Any = None) -> str:
    """``"tqdm"``, ``"lines"`` (one line per ~10 %) or ``"off"`` for a bar written to ``file``
    (default stderr)."""
    if _FORCE is False:
        return "off"
    if _FORCE:
        return "tqdm"
    stream = file if file is not None else sys.stderr
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or odd stream
        tty = False
    if tty or _in_notebook():
        return "tqdm"
    return "lines"


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines (one per redraw)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.last = ""

    def write(self, s: str) -> None:
        line = s.replace("\r", "").strip()
        key = line.split(" | ")[0]  # the count, not the clock: the closing redraw repeats the last line
        if line and key != self.last:
            self.last = key
            self.stream.write(line + "\n")

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.flush()


def progress_bar(iterable: Any = None, **kw: Any):
    """``tqdm(iterable, **kw)`` under the policy above (same arguments, same object)."""
    from tqdm.auto import tqdm

    mode = "off" if kw.get("disable") else bar_mode(kw.get("file"))
    if mode == "off":
        kw["disable"] = True
    elif mode == "lines":
        from tqdm import tqdm as plain

        total = kw.get("total")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        kw.update(file=_Lines(kw.get("file") or sys.stderr), maxinterval=math.inf, dynamic_ncols=False)
        if total:  # a line per ~10 %
            kw.update(mininterval=0, miniters=max(1, math.ceil(total / 10)),
                      bar_format="{desc}: {percentage:3.0f}% ({n_fmt}/{total_fmt}) | {elapsed} elapsed, "
                      "~{remaining} left{postfix}")
        else:  # unknown length: a line a minute
            kw.update(mininterval=60.0, bar_format="{desc}: {n_fmt} | {elapsed} elapsed{postfix}")
        return plain(iterable, **kw)
    return tqdm(iterable, **kw)
