"""`croma bench losses`: forward+backward time of each objective (median ms per batch size)."""

from __future__ import annotations


def add_parser(sub) -> None:
    from croma.losses import list_losses

    p = sub.add_parser(
        "losses",
        help="objectives speed: forward+backward ms per batch size",
        description="Time forward+backward of every registered objective on random N x D "
        "embeddings (one warm-up, then --repeats timed calls, median in ms), in one process "
        "with --threads torch threads; print a table with one row per objective.",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], metavar="N",
                   help="batch sizes N (default 64 256 1024)")
    p.add_argument("--dim", type=int, default=256, help="embedding size D (default 256)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per cell (default 5)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default float32")
    p.add_argument("--loss", dest="losses", nargs="+", default=None, metavar="NAME",
                   help=f"objectives to time, of: {', '.join(list_losses())} (default: all)")
    p.set_defaults(func=run)


def run(args) -> int:
    from croma.perf.losses import LossBenchConfig, format_loss_bench, run_loss_bench

    cfg = LossBenchConfig(
        sizes=tuple(args.sizes), dim=args.dim, repeats=args.repeats, device=args.device,
        threads=args.threads, losses=args.losses, dtype=args.dtype,
    )
    rows = run_loss_bench(cfg)
    dev = rows[0].device if rows else args.device
    print(f"forward+backward, median of {cfg.repeats} (ms); D={cfg.dim}, {cfg.dtype}, device={dev}, "
          f"threads={cfg.threads}")
    print(format_loss_bench(rows))
    return 0
