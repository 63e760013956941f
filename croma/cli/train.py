"""`croma train BENCH --loss NAME --iterations N --checkpoint-dir DIR`: CROMA meta-training.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) every process is one rank
of the run; ``--nproc N`` starts N such processes on this machine (see :mod:`croma.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

from croma.cli.config_flags import benchmark_names  # the names NAME / BENCH accept (re-exported)
from croma.cli.train_steps import AUTO_COMPILE_ITERATIONS, announce, choose_compile, choose_table_finetune, slow_run_warning


def __getattr__(name: str):  # ``BENCHMARKS`` kept for importers: the registry's names, read when asked
    if name == "BENCHMARKS":
        return tuple(benchmark_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# CLI-level defaults that differ from the library's (croma.config): the command line picks CUDA
# when present; the library stays on the CPU unless asked.
CLI_DEFAULTS = {"device": "auto", "model": {"embed_dim": 128, "hidden": 128}}


def add_parser(sub) -> None:
    from croma.config import TrainConfig
    from croma.losses import list_losses
    from croma.meta.inner import INNER_LOOPS, INNER_OPTIMIZERS
    from croma.meta.outer import OUTER_ALGORITHMS

    d = TrainConfig()  # every default below is the library's (croma.config), except CLI_DEFAULTS
    p = sub.add_parser(
        "train",
        help="meta-train CROMA (batched Reptile) on a benchmark",
        description="Meta-train encoders, alignment layer and shared classifier with CROMA "
        "(alignment tasks + source classification tasks, Reptile outer loop). Writes DIR/last.pt "
        "and DIR/best.pt (best meta-val accuracy). With --config FILE the settings come from FILE "
        "and the flags given override them.",
    )
    p.add_argument("bench", metavar="BENCH", nargs="?", default=None,
                   help=f"benchmark: {', '.join(benchmark_names())} (may come from --config)")
    p.add_argument("--loss", choices=list_losses(), default=d.loss, help=f"alignment objective (default {d.loss})")
    p.add_argument("--features", choices=("sequence", "compact"), default=d.features,
                   help="sequence: byte ids / log-mel frames / images (cnn1d, lstm, cnn2d encoders); compact: "
                   "n-gram and audio-statistics vectors for MLP encoders, as `croma benchmark --preset quick` "
                   f"(default {d.features})")
    p.add_argument("--iterations", type=int, default=d.iterations, help=f"outer iterations (default {d.iterations})")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="run directory for last.pt / best.pt (required)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt (same settings required)")
    p.add_argument("--device", default=CLI_DEFAULTS["device"], choices=("auto", "cpu", "cuda"),
                   help="default auto (CUDA when available)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bar, notes or warnings (errors only)")
    p.add_argument("--progress", dest="force_progress", action="store_true",
                   help="a tqdm progress bar even when stderr is not a terminal (default there: a line per ~10 %%)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log DIR/metrics.csv's rows as TensorBoard scalars in DIR/tensorboard "
                   "(needs the extra: pip install 'croma-meta[tensorboard]')")
    p.add_argument("--outer", dest="algorithm", choices=OUTER_ALGORITHMS.names(), default=d.algorithm,
                   help="outer algorithm: reptile (theta += eps * mean(phi - theta)) or fomaml (first-order MAML, "
                   f"theta -= eps * mean grad L(phi); use a small --meta-lr such as 1e-3) (default {d.algorithm})")
    p.add_argument("--meta-batch", type=int, default=d.meta_batch, help=f"tasks per outer iteration (default {d.meta_batch})")
    p.add_argument("--task-mix", type=float, default=d.task_mix,
                   help=f"fraction of alignment tasks in a meta-batch, in [0, 1] (default {d.task_mix})")
    p.add_argument("--inner-steps", type=int, default=d.inner_steps, help=f"inner-loop steps S (default {d.inner_steps})")
    p.add_argument("--inner-lr", type=float, default=d.inner_lr, help=f"inner-loop learning rate (default {d.inner_lr:g})")
    p.add_argument("--inner-optimizer", choices=INNER_OPTIMIZERS, default=d.inner_optimizer)
    p.add_argument("--inner-loop", choices=INNER_LOOPS, default=d.inner_loop,
                   help="vmap over tasks (default), a Python loop, or the optional 'higher' package's optimisers")
    p.add_argument("--task-chunk", type=int, default=d.task_chunk,
                   help="tasks per batched inner-loop chunk; chunks are summed in a fixed order and shared whole "
                   "between processes, so results do not depend on --nproc (more chunks than processes keep them "
                   f"all busy; smaller chunks cost speed per process; 0: one chunk per task family; default {d.task_chunk})")
    p.add_argument("--compile-inner", action="store_true",
                   help="run the batched inner step through torch.compile (a one-off compile per chunk shape, then "
                   "faster steps; 'croma bench meta --compile'); unless this or --no-compile-inner is given, croma "
                   f"train compiles cnn1d encoders on sequence features on the CPU for >= {AUTO_COMPILE_ITERATIONS} "
                   "iterations when a C++ compiler is found")
    p.add_argument("--no-compile-inner", dest="compile_inner", action="store_false",
                   help="keep the inner step eager where croma train would compile it (it rounds differently)")
    p.add_argument("--meta-lr", type=float, default=d.meta_lr, help=f"outer step size at the start (default {d.meta_lr:g})")
    p.add_argument("--meta-lr-final", type=float, default=d.meta_lr_final,
                   help=f"outer step size at the end (linear; default {d.meta_lr_final:g})")
    p.add_argument("--ways", type=int, default=d.ways, help=f"N-way (default {d.ways})")
    p.add_argument("--shots", type=int, default=d.shots, help=f"K-shot of source classification tasks (default {d.shots})")
    p.add_argument("--queries", type=int, default=d.queries,
                   help=f"extra items per class in classification tasks (default {d.queries})")
    p.add_argument("--align-batch", type=int, default=d.align_batch, help=f"pairs per alignment task (default {d.align_batch})")
    p.add_argument("--strict-sizes", action="store_true",
                   help="keep --shots, --queries, --align-batch, --eval-shots and eval_queries exactly as given (an "
                   "error when the data cannot fill them); by default they are lowered to fit small data sets "
                   "(queries, then shots), with one line saying so")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help=f"meta-val every N iterations; 0 = never (default {d.eval_every})")
    p.add_argument("--eval-tasks", type=int, default=d.eval_tasks, help=f"meta-val episodes (default {d.eval_tasks})")
    p.add_argument("--eval-shots", type=int, nargs="+", default=list(d.eval_shots),
                   help=f"meta-val k (default {' '.join(map(str, d.eval_shots))})")
    p.add_argument("--finetune", choices=("all", "head"), default=d.finetune, help="parameters fine-tuned at meta-val/test")
    p.add_argument("--finetune-steps", type=int, default=d.finetune_steps,
                   help=f"fine-tuning steps at meta-val/test (default {d.finetune_steps})")
    p.add_argument("--finetune-lr", type=float, default=d.finetune_lr, help="fine-tuning lr (default: --inner-lr)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help=f"write last.pt every N iterations (default {d.checkpoint_every})")
    p.add_argument("--head-init", choices=("meta", "zero", "prototype", "auto"), default=d.head_init,
                   help="meta-test head initialisation; auto = choose on meta-val at the end")
    from croma.cli.config_flags import add_config_flags, mark_defaults
    from croma.cli.frontend_flags import add_frontend_flags

    add_frontend_flags(p)
    p.add_argument("--reconstruction", action="store_true",
                   help="add a reconstruction head on the target modality (the model setting reconstruction), which "
                   "the target_recon task family needs, e.g. --reconstruction --task-weights "
                   "align=0.5,source_cls=0.25,target_recon=0.25")
    add_config_flags(p, what="training")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="split each meta-batch across N local processes (torch.distributed; gloo on CPU, "
                   "nccl on CUDA, one thread / GPU each); under torchrun leave this at 1")
    p.add_argument("--dist-timeout", type=float, default=120.0, metavar="S",
                   help="seconds a distributed collective may wait for a peer before the run stops "
                   "with an error (default 120)")
    mark_defaults(p)
    p.set_defaults(func=run)


# flags that set a TrainConfig setting of the same flat name (croma.config.FLAT); the others are
# mapped in config_from_args
_DIRECT = ("loss", "features", "iterations", "checkpoint_dir", "device", "seed", "algorithm", "meta_batch", "task_mix",
           "inner_steps", "inner_lr", "inner_optimizer", "inner_loop", "task_chunk", "compile_inner", "meta_lr",
           "meta_lr_final", "ways", "shots", "queries", "align_batch", "eval_every", "eval_tasks", "eval_shots",
           "finetune", "finetune_steps", "finetune_lr", "checkpoint_every", "head_init", "data_root", "cache_dir",
           "manifest", "source", "target", "audio_model", "skip_bad", "split_classes", "extra_modalities",
           "strict_sizes")
# what controls the task sizes the library checks, in croma train's terms (croma.errors.error_hints)
TRAIN_HINTS = {
    "meta_val_episodes": "use fewer --ways or --eval-shots, or a smaller eval_queries setting in --config "
    "(meta-val draws {queries} queries per class)",
    "source_cls_tasks": "use fewer --ways, --shots or --queries",
    "target_cls_tasks": "use fewer --ways, --shots or --queries",
}
# settings a checkpoint or results file must not choose on this machine (paths, where to write)
_LOCAL = ("data_root", "cache_dir", "manifest", "checkpoint_dir", "stop_after", "time_budget_s")


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    """Build and validate a :class:`croma.config.TrainConfig`: the library defaults, the CLI's
    (:data:`CLI_DEFAULTS`), ``--config FILE``, then the flags given on the command line."""
    from croma.cli.config_flags import apply_flags, given, read_config, unwrap_defaults
    from croma.config import TrainConfig

    if not hasattr(args, "given"):
        unwrap_defaults(args)
    file, kind = read_config(getattr(args, "config", None))
    table_note = None
    if kind == "results":  # a benchmark's table: train its croma row's settings (croma.table_settings)
        from croma.table_settings import settings_from_results

        args.table_results = dict(file.get("benchmark_config") or {})
        file, table_note = settings_from_results(args.config, file)
    try:
        from_file = TrainConfig.from_dict(file) if file else None
        if from_file is not None:
            from_file.check_types()  # the file's types and ranges (croma.bounds), naming the file
        flat = from_file.flat() if from_file is not None else {}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--config {args.config}: {exc}") from None
    if file:  # only the settings the file names
        named = TrainConfig.flat_keys(file)
        flat = {k: v for k, v in flat.items() if k in named}
        if kind in ("checkpoint", "results"):
            flat = {k: v for k, v in flat.items() if k not in _LOCAL}
    # croma train chooses the compiled inner step only where nothing else did (train_steps.choose_compile)
    args.compile_named = kind == "results" or "compile_inner" in flat or given(args, "compile_inner")
    settings: dict = {"device": CLI_DEFAULTS["device"], **flat}
    settings["model"] = {**CLI_DEFAULTS["model"], **flat.get("model", {})}
    apply_flags(args, settings, direct=_DIRECT, lists=("eval_shots",), name=args.bench, label="BENCH")
    if given(args, "reconstruction"):  # a model setting (ModelConfig.reconstruction), like --hidden
        settings["model"] = {**settings.get("model", {}), "reconstruction": True}
    if not settings.get("checkpoint_dir"):
        raise ValueError("--checkpoint-dir DIR is required (where last.pt and best.pt go)")
    cfg = TrainConfig(**settings)
    cfg.validate()
    if table_note and not getattr(args, "quiet", False):
        from croma.log import info

        mine = cfg.flat()
        over = [f"{k}={mine[k]}" for k, v in flat.items() if k not in _LOCAL and k != "device" and mine.get(k) != v]
        info(f"settings from {args.config}: {table_note}" + (f"; given flags change {', '.join(over)}" if over else ""))
    if cfg.loss_hp:
        from croma.factory import build_objective

        build_objective(cfg)  # an unknown --loss-hp key: fail now, naming it
    return cfg


def run(args) -> int:
    from pathlib import Path

    from croma.distributed import env_world
    from croma.errors import CromaError

    cfg = config_from_args(args)
    if args.nproc < 1:
        raise ValueError(f"--nproc must be an integer >= 1 (got {args.nproc})")
    if not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout must be > 0 seconds (got {args.dist_timeout})")
    env = env_world()
    if args.nproc > 1 and env is not None:
        raise CromaError(f"--nproc {args.nproc} under torchrun (WORLD_SIZE={env.world_size}): let torchrun start the processes and drop --nproc")
    from croma.checkpoint import ensure_output_dir
    from croma.cli.train_steps import check_leftovers
    from croma.runlock import check_run_files, lock_run_folder

    last = Path(cfg.checkpoint_dir) / "last.pt"
    made = _new_folders(Path(cfg.checkpoint_dir).expanduser())
    ensure_output_dir(cfg.checkpoint_dir, "--checkpoint-dir")  # before any work, not after the budget
    # one writer per run folder: the lock before any check of what is there (croma.runlock);
    # under torchrun rank 0 is the writer
    lock = lock_run_folder(cfg.checkpoint_dir, "--checkpoint-dir") if env is None or env.rank == 0 else None
    try:
        with lock or contextlib.nullcontext():
            check_run_files(cfg.checkpoint_dir, "--checkpoint-dir")
            if last.exists() and not args.resume:
                raise CromaError(f"{last} exists: pass --resume to continue that run, or choose another --checkpoint-dir")
            args.resume_note = check_leftovers(last, resume=args.resume, quiet=args.quiet)
            args.compile_reason = choose_compile(args, cfg, env, last)
            return _run_checked(args, cfg)
    except BaseException:
        _remove_if_empty(made)  # a run refused before it wrote anything leaves no empty folder behind
        raise


def _new_folders(path) -> list:
    """The folders of ``path`` that do not exist yet, deepest first (:func:`croma.checkpoint.new_folders`)."""
    from croma.checkpoint import new_folders

    return new_folders(path)


def _remove_if_empty(folders) -> None:
    from croma.checkpoint import remove_if_empty

    remove_if_empty(folders)


def _run_checked(args, cfg) -> int:
    from croma.errors import CromaError

    line = slow_run_warning(cfg)  # said once the data has loaded (train_steps.announce): an error stays one line
    if args.tensorboard:  # before any work: a one-line error naming the extra
        from episodes.extras import require

        require("tensorboard", purpose="--tensorboard")
    payload = {"config": cfg.to_dict(), "resume": bool(args.resume), "progress": not args.quiet,
               "compile_reason": getattr(args, "compile_reason", None), "table": getattr(args, "table_results", None),
               "dist_timeout": float(args.dist_timeout), "tensorboard": bool(args.tensorboard), "warned": bool(line),
               "notes": [n for n in (getattr(args, "resume_note", None), line) if n]}
    if args.nproc > 1:
        import torch

        from croma.factory import resolve_device

        if resolve_device(cfg.device).type == "cuda" and args.nproc > torch.cuda.device_count():
            raise CromaError(
                f"--nproc {args.nproc} needs one CUDA device per process but {torch.cuda.device_count()} are visible "
                f"(use --nproc {torch.cuda.device_count()} or --device cpu)"
            )
        payload["lock_owner"] = os.getpid()  # rank 0 writes under this process's run-folder lock
        return _launch(payload, args.nproc)
    return run_rank(payload)


def run_rank(payload: dict) -> int:
    """Train one process's part: the whole run, or one rank of a torchrun / ``--nproc`` group.

    ``payload``: ``{"config": TrainConfig.to_dict(), "resume", "progress", "dist_timeout"}``.
    Only rank 0 prints, shows progress and writes checkpoints.
    """
    from croma.config import TrainConfig
    from croma.distributed import Distributed, env_world
    from croma.errors import error_hints
    from croma.factory import load_bench, resolve_device
    from croma.fit import train
    from croma.perf.meta import tune_allocator

    cfg = TrainConfig.from_dict(payload["config"])
    if payload.get("lock_owner") and cfg.checkpoint_dir:  # an --nproc rank: the launcher holds the lock
        from croma.runlock import adopt

        adopt(cfg.checkpoint_dir, int(payload["lock_owner"]))
    tune_allocator()  # batched inner loops reuse large buffers instead of re-faulting fresh pages
    env = env_world()
    dist = None
    bench = None
    if env is not None:
        # every rank loads the data before joining (feature caches are written atomically; run
        # `croma data prepare` first so that no rank spends long preparing them)
        bench = load_bench(cfg, progress=payload["progress"] and env.rank == 0)
        import torch

        dev = resolve_device(cfg.device)
        if dev.type == "cuda":
            if env.local_rank >= torch.cuda.device_count():
                from croma.errors import CromaError

                raise CromaError(
                    f"rank {env.rank}: LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                    f"(use at most that many processes per machine, or --device cpu)"
                )
            dev = torch.device("cuda", env.local_rank)
            torch.cuda.set_device(dev)
            cfg.device = str(dev)
        dist = Distributed(env, dev, timeout_s=payload.get("dist_timeout", 120.0))
    else:  # the load train() would do, here so that a data error comes before any note (one line)
        bench = load_bench(cfg, progress=payload["progress"])
    table, table_kw = announce(cfg, bench, payload, writer=env is None or env.rank == 0)
    from contextlib import nullcontext

    from croma.bench_units import unit_threads

    try:  # a table's croma trains with its units' thread count: the same rounding, the same model
        with error_hints(**TRAIN_HINTS), unit_threads() if table is not None and env is None else nullcontext():
            result = train(cfg, bench, resume=payload["resume"], progress=payload["progress"], dist=dist,
                           tensorboard=payload.get("tensorboard", False), **table_kw)
    except BaseException:
        if dist is not None:
            _leave(dist)
        raise
    if dist is not None:
        dist.close()
    if dist is None or dist.rank == 0:
        best = "n/a" if result.best_val is None else f"{result.best_val:.2f}% at iteration {result.best_iteration}"
        procs = "" if dist is None else f" on {dist.world_size} processes ({dist.backend})"
        from pathlib import Path

        files = [n for n in ("last.pt", "best.pt") if (Path(cfg.checkpoint_dir) / n).is_file()]
        wrote = f"{cfg.checkpoint_dir}/" + " and ".join(files) if files else f"no checkpoint in {cfg.checkpoint_dir}"
        print(
            f"trained {result.iteration}/{cfg.iterations} iterations{procs}; best meta-val accuracy {best}; "
            f"{'' if table is not None else f'head init {result.head_init}; '}{'wrote ' if files else ''}{wrote}"
        )
        if table is not None and result.finished:
            with unit_threads():
                choose_table_finetune(table, cfg, quiet=not payload["progress"], kept_start=result.best_iteration == 0)
        sys.stdout.flush()
    return 0


def _leave(dist) -> None:
    """Leave the process group after an error without waiting for peers that may be gone."""
    import torch.distributed as tdist

    try:
        if tdist.is_initialized():
            tdist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


_WORKER = "import sys; from croma.cli.train import worker_main; sys.exit(worker_main(sys.argv[1]))"


def _launch(payload: dict, nproc: int) -> int:
    """``--nproc N``: run :func:`run_rank` in N local processes (ranks of one group)."""
    from croma.distributed import launch_local, python_cmd

    with tempfile.TemporaryDirectory(prefix="croma-nproc-") as tmp:
        path = os.path.join(tmp, "payload.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
        code, codes = launch_local(python_cmd(_WORKER, path), nproc, grace_s=payload["dist_timeout"] + 10.0,
                                    tmpdir=tmp)
    if code != 0 and codes[0] <= 0:  # rank 0 finished or was killed (said nothing): say which rank failed
        bad = next(r for r, c in enumerate(codes) if c != 0)
        sys.stderr.write(f"error: croma train --nproc {nproc}: rank {bad} exited with code {codes[bad]}\n")
    return 0 if code == 0 else (code if code > 0 else 1)


def worker_main(path: str) -> int:
    """Entry point of one ``--nproc`` process: :func:`run_rank` with the CLI's one-line errors."""
    from croma.cli import _user_errors, error_line

    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    try:
        return run_rank(payload)
    except _user_errors() as exc:
        msg = error_line(exc)
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
