"""`croma data`: prepare (build feature caches) and inspect data sets.

    croma data inspect NAME [--json] [--data-root DIR] [--manifest PATH --source M --target M]
    croma data prepare NAME [--data-root DIR] [--cache-dir DIR] [--skip-bad] [--seed S]

NAME: ``udhr-speech`` (embedded, offline), ``cifar-esc50``, ``yummly``, ``wilderness``,
``manifest``. The data root is ``--data-root`` or ``$CROMA_DATA``; the cache root is
``--cache-dir`` or ``$CROMA_CACHE`` or ``~/.cache/croma``.
"""

from __future__ import annotations

import json
import sys


def data_names() -> list[str]:
    """Names ``NAME`` accepts: the registered data sets with items (:func:`episodes.datasets.list_datasets`)."""
    from episodes.datasets import list_datasets

    return list_datasets(items_only=True)


def __getattr__(name: str):  # ``DATA_NAMES`` kept for importers: the registry's names, read when asked
    if name == "DATA_NAMES":
        return tuple(data_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _common(p) -> None:
    names = data_names()
    p.add_argument("name", choices=names, metavar="NAME", help="data set: " + ", ".join(names))
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder holding the published layouts (default: $CROMA_DATA)")
    p.add_argument("--manifest", metavar="PATH", default=None, help="JSONL manifest (NAME=manifest)")
    p.add_argument("--source", metavar="M", default=None, help="source modality: text, image, audio")
    p.add_argument("--target", metavar="M", default=None, help="target modality: text, image, audio")
    p.add_argument("--skip-bad", action="store_true", help="leave out missing / unreadable files (reports how many)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="cache root (default: $CROMA_CACHE or ~/.cache/croma)")
    p.add_argument("--seed", type=int, default=0, help="seed of class splits and loader shuffles (default 0)")


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="prepare or inspect a data set",
                       description="Prepare (build feature caches) or inspect a data set.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(p))
    pi = dsub.add_parser("inspect", help="counts of items, classes, pairs, clusters and splits")
    _common(pi)
    pi.add_argument("--json", action="store_true", help="print one JSON object")
    from croma.cli.frontend_flags import split_counts

    pi.add_argument("--ways", type=int, default=5,
                    help="N-way tasks the split must serve: meta-val and meta-test get at least N classes when there "
                    "are 3 x N, as croma train / benchmark split (default 5; with fewer classes the 60/20/20 %% "
                    "split is shown, with a note)")
    pi.add_argument("--split-classes", type=split_counts, default=None, metavar="TRAIN,VAL,TEST",
                    help="class counts of the split (as croma train / benchmark --split-classes)")
    pi.set_defaults(func=run_inspect)
    pp = dsub.add_parser("prepare", help="apply the front-ends and build the feature caches (progress bar)")
    _common(pp)
    pp.set_defaults(func=run_prepare)
    p.set_defaults(func=_need_action, _parser=p)


def _need_action(args) -> int:
    args._parser.print_help(sys.stderr)
    return 2


def _loader_kwargs(args) -> dict:
    return dict(data_root=args.data_root, manifest=args.manifest, source=args.source, target=args.target,
                seed=args.seed, skip_bad=args.skip_bad, cache_dir=args.cache_dir)


def _report_skipped(n: int) -> None:
    if n:
        sys.stderr.write(f"skipped {n} missing or unreadable item(s) (--skip-bad)\n")


def run_inspect(args) -> int:
    from episodes.datasets import check_split_classes, load_dataset
    from episodes.prepare import dataset_summary, make_class_split

    check_split_classes(args.name, args.split_classes)  # before any loading or speech synthesis
    ds = load_dataset(args.name, progress=sys.stderr.isatty(), **_loader_kwargs(args))
    summary = dataset_summary(ds, seed=args.seed)
    # the split croma train / benchmark make for --ways-way tasks (or --split-classes)
    from episodes.errors import DataError

    try:
        split = make_class_split(ds, seed=args.seed, ways=args.ways, split_classes=args.split_classes)
    except DataError as exc:  # too few classes for --ways-way tasks: show the fraction split, say why
        if args.split_classes is not None:
            raise
        split = make_class_split(ds, seed=args.seed)
        sys.stderr.write(f"note: {str(exc).splitlines()[0]}; showing the 60/20/20 % split\n")
    held_out = set(split["meta_val"]) | set(split["meta_test"])
    source_classes = {it.label for it in ds.items if ds.source in it.modalities}
    summary["splits"] = {**{k: len(split[k]) for k in ("meta_train", "meta_val", "meta_test")},
                         "source_train": len(source_classes - held_out)}
    if args.skip_bad:
        _report_skipped(int(ds.meta.get("skipped", 0) or 0))
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return 0
    out = [f"{summary['name']}: {summary['source']} -> {summary['target']}"]
    for m, n in summary["items"].items():
        out.append(f"  {m:6s} {n:7d} items, {summary['classes'][m]:5d} classes")
    out.append(f"  strong pairs: {summary['strong_pairs']}   concept clusters with both sides: {summary['clusters']}")
    for k in ("meta_train", "meta_val", "meta_test"):
        names = split[k]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        out.append(f"  {k:10s} {len(names):4d} target classes: {shown}")
    out.append(f"  source_train {summary['splits']['source_train']} source classes")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def run_prepare(args) -> int:
    from episodes.datasets import load_benchmark

    bench = load_benchmark(args.name, progress=True, **_loader_kwargs(args))
    _report_skipped(int(bench.info.get("skipped_total", 0)))
    cache = bench.info.get("cache", {})
    lines = [f"{bench.name}: prepared ({bench.source} -> {bench.target}, {bench.align_mode} alignment)"]
    for m, d in bench.data.items():
        lines.append(f"  {m:6s} features {tuple(d.features.shape)} {str(d.features.dtype).replace('torch.', '')}"
                     f"  cache: {cache.get(m, 'uncached')}")
    lines.append(f"  classes {len(bench.class_names)}; meta-train/val/test {len(bench.splits['meta_train'])}/"
                 f"{len(bench.splits['meta_val'])}/{len(bench.splits['meta_test'])}; alignment rows "
                 f"{bench.align_source_rows.numel()}/{bench.align_target_rows.numel()}; classification rows "
                 f"{bench.classify_source_rows.numel()}")
    lines.append(f"  cache dir: {cache.get('dir')}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
