"""`croma bench eval`: the main job's evaluation (meta-val settings x 1/5/10 shots, 50-episode
chunks), batched against the per-episode sequential reference on the same episodes; prints
episodes/s, GFLOP/s, the fraction of a matmul peak measured in the same run and, last, `speedup: X`.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluation speed: batched vs sequential fine-tuning on the main job's episodes",
        description="Fine-tune and score the main job's meta-val episodes (croma benchmark udhr-speech --preset quick: "
        "5-way, 5 queries/class, shots 1/5/10, every setting meta-val chooses between) through the batched path and "
        "the per-episode sequential reference, alternating, one thread; check both give the same accuracies; print "
        "ms per episode per (k, setting), episodes/s, GFLOP/s and the fraction of a 1024x1024 matmul peak measured "
        "in the same run, page faults per episode, the memory floor of the 'all' settings (their fused Adam updates "
        "alone) and the speedup it bounds, the time successive halving of the settings takes against the full grid, "
        "peak memory and, last, 'speedup: X' (sequential over batched, per episode, summed over the workload).",
    )
    p.add_argument("--real", action="store_true",
                   help="use udhr-speech's quick-preset features from the feature cache (synthesised on first use, "
                   "~30 s) instead of random vectors of the same shapes")
    p.add_argument("--cache-dir", default=None, help="feature cache for --real (default $CROMA_CACHE, else $XDG_CACHE_HOME/croma or ~/.cache/croma)")
    p.add_argument("--episodes", type=int, default=50, help="batched episodes per (k, setting) (default 50: one chunk)")
    p.add_argument("--sequential-episodes", type=int, default=10,
                   help="of those, how many also run one at a time (default 10; the reference is slow)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="k values (default 1 5 10)")
    p.add_argument("--steps", type=int, default=25, help="fine-tuning steps of the non-zero settings (default 25)")
    p.add_argument("--hidden", type=int, default=256, help="MLP hidden width (default 256)")
    p.add_argument("--embed-dim", type=int, default=128, help="embedding width (default 128)")
    p.add_argument("--target-dim", type=int, default=416, help="synthetic target feature width (default 416)")
    p.add_argument("--repeats", type=int, default=1, help="timed repeats per path, alternating (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--chunk", type=int, default=None, help="also time the batched path with this many episodes per chunk")
    p.add_argument("--compile", action="store_true",
                   help="also time the batched path with its fine-tuning step through torch.compile (first calls "
                   "include the compile time)")
    p.add_argument("--no-halving", action="store_true", help="skip timing successive halving of the settings")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="keep glibc's default malloc thresholds (by default large freed buffers are kept for reuse, "
                   "as croma train does; the page faults per episode are printed either way)")
    p.set_defaults(func=run)


def run(args) -> int:
    from croma.perf.evaluation import EvalWorkload, run_eval_bench

    shots = tuple(int(s) for s in args.shots)
    for flag, v, lo in (("--episodes", args.episodes, 1), ("--sequential-episodes", args.sequential_episodes, 1),
                        ("--steps", args.steps, 1), ("--hidden", args.hidden, 1), ("--embed-dim", args.embed_dim, 1),
                        ("--target-dim", args.target_dim, 1), ("--repeats", args.repeats, 1),
                        ("--threads", args.threads, 1), ("--chunk", args.chunk if args.chunk is not None else 1, 1)):
        if v < lo:
            raise ValueError(f"{flag} must be >= {lo} (got {v})")
    if not shots or min(shots) < 1:
        raise ValueError(f"--shots must all be >= 1 (got {args.shots!r})")
    wl = EvalWorkload(shots=shots, episodes=args.episodes, sequential_episodes=args.sequential_episodes,
                      steps=args.steps, hidden=args.hidden, embed_dim=args.embed_dim, target_dim=args.target_dim,
                      real=args.real, cache_dir=args.cache_dir)
    allocator = "default"
    if not args.no_malloc_tuning:
        from croma.perf.workload import tune_allocator

        if tune_allocator():
            allocator = "glibc mmap/trim thresholds raised"
    run_eval_bench(wl, repeats=args.repeats, threads=args.threads, compile=args.compile, chunk=args.chunk,
                   halving=not args.no_halving, allocator=allocator)
    return 0
