"""`croma evaluate DIR --shots 1 5 10`: k-shot meta-test of a trained run."""

from __future__ import annotations

import json
import sys


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
    p.add_argument("--queries", type=int, default=5, help="query items per class (default 5)")
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
    p.add_argument("--data-root", default=None, help="override the data root stored in the checkpoint")
    p.add_argument("--cache-dir", default=None, help="override the feature cache directory")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from croma.evaluate import format_results
    from croma.evaluate import evaluate_run

    for flag, lo in (("repeats", 1), ("eval_tasks", 1), ("queries", 1)):
        if getattr(args, flag) < lo:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= {lo} (got {getattr(args, flag)})")
    if any(k < 1 for k in args.shots):
        raise ValueError(f"--shots must all be >= 1 (got {args.shots})")
    if args.ways is not None and args.ways < 2:
        raise ValueError(f"--ways must be >= 2 (got {args.ways})")
    if args.finetune_steps is not None and args.finetune_steps < 0:
        raise ValueError(f"--finetune-steps must be >= 0 (got {args.finetune_steps})")
    if args.finetune_lr is not None and not args.finetune_lr > 0:
        raise ValueError(f"--finetune-lr must be > 0 (got {args.finetune_lr})")
    if not 0.0 <= args.label_noise < 1.0:
        raise ValueError(f"--label-noise must be in [0, 1) (got {args.label_noise})")
    result = evaluate_run(
        args.run_dir, which=args.checkpoint, shots=list(args.shots), repeats=args.repeats, tasks=args.eval_tasks,
        ways=args.ways, queries=args.queries, head_init=args.head_init, finetune=args.finetune,
        finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr, label_noise=args.label_noise,
        split=args.split, device=args.device, seed=args.seed, data_root=args.data_root, cache_dir=args.cache_dir,
    )
    print(format_results(result))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    sys.stdout.flush()
    return 0
