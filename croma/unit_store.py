"""Finished runs of ``croma benchmark`` kept on disk, so an interrupted benchmark continues.

Each (method, training seed) run (:class:`croma.bench_units.Unit`) that finishes is written at once
to ``OUT/units/<method>-seed<seed>.json`` (atomically: a crash leaves the old file or the new one).
``croma benchmark ... --resume`` with the same ``--out`` reads them back and runs only the units
not there, so Ctrl-C, SIGTERM, a lost machine or the end of a session loses at most the runs in
progress; the table is then built from all units as if they had run in one go (the facts are
stored exactly: JSON floats round-trip, and the numbers of a unit do not depend on where or with
how many ``--jobs`` it ran).

A unit file is reused only when its **fingerprint** equals the unit's (:func:`unit_fingerprint`):
a digest of the method, seed, meta-test k, every training and meta-test setting of the unit, the
prepared data (:func:`bench_digest`: class names, splits, pairs and every feature and label
tensor), the croma and torch versions and the per-unit thread count. A file of other settings in
the folder stops ``--resume`` with one line naming it (never silently mixed or overwritten) and the
part that differs: each file also keeps the parts apart (``fingerprint_parts``,
:func:`fingerprint_parts`), and when the data differs and the file ran on another CPU or with other
CPU kernels the line says so (log-mel and other features computed by torch round differently there;
the feature cache of that machine makes the data the same).
A unit still running keeps its training state beside them (:func:`partial_path`,
:mod:`croma.unit_partial`) where its method supports it. Each file also records the machine it
ran on (:func:`croma.report.machine_info`): units of one table may come from different sessions,
and results.json says which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

__all__ = ["UNITS_DIR", "FORMAT", "plain", "bench_digest", "fingerprint_parts", "unit_fingerprint", "unit_path",
           "partial_path", "save_unit", "load_units", "mismatch_message", "finished_units", "with_partials", "kept_note"]

#: sub-folder of ``--out`` holding one file per finished unit
UNITS_DIR = "units"
#: version of the unit file layout (a file of another layout is refused, not guessed at)
FORMAT = 1
#: the parts of each fingerprint :func:`unit_fingerprint` gave in this process (for :func:`save_unit`,
#: :func:`load_units`), by fingerprint
_PARTS: dict[str, dict[str, Any]] = {}


def plain(v: Any) -> Any:
    """``v`` as JSON-plain values: dict keys as strings, tuples as lists, tensors as lists,
    dataclasses as dicts; anything else as its ``str``."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = dataclasses.asdict(v)
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _tensor_bytes(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def bench_digest(bench) -> str:
    """SHA-256 of a prepared benchmark's content: name, modalities, class and cluster names, splits,
    pairs and alignment / classification rows, and every modality's features, labels, clusters and
    item ids. Two loads of the same data give the same digest; any changed item, label or split
    gives another."""
    h = hashlib.sha256()
    head = {"name": bench.name, "source": bench.source, "target": bench.target, "classes": list(bench.class_names),
            "clusters": list(bench.cluster_names), "splits": {k: list(v) for k, v in sorted(bench.splits.items())},
            "align_mode": bench.align_mode, "modalities": sorted(bench.data)}
    h.update(json.dumps(head, sort_keys=True).encode())
    for t in (bench.pairs, bench.align_source_rows, bench.align_target_rows, bench.classify_source_rows):
        _tensor_bytes(h, t)
    for name in sorted(bench.data):
        d = bench.data[name]
        h.update(name.encode())
        for t in (d.features, d.labels, d.clusters):
            _tensor_bytes(h, t)
        h.update(json.dumps(list(d.ids)).encode())
    return h.hexdigest()


def _desc(unit, data_digest: str) -> dict[str, Any]:
    import croma
    from croma.bench_units import UNIT_THREADS

    return {"method": unit.method, "seed": int(unit.seed), "shots": [int(k) for k in unit.shots],
            "ctx": plain(dict(unit.ctx)), "data": data_digest, "croma": croma.__version__,
            "torch": torch.__version__, "unit_threads": UNIT_THREADS}


def _sha(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _parts(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"settings": _sha({k: d[k] for k in ("method", "seed", "shots", "ctx")}), "data": d["data"],
            "croma": str(d["croma"]), "torch": str(d["torch"]), "unit_threads": d["unit_threads"]}


def fingerprint_parts(unit, data_digest: str) -> dict[str, Any]:
    """The parts of :func:`unit_fingerprint`, kept apart in each unit file so a refused ``--resume``
    says which differs: ``settings`` (SHA-256 of method, seed, meta-test k and the unit's settings),
    ``data`` (``data_digest``), the ``croma`` and ``torch`` versions and ``unit_threads``."""
    return _parts(_desc(unit, data_digest))


def unit_fingerprint(unit, data_digest: str) -> str:
    """SHA-256 of everything a unit's numbers depend on: method, seed, meta-test k, the unit's
    settings (training and meta-test configs, budgets, knobs, the method's hyper-parameters, label
    noise), the data (``data_digest``: :func:`bench_digest`), the croma and torch versions and the
    intra-op threads each unit runs with. (Unchanged since the first unit files: they stay reusable.)"""
    desc = _desc(unit, data_digest)  # one description, hashed whole and by parts
    fp = _sha(desc)
    _PARTS[fp] = _parts(desc)
    return fp


def unit_path(out: str | Path, method: str, seed: int) -> Path:
    """``OUT/units/<method>-seed<seed>.json``."""
    return Path(out) / UNITS_DIR / f"{method}-seed{int(seed)}.json"


def partial_path(out: str | Path, method: str, seed: int) -> Path:
    """``OUT/units/<method>-seed<seed>.partial.pt``: a running unit's training state
    (:class:`croma.unit_partial.Partial`)."""
    return Path(out) / UNITS_DIR / f"{method}-seed{int(seed)}.partial.pt"


def save_unit(out: str | Path, unit, fingerprint: str, facts: Mapping[str, Any],
              parts: Mapping[str, Any] | None = None) -> Path:
    """Write a finished unit's facts (:func:`croma.bench_units.run_unit`) atomically, with the
    fingerprint's ``parts`` (default: those :func:`unit_fingerprint` gave for it); returns the path."""
    from croma.report import machine_info
    from episodes.atomic import atomic_write

    path = unit_path(out, unit.method, unit.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "method": unit.method, "seed": int(unit.seed), "fingerprint": fingerprint,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), "facts": plain(dict(facts))}
    if (parts := parts if parts is not None else _PARTS.get(fingerprint)) is not None:
        doc["fingerprint_parts"] = plain(dict(parts))
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    from croma.unit_partial import Partial

    Partial(str(partial_path(out, unit.method, unit.seed)), fingerprint).remove()  # its training state is done with
    return path


def _int_keys(d: Mapping[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in d.items()}


def restore_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """A stored unit's facts in the shape :func:`croma.bench_units.run_unit` returns them (the k
    keys of ``evals``, ``eval_choice`` and each ``eval_scores`` entry back to ints)."""
    out = dict(facts)
    out["evals"] = _int_keys(facts["evals"])
    out["eval_choice"] = _int_keys(facts["eval_choice"])
    out["eval_scores"] = {name: _int_keys(v) for name, v in facts["eval_scores"].items()}
    return out


def load_units(out: str | Path, units: Iterable[Any], fingerprints: Mapping[tuple[str, int], str]
               ) -> dict[tuple[str, int], dict[str, Any]]:
    """The finished units of ``units`` stored under ``OUT/units`` with the expected fingerprint:
    ``{(method, seed): facts}`` (facts as :func:`restore_facts` gives them, plus ``machine`` and
    ``finished`` from the file). Units without a file are left out.

    Raises:
        CromaError: a unit's file is unreadable, of another layout, or of other settings (named,
            with what to do).
    """
    from croma.errors import CromaError

    found: dict[tuple[str, int], dict[str, Any]] = {}
    for u in units:
        path = unit_path(out, u.method, u.seed)
        if not path.exists():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            ok = isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("facts"), dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CromaError(f"--resume: cannot read {path} ({exc}); remove it to run that unit again") from None
        if not ok:
            raise CromaError(f"--resume: {path} is not a croma unit file (format {FORMAT}); remove it to run that "
                             "unit again")
        if doc.get("fingerprint") != fingerprints[(u.method, u.seed)]:
            raise CromaError(mismatch_message(path, doc, _PARTS.get(fingerprints[(u.method, u.seed)])))
        try:
            facts = restore_facts(doc["facts"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CromaError(f"--resume: {path} lacks a unit's facts ({exc!r}); remove it to run that unit again") from None
        facts["machine"] = doc.get("machine")
        facts["finished"] = doc.get("finished")
        found[(u.method, u.seed)] = facts
    return found


def _machine_text(m: Mapping[str, Any]) -> str:
    env = m.get("kernel_env") if isinstance(m.get("kernel_env"), dict) else {}
    kernels = [str(m.get("cpu_capability") or "?")] + [f"{k}={v}" for k, v in sorted(env.items())]
    return f"{m.get('cpu') or '?'} ({', '.join(kernels)})"


def _cpu_note(stored: Any, sure: bool) -> str:
    """The part of a refusal saying the stored unit ran on another CPU or with other CPU kernels
    (``""`` when it did not, or its file does not say)."""
    from croma.report import machine_info

    if not isinstance(stored, dict) or not stored.get("cpu"):
        return ""
    here = machine_info()
    keys = [k for k in ("cpu", "cpu_capability", "kernel_env") if k in stored]
    if all(stored.get(k) == here.get(k) for k in keys):
        return ""
    by = "on another CPU" if stored.get("cpu") != here.get("cpu") else "with other CPU kernels"
    return (f"; it ran on {_machine_text(stored)} and this machine is {_machine_text(here)}: features computed {by} "
            f"round differently, so the data {'differs' if sure else 'may differ'}; copy that machine's feature cache "
            "(--cache-dir, $CROMA_CACHE) here to reuse its units, or use another --out")


def mismatch_message(path: Path, doc: Mapping[str, Any], current: Mapping[str, Any] | None) -> str:
    """The one line refusing a unit file of another fingerprint: which part differs (settings, data,
    croma or torch version, threads per unit; ``doc["fingerprint_parts"]`` against this run's parts
    ``current``), and for data computed on another CPU why and what to do. A file without the
    parts (written before them) is compared on what it records: its machine's torch and CPU."""
    stored, machine = doc.get("fingerprint_parts"), doc.get("machine")
    machine = machine if isinstance(machine, dict) else {}
    fresh = "; use another --out, or remove that folder's units/ to start afresh"
    if isinstance(stored, dict) and isinstance(current, dict):
        names = {"settings": "settings", "data": "data", "croma": "croma version", "torch": "torch version",
                 "unit_threads": "threads per unit"}
        diff = [names[k] + (f" ({stored.get(k)} → {current[k]})" if k in ("croma", "torch", "unit_threads") else "")
                for k in names if stored.get(k) != current.get(k)]
        what = ", ".join(diff[:-1]) + " and " + diff[-1] if len(diff) > 1 else (diff or ["settings, data or croma/torch version"])[0]
        note = _cpu_note(machine, True) if stored.get("data") != current.get("data") else ""
        return f"--resume: {path} was run with other {what} than this run{note or fresh}"
    now = str(torch.__version__)
    if machine.get("torch") and machine["torch"] != now:
        head = f"--resume: {path} was run with other torch version ({machine['torch']} → {now}) than this run"
    else:
        head = f"--resume: {path} was run with other settings, data or croma/torch version than this run"
    return head + (_cpu_note(machine, False) or fresh)


def finished_units(out: str | Path | None, bench, units: list[Any], *, resume: bool = False
                   ) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], dict[str, Any]]]:
    """``(fingerprints, reused)`` of a benchmark's units: each unit's fingerprint (empty without
    ``out``: nothing is stored) and, with ``resume``, the finished units :func:`load_units` finds."""
    if not out:
        return {}, {}
    digest = bench_digest(bench)
    fps = {(u.method, u.seed): unit_fingerprint(u, digest) for u in units}
    return fps, (load_units(out, units, fps) if resume else {})


def with_partials(units: list[Any], out: str | Path | None, fingerprints: Mapping[tuple[str, int], str], *,
                  resume: bool = False) -> list[Any]:
    """``units`` each given its :class:`croma.unit_partial.Partial` under ``OUT/units`` (unchanged
    without ``out``): training keeps its state there; ``resume`` lets a unit continue one."""
    if not out:
        return list(units)
    from dataclasses import replace

    from croma.unit_partial import Partial

    return [replace(u, partial=Partial(str(partial_path(out, u.method, u.seed)), fingerprints[(u.method, u.seed)],
                                       resume=resume)) for u in units]


def stale_note(out: str | Path | None, units: list[Any]) -> str | None:
    """With ``--resume``, the line naming units whose kept progress (``*.partial.pt``, kept stages, a
    Reptile phase) was made with other settings, data or versions: they start afresh, which replaces
    it (None when there is none)."""
    if not out:
        return None
    stale = [f"{u.method}-seed{u.seed}" for u in units if getattr(u, "partial", None) is not None and u.partial.stale()]
    if not stale:
        return None
    return (f"note: --resume: the progress kept for {', '.join(stale[:3])}{' and others' if len(stale) > 3 else ''} in "
            f"{Path(out) / UNITS_DIR} was made with other settings, data or versions (features computed on another "
            "CPU round differently); those runs start afresh and replace it")


def kept_note(out: str | Path, units: list[Any]) -> str | None:
    """The line an interrupted or failed benchmark ends with when some of its units are stored."""
    done = [unit_path(out, u.method, u.seed).exists() for u in units]
    kept = sum(done)
    # runs stopped mid-way that keep their training state or evaluation stages (croma.unit_partial)
    from croma.unit_partial import Partial

    going = sum(not d and Partial(str(partial_path(out, u.method, u.seed)), "").has_progress() for d, u in zip(done, units))
    where = Path(out) / UNITS_DIR
    more = f", {going} more keep their progress there" if going else ""
    if kept:
        return (f"{kept} of {len(units)} runs are finished and kept in {where}{more}; the same command with --resume "
                f"runs only the rest{' and continues those' if going else ''}")
    if going:
        return f"{going} of {len(units)} runs keep their progress in {where}; the same command with --resume continues them"
    return None

