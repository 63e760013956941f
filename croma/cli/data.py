"""`croma data`: prepare (build feature caches) and inspect data sets.

    croma data inspect NAME [--json] [--data-root DIR] [--manifest PATH --source M --target M]
    croma data prepare NAME [--data-root DIR] [--cache-dir DIR] [--skip-bad] [--seed S]
                            [--backbone MOD=NAME ... --image-weights PATH --text-model DIR|ID --audio-model DIR|ID]

NAME: ``udhr-speech`` (embedded, offline), ``cifar-esc50``, ``yummly``, ``wilderness``,
``manifest``. The data root is ``--data-root`` or ``$CROMA_DATA``; the cache root is
``--cache-dir`` or ``$CROMA_CACHE`` or ``$XDG_CACHE_HOME/croma`` or ``~/.cache/croma``.
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
    p.add_argument("--source", metavar="M", default=None, help="source modality: text, image, audio, or <kind>:<name> (image:ct)")
    p.add_argument("--target", metavar="M", default=None, help="target modality: text, image, audio, or <kind>:<name> (image:ct)")
    p.add_argument("--skip-bad", action="store_true", help="leave out missing / unreadable files (reports how many)")
    p.add_argument("--cache-dir", metavar="DIR", default=None,
                   help="cache root (default: $CROMA_CACHE, else $XDG_CACHE_HOME/croma, else ~/.cache/croma)")
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
    pp = dsub.add_parser("prepare", help="apply the front-ends and build the feature caches (progress bar)",
                         description="Build the feature caches a run reads: the data set's front-end features and, "
                         "with --backbone, the frozen backbones' embeddings (do it once before a distributed run, so "
                         "that no rank spends long preparing them). The backbone flags are croma train's.")
    _common(pp)
    from croma.backbones import BACKBONES
    from croma.cli.frontend_flags import modality_spec

    choices = "; ".join(f"{m}: {', '.join(n)}" for m, n in BACKBONES.items())
    pp.add_argument("--backbone", type=modality_spec, action="append", default=[], metavar="MOD=NAME",
                    help=f"also embed a modality with a frozen backbone and cache the embeddings (repeatable): {choices}")
    pp.add_argument("--image-weights", default=None, metavar="PATH",
                    help="weights file for an image backbone (as croma train --image-weights)")
    pp.add_argument("--text-model", default=None, metavar="DIR",
                    help="transformers text model folder or id in the local Hugging Face cache (--backbone text=hf)")
    pp.add_argument("--audio-model", default=None, metavar="DIR",
                    help="wav2vec2 / HuBERT-family folder or id in the local Hugging Face cache (--backbone audio=hf)")
    pp.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where the backbones run (default auto: CUDA when available)")
    pp.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    pp.add_argument("--progress", dest="force_progress", action="store_true",
                    help="tqdm progress bars even when stderr is not a terminal (default there: a line per ~10 %%)")
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
        from croma.bench_data import skipped_line

        sys.stderr.write(skipped_line(n) + "\n")


def _counts_only(name: str) -> dict:
    """``{"counts_only": True}`` when the data set's loader can count its items without building them
    (udhr-speech: no speech synthesis), else ``{}``."""
    import inspect

    from episodes.datasets import dataset_info

    try:
        fn = dataset_info(name).resolve()
        return {"counts_only": True} if "counts_only" in inspect.signature(fn).parameters else {}
    except (TypeError, ValueError, ImportError):
        return {}


def _build_estimate(name: str, n: int) -> str:
    if name == "udhr-speech":  # espeak-ng, 2 workers: ~1.7 s and ~0.14 MB of WAV per 100 utterances
        return f"{n} utterances of speech, ~{max(1, round(n * 0.017))} s on 2 cores and ~{max(1, round(n * 0.136))} MB"
    return f"{n} items"


def run_inspect(args) -> int:
    from episodes.datasets import check_split_classes, load_dataset
    from episodes.prepare import dataset_summary, make_class_split

    check_split_classes(args.name, args.split_classes)  # before any loading or speech synthesis
    ds = load_dataset(args.name, progress=sys.stderr.isatty(), **_loader_kwargs(args), **_counts_only(args.name))
    summary = dataset_summary(ds, seed=args.seed)
    pending = int(ds.meta.get("pending", 0) or 0)
    if pending:  # counted from the texts; say what a first train / prepare will build
        from croma.log import info

        info(f"note: {args.name}: {pending} of {len(ds.items)} items' features are not built yet (counts come "
             f"from the source); croma data prepare {args.name} (or the first train) builds them: "
             f"{_build_estimate(args.name, pending)}")
    # the split croma train / benchmark make for --ways-way tasks (or --split-classes)
    from episodes.class_split import dataset_ways
    from episodes.errors import DataError

    ways, why = dataset_ways(ds, args.ways, split_classes=args.split_classes)  # the N-way train / benchmark use
    if why is not None:  # said after the split it explains (below)
        summary["ways"] = {"asked": args.ways, "used": ways, "why": why}
    try:
        split = make_class_split(ds, seed=args.seed, ways=ways, split_classes=args.split_classes)
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
    note = None if why is None else f"note: croma train and benchmark run {ways}-way here: {why}\n"
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        sys.stderr.write(note or "")
        return 0
    out = [f"{summary['name']}: {summary['source']} -> {summary['target']}"]
    w = max([6, *map(len, summary["items"])])  # named modalities (image:print) are wider than a kind
    for m, n in summary["items"].items():
        out.append(f"  {m:{w}s} {n:7d} items, {summary['classes'][m]:5d} classes")
    out.append(f"  strong pairs: {summary['strong_pairs']}   concept clusters with both sides: {summary['clusters']}")
    from croma.bench_data import extra_line

    if line := extra_line(summary["extra_modalities"], ds.source, ds.target):
        out.append(f"  {line}")
    if summary["strong_pairs"] == 0:
        out.append("  alignment: " + ("weak (one pair per concept cluster per task)" if summary["clusters"] >= 2 else
                                      "none possible: no item holds both modalities and fewer than 2 clusters have "
                                      "both; croma train and benchmark will refuse (give 'cluster' values shared "
                                      "across the modalities)"))
    for k in ("meta_train", "meta_val", "meta_test"):
        names = split[k]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        out.append(f"  {k:10s} {len(names):4d} target classes: {shown}")
    out.append(f"  source_train {summary['splits']['source_train']} source classes")
    from episodes.class_split import cluster_overlaps, single_item_classes

    leaks = cluster_overlaps(ds, split)
    if leaks:  # e.g. labels namespaced per modality (img/cat, aud/cat) sharing a cluster
        shown = ", ".join(f"{a} ~ {b}" for a, b in leaks[:3]) + (", ..." if len(leaks) > 3 else "")
        n_src = len({a for a, _ in leaks})
        out.append(f"  note: {n_src} source-train class{'es' if n_src > 1 else ''} share{'' if n_src > 1 else 's'} a "
                   f"concept cluster with a meta-val / meta-test target class under another label ({shown}): source "
                   "classification trains on those concepts; give a concept one label across the modalities to "
                   "hold it out")
    few = single_item_classes(ds)
    if few:  # no k-shot episode can use them (k >= 1 plus a query)
        out.append(f"  {len(few)} target class{'es have' if len(few) > 1 else ' has'} a single item "
                   f"({', '.join(few[:5])}{', ...' if len(few) > 5 else ''}): no episode can use "
                   f"{'them' if len(few) > 1 else 'it'}; a seeded split keeps such classes in meta-train")
    sys.stdout.write("\n".join(out) + "\n")
    if note:
        sys.stdout.flush()
        sys.stderr.write(note)
    return 0


def run_prepare(args) -> int:
    from episodes.datasets import load_benchmark

    progress = not getattr(args, "quiet", False)
    if getattr(args, "backbone", None):  # the backbones' embeddings too, in the cache croma train reads
        from croma.backbones import load_prepared
        from croma.factory import resolve_device

        spec: dict[str, str] = {}
        for mod, name in args.backbone:
            if spec.setdefault(mod, name) != name:
                raise ValueError(f"--backbone {mod}: given twice ({spec[mod]} and {name})")
        device = str(resolve_device(args.device)) if args.device != "cpu" else "cpu"
        bench = load_prepared(args.name, compact=False, backbones=spec, image_weights=args.image_weights,
                              text_model=args.text_model, audio_model=args.audio_model, device=device,
                              progress=progress, **_loader_kwargs(args))
    else:
        bench = load_benchmark(args.name, progress=progress, **_loader_kwargs(args))
    _report_skipped(int(bench.info.get("skipped_total", 0)))
    cache = bench.info.get("cache", {})
    lines = [f"{bench.name}: prepared ({bench.source} -> {bench.target}, {bench.align_mode} alignment)"]
    w = max([6, *map(len, bench.data)])  # as in run_inspect
    for m, d in bench.data.items():
        lines.append(f"  {m:{w}s} features {tuple(d.features.shape)} {str(d.features.dtype).replace('torch.', '')}"
                     f"  cache: {cache.get(m, 'uncached')}")
    lines.append(f"  classes {len(bench.class_names)}; meta-train/val/test {len(bench.splits['meta_train'])}/"
                 f"{len(bench.splits['meta_val'])}/{len(bench.splits['meta_test'])}; alignment rows "
                 f"{bench.align_source_rows.numel()}/{bench.align_target_rows.numel()}; classification rows "
                 f"{bench.classify_source_rows.numel()}")
    if bench.info.get("backbones"):
        lines.append("  backbones: " + ", ".join(f"{m}={n}" for m, n in bench.info["backbones"].items())
                     + " (embeddings cached; croma train with the same --backbone flags reads them)")
    lines.append(f"  cache dir: {cache.get('dir')}")
    from croma.bench_data import quiet_lines

    sys.stdout.write("\n".join(lines + quiet_lines(bench)) + "\n")
    return 0
