"""`croma bench meta`: batched (vmap) vs sequential vs naive (learn2learn-style) inner loops (and
`higher` when installed), achieved GFLOP/s against a matmul peak; prints `speedup_vs_naive: X`,
`peak_fraction: X` and, last, `speedup: X.XX`.

`croma bench meta --nproc N`: 1 process vs N processes (torch.distributed); prints `scaling: X.XX` last.

`croma bench meta --benchmark NAME`: `croma train NAME`'s real default meta-batch (e.g. udhr-speech: cnn1d
encoders on byte ids and log-mel frames) batched vs sequential (plus the opt-in native conv, and with
`--compile` the compiled step, its compile time and break-even); prints which path runs and `speedup: X.XX` last.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "meta",
        help="meta-learning speed: batched vs sequential vs naive inner loops, fraction of matmul peak",
        description="Run the same meta-batches (16 x 5-way 5-shot tasks, 5 inner steps, 2-layer MLP "
        "encoders on 256-d features) through the batched, the sequential and a naive learn2learn-style "
        "inner loop (deepcopy per task, torch.optim, autograd), plus 'higher' when installed, alternating, "
        "with one thread; print tasks/s, counted GFLOP and achieved GFLOP/s per path, a 1024x1024 float32 "
        "matmul peak measured in the same run, peak memory, then 'speedup_vs_naive: X', 'peak_fraction: X' "
        "and, last, 'speedup: X.XX' (batched vs sequential).",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed meta-batches per path (default 5)")
    p.add_argument("--meta-batch", type=int, default=None,
                   help="tasks per meta-batch (default 16; with --nproc N: 64 per process, i.e. 64 N, so that "
                   "each process's batched share is large enough to split well)")
    p.add_argument("--inner-steps", type=int, default=5, help="inner steps (default 5)")
    p.add_argument("--inner-optimizer", choices=("sgd", "adam"), default="adam")
    p.add_argument("--hidden", type=int, default=128, help="MLP hidden width (default 128)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="default cpu")
    p.add_argument("--nproc", type=int, default=1,
                   help="N > 1: instead measure tasks/s of the batched path with 1 process and with N processes "
                   "(torch.distributed, one thread each) in one run; prints 'scaling: X.XX' last")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--task-chunk", type=int, default=None,
                   help="tasks per batched chunk, as in croma train (default: croma train's default; with --nproc N: "
                   "meta-batch / N, so that every process has a chunk; 0: one chunk per task family)")
    p.add_argument("--no-higher", action="store_true", help="do not time the 'higher' path even when it is installed")
    p.add_argument("--compile", action="store_true",
                   help="also time the batched path through torch.compile (its compile time is printed separately)")
    p.add_argument("--benchmark", default=None, metavar="NAME",
                   help="instead: croma train NAME's default meta-batch on its real data (e.g. udhr-speech, cnn1d "
                   "encoders) through the batched and sequential paths, each also with the opt-in native conv "
                   "(cnn1d conv=native); with --compile also the compiled step and its break-even; prints which "
                   "path croma train runs and, last, 'speedup: X.XX' (batched eager vs sequential)")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="keep glibc's default malloc thresholds (by default large freed buffers are kept for reuse)")
    p.set_defaults(func=run)


def run(args) -> int:
    from croma.perf.meta import run_meta_bench, tune_allocator

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (got {args.nproc})")
    if args.hidden < 1 or args.threads < 1:
        raise ValueError(f"--hidden and --threads must be >= 1 (got {args.hidden}, {args.threads})")
    allocator = "default"
    if not args.no_malloc_tuning and tune_allocator():
        allocator = "glibc mmap/trim thresholds raised"
    if args.benchmark:
        from croma.perf.meta import run_real_meta_bench

        if args.threads < 1 or args.repeats < 1:
            raise ValueError(f"--threads and --repeats must be >= 1 (got {args.threads}, {args.repeats})")
        run_real_meta_bench(args.benchmark, repeats=args.repeats, threads=args.threads, compile=args.compile)
        return 0
    meta_batch = args.meta_batch if args.meta_batch is not None else (16 if args.nproc == 1 else 64 * args.nproc)
    run_meta_bench(
        allocator=allocator,
        repeats=args.repeats, meta_batch=meta_batch, device=args.device, nproc=args.nproc,
        inner_steps=args.inner_steps, inner_optimizer=args.inner_optimizer, hidden=args.hidden, threads=args.threads,
        task_chunk=args.task_chunk, higher=False if args.no_higher else None, compile=args.compile,
    )
    return 0
