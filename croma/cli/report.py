"""`croma report RESULTS_DIR`: a benchmark's table and comparisons rebuilt from its files alone.

Reads ``results.json`` (what the table shows besides accuracies: target samples, steps, settings,
the interval's settings) and ``episodes.csv`` (every per-episode accuracy, per method, k and
training seed, with the episode hashes), checks that the episodes are paired (one hash per k and
episode for every method and seed), recomputes every accuracy, interval and paired comparison,
prints them as ``croma benchmark`` does and says whether results.json holds the same numbers.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild a benchmark's table and comparisons from its results files",
        description="Rebuild the table and croma's paired comparisons of a `croma benchmark --out DIR` folder "
        "from its files alone (results.json and episodes.csv: per-episode accuracies with episode hashes), "
        "check that every method and seed met the same episodes, and print them. Exit code 1 when a "
        "recomputed number differs from results.json.",
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="a croma benchmark --out folder")
    p.add_argument("--markdown", action="store_true", help="print the comparisons as a Markdown table")
    p.set_defaults(func=run)


def run(args) -> int:
    from croma.report import format_comparisons, format_table, markdown_comparisons, rebuild

    result, diffs = rebuild(args.results_dir)
    print(format_table(result))
    comps = markdown_comparisons(result) if args.markdown else format_comparisons(result)
    if comps:
        print()
        print(comps)
    print()
    if diffs:
        print(f"{len(diffs)} number(s) differ from results.json:")
        for d in diffs:
            print(f"  {d}")
        return 1
    print("every accuracy, interval and comparison recomputed from episodes.csv equals results.json")
    return 0
