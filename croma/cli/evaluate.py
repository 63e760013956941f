"""`croma evaluate DIR --shots 1 5 10`: k-shot meta-test of a trained run.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) every process is one rank;
``--nproc N`` starts N such processes on this machine (see :mod:`croma.distributed`). Every rank
draws the same episodes, fine-tunes its share of them, and the per-episode accuracies are gathered
exactly, so the numbers equal a single-process run's; only rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="meta-test a trained run: k-shot accuracy, nearest-centroid accuracy, retrieval",
        description="Rebuild the model and benchmark from DIR's checkpoint, then fine-tune on k-shot "
        "support sets of unseen target-modality classes and score the query sets.",
    )
    p.add_argument("run_dir", metavar="DIR", help="run directory of 'croma train' (or a .pt checkpoint)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="k values (default 1 5 10)")
    p.add_argument("--repeats", type=int, default=5, help="repeats with different episode seeds (default 5)")
    p.add_argument("--eval-tasks", type=int, default=8, help="episodes per repeat (default 8)")
    p.add_argument("--ways", type=int, default=None, help="N-way (default: the training ways)")
    p.add_argument("--queries", dest="eval_queries", metavar="QUERIES", type=int, default=5,
                   help="query items per class, at least 1 (default 5)")
    p.add_argument("--head-init", choices=("meta", "zero", "prototype", "auto"), default=None,
                   help="head initialisation (default: the one recorded in the checkpoint)")
    p.add_argument("--finetune", choices=("all", "head"), default=None, help="parameters to fine-tune (default: training setting)")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (default: training setting)")
    p.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning lr (default: training setting)")
    p.add_argument("--label-noise", type=float, default=0.0, help="symmetric noise rate on support labels, in [0, 1)")
    p.add_argument("--split", choices=("meta_test", "meta_val"), default="meta_test")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=None, help="episode seed (default: the training seed)")
    p.add_argument("--data-root", default=None,
                   help="directory holding the data sets (default $CROMA_DATA; never the path stored in the checkpoint)")
    p.add_argument("--cache-dir", default=None,
                   help="feature cache directory (default $CROMA_CACHE, else $XDG_CACHE_HOME/croma or ~/.cache/croma; never the checkpoint's)")
    p.add_argument("--manifest", default=None, metavar="PATH",
                   help="JSONL manifest of a run trained on BENCH=manifest (required then; never the checkpoint's)")
    p.add_argument("--strict-sizes", action="store_true",
                   help="episode sizes exactly as given (default: a k the classes cannot serve is dropped and the "
                   "query count lowered, with one line saying so)")
    p.add_argument("--new-classes", default=None, metavar="FILE.jsonl",
                   help="k-shot episodes over YOUR labelled classes instead of the run's meta-test split: manifest "
                   "rows of the run's target modality (classes the run never saw); --repeats x --eval-tasks episodes "
                   "per k, fine-tuned as 'croma predict' does; no training data needed")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="split the episodes across N local processes (torch.distributed; gloo on CPU, "
                   "nccl on CUDA, one thread / GPU each); under torchrun leave this at 1")
    p.add_argument("--dist-timeout", type=float, default=120.0, metavar="S",
                   help="seconds a distributed collective may wait for a peer before evaluation stops "
                   "with an error (default 120)")
    p.set_defaults(func=run)


# the parsed flags that travel to the --nproc worker processes (plain data only)
_FIELDS = ("run_dir", "shots", "repeats", "eval_tasks", "ways", "eval_queries", "head_init", "finetune", "finetune_steps",
           "finetune_lr", "label_noise", "split", "checkpoint", "device", "seed", "data_root", "cache_dir", "json",
           "dist_timeout", "manifest", "strict_sizes", "new_classes")


def _validate(args) -> None:
    """Check the flags before any work: the meta-test settings through
    :meth:`croma.evaluate.EvalConfig.validate` (the one place their ranges live), then the launcher's."""
    from croma.evaluate import EvalConfig

    given = {"shots": list(args.shots), "tasks": args.eval_tasks, "queries": args.eval_queries, "repeats": args.repeats,
             "label_noise": args.label_noise, "ways": args.ways, "finetune_steps": args.finetune_steps,
             "finetune_lr": args.finetune_lr, "split": args.split}
    EvalConfig(**{k: v for k, v in given.items() if v is not None}).validate()
    if args.nproc < 1:
        raise ValueError(f"--nproc must be an integer >= 1 (got {args.nproc})")
    if not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout must be > 0 seconds (got {args.dist_timeout})")


