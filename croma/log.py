"""The ``croma`` logger: the library's informational messages, routable like any Python logger.

Library code never prints a message; it calls :func:`info` / :func:`warning`, which log to
``logging.getLogger("croma")``. Unless you configure that logger, the first message installs
croma's own handler, which writes the bare text (no level or time prefix) to ``sys.stderr``
(``sys.stdout`` for the few messages the command line has always printed there), so the command
line and a plain script read as before. In a notebook or an application::

    import logging
    logging.getLogger("croma").setLevel(logging.WARNING)     # silence croma's notes
    croma.log.use_logging()                                  # or: route them to your handlers / root

The command line's ``--quiet`` raises the level to ERROR for the command (no notes, no warnings,
no progress bars) and quiets third-party libraries that croma loads (transformers' messages and
loading bars: :func:`quiet_third_party`). Progress bars follow :mod:`episodes.progress`.
Result tables a command prints are its output, not messages: they do not go through the logger.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

__all__ = ["logger", "info", "warning", "use_logging", "is_quiet", "quiet", "quiet_third_party", "StreamHandler",
           "unit_progress", "unit_note", "UNIT_NOTE_EVERY_S"]

logger = logging.getLogger("croma")


class StreamHandler(logging.Handler):
    """croma's default handler: the message text alone, to the ``sys.stderr`` (or ``sys.stdout``
    when the record says ``croma_stream="stdout"``) of the moment it is emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout if getattr(record, "croma_stream", "stderr") == "stdout" else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's contract: never raise from emit
            self.handleError(record)


_state = {"default": None}  # None: not decided yet; a handler: installed; False: the user routes


def _ensure_handler() -> None:
    if _state["default"] is not None:
        return
    if logger.handlers:  # the user configured the croma logger before its first message
        _state["default"] = False
        return
    h = StreamHandler()
    h.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(h)
    logger.propagate = False  # the text is shown once, not again by a root handler
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    _state["default"] = h


def use_logging(level: int | None = None) -> None:
    """Send croma's messages to the root logger's handlers (``logging.basicConfig``, your
    application's) instead of croma's own stderr handler; optionally set the croma logger's level."""
    h = _state["default"]
    if h:
        logger.removeHandler(h)
    _state["default"] = False
    logger.propagate = True
    if level is not None:
        logger.setLevel(level)
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def info(msg: str, *, stream: str = "stderr") -> None:
    """Log an informational message (a note, a progress line) on the ``croma`` logger."""
    _ensure_handler()
    logger.info(msg, extra={"croma_stream": stream})


def warning(msg: str, *, stream: str = "stderr") -> None:
    """Log a warning (something the user may want to change before a long run)."""
    _ensure_handler()
    logger.warning(msg, extra={"croma_stream": stream})


def is_quiet() -> bool:
    """True when the ``croma`` logger drops informational messages (``--quiet``, or a level above INFO)."""
    _ensure_handler()
    return not logger.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """For the duration of a ``with`` block: croma's messages at ERROR and above only, no progress
    bars (:func:`episodes.progress.set_bars`); nothing changes when ``on`` is false."""
    if not on:
        yield
        return
    from episodes.progress import bars

    _ensure_handler()
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with bars(False):
            yield
    finally:
        logger.setLevel(old)


def quiet_third_party() -> None:
    """When croma is quiet (:func:`is_quiet`), quiet transformers too: errors only, no loading bars
    (its and huggingface_hub's). Called where croma imports transformers, never importing it itself."""
    if not is_quiet():
        return
    mods = sys.modules
    if "transformers" in mods:
        with contextlib.suppress(Exception):
            tl = mods["transformers"].logging
            tl.set_verbosity_error()
            tl.disable_progress_bar()
    if "huggingface_hub" in mods:
        with contextlib.suppress(Exception):
            mods["huggingface_hub"].utils.disable_progress_bars()


#: a running benchmark unit's heartbeat lines (:func:`unit_note`) come at most this often
UNIT_NOTE_EVERY_S = 60.0
_unit: dict = {"label": None, "t0": 0.0, "last": 0.0}


@contextlib.contextmanager
def unit_progress(label: str | None) -> Iterator[None]:
    """For the duration of a ``with`` block (one ``croma benchmark`` unit in a worker process, whose
    progress bars are off): :func:`unit_note` prints ``label note (elapsed)``, e.g. ``[croma] seed 0:
    training: meta-val check 31.2 % (0:05:12 in)``; ``None``: silent."""
    old = dict(_unit)
    now = time.perf_counter()
    _unit.update(label=label, t0=now, last=now)
    try:
        yield
    finally:
        _unit.update(old)


def unit_note(text: str, *, force: bool = False) -> None:
    """A heartbeat line of the running unit (:func:`unit_progress`), at most one per
    :data:`UNIT_NOTE_EVERY_S`; with ``force`` (a change of phase) also sooner, once the unit has run
    that long and a sixth of it has passed since the last line; nothing outside a unit or when croma
    is quiet. For runs of hours (``--preset paper``) in worker processes."""
    if _unit["label"] is None:
        return
    now = time.perf_counter()
    since = now - _unit["last"]
    if since < UNIT_NOTE_EVERY_S and not (force and now - _unit["t0"] >= UNIT_NOTE_EVERY_S
                                          and since >= UNIT_NOTE_EVERY_S / 6):
        return
    _unit["last"] = now
    s = int(now - _unit["t0"])
    info(f"{_unit['label']} {text} ({s // 3600}:{s // 60 % 60:02d}:{s % 60:02d} in)", stream="stdout")
