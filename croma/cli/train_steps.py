"""The steps ``croma train`` takes around training: before it, the one-line warning for a run whose
features make it slow on a CPU (:func:`slow_run_warning`), its own choice of the compiled inner step
(:func:`auto_compile_reason`), what ``--skip-bad`` skipped and which inner loop runs (:func:`announce`)
and the refusal of a folder with a ``best.pt`` but no ``last.pt`` (:func:`check_leftovers`); during it,
the once-only estimate of the time left (:func:`pace_note`); after it, meta-val's per-k fine-tuning
choice for a run trained from a table (:func:`choose_table_finetune`)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["slow_run_warning", "auto_compile_reason", "choose_compile", "SEQUENCE_S_PER_ITERATION", "SLOW_WARN_S",
           "AUTO_COMPILE_ITERATIONS", "announce", "choose_table_finetune", "pace_note", "check_leftovers"]

# the modalities of the built-in data sets (a manifest's come from --source / --target)
_MODALITIES = {"udhr-speech": ("text", "audio"), "cifar-esc50": ("image", "audio"), "yummly": ("text", "image"),
               "wilderness": ("text", "audio")}
# measured: croma train udhr-speech, sequence features, cnn1d encoders, default sizes (meta-batch 8, 5 inner
# steps), eager, 2-core CPU: 0.69-0.72 s per iteration (docs/speed.md, "Speed")
SEQUENCE_S_PER_ITERATION = 0.7
SLOW_WARN_S = 300.0
# measured on the same workload (docs/speed.md): the compiled step saves ~0.45 s per iteration; a compile on
# a cold cache took 77 s quiet and 415 s under load (break-even 170 / 320 iterations), on a warm cache 8-19 s
AUTO_COMPILE_ITERATIONS = 400


def _slow_modalities(cfg) -> tuple[tuple[str, ...], list[str], dict]:
    """The run's source / target modalities, those of them whose encoders are cnn1d / lstm on
    sequence features, and the chosen encoders."""
    d = cfg.data
    mods = _MODALITIES.get(d.benchmark) or tuple(m for m in (d.source, d.target) if m)
    from episodes.data import by_modality, modality_kind

    chosen = dict(cfg.model.get("encoders") or {})
    backbones = dict(d.backbones or {})
    kind = {m: modality_kind(m) for m in mods}  # a named modality (audio:sw) is its kind here
    slow = [m for m in mods if kind[m] in ("text", "audio") and by_modality(backbones, m) is None
            and (by_modality(chosen, m) or ("bert" if kind[m] == "text" and cfg.model.get("text_model") else "cnn1d"))
            in ("cnn1d", "lstm")]
    return mods, slow, chosen


def _cxx_found() -> bool:
    import os
    import shutil

    return any(shutil.which(c) for c in ([os.environ["CXX"]] if os.environ.get("CXX") else []) + ["g++", "c++", "clang++"])


def _manifest_has_image(path) -> bool:
    """Whether a manifest row holds an image (True when the file cannot be read: the loader says why later)."""
    import json

    from episodes.data import modality_kind

    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and any(modality_kind(str(k)) == "image"
                                                             for k in json.loads(line)):
                    return True
    except (OSError, ValueError, TypeError):
        return True
    return False


def auto_compile_reason(cfg) -> str | None:
    """Why ``croma train`` compiles this run's inner step when no flag or file chose (None: it does not).

    Only where it was measured to pay: the batched inner loop on the CPU, sequence features whose
    encoders are all cnn1d (text and audio, no image, no pretrained backbone), at least
    :data:`AUTO_COMPILE_ITERATIONS` iterations (past the cold-cache break-even), and a C++ compiler on
    the PATH (inductor needs one). The compiled step rounds differently from the eager one (the
    statistics were compared on meta-val: docs/speed.md); ``--no-compile-inner`` keeps it eager.
    """
    from croma.factory import resolve_device

    d = cfg.data
    if (cfg.compile_inner or cfg.inner_loop != "batched" or d.features != "sequence"
            or resolve_device(cfg.device).type != "cpu" or cfg.iterations < AUTO_COMPILE_ITERATIONS):
        return None
    mods, slow, chosen = _slow_modalities(cfg)
    if not mods or len(slow) != len(mods) or any(chosen.get(m, "cnn1d") != "cnn1d" for m in slow):
        return None
    if d.benchmark == "manifest" and d.extra_modalities and _manifest_has_image(d.manifest):
        return None  # an extra image modality would bring a cnn2d encoder into the compiled step: not measured
    if not _cxx_found():
        return None
    return (f"cnn1d encoders on sequence features, {cfg.iterations} iterations >= {AUTO_COMPILE_ITERATIONS}; the first "
            "iterations compile it, 10 s to minutes once per machine")


def slow_run_warning(cfg) -> str | None:
    """One line for a run whose features make it slow: sequence features (byte ids, log-mel frames)
    through cnn1d / lstm encoders on the CPU, estimated over :data:`SLOW_WARN_S` from the measured
    :data:`SEQUENCE_S_PER_ITERATION` (scaled by meta-batch and inner steps); None otherwise."""
    from croma.config import TrainConfig
    from croma.factory import resolve_device

    d = cfg.data
    if d.features != "sequence" or cfg.compile_inner or resolve_device(cfg.device).type != "cpu":
        return None
    _, slow, chosen = _slow_modalities(cfg)
    if not slow:
        return None
    base = TrainConfig()
    per_it = SEQUENCE_S_PER_ITERATION * (cfg.meta_batch / base.meta_batch) * (cfg.inner_steps / base.inner_steps)
    est = per_it * max(0, cfg.iterations)
    if est < SLOW_WARN_S:
        return None
    return (f"warning: sequence features through {'/'.join(sorted({chosen.get(m, 'cnn1d') for m in slow}))} encoders on "
            f"the CPU: ~{est / 60:.0f} min for {cfg.iterations} iterations before meta-val (measured ~0.7 s per "
            f"iteration at meta-batch 8 on a 2-core CPU, docs/speed.md); --features compact trains MLP encoders on "
            "vectors in a fraction of that, --compile-inner is ~2.5x faster (--quiet hides this line)")


def choose_compile(args, cfg, env, last) -> str | None:
    """``croma train``: set ``cfg.compile_inner`` where no flag or file chose it (``args.compile_named``).
    A resumed run (``last``: its last.pt) keeps the mode it was started with; a new one compiles where
    :func:`auto_compile_reason` says it pays, in one process only (not under ``--nproc`` / torchrun:
    ``env``). Returns why it compiles (None: as chosen, or eager)."""
    if getattr(args, "compile_named", True) or env is not None or args.nproc > 1:
        return None
    if args.resume and last.exists():
        from croma.checkpoint import load_checkpoint, train_config

        cfg.compile_inner = bool(train_config(load_checkpoint(last), last).compile_inner)
        return "the mode the resumed run started with" if cfg.compile_inner else None
    reason = auto_compile_reason(cfg)
    if reason:
        cfg.compile_inner = True
    return reason


def announce(cfg: Any, bench: Any, payload: dict, *, writer: bool) -> tuple[Any, dict]:
    """Before ``croma train`` trains, once its data has loaded: the notes made before (``payload["notes"]``:
    the slow-run warning, an empty ``--resume``), what ``--skip-bad`` skipped, which extra modalities join the
    alignment tasks and which inner loop runs (the writer only), and for a table's settings (``payload["table"]``, ``--config RESULTS.json``)
    build the table's selection (:mod:`croma.table_choice`). Returns ``(table context or None,
    keyword arguments for croma.fit.train)``."""
    if writer:  # the notes croma train made before the data loaded (a data error stays one line)
        from croma.log import warning

        for note in payload.get("notes", ()):
            if note.startswith("warning: "):
                warning(note)
            else:
                sys.stderr.write(note + "\n")
    if bench is not None and cfg.data.skip_bad and writer:
        from croma.bench_data import skipped_items, skipped_line

        if skipped := skipped_items(bench):
            sys.stderr.write(skipped_line(skipped) + "\n")
    if payload["progress"] and writer:
        from croma.bench_data import data_notes
        from croma.log import info
        from croma.meta.inner import inner_loop_text

        for line in data_notes(bench) if bench is not None else ():  # croma train loaded it (croma.learner: not)
            info(line)
        info(f"inner loop: {inner_loop_text(cfg, payload.get('compile_reason'))}")
    kw: dict = {"callback": pace_note(cfg)} if payload["progress"] and writer and not payload.get("warned") else {}
    if not payload.get("table"):
        return None, kw
    from croma.table_choice import table_context, table_validate

    ctx = table_context(payload["table"], bench, cfg)
    return ctx, {**kw, "validate": table_validate(ctx), "keep_start": True}


#: iterations timed (after the first, which may compile or fault pages in) before the pace note
PACE_ITERATIONS = 10


def pace_note(cfg: Any, *, warn_s: float | None = None, stream: Any = None):
    """A ``croma.fit.train`` callback that, once :data:`PACE_ITERATIONS` iterations have been timed
    in this process, says in one line how long the rest will take when that is over ``warn_s``
    seconds (default :data:`SLOW_WARN_S`; any encoder, modality or device: measured, not estimated)."""
    import time

    state: dict = {}

    def on_row(row: dict) -> None:
        it = int(row["iteration"])
        if "done" in state:
            return
        if "t0" not in state:
            state.update(t0=time.perf_counter(), it0=it)
            return
        if it - state["it0"] < PACE_ITERATIONS:
            return
        state["done"] = True
        per_it = (time.perf_counter() - state["t0"]) / (it - state["it0"])
        left = per_it * max(0, cfg.iterations - it)
        if left >= (SLOW_WARN_S if warn_s is None else warn_s):
            every = int(cfg.checkpoint_every or 0)
            from croma.fit import CHECKPOINT_SECONDS

            keep = (f"last.pt is written every {every} iterations (~{every * per_it / 60:.0f} min here; "
                    f"--checkpoint-every N) or {CHECKPOINT_SECONDS / 60:.0f} min, whichever comes first, and "
                    "--resume continues from it after Ctrl-C"
                    if every else "last.pt is written at the end only (--checkpoint-every 0)")
            (stream or sys.stderr).write(
                f"note: {per_it:.2f} s per iteration here: the other {cfg.iterations - it} of {cfg.iterations} "
                f"iterations take ~{left / 60:.0f} min more, meta-val checks on top; --iterations N trains fewer; "
                f"{keep}\n")
            (stream or sys.stderr).flush()

    return on_row


def choose_table_finetune(ctx: Any, cfg: Any, *, quiet: bool, kept_start: bool) -> None:
    """After a table-settings run finished: meta-val's fine-tuning choice per k, as the table makes
    it, into ``best.pt`` (:func:`croma.table_choice.choose_finetune`), said in one line; ``kept_start``:
    ``best.pt`` is the untrained start."""
    from croma.table_choice import choice_line, choose_finetune

    finetune = choose_finetune(ctx, cfg.checkpoint_dir)
    if quiet:
        return
    print(choice_line(finetune))
    if kept_start:
        print("best.pt is the untrained start: no meta-val check during training beat it (the table marks such rows)")
    ev = ctx.eval
    print(f"the table's meta-test episodes: croma evaluate {cfg.checkpoint_dir} --seed {ev.seed} --repeats {ev.repeats} "
          f"--eval-tasks {ev.tasks} --queries {ev.queries} --shots {' '.join(str(k) for k in ev.shots)}"
          + (f" --manifest {cfg.data.manifest}" if cfg.data.benchmark == "manifest" else ""))


def check_leftovers(last: Any, *, resume: bool, quiet: bool) -> str | None:
    """Before ``croma train`` writes into a folder without ``last.pt`` (``last``: its path): a ``best.pt``
    left by a run that stopped before its first ``last.pt`` (interrupted early, a full disk) is
    refused rather than overwritten. Returns the note for ``--resume`` with nothing to continue (a new run
    starts), which :func:`announce` prints once the data has loaded, or None."""
    from croma.errors import CromaError

    if last.exists():
        return
    best = last.parent / "best.pt"
    if best.exists():
        raise CromaError(f"{best} is there but no last.pt (an earlier run stopped before its first last.pt, or the "
                         "disk filled): nothing to continue; evaluate that best.pt, or move it away, or choose another "
                         "--checkpoint-dir")
    if resume and not quiet:
        return f"note: --resume: no last.pt in {last.parent}, so a new run starts at iteration 0"
    return None