def run(args) -> int:
    from croma.distributed import env_world
    from croma.errors import CromaError

    _validate(args)
    if args.new_classes:
        return _run_new_classes(args)
    env = env_world()
    if args.nproc > 1 and env is not None:
        raise CromaError(f"--nproc {args.nproc} under torchrun (WORLD_SIZE={env.world_size}): let torchrun start the processes and drop --nproc")
    if args.nproc > 1:
        import torch

        from croma.factory import resolve_device

        if resolve_device(args.device).type == "cuda" and args.nproc > torch.cuda.device_count():
            raise CromaError(
                f"--nproc {args.nproc} needs one CUDA device per process but {torch.cuda.device_count()} are visible "
                f"(use --nproc {torch.cuda.device_count()} or --device cpu)"
            )
        _check_checkpoint(args)  # a missing run: one error here rather than one per process
        return _launch({k: getattr(args, k) for k in _FIELDS}, args.nproc)
    return run_rank(argparse.Namespace(**{k: getattr(args, k) for k in _FIELDS}))


def _run_new_classes(args) -> int:
    """``--new-classes FILE``: :func:`croma.new_classes.evaluate_new_classes` on FILE's labelled rows."""
    from croma.errors import CromaError
    from croma.new_classes import evaluate_new_classes
    from croma.runmodel import load_model
    from episodes.datasets.rows import load_rows
    from episodes.errors import DataError

    if args.nproc > 1:
        raise CromaError("--new-classes runs in one process: drop --nproc")
    unused = [flag for flag, on in (("--split", args.split != "meta_test"), ("--label-noise", bool(args.label_noise)),
                                    ("--manifest", args.manifest), ("--strict-sizes", args.strict_sizes),
                                    ("--data-root", args.data_root), ("--cache-dir", args.cache_dir),
                                    ("--head-init auto", args.head_init == "auto")) if on]
    if unused:  # they act on the run's own data; FILE's episodes have none of it
        raise CromaError(f"--new-classes draws its episodes from {args.new_classes} alone: drop {', '.join(unused)}")
    settings = {"head_init": args.head_init, "finetune": args.finetune, "steps": args.finetune_steps,
                "lr": args.finetune_lr}
    given = {k: v for k, v in settings.items() if v is not None}
    model = load_model(args.run_dir, which=args.checkpoint, device="cpu" if args.device == "auto" else args.device)
    try:
        ids, vals, labs = load_rows(args.new_classes, model.target, labels="required", flag="--new-classes")
    except DataError as exc:
        raise CromaError(str(exc)) from None
    res = evaluate_new_classes(model, vals, labs, shots=args.shots, episodes=args.repeats * args.eval_tasks,
                               ways=args.ways, queries=args.eval_queries, seed=args.seed or 0, ids=ids,
                               progress=sys.stderr.isatty(), **given)
    how = ("fine-tuned as the run's card says for each k" if not given else "fine-tuned with the given "
           + ", ".join(f"--{_NEW_FLAGS[k]} {v}" for k, v in given.items()) + " (the card's setting for the rest)")
    print(f"{args.new_classes}: {res['ways']}-way episodes over {len(res['classes'])} new classes ({res['items']} "
          f"items), {res['episodes']} episodes per k, {how}")
    print(f"{'shots':>5}  {'queries':>7}  {'accuracy (%)':>16}  setting (head/steps/lr/what)")
    for r in res["rows"]:
        st = r["setting"] or {}
        print(f"{r['shots']:>5}  {r['queries']:>7}  {r['accuracy_mean']:6.2f} ± {r['accuracy_ci95']:5.2f}  "
              f"{st.get('head_init')}/{st.get('finetune_steps')}/{st.get('finetune_lr')}/{st.get('finetune')}")
    print(f"± is the 95% interval over {res['episodes']} episodes (1.96·sd/√n) of this one trained run")
    for d in res["dropped"]:
        print(f"k={d['shots']} dropped: {d['why']}")
    if args.json:
        print(json.dumps(res, indent=1))
    return 0


# --new-classes: the settings RunModel.adapt takes, by the flag that sets them
_NEW_FLAGS = {"head_init": "head-init", "finetune": "finetune", "steps": "finetune-steps", "lr": "finetune-lr"}


def _check_checkpoint(args) -> None:
    """Raise CromaError when DIR has no checkpoint to evaluate (as :func:`croma.runs.load_run` would)."""
    from pathlib import Path

    from croma.checkpoint import checkpoint_path
    from croma.errors import CromaError

    path = checkpoint_path(args.run_dir, args.checkpoint)
    if args.checkpoint == "best" and not path.is_file() and Path(args.run_dir).is_dir():
        path = checkpoint_path(args.run_dir, "last")
    if not path.is_file():
        from croma.checkpoint import missing_checkpoint

        raise CromaError(missing_checkpoint(path))


