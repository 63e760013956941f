"""A running benchmark unit's training state on disk, so ``--resume`` continues it mid-training.

``croma benchmark --out DIR`` gives each unit a partial-state file,
``DIR/units/<method>-seed<S>.partial.pt`` (:class:`Partial`, :func:`croma.unit_store.partial_path`). Ordinary training
(:func:`croma.baselines.ordinary.ordinary_train`: align-classify, the shared family, the oracle's
warm start) writes its whole state there at every meta-val check: model and head parameters, the
optimiser's moments and step counts, the step, the running losses, the best checkpoint so far and
the seconds spent. Its mini-batches are pure functions of (seed, step), so a run continued from
that file with ``--resume`` goes on bitwise as if it had not stopped (tested). The file carries the
unit's fingerprint (:func:`croma.unit_store.unit_fingerprint`) and is used only when it matches and
``--resume`` is given; it is removed once the unit is finished.

A Reptile phase (:func:`croma.baselines.reptile_runs.budgeted_reptile`: croma, oracle, unsup-meta,
align-meta-classify) keeps a trainer run folder beside it instead,
``DIR/units/<method>-seed<S>.reptile-<families>.run/`` (:meth:`Partial.run_folder`): the trainer's own
``last.pt`` / ``best.pt`` / ``metrics.csv`` written at every meta-val check, whose resume is bitwise
(:mod:`croma.fit`), and ``unit.json`` with the fingerprint and the meta-val score of the starting
parameters. A seconds budget is never continued (it is not reproducible).

After training, the unit's later stages are kept too (:meth:`Partial.keep`, ``<method>-seed<S>.stages.pt``):
each candidate setting's meta-val scores of the meta-val choice and each k's meta-test row, with the
seconds and CPU seconds they took. A continued unit restores its trained parameters from the states
above (no step runs again), reuses these and adds their seconds to its own, so a stopped unit loses
at most the one setting or k it was evaluating.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Partial"]

FORMAT = "croma-unit-partial/1"
STAGES = "croma-unit-stages/1"  # the kept evaluation stages (Partial.keep)


@dataclass(frozen=True)
class Partial:
    """Where a unit keeps its training state (``path``), the unit's ``fingerprint`` and whether a
    state found there may be continued (``resume``). ``reused`` sums the seconds (``"seconds"``,
    ``"cpu_seconds"``) of the kept stages this invocation reused, per stage."""

    path: str
    fingerprint: str
    resume: bool = False
    reused: dict[str, dict[str, float]] = field(default_factory=dict, compare=False)
    _memo: dict = field(default_factory=dict, compare=False, repr=False)  # the kept stages, read once

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
        """Remove the state file, the kept stages and every Reptile run folder of this unit."""
        Path(self.path).unlink(missing_ok=True)
        self._stages_path().unlink(missing_ok=True)
        for folder in Path(self.path).parent.glob(f"{self._stem()}.*.run"):
            shutil.rmtree(folder, ignore_errors=True)

    def has_progress(self) -> bool:
        """Whether this unit keeps anything ``--resume`` continues: a training state, a Reptile phase's
        ``last.pt`` or kept evaluation stages (the file names only; nothing is read)."""
        return (Path(self.path).exists() or self._stages_path().exists()
                or any((d / "last.pt").is_file() for d in Path(self.path).parent.glob(f"{self._stem()}.*.run")))

    def stale(self) -> bool:
        """Whether this unit keeps progress made with another fingerprint (other settings, data or
        versions), which ``--resume`` does not continue: the training state, the kept stages (read
        memory-mapped: only the header) or a Reptile phase's ``unit.json``."""
        def other(doc: Any) -> bool:
            return isinstance(doc, dict) and doc.get("fingerprint") not in (None, self.fingerprint)

        for path in (Path(self.path), self._stages_path()):
            if path.exists():
                try:
                    if other(torch.load(path, map_location="cpu", weights_only=True, mmap=True)):
                        return True
                except Exception:  # noqa: BLE001 - torn or foreign: not progress of any unit
                    pass
        for folder in Path(self.path).parent.glob(f"{self._stem()}.*.run"):
            try:
                if (folder / "last.pt").is_file() and other(json.loads((folder / "unit.json").read_text(encoding="utf-8"))):
                    return True
            except (OSError, ValueError):
                pass
        return False

    # ------------------------------------------------------------------ Reptile phases: a trainer run folder
    def _stem(self) -> str:
        return Path(self.path).name.removesuffix(".partial.pt")

    def run_folder(self, tag: str) -> Path:
        """``<units>/<method>-seed<S>.<tag>.run``: the trainer's checkpoint folder of one Reptile phase."""
        return Path(self.path).with_name(f"{self._stem()}.{tag}.run")

    def run_start(self, tag: str) -> dict[str, Any] | None:
        """What :meth:`run_started` recorded for phase ``tag`` when ``resume`` and its folder holds
        this unit's ``last.pt`` (the trainer then continues it); else None, and the folder is cleared
        so the phase starts afresh (a folder of other settings is never continued)."""
        folder = self.run_folder(tag)
        if self.resume and (folder / "last.pt").is_file():
            try:
                doc = json.loads((folder / "unit.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                doc = None
            if isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("fingerprint") == self.fingerprint:
                return doc
        shutil.rmtree(folder, ignore_errors=True)
        return None

    def run_started(self, tag: str, facts: dict[str, Any]) -> Path:
        """Create phase ``tag``'s folder with ``unit.json`` (format, fingerprint, ``facts``); returns the folder."""
        from episodes.atomic import atomic_write

        folder = self.run_folder(tag)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": FORMAT, "fingerprint": self.fingerprint, **facts}, sort_keys=True) + "\n"
        atomic_write(folder / "unit.json", lambda fh: fh.write(text.encode("utf-8")))
        return folder

    # ------------------------------------------------------------------ after training: kept stages
    def _stages_path(self) -> Path:
        return Path(self.path).with_name(f"{self._stem()}.stages.pt")

    def _stages(self) -> dict[str, Any]:
        """The kept stages this unit continues (read from the file once, with ``resume``; else a new,
        empty set that replaces the file at the first :meth:`keep`)."""
        if "stages" not in self._memo:
            self._memo["stages"] = self._read_stages() if self.resume else {}
        return self._memo["stages"]

    def _read_stages(self) -> dict[str, Any]:
        path = self._stages_path()
        if not path.exists():
            return {}
        try:
            doc = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or foreign file: evaluate again
            return {}
        if not isinstance(doc, dict) or doc.get("format") != STAGES or doc.get("fingerprint") != self.fingerprint:
            return {}
        return dict(doc["stages"])

    def kept(self, stage: str, key: str) -> Any:
        """The value :meth:`keep` stored for (``stage``, ``key``) when ``resume`` and the file is this
        unit's, else None; its seconds are added to ``reused[stage]``."""
        if not self.resume:
            return None
        got = self._stages().get(stage, {}).get(str(key))
        if got is None:
            return None
        tot = self.reused.setdefault(stage, {"seconds": 0.0, "cpu_seconds": 0.0})
        tot["seconds"] += float(got["seconds"])
        tot["cpu_seconds"] += float(got["cpu_seconds"])
        return got["value"]

    def keep(self, stage: str, key: str, value: Any, seconds: float, cpu_seconds: float) -> None:
        """Add (``stage``, ``key``) -> ``value`` (tensors, numbers, strings, lists, dicts) and the
        seconds it took to the unit's kept stages (atomically; a file of other settings is replaced)."""
        from episodes.atomic import atomic_write

        stages = self._stages()
        stages.setdefault(stage, {})[str(key)] = {"value": value, "seconds": float(seconds), "cpu_seconds": float(cpu_seconds)}
        payload = {"format": STAGES, "fingerprint": self.fingerprint, "stages": stages}
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._stages_path(), lambda fh: torch.save(payload, fh))
