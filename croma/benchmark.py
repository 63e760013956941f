"""`croma benchmark`: every method under the same budget, meta-tested on unseen target classes.

Flow: load the benchmark (``episodes.datasets.load_benchmark``), apply the preset's front-end
(``quick``: compact vectors where the modality allows, see :mod:`episodes.features`), then for
each method: train within the per-method budget of optimiser steps, choose the kept parameters
and the meta-test fine-tuning settings on **meta-val**, and meta-test ``eval_tasks`` N-way
episodes per repeat for each k, once, at the end. Support labels of meta-val and meta-test
episodes carry the run's symmetric label noise; query labels are clean.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch

from croma.baselines import get_method, methods_for
from croma.bench_data import load_for_benchmark, skipped_items  # noqa: F401  (re-exported)
from croma.bench_units import UNIT_THREADS, Unit, auto_jobs, peak_rss_mib, run_units
from croma.benchmark_config import PRESETS, QUICK_METHODS, BenchmarkConfig, seeds_of  # noqa: F401  (re-exported)
from croma.config import TrainConfig
from croma.errors import CromaError
from croma.evaluate import EvalConfig
from croma.factory import bench_to, resolve_device
from croma.log import info
from croma.meta.inner import inner_loop_text
from croma.report import (
    EPISODES_FILE,
    EPISODES_KEY,
    compare_all,
    episode_digest,
    episode_lines,
    interval_settings,
    machine_info,
    rounded,
    row_statistics,
    write_noise_sweep,
    write_results,
)
from croma.stats import interval_text, mean_ci95, mean_std
from croma.task_sizes import fit_run_sizes
from croma.unit_store import UNITS_DIR, finished_units, kept_note, save_unit, stale_note, with_partials
from croma.unit_store import plain as _plain


def _contexts(cfg: BenchmarkConfig, bench, preset: dict[str, Any]) -> tuple[TrainConfig, EvalConfig, int]:
    repeats = cfg.repeats if cfg.repeats is not None else int(preset["repeats"])
    tasks = cfg.eval_tasks if cfg.eval_tasks is not None else int(preset["eval_tasks"])
    tr = dict(preset["train"])
    if cfg.loss:
        tr["loss"] = cfg.loss
    if cfg.model:  # --encoder / --embed-dim / --hidden / weights flags over the preset's model
        tr["model"] = {**tr.get("model", {}), **cfg.model}
    if cfg.loss_hp:
        tr["loss_hp"] = {**tr.get("loss_hp", {}), **cfg.loss_hp}
    if cfg.task_weights:
        tr["task_weights"] = dict(cfg.task_weights)
    if cfg.finetune_modes and "all" not in cfg.finetune_modes:
        tr["finetune"] = "head"  # meta-val checks during training fine-tune as meta-test may
    if cfg.compile_inner:
        tr["compile_inner"] = True
    train = TrainConfig(benchmark=cfg.benchmark, ways=cfg.ways, seed=cfg.seed, device=cfg.device,
                        val_label_noise=cfg.label_noise, strict_sizes=cfg.strict_sizes, **tr)
    train.validate()
    ev = EvalConfig(
        shots=list(cfg.shots), ways=cfg.ways, tasks=tasks, queries=cfg.queries, repeats=repeats,
        split="meta_test", finetune=train.finetune, finetune_steps=train.finetune_steps,
        finetune_lr=train.finetune_lr if train.finetune_lr is not None else train.inner_lr,
        finetune_optimizer=train.finetune_optimizer or train.inner_optimizer, label_noise=cfg.label_noise,
        seed=cfg.seed + 1000, nearest_centroid=True, retrieval=False,
    )
    ev.validate()
    return train, ev, repeats


def _knobs(cfg: BenchmarkConfig, preset: dict[str, Any]) -> dict[str, Any]:
    knobs = dict(preset["knobs"], **({"finetune_mode_grid": list(cfg.finetune_modes)} if cfg.finetune_modes else {}))
    over = {"val_episodes": cfg.val_episodes, "val_halving": True if cfg.val_halving else None}
    return dict(knobs, **{k: v for k, v in over.items() if v is not None})


def _method_hp(cfg: BenchmarkConfig, preset: dict[str, Any], name: str) -> dict[str, Any]:
    hp = dict(preset.get("method_hp", {}).get(name, {}))
    if cfg.method_hp and name in cfg.method_hp:
        hp.update(cfg.method_hp[name])
    return hp


def _budget(cfg: BenchmarkConfig, preset: dict[str, Any]) -> tuple[int | None, float | None]:
    """(steps, seconds): ``--budget-steps`` wins, then ``--budget-seconds``, then the preset's steps."""
    if cfg.budget_steps is not None:
        return int(cfg.budget_steps), None
    if cfg.budget_seconds is not None:
        return None, float(cfg.budget_seconds)
    return int(preset["budget_steps"]), None


