"""`croma benchmark NAME`: methods × shots × repeats, a Table-1-shaped table and results files."""

from __future__ import annotations

import sys

from croma.benchmark_config import LOCAL_SETTINGS as _LOCAL  # what a results file must not choose here (paths)
from croma.cli.config_flags import benchmark_names  # the names NAME / BENCH accept (re-exported)


def __getattr__(name: str):  # ``BENCHMARKS`` kept for importers: the registry's names, read when asked
    if name == "BENCHMARKS":
        return tuple(benchmark_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _float_list(text: str) -> list[float]:
    """``--noise-sweep R1,R2,...``: the rates; a bad one is an argparse error naming the flag and the value."""
    import argparse

    rates = []
    for x in text.split(","):
        if not x.strip():
            continue
        try:
            rates.append(float(x))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{x.strip()!r} is not a number (got {text!r}; expects comma-separated rates like 0,0.2,0.4)") from None
    return rates


def _methods(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError("--methods needs at least one method name")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise ValueError(f"--methods: {', '.join(twice)} listed twice (each method is trained once per training seed)")
    return names


def add_parser(sub) -> None:
    from croma.baselines import list_methods
    from croma.losses import list_losses

    p = sub.add_parser(
        "benchmark",
        help="run methods × shots × repeats on a benchmark and write results.json/csv/png",
        description="Reproduce the CROMA paper's Table 1 shape on a benchmark: meta-train each method "
        "under the same budget, meta-test on unseen target classes.",
    )
    p.add_argument("name", nargs="?", default=None, metavar="NAME",
                   help=f"one of {', '.join(benchmark_names())} (may come from --config)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of: {', '.join(list_methods())}, or 'all' (default: the preset's methods that apply)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="k-shot settings (default 1 5 10)")
    p.add_argument("--repeats", type=int, default=None, help="meta-test repeats with different seeds (preset default)")
    p.add_argument("--ways", type=int, default=5, help="N-way (default 5)")
    p.add_argument("--eval-tasks", type=int, default=None,
                   help="meta-test episodes per repeat (preset default: 200; quick: 1 repeat x 3 training seeds, paper: "
                   "3 repeats)")
    p.add_argument("--loss", choices=list_losses(), default=None, help="alignment objective (preset default: cwcl)")
    p.add_argument("--label-noise", type=float, default=0.0, help="symmetric noise rate on target labels, in [0, 1)")
    p.add_argument("--noise-sweep", type=_float_list, default=None, metavar="R1,R2,...",
                   help="run a sweep of noise rates and plot accuracy against rate")
    p.add_argument("--preset", choices=("quick", "paper"), default="quick", help="training budgets (default quick)")
    p.add_argument("--budget-steps", type=int, default=None, metavar="N",
                   help="optimiser steps per trained method, the same for every method (preset default: quick 3000); "
                   "Reptile runs N / (meta-batch x inner steps) outer iterations, ordinary training N mini-batch steps")
    p.add_argument("--budget-seconds", type=float, default=None, metavar="S",
                   help="wall-clock training budget per method instead of steps (exploration only: results then "
                   "depend on machine load; at most 604800)")
    p.add_argument("--train-seeds", type=int, default=None, metavar="S",
                   help="train each method S times with seeds SEED..SEED+S-1 (1-100; preset default: quick 3, paper 1); "
                   "intervals cover training seeds and episodes")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes for the (method, training seed) runs (default: $CROMA_JOBS, else the CPU cores "
                   "available; at most one per run; 1 on a GPU); every run uses one thread, so results do not depend on N")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/benchmark", help="output directory (default runs/benchmark)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: reuse the (method, training seed) runs it finished "
                   "(OUT/units/, written as each run ends) and run only the rest; refused when they were run with "
                   "other settings, data or versions")
    from croma.cli.frontend_flags import add_frontend_flags

    add_frontend_flags(p)
    p.add_argument("--oracle-warm-start", action="store_true", help="supervised warm start for the oracle")
    p.add_argument("--compile-inner", action="store_true",
                   help="run the Reptile methods' batched inner step through torch.compile (faster per step after a "
                   "one-off compile per task shape, tens of seconds on CPU; worth it for long runs and sequence "
                   "features; rounding differs from eager)")
    p.add_argument("--finetune-modes", type=lambda t: [m.strip() for m in t.split(",") if m.strip()], default=None,
                   metavar="all,head",
                   help="what meta-val may choose to fine-tune at meta-test (default: the preset's, all,head); 'head' "
                   "never fine-tunes whole encoders, which makes --preset paper's evaluation ~10x cheaper on a CPU")
    p.add_argument("--val-episodes", type=int, default=None, metavar="N",
                   help="meta-val episodes each candidate fine-tuning setting is scored on, per k, when a run chooses "
                   "its meta-test setting (default: the preset's, 100); with small --eval-tasks this choice is most of "
                   "a run's time, so lower both for a quick look")
    p.add_argument("--val-halving", action="store_true",
                   help="compare the candidate fine-tuning settings by successive halving (most scored on a prefix "
                   "of the meta-val episodes): a faster choice that can differ from scoring every candidate fully")
    p.add_argument("--strict-sizes", action="store_true",
                   help="keep the task sizes exactly as asked (--shots, --queries and the preset's meta-training and "
                   "meta-val sizes): an error when the data cannot fill them; by default meta-training and meta-val "
                   "sizes are lowered to fit and a meta-test k no class can serve is dropped, with one line saying so")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from croma.cli.config_flags import add_config_flags, add_method_hp_flag, mark_defaults

    add_config_flags(p, what="benchmark")
    add_method_hp_flag(p)
    mark_defaults(p)
    p.set_defaults(func=run)


# flags that set the BenchmarkConfig field of the same name
_DIRECT = ("shots", "repeats", "ways", "eval_tasks", "loss", "label_noise", "preset", "budget_steps", "budget_seconds",
           "train_seeds", "jobs", "device", "seed", "out", "data_root", "cache_dir", "manifest", "source", "target",
           "oracle_warm_start", "audio_model", "skip_bad", "split_classes", "extra_modalities", "finetune_modes",
           "val_episodes", "val_halving", "compile_inner", "strict_sizes", "resume")


def config_from_args(args) -> "BenchmarkConfig":  # noqa: F821
    """Check the parsed flags and build the :class:`croma.benchmark.BenchmarkConfig` they describe:
    the defaults, ``--config FILE`` (a settings file, or a results.json to rerun), then the flags
    given on the command line (``--method-hp`` merged over the file's ``method_hp``)."""
    from croma.benchmark import BenchmarkConfig
    from croma.cli.config_flags import apply_flags, from_file, given, merge_method_hp, method_hp, read_config, unwrap_defaults

    if not hasattr(args, "given"):
        unwrap_defaults(args)
    file, kind = read_config(getattr(args, "config", None))
    if kind == "checkpoint":
        raise ValueError(f"--config {args.config}: a training checkpoint; rerun it with 'croma train --config "
                         f"{args.config}' (croma benchmark reads settings files and results.json)")
    if kind == "results":
        file = {k: v for k, v in dict(file.get("benchmark_config") or {}).items() if k not in _LOCAL}
    elif file:  # a settings file may be flat like croma train's: hidden = 16, encoder = {...}
        from croma.config import nest_model_settings

        file = nest_model_settings(file)
    try:
        if kind == "file" and isinstance(file.get("methods"), str):  # methods = "croma,pretrain", as the flag
            file["methods"] = _methods(file["methods"])
        base = BenchmarkConfig.from_dict(file)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--config {args.config}: {exc}") from None
    settings = {k: getattr(base, k) for k in file} if file else {}
    apply_flags(args, settings, direct=_DIRECT, lists=("shots",), name=args.name, label="NAME")
    if given(args, "methods"):
        settings["methods"] = _methods(args.methods)
    if given(args, "quiet"):
        settings["progress"] = not args.quiet
    hp = method_hp(args)
    if hp is not None:  # merged over the file's, method by method and key by key
        settings["method_hp"] = merge_method_hp(settings.get("method_hp"), hp)
    cfg = BenchmarkConfig(**settings)
    with from_file(args, file):  # a value the file set (and no flag overrode) is named with the file
        cfg.validate()
    if args.noise_sweep is not None:
        from croma.benchmark import check_noise_rates

        if cfg.label_noise:  # the sweep sets the rate of each of its runs: one of the two
            raise ValueError(f"--label-noise {cfg.label_noise:g} and --noise-sweep: the sweep sets each run's noise "
                             "rate; give one of them (add the rate to the sweep's list)")

        check_noise_rates(args.noise_sweep)
    return cfg


def run(args) -> int:
    from pathlib import Path

    from croma.checkpoint import new_folders, remove_if_empty
    from croma.errors import error_hints

    cfg = config_from_args(args)
    from croma.perf.workload import tune_allocator

    tune_allocator()  # fine-tuning reuses large per-episode buffers instead of re-faulting fresh pages
    made = []
    if cfg.out:  # the folders this run makes: refused on its data or methods, it leaves none of them empty
        from croma.benchmark import noise_folder

        subs = [Path(cfg.out) / noise_folder(r) for r in args.noise_sweep or ()]
        made = new_folders(cfg.out, *subs)
    try:
        from contextlib import nullcontext

        from croma.runlock import lock_run_folder

        # one writer per --out folder (croma.runlock): two benchmarks there would mix their results files
        with error_hints(**_hints(cfg)), lock_run_folder(cfg.out, "--out") if cfg.out else nullcontext():
            return _run(args, cfg)
    except BaseException:
        remove_if_empty(made)
        raise


def _hints(cfg) -> dict:
    """What controls the task sizes the library checks, in croma benchmark's terms (the --preset fixes
    the meta-training tasks and meta-val's shots; see croma.errors.error_hints)."""
    from croma.benchmark_config import PRESETS

    tr = PRESETS.get(cfg.preset, {}).get("train", {})
    val = "/".join(str(k) for k in tr.get("eval_shots", ()))
    more = "or more items per class"
    return {
        "meta_test_episodes": f"use fewer --ways or --shots, {more} (meta-test draws {{queries}} queries per class)",
        "meta_val_episodes": f"use fewer --ways or --shots, {more} (meta-val draws --shots and the --preset {cfg.preset} "
        f"{val}-shot tasks, {{queries}} queries per class)",
        "source_cls_tasks": f"use fewer --ways, {more} (--preset {cfg.preset} meta-trains on {{shots}}-shot tasks "
        "with {queries} queries per class)",
        "target_cls_tasks": f"use fewer --ways, {more} (--preset {cfg.preset} meta-trains on {{shots}}-shot tasks "
        "with {queries} queries per class)",
    }


def _on_data(cfg):
    """The callback that says once, when the data has loaded, how many items --skip-bad left out (the line
    croma train prints; results.json keeps the count as ``skipped_items``) and which extra modalities join."""
    from croma.bench_data import data_notes, skipped_items, skipped_line

    def report(bench) -> None:
        if cfg.skip_bad and (n := skipped_items(bench)):
            sys.stderr.write(skipped_line(n) + "\n")
            sys.stderr.flush()
        if not cfg.progress:
            return
        for line in data_notes(bench):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return report


def _run(args, cfg) -> int:
    from croma.benchmark import run_benchmark, run_noise_sweep
    from croma.report import format_table

    if args.noise_sweep:
        results = run_noise_sweep(cfg, args.noise_sweep, on_data=_on_data(cfg))
        for res in results:
            print(format_table(res))
            print()
        from croma.report import sweep_shots

        pngs = ", ".join(f"noise_sweep_{k}shot.png" for k in sweep_shots(results, cfg.shots))
        print(f"wrote {cfg.out}/noise_sweep.json and {pngs}" if cfg.out else "no --out: nothing written")
        return 0
    result = run_benchmark(cfg, on_data=_on_data(cfg))
    print(format_table(result))
    print(f"wall time {result['wall_seconds']:.0f} s; wrote {cfg.out}/results.json, results.csv, results.png")
    sys.stdout.flush()
    return 0
