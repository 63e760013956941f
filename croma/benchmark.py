"""`croma benchmark`: every method under the same budget, meta-tested on unseen target classes.

Flow: load the benchmark (``episodes.datasets.load_benchmark``), apply the preset's front-end
(``quick``: compact vectors where the modality allows, see :mod:`episodes.features`), then for
each method: train within the per-method wall-clock budget, choose the head initialisation on
**meta-val**, and meta-test ``eval_tasks`` N-way episodes per repeat for each k. Support labels
of meta-test episodes carry the run's symmetric label noise; query labels are clean.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from croma.baselines import get_method, list_methods, methods_for
from croma.baselines.common import MethodContext
from croma.errors import CromaError
from croma.evaluate import EvalConfig, evaluate_kshot
from croma.meta.trainer import TrainConfig, bench_to, resolve_device
from croma.report import write_noise_sweep, write_results

# Preset budgets. ``quick`` is the main job (make demo): 12 s of training per method on a
# 2-core CPU. ``paper`` uses sequence encoders and paper-scale budgets (hours on a CPU).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "frontend": "compact",
        "budget_seconds": 12.0,
        "repeats": 3,
        "train": dict(
            loss="cwcl", meta_batch=8, task_mix=0.5, inner_steps=5, inner_lr=3e-3, inner_optimizer="adam",
            meta_lr=1.0, meta_lr_final=0.0, shots=5, queries=5, align_batch=32, eval_tasks=8, eval_shots=[1, 5],
            eval_queries=5, finetune="all", finetune_steps=10, finetune_lr=1e-3,
            model=dict(embed_dim=128, hidden=256),
        ),
        "knobs": dict(val_repeats=2, val_checks=6, finetune_grid=[0, 25], finetune_lr_grid=[1e-3],
                      finetune_mode_grid=["all", "head"], ordinary_lr=1e-3, ordinary_batch=64),
    },
    "paper": {
        "frontend": "sequence",
        "budget_seconds": 1800.0,
        "repeats": 5,
        "train": dict(
            loss="cwcl", meta_batch=16, task_mix=0.5, inner_steps=5, inner_lr=1e-3, inner_optimizer="adam",
            meta_lr=1.0, meta_lr_final=0.0, shots=5, queries=5, align_batch=64, eval_tasks=8, eval_shots=[1, 5],
            eval_queries=5, finetune="all", finetune_steps=20, finetune_lr=1e-3,
            model=dict(embed_dim=128, hidden=256),
        ),
        "knobs": dict(val_repeats=3, val_checks=20, finetune_grid=[0, 10, 25, 50], finetune_lr_grid=[1e-3, 3e-3],
                      finetune_mode_grid=["all", "head"], ordinary_lr=1e-3, ordinary_batch=64),
    },
}


@dataclass
class BenchmarkConfig:
    """A `croma benchmark` run (field names follow the CLI flags)."""

    benchmark: str = "udhr-speech"
    methods: list[str] | None = None
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    repeats: int | None = None
    ways: int = 5
    eval_tasks: int = 8
    queries: int = 5
    loss: str | None = None
    label_noise: float = 0.0
    preset: str = "quick"
    budget_seconds: float | None = None
    device: str = "auto"
    seed: int = 0
    out: str | None = "runs/benchmark"
    data_root: str | None = None
    cache_dir: str | None = None
    manifest: str | None = None
    source: str | None = None
    target: str | None = None
    oracle_warm_start: bool = False
    progress: bool = True


def load_for_benchmark(cfg: BenchmarkConfig):
    """Load and front-end the benchmark as the preset says."""
    from episodes.datasets import load_benchmark
    from episodes.features import compact_benchmark

    bench = load_benchmark(
        cfg.benchmark, data_root=cfg.data_root, manifest=cfg.manifest, source=cfg.source, target=cfg.target,
        seed=cfg.seed, cache_dir=cfg.cache_dir, progress=cfg.progress,
    )
    if PRESETS[cfg.preset]["frontend"] == "compact":
        bench = compact_benchmark(bench)
    return bench


def _contexts(cfg: BenchmarkConfig, bench, preset: dict[str, Any]) -> tuple[TrainConfig, EvalConfig, int]:
    repeats = cfg.repeats if cfg.repeats is not None else int(preset["repeats"])
    tr = dict(preset["train"])
    if cfg.loss:
        tr["loss"] = cfg.loss
    train = TrainConfig(benchmark=cfg.benchmark, ways=cfg.ways, seed=cfg.seed, device=cfg.device, **tr)
    train.validate()
    ev = EvalConfig(
        shots=list(cfg.shots), ways=cfg.ways, tasks=cfg.eval_tasks, queries=cfg.queries, repeats=repeats,
        split="meta_test", finetune=train.finetune, finetune_steps=train.finetune_steps,
        finetune_lr=train.finetune_lr if train.finetune_lr is not None else train.inner_lr,
        finetune_optimizer=train.finetune_optimizer or train.inner_optimizer, label_noise=cfg.label_noise,
        seed=cfg.seed + 1000, nearest_centroid=True, retrieval=False,
    )
    ev.validate()
    return train, ev, repeats


def run_benchmark(cfg: BenchmarkConfig, bench=None) -> dict[str, Any]:
    """Run every chosen method and (when ``cfg.out``) write results.json/csv/png.

    Returns:
        The ``results.json`` dict (accuracies in percent).

    Raises:
        ValueError / CromaError: unknown method or preset, a method that does not apply.
    """
    if cfg.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)} (got {cfg.preset!r})")
    if not 0.0 <= cfg.label_noise < 1.0:
        raise ValueError(f"--label-noise must be in [0, 1) (got {cfg.label_noise})")
    preset = PRESETS[cfg.preset]
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    t_load = time.perf_counter()
    bench = bench if bench is not None else load_for_benchmark(cfg)
    load_seconds = time.perf_counter() - t_load
    bench = bench_to(bench, device)
    applicable = methods_for(bench)
    methods = cfg.methods or applicable
    for m in methods:
        get_method(m)  # unknown -> ValueError listing names
        if m not in applicable:
            raise CromaError(f"--methods: {m!r} does not apply to {cfg.benchmark} (applicable: {', '.join(applicable)})")
    train, ev, repeats = _contexts(cfg, bench, preset)
    train = replace(train, device=str(device))
    budget = float(cfg.budget_seconds if cfg.budget_seconds is not None else preset["budget_seconds"])
    if budget <= 0:
        raise ValueError(f"--budget-seconds must be > 0 (got {budget})")
    ctx = MethodContext(
        bench=bench, train=train, eval=ev, budget_seconds=budget, label_noise=cfg.label_noise,
        progress=cfg.progress, oracle_warm_start=cfg.oracle_warm_start, knobs=dict(preset["knobs"]),
    )
    rows: list[dict[str, Any]] = []
    per_method: dict[str, Any] = {}
    for name in methods:
        spec = get_method(name)
        if cfg.progress:
            print(f"[{name}] training (budget {budget:.0f} s) ...", flush=True)
        t0 = time.perf_counter()
        outcome = spec.fn(ctx)
        res_rows = []
        for k in ev.shots:
            ch = outcome.eval_choice[int(k)]
            ev_k = replace(ev, shots=[int(k)], head_init=ch["head_init"], finetune_steps=ch["finetune_steps"],
                           finetune_lr=ch["finetune_lr"], finetune=ch["finetune"])
            res_rows += evaluate_kshot(outcome.model, bench, ev_k, params=outcome.params)["rows"]
        res = {"rows": res_rows}
        eval_seconds = time.perf_counter() - t0 - outcome.train_seconds
        per_method[name] = {
            "eval_choice_meta_val": outcome.eval_choice, "eval_scores_meta_val": outcome.eval_scores,
            "train_seconds": outcome.train_seconds, "eval_seconds": eval_seconds,
            "outer_steps": outcome.outer_steps, "optimizer_steps": outcome.optimizer_steps,
            "notes": _plain(outcome.notes),
        }
        for r in res["rows"]:
            rows.append({
                "method": name, "shots": r["shots"], "accuracy_mean": r["accuracy_mean"],
                "accuracy_std": r["accuracy_std"], "repeats": r["repeats"],
                "target_samples": outcome.target_samples, "target_labels": outcome.target_labels,
                "centroid_mean": r.get("centroid_mean"), "centroid_std": r.get("centroid_std"),
                "head_init": outcome.eval_choice[int(r["shots"])]["head_init"],
                "finetune_steps": outcome.eval_choice[int(r["shots"])]["finetune_steps"],
                "finetune_lr": outcome.eval_choice[int(r["shots"])]["finetune_lr"],
                "finetune": outcome.eval_choice[int(r["shots"])]["finetune"],
                "train_seconds": round(outcome.train_seconds, 2),
                "outer_steps": outcome.outer_steps, "optimizer_steps": outcome.optimizer_steps,
            })
        if cfg.progress:
            accs = ", ".join(f"{r['shots']}-shot {r['accuracy_mean']:.1f}" for r in res["rows"])
            picks = ", ".join(
                f"{k}:{c['head_init']}/{c['finetune_steps']}/{c['finetune_lr']:g}/{c['finetune']}" for k, c in outcome.eval_choice.items()
            )
            print(f"[{name}] {accs} (meta-val picks {picks}; {outcome.train_seconds:.1f} s train)", flush=True)
    result = {
        "benchmark": cfg.benchmark,
        "loss": train.loss,
        "ways": cfg.ways,
        "label_noise": cfg.label_noise,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "rows": rows,
        "config": {
            "benchmark_config": _plain(asdict(cfg)),
            "train": train.to_dict(),
            "eval": _plain(asdict(ev)),
            "budget_seconds_per_method": budget,
            "data_load_seconds": round(load_seconds, 2),
            "device": str(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "splits": {k: [bench.class_names[c] for c in v] for k, v in bench.splits.items()},
            "features": bench.info.get("features"),
            "methods": per_method,
        },
    }
    if cfg.out:
        write_results(result, cfg.out)
    return result


def run_noise_sweep(cfg: BenchmarkConfig, rates: list[float]) -> list[dict[str, Any]]:
    """Run the benchmark at each noise rate (data loaded once); write per-rate results and the plots."""
    from pathlib import Path

    bench = load_for_benchmark(cfg)
    results = []
    for rate in rates:
        sub = replace(cfg, label_noise=float(rate), out=None if cfg.out is None else str(Path(cfg.out) / f"noise_{rate:g}"))
        results.append(run_benchmark(sub, bench=bench))
    if cfg.out:
        write_noise_sweep(results, cfg.out, cfg.shots)
    return results


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