def check_settings(cfg: BenchmarkConfig) -> None:
    """Every check that needs no data, made before the data loads (speech synthesis, feature
    building) and before the first method trains: the configuration (:meth:`BenchmarkConfig.validate`),
    the method names (known, none listed twice), ``$CROMA_JOBS`` when ``--jobs`` is not given, the training / meta-test settings every method
    runs under (``--loss``, ``--loss-hp``, the preset's sizes: :meth:`TrainConfig.validate`,
    :meth:`EvalConfig.validate`) and ``--split-classes`` against a data set with a fixed split.

    Raises:
        ValueError / CromaError: the first bad setting, named as its flag.
    """
    cfg.validate()
    names = list(cfg.methods or [])
    if names != ["all"]:
        seen: set[str] = set()
        for m in names:
            get_method(m)  # unknown -> ValueError listing names
            if m in seen:
                raise CromaError(f"--methods: {m!r} is listed twice (each method is trained once per training seed)")
            seen.add(m)
    _contexts(cfg, None, PRESETS[cfg.preset])
    if cfg.jobs is None:
        auto_jobs(1)  # a bad $CROMA_JOBS is named now, not after the data loads
    from episodes.datasets import check_split_classes

    check_split_classes(cfg.benchmark, cfg.split_classes)  # --split-classes on a generated or fixed split


def check_noise_rates(rates: list[float]) -> None:
    """``--noise-sweep`` rates: each in [0, 1), and no two writing one ``noise_<rate>`` folder.

    Raises:
        ValueError: naming the rate(s).
    """
    folders: dict[str, float] = {}
    for r in rates:
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0.0 <= float(r) < 1.0:
            raise ValueError(f"--noise-sweep rates must be in [0, 1) (got {r!r})")
        name = noise_folder(r)
        if name in folders:
            if folders[name] == float(r):
                raise ValueError(f"--noise-sweep: rate {r:g} is listed twice")
            raise ValueError(f"--noise-sweep: rates {folders[name]!r} and {float(r)!r} would both write {name}/ "
                             "(rates must differ within 6 significant digits)")
        folders[name] = float(r)


def noise_folder(rate: float) -> str:
    """The sub-folder of ``--out`` a noise-sweep rate writes: ``noise_<rate, 6 significant digits>``."""
    return f"noise_{float(rate):g}"