def run_rank(args) -> int:
    """Evaluate in one process: the whole evaluation, or one rank of a torchrun / ``--nproc`` group.

    ``args``: the parsed flags (:data:`_FIELDS`). Only rank 0 prints the table (and ``--json``).
    """
    from croma.distributed import Distributed, env_world
    from croma.evaluate import format_results
    from croma.factory import resolve_device
    from croma.perf.workload import tune_allocator
    from croma.runs import evaluate_run

    tune_allocator()  # fine-tuning reuses large per-episode buffers instead of re-faulting fresh pages
    env = env_world()
    dist = None
    device = args.device
    if env is not None:
        import torch

        dev = resolve_device(device)
        if dev.type == "cuda":
            if env.local_rank >= torch.cuda.device_count():
                from croma.errors import CromaError

                raise CromaError(
                    f"rank {env.rank}: LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                    f"(use at most that many processes per machine, or --device cpu)"
                )
            dev = torch.device("cuda", env.local_rank)
            torch.cuda.set_device(dev)
        device = str(dev)
        dist = Distributed(env, dev, timeout_s=args.dist_timeout)
    try:
        result = evaluate_run(
            args.run_dir, which=args.checkpoint, shots=list(args.shots), repeats=args.repeats, tasks=args.eval_tasks,
            ways=args.ways, queries=args.eval_queries, head_init=args.head_init, finetune=args.finetune,
            finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr, label_noise=args.label_noise,
            split=args.split, device=device, seed=args.seed, data_root=args.data_root, cache_dir=args.cache_dir,
            dist=dist, manifest=args.manifest, strict_sizes=args.strict_sizes,
        )
    except BaseException:
        if dist is not None:
            _leave()
        raise
    if dist is not None:
        dist.close()
    if dist is None or dist.rank == 0:
        if dist is not None:
            print(f"{args.split} episodes split across {dist.world_size} processes ({dist.backend})")
        if result.get("task_sizes"):
            print(result["task_sizes"])
        print(format_results(result))
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        sys.stdout.flush()
    return 0


def _leave() -> None:
    """Leave the process group after an error without waiting for peers that may be gone."""
    import torch.distributed as tdist

    try:
        if tdist.is_initialized():
            tdist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


_WORKER = "import sys; from croma.cli.evaluate import worker_main; sys.exit(worker_main(sys.argv[1]))"


def _launch(payload: dict, nproc: int) -> int:
    """``--nproc N``: run :func:`run_rank` in N local processes (ranks of one group).

    The ranks' one-line errors are collected and printed once each (ranks that fail for the same
    reason, e.g. a bad flag value found while loading the run, give one line, not N).
    """
    from croma.distributed import launch_local, python_cmd

    with tempfile.TemporaryDirectory(prefix="croma-eval-nproc-") as tmp:
        path = os.path.join(tmp, "payload.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
        code, codes = launch_local(python_cmd(_WORKER, path), nproc, grace_s=payload["dist_timeout"] + 10.0,
                                    tmpdir=tmp)
        messages: list[str] = []
        for rank in range(nproc):
            try:
                with open(os.path.join(tmp, f"error.{rank}"), encoding="utf-8") as fh:
                    msg = fh.read().strip()
            except FileNotFoundError:
                continue
            if msg and msg not in messages:
                messages.append(msg)
    for msg in messages:
        sys.stderr.write(f"error: {msg}\n")
    if code != 0 and not messages:  # killed or crashed without a message: say which rank failed
        bad = next(r for r, c in enumerate(codes) if c != 0)
        sys.stderr.write(f"error: croma evaluate --nproc {nproc}: rank {bad} exited with code {codes[bad]}\n")
    sys.stderr.flush()
    return 0 if code == 0 else (code if code > 0 else 1)


def worker_main(path: str) -> int:
    """Entry point of one ``--nproc`` process: :func:`run_rank`; its one-line error goes to
    ``error.<RANK>`` next to the payload ``path`` for the launcher to print."""
    from croma.cli import _user_errors, error_line

    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    try:
        return run_rank(argparse.Namespace(**payload))
    except _user_errors() as exc:
        msg = error_line(exc)
        code = 2
    except KeyboardInterrupt:
        msg, code = "interrupted", 130
    out = os.path.join(os.path.dirname(path), f"error.{os.environ.get('RANK', '0')}")
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(msg + "\n")
    return code
