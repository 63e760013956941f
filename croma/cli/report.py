"""`croma report RESULTS_DIR [RESULTS_DIR ...]`: a benchmark's table and comparisons rebuilt from
its files alone; several folders of the same command on other class splits are pooled.

Reads ``results.json`` (what the table shows besides accuracies: target samples, steps, settings,
the interval's settings) and ``episodes.csv`` (every per-episode accuracy, per method, k and
training seed, with the episode hashes), checks that the episodes are paired (one hash per k and
episode for every method and seed), recomputes every accuracy, interval and paired comparison,
prints them as ``croma benchmark`` does and says whether results.json holds the same numbers.
Given several folders (the same experiment with other ``--seed`` values, i.e. other class splits),
it prints one table over splits, seeds and episodes (:mod:`croma.report_splits`).
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild a benchmark's table and comparisons from its results files; pool class splits",
        description="Rebuild the table and croma's paired comparisons of a `croma benchmark --out DIR` folder "
        "from its files alone (results.json and episodes.csv: per-episode accuracies with episode hashes), "
        "check that every method and seed met the same episodes, and print them. Given several folders of "
        "the same command run with other --seed values (other class splits), print one table over splits, "
        "training seeds and episodes with a three-level bootstrap interval. Exit code 1 when a "
        "recomputed number differs from a folder's results.json.",
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", nargs="+",
                   help="a croma benchmark --out folder; several: the same command with other --seed values, pooled")
    p.add_argument("--markdown", action="store_true", help="print the comparisons as a Markdown table")
    p.add_argument("--out", metavar="FILE.json", default=None,
                   help="also write the table shown (rows, comparisons, interval) as JSON to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from croma.report import format_comparisons, format_table, markdown_comparisons, rebuild

    if args.out is not None:
        from croma.errors import CromaError

        if not str(args.out).endswith(".json"):
            raise CromaError(f"--out {args.out}: give a file name ending in .json")
    if len(args.results_dir) > 1:
        from croma.report_splits import pool_splits

        result, diffs = pool_splits(args.results_dir)
    else:
        result, diffs = rebuild(args.results_dir[0])
    print(format_table(result))
    comps = markdown_comparisons(result) if args.markdown else format_comparisons(result)
    if comps:
        print()
        print(comps)
    if args.out is not None:
        from croma.cli.embed import write_atomically

        write_atomically(args.out, (json.dumps(result, indent=2) + "\n").encode(), "--out")
        print(f"wrote {args.out}")
    print()
    if diffs:
        print(f"{len(diffs)} number(s) differ from results.json:")
        for d in diffs:
            print(f"  {d}")
        return 1
    n = len(args.results_dir)
    print("every accuracy, interval and comparison recomputed from episodes.csv equals results.json"
          + (f" (in each of the {n} folders)" if n > 1 else ""))
    return 0