def run_benchmark(cfg: BenchmarkConfig, bench=None, *, on_data: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Run every chosen method and (when ``cfg.out``) write results.json/csv/png.

    Each method is trained ``cfg.train_seeds`` times (default: the preset's) (training seeds ``seed, seed+1, ...``) under
    the same budget, its meta-test settings chosen on meta-val, then evaluated once on the
    meta-test episodes, which are the same for every method and seed (paired). Rows carry the
    mean over episodes (per-episode accuracies averaged over the training seeds), its 95%
    interval, and the std over seeds; ``comparisons`` holds croma's paired differences against
    every other method (:func:`croma.stats.paired_comparison`).

    Args:
        cfg: the run's settings (validated here).
        bench: a prepared benchmark to use instead of loading ``cfg.benchmark`` (None: loaded).
        on_data: called with the prepared benchmark once it is loaded, before the first method trains
            (``croma benchmark`` says there how many items ``--skip-bad`` left out).

    Returns:
        The ``results.json`` dict (accuracies in percent).

    Raises:
        ValueError / CromaError: unknown method or preset, a method that does not apply, a bad budget
        (all but the applicability checked before the data loads: :func:`check_settings`).
    """
    check_settings(cfg)
    if cfg.out:  # a file, read-only or full disk: fail now, not after every method's budget
        from croma.checkpoint import ensure_output_dir

        ensure_output_dir(cfg.out, "--out")
    preset = PRESETS[cfg.preset]
    steps, seconds = _budget(cfg, preset)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    t_load = time.perf_counter()
    bench = bench if bench is not None else load_for_benchmark(cfg)
    load_seconds = time.perf_counter() - t_load
    if on_data is not None:
        on_data(bench)
    bench = bench_to(bench, device)
    applicable = methods_for(bench)
    if cfg.methods == ["all"]:
        methods = applicable
    else:
        methods = cfg.methods or [m for m in (preset.get("methods") or applicable) if m in applicable]
    for m in methods:
        get_method(m)  # unknown -> ValueError listing names
        if m not in applicable:
            raise CromaError(f"--methods: {m!r} does not apply to {cfg.benchmark} (applicable: {', '.join(applicable)})")
    train, ev, repeats = _contexts(cfg, bench, preset)
    train = replace(train, device=str(device))
    # task sizes the data can fill (croma.task_sizes), for every method alike: the meta-training
    # families croma runs (and the oracle's), meta-val and the meta-test k
    families = {"align", "source_cls", *(train.task_weights or {})} | ({"target_cls"} if "oracle" in methods else set())
    train, ev, sizes = fit_run_sizes(train, bench, families=sorted(families), eval_cfg=ev)
    if (sizes.changed or sizes.align_clusters is not None) and cfg.progress:  # or weak alignment
        info(sizes.line(), stream="stdout")
    rows: list[dict[str, Any]] = []
    per_method: dict[str, Any] = {}
    acc: dict[tuple[str, int], list[list[float]]] = {}  # (method, k) -> [seeds][episodes], rounded (croma.report)
    ep_lines: list[tuple] = []  # episodes.csv
    hashes: dict[int, list[str]] = {}
    n_seeds = seeds_of(cfg, preset)
    train_seeds = [cfg.seed + s for s in range(n_seeds)]
    budget_text = f"{steps} optimiser steps" if steps is not None else f"{seconds:g} s wall clock"
    hps = {name: _method_hp(cfg, preset, name) for name in methods}
    units = [
        Unit(method=name, seed=seed, shots=tuple(int(k) for k in ev.shots), ctx=dict(
            train=replace(train, seed=seed), eval=ev, budget_seconds=seconds, budget_steps=steps,
            label_noise=cfg.label_noise, oracle_warm_start=cfg.oracle_warm_start, knobs=_knobs(cfg, preset),
            hp=hps[name]))
        for name in methods for seed in train_seeds
    ]
    # finished units go to OUT/units as they end; --resume reuses those of the same settings (croma.unit_store)
    fps, stored = finished_units(cfg.out, bench, units, resume=cfg.resume)
    todo = with_partials([u for u in units if (u.method, u.seed) not in stored], cfg.out, fps, resume=cfg.resume)
    jobs = cfg.jobs if cfg.jobs is not None else auto_jobs(max(1, len(todo)), str(device))
    if cfg.progress:
        seeds_text = f"{n_seeds} training seed{'s' if n_seeds > 1 else ''}"
        where = f"{min(jobs, len(todo))} worker processes" if jobs > 1 and len(todo) > 1 else "this process"
        info(f"{len(methods)} methods x {seeds_text} = {len(units)} runs (budget {budget_text} each) in {where}, "
             f"{UNIT_THREADS} thread each; Reptile inner loop: {inner_loop_text(train)}", stream="stdout")
        if cfg.resume:
            info(f"resuming: {len(stored)} of {len(units)} runs finished earlier ({Path(cfg.out) / UNITS_DIR}), "
                 f"{len(todo)} to run", stream="stdout")
            stale = stale_note(cfg.out, todo)
            if stale:
                info(stale, stream="stdout")

    def unit_done(u: Unit, facts: dict[str, Any]) -> None:
        if cfg.out:
            save_unit(cfg.out, u, fps[(u.method, u.seed)], facts)
        if cfg.progress:
            accs = ", ".join(f"{k}-shot {float(r['accuracy_mean']):.1f}" for k, r in facts["evals"].items())
            info(f"[{u.method}] seed {u.seed}: {accs} ({facts['seconds']:.1f} s train + meta-val, "
                 f"{facts['eval_seconds']:.1f} s meta-test)", stream="stdout")

    try:
        facts_by = {**stored, **run_units(bench, todo, jobs=jobs, progress=cfg.progress, done=unit_done)}
    except BaseException:
        if cfg.out and (note := kept_note(cfg.out, units)):  # the finished runs --resume will reuse
            info(note, stream="stderr")
        raise
    for name in methods:
        hp = hps[name]
        seed_runs = [facts_by[(name, seed)] for seed in train_seeds]
        first = seed_runs[0]
        per_method[name] = {
            "hp": _plain(hp),
            "seeds": [
                {
                    "seed": r["seed"], "eval_choice_meta_val": r["eval_choice"], "eval_scores_meta_val": r["eval_scores"],
                    "train_seconds": r["train_seconds"], "eval_seconds": r["eval_seconds"],
                    # the rest of the unit's time before meta-test: the meta-val choice of the fine-tuning setting
                    "meta_val_seconds": round(max(0.0, r["seconds"] - r["train_seconds"]), 3),
                    "cpu_seconds": r.get("cpu_seconds"), "eval_cpu_seconds": r.get("eval_cpu_seconds"),
                    "outer_steps": r["outer_steps"], "optimizer_steps": r["optimizer_steps"], "examples": r["examples"],
                    "notes": _plain(r["notes"]),  # and, run by an earlier invocation (--resume), where and when
                    **({"resumed": True, "cpu": (r.get("machine") or {}).get("cpu"), "finished": r.get("finished")}
                       if (name, r["seed"]) in stored else {}),
                }
                for r in seed_runs
            ],
            # kept from earlier releases: the first seed's facts at the top level
            "eval_choice_meta_val": first["eval_choice"], "eval_scores_meta_val": first["eval_scores"],
            "train_seconds": first["train_seconds"], "eval_seconds": first["eval_seconds"],
            "outer_steps": first["outer_steps"], "optimizer_steps": first["optimizer_steps"], "notes": _plain(first["notes"]),
        }
        for k in ev.shots:
            per_seed = [r["evals"][int(k)] for r in seed_runs]
            n_ep = len(per_seed[0]["episode_accuracies"])
            # the two-level interval over training seeds and episodes (croma.stats), from the rounded
            # per-episode accuracies episodes.csv keeps, so `croma report` recomputes the same numbers
            acc[(name, int(k))] = [rounded(p["episode_accuracies"]) for p in per_seed]
            if int(k) not in hashes:
                hashes[int(k)] = episode_hashes(bench, ev, int(k))
            ep_lines += episode_lines(name, int(k), train_seeds, acc[(name, int(k))], hashes[int(k)])
            st = row_statistics(acc[(name, int(k))], interval_settings())
            reps = [sum(p["accuracies"][r] for p in per_seed) / len(per_seed) for r in range(repeats)]
            rep_std = mean_std(reps)[1]
            cen = None
            if all("centroid_episode_accuracies" in p for p in per_seed):
                cen_ep = [sum(p["centroid_episode_accuracies"][i] for p in per_seed) / len(per_seed) for i in range(n_ep)]
                cen = mean_ci95(cen_ep)
            ch = first["eval_choice"][int(k)]
            rows.append({
                "method": name, "shots": int(k), "accuracy_mean": st["accuracy_mean"], "accuracy_ci95": st["accuracy_ci95"],
                "accuracy_ci95_low": st["accuracy_ci95_low"], "accuracy_ci95_high": st["accuracy_ci95_high"],
                "episodes": n_ep, "accuracy_std": rep_std, "repeats": repeats, "train_seeds": n_seeds,
                "accuracy_seed_std": st["accuracy_seed_std"], "accuracy_per_seed": st["accuracy_per_seed"],
                "target_samples": first["target_samples"], "target_labels": first["target_labels"],
                "centroid_mean": None if cen is None else cen[0], "centroid_ci95": None if cen is None else cen[1],
                "centroid_std": per_seed[0].get("centroid_std"),
                "head_init": ch["head_init"], "finetune_steps": ch["finetune_steps"], "finetune_lr": ch["finetune_lr"],
                "finetune": ch["finetune"], "train_seconds": round(first["train_seconds"], 2),
                "outer_steps": first["outer_steps"], "optimizer_steps": first["optimizer_steps"], "examples": first["examples"],
            })
        if cfg.progress:
            accs = ", ".join(
                f"{r['shots']}-shot {r['accuracy_mean']:.1f} ± {r['accuracy_ci95']:.1f}" for r in rows if r["method"] == name
            )
            picks = ", ".join(
                f"{k}:{c['head_init']}/{c['finetune_steps']}/{c['finetune_lr']:g}/{c['finetune']}" for k, c in first["eval_choice"].items()
            )
            info(f"[{name}] {accs} (meta-val picks {picks}; {first['train_seconds']:.1f} s train)", stream="stdout")
    # croma against every other method, paired by training seed and episode (croma.report.compare_all)
    comparisons = compare_all(acc, methods, ev.shots, interval_settings())
    n_episodes = next((len(v[0]) for v in acc.values()), 0)
    result = {
        "benchmark": cfg.benchmark,
        "loss": train.loss,
        "ways": train.ways,  # used: a split of too few classes lowers it (task_sizes)
        "label_noise": cfg.label_noise,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "budget_steps": steps,
        "train_seeds": n_seeds,
        "jobs": min(jobs, len(units)),
        "unit_threads": UNIT_THREADS,
        "peak_rss_mib": peak_rss_mib(facts_by),
        "resumed_units": len(stored),  # and the seconds all runs took, reused ones included (wall x jobs, roughly)
        "unit_seconds": round(sum(f["seconds"] + f["eval_seconds"] for f in facts_by.values()), 1),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "rows": rows,
        "comparisons": comparisons,
        "interval": interval_text(n_seeds, n_episodes, interval_settings()["resamples"],
                                  mode=interval_settings()["episodes"], seed=interval_settings()["seed"]),
        "interval_settings": interval_settings(),
        "episodes_file": EPISODES_FILE,
        "machine": machine_info(),
        "task_sizes": sizes.to_dict(),
        "skipped_items": skipped_items(bench),  # missing or unreadable items --skip-bad left out of the data
        "config": {
            "benchmark_config": _plain(asdict(cfg)),
            "train": train.to_dict(),
            "eval": _plain(asdict(ev)),
            "budget_steps_per_method": steps,
            "budget_seconds_per_method": seconds,
            "data_load_seconds": round(load_seconds, 2),
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "splits": {k: [bench.class_names[c] for c in v] for k, v in bench.splits.items()},
            "features": bench.info.get("features"),
            "methods": per_method,
        },
        EPISODES_KEY: ep_lines,  # -> episodes.csv (croma.report.write_results), not results.json
    }
    if cfg.out:
        write_results(result, cfg.out)
    return result


def run_noise_sweep(cfg: BenchmarkConfig, rates: list[float], *,
                    on_data: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark at each noise rate (data loaded once, then given to ``on_data``, as in
    :func:`run_benchmark`); write per-rate results and the plots."""
    from pathlib import Path

    check_noise_rates(rates)
    for rate in rates:  # every rate's settings before the data loads and the first rate trains
        check_settings(replace(cfg, label_noise=float(rate)))
    bench = load_for_benchmark(cfg)
    if on_data is not None:
        on_data(bench)
    results = []
    for rate in rates:
        sub = replace(cfg, label_noise=float(rate), out=None if cfg.out is None else str(Path(cfg.out) / noise_folder(rate)))
        results.append(run_benchmark(sub, bench=bench))
    if cfg.out:
        write_noise_sweep(results, cfg.out, cfg.shots)
    return results


def episode_hashes(bench, ev: EvalConfig, shots: int) -> list[str]:
    """The digest (:func:`croma.report.episode_digest`) of every meta-test episode at ``shots``, in the order
    of ``evaluate_kshot``'s ``episode_accuracies`` (repeat, then episode), drawn as the evaluation draws them."""
    from croma.evaluate import _episode_batch

    x = torch.zeros(int(bench.data[bench.target].labels.shape[0]), 0)
    out = []
    for r in range(ev.repeats):
        b = _episode_batch(bench, x, replace(ev, shots=[int(shots)]), int(shots), r)
        out += [episode_digest(b["rs"][i], b["ys"][i], b["rq"][i], b["yq"][i]) for i in range(b["rs"].shape[0])]
    return out


