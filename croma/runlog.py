"""Run logs: ``metrics.csv`` next to a run's checkpoints, and optionally TensorBoard.

One row per outer iteration, appended and flushed as soon as the iteration ends, so a run that
is killed leaves every finished iteration on disk (at most the line being written is cut; it is
dropped when the run resumes). Columns::

    iteration, <family>_loss, <family>_loss_last (one pair per task family: align, cls),
    epsilon, val_acc, seconds, optimizer_steps[, run_id]

``<family>_loss`` / ``_loss_last``: mean task loss before the first / after the last inner
step; ``epsilon``: the Reptile step size used; ``val_acc``: meta-val accuracy in % on the
iterations where it was measured (empty otherwise); ``seconds``: training wall-clock time since
the run started (across resumes); ``optimizer_steps``: gradient steps so far (outer iterations x
tasks per meta-batch x inner steps, as the benchmark's budgets count them); ``run_id``: the run that
wrote the row (:mod:`croma.runlock`; a text column, last, when the run has one).

On resume the file is cut back to the iterations the checkpoint holds (rewritten atomically) and
continues from there; TensorBoard events after that iteration are purged the same way.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["METRICS_FILE", "TENSORBOARD_DIR", "RunLog", "hparam_values", "metric_columns", "read_metrics"]

METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
RUN_ID = "run_id"  # metrics.csv's last column: the run that wrote the row (croma.runlock)


def metric_columns(families: Sequence[str]) -> list[str]:
    """The ``metrics.csv`` header for a run with these task families (in plan order)."""
    cols = ["iteration"]
    for fam in dict.fromkeys(families):
        cols += [f"{fam}_loss", f"{fam}_loss_last"]
    return cols + ["epsilon", "val_acc", "seconds", "optimizer_steps"]


def hparam_values(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Settings as TensorBoard hyper-parameters: numbers, strings and booleans kept; nested
    mappings flattened as ``section.name``; lists as JSON text; ``None`` as ``"none"``."""
    import json

    out: dict[str, Any] = {}
    for k, v in settings.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(hparam_values(v, prefix=name + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[name] = v
        elif v is None:
            out[name] = "none"
        else:
            out[name] = json.dumps(v, sort_keys=True, default=str)
    return out


def _parse(value: str) -> float | int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return float(value)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` as dicts (numbers parsed, empty cells ``None``).

    A last line cut by a killed writer (fewer cells than the header, or not a number) is left out.
    ``run_id`` cells stay text.

    Raises:
        CromaError: the file is not UTF-8 text (naming it).
    """
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        from croma.errors import CromaError

        raise CromaError(f"{path}: not a croma metrics.csv (not UTF-8 text: byte {exc.start}); move it away or "
                         f"remove it (the checkpoints do not need it)") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header, out = rows[0], []
    complete = text.endswith("\n")
    for i, cells in enumerate(rows[1:], start=1):
        if len(cells) != len(header) or (i == len(rows) - 1 and not complete):
            continue
        try:
            out.append({k: (v or None) if k == RUN_ID else _parse(v) for k, v in zip(header, cells)})
        except ValueError:
            continue
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    value = float(value)
    return repr(value) if math.isfinite(value) else str(value)


class RunLog:
    """Writes a run's ``metrics.csv`` (and TensorBoard events) row by row.

    Args:
        run_dir: the run folder (the checkpoints' folder).
        columns: the header (:func:`metric_columns`).
        start_iteration: iterations already done (0 for a new run; the checkpoint's on resume):
            rows after it are dropped from an existing file; ``seconds`` continues from the last
            kept row.
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard`` (needs the
            ``tensorboard`` package: extra ``[tensorboard]``).
        run_id: the run's identity (:mod:`croma.runlock`), written in a last ``run_id`` column.
        hparams: the run's settings (``TrainConfig.flat()``): with ``tensorboard``, logged once when
            the run starts, to TensorBoard's HPARAMS tab (one run, metric ``meta_val/accuracy``)
            and as the text ``config`` (JSON).

    Raises:
        episodes.extras.MissingExtraError: ``tensorboard=True`` but the package is not installed.
        CromaError: on resume, the file holds rows of another run, or is not UTF-8 text.
    """

    def __init__(
        self, run_dir: str | os.PathLike, columns: Sequence[str], *, start_iteration: int = 0, tensorboard: bool = False,
        run_id: str | None = None, hparams: Mapping[str, Any] | None = None,
    ) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / METRICS_FILE
        self.columns = list(columns)
        self.run_id = run_id
        self._header = self.columns + [RUN_ID] if run_id else self.columns
        self.seconds_offset = 0.0
        self._tb = None
        if tensorboard:
            from episodes.extras import require

            require("tensorboard", purpose="--tensorboard (TensorBoard logging)")
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir / TENSORBOARD_DIR), purge_step=start_iteration + 1)
            if hparams is not None and start_iteration == 0:  # a resumed run logged them when it started
                self._log_hparams(hparams)
        self._start(start_iteration)
        self._fh = open(self.path, "a", encoding="utf-8", newline="")

    def _start(self, start_iteration: int) -> None:
        """Keep the rows up to ``start_iteration`` (atomic rewrite), or start a new file."""
        from episodes.cache import atomic_write

        kept: list[dict[str, Any]] = []
        if start_iteration > 0 and self.path.is_file():
            rows = read_metrics(self.path)
            other = next((r[RUN_ID] for r in rows if self.run_id and r.get(RUN_ID) not in (None, self.run_id)), None)
            if other is not None:  # never cut another run's log
                from croma.errors import CromaError

                raise CromaError(f"{self.path} holds rows of another croma run (run_id {other}, this run is "
                                 f"{self.run_id}): move it away, or resume in the folder the run was written to")
            kept = [r for r in rows if isinstance(r.get("iteration"), int) and r["iteration"] <= start_iteration]
        if kept:
            self.seconds_offset = float(kept[-1].get("seconds") or 0.0)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self._header)
        for r in kept:
            w.writerow([_cell(r.get(c)) for c in self._header])
        data = buf.getvalue().encode("utf-8")
        atomic_write(self.path, lambda fh: fh.write(data))

    def _log_hparams(self, settings: Mapping[str, Any]) -> None:
        import json

        from torch.utils.tensorboard.summary import hparams

        flat = hparam_values(settings)
        exp, ssi, _ = hparams(flat, {"meta_val/accuracy": 0.0})
        writer = self._tb._get_file_writer()
        writer.add_summary(exp)  # in this run's own event file: no extra timestamped sub-run
        writer.add_summary(ssi)
        text = json.dumps(dict(settings), indent=2, sort_keys=True, default=str)
        self._tb.add_text("config", "```\n" + text + "\n```", 0)
        self._tb.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (columns missing from ``row`` stay empty) and flush it to the OS."""
        buf = io.StringIO()
        cells = [_cell(row.get(c)) for c in self.columns] + ([self.run_id] if self.run_id else [])
        csv.writer(buf, lineterminator="\n").writerow(cells)
        try:
            self._fh.write(buf.getvalue())
            self._fh.flush()
        except OSError as exc:  # a full disk: one line naming metrics.csv, not a bare [Errno 28]
            from episodes.cache import write_error

            raise write_error(exc, self.path) from exc
        if self._tb is not None:
            step = int(row["iteration"])
            for c in self.columns[1:]:
                v = row.get(c)
                if v is not None and c != "optimizer_steps":
                    self._tb.add_scalar(f"train/{c}" if c != "val_acc" else "meta_val/accuracy", float(v), step)
            self._tb.flush()

    def close(self) -> None:
        """Flush and close the file (and the TensorBoard writer)."""
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
