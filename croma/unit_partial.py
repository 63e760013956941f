"""A running benchmark unit's training state on disk, so ``--resume`` continues it mid-training.

``croma benchmark --out DIR`` gives each unit a partial-state file,
``DIR/units/<method>-seed<S>.partial.pt`` (:class:`Partial`, :func:`croma.unit_store.partial_path`). Ordinary training
(:func:`croma.baselines.ordinary.ordinary_train`: align-classify, the shared family, the oracle's
warm start) writes its whole state there at every meta-val check: model and head parameters, the
optimiser's moments and step counts, the step, the running losses, the best checkpoint so far and
the seconds spent. Its mini-batches are pure functions of (seed, step), so a run continued from
that file with ``--resume`` goes on bitwise as if it had not stopped (tested). The file carries the
unit's fingerprint (:func:`croma.unit_store.unit_fingerprint`) and is used only when it matches and
``--resume`` is given; it is removed once the unit is finished. The Reptile methods and the meta-val
choice do not write one yet: a unit of theirs that is stopped starts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Partial"]

FORMAT = "croma-unit-partial/1"


@dataclass(frozen=True)
class Partial:
    """Where a unit keeps its training state (``path``), the unit's ``fingerprint`` and whether a
    state found there may be continued (``resume``)."""

    path: str
    fingerprint: str
    resume: bool = False

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically with the fingerprint."""
        from episodes.atomic import atomic_write

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "state": state}
        atomic_write(self.path, lambda fh: torch.save(payload, fh))

    def load(self) -> dict[str, Any] | None:
        """The saved state when ``resume`` and the file is this unit's (same format and
        fingerprint), else None (a file of other settings is never continued; it is overwritten)."""
        if not self.resume or not Path(self.path).exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or foreign file: start the unit afresh
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("fingerprint") != self.fingerprint:
            return None
        return payload["state"]

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)
