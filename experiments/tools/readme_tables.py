"""Regenerate or check the result tables of the README and the docs pages from their results files.

    python experiments/tools/readme_tables.py --check   # exit 1 when a table differs from its file
    python experiments/tools/readme_tables.py --write   # rewrite every table from its file

A table in the README is a block between two marker comments; everything between them is
generated, so edit the results file (or rerun the command that wrote it), never the block::

    <!-- table: experiments/results/FILE.json table comparisons -->
    ...generated...
    <!-- /table -->

The path is relative to the repository root. Parts (default ``table``):

* ``table``: the benchmark table as ``croma benchmark`` prints it (a ```text block,
  :func:`croma.report.format_table`);
* ``comparisons``: croma's paired differences as a Markdown table (:func:`croma.report.markdown_comparisons`);
* ``noise``: a ``noise_sweep.json`` as a Markdown table, one column per noise rate
  (:func:`croma.report.markdown_noise_sweep`);
* ``machines``: a comparison of two runs on different CPUs or kernels written by
  ``experiments/tools/compare_machines.py --out`` (its Markdown tables).

When the file is a ``results.json`` with ``episodes.csv`` beside it, the numbers are recomputed
from the per-episode accuracies (:func:`croma.report.rebuild`, as ``croma report`` does) and a
number that differs from results.json is an error. The same renderers print ``croma report``'s
output, so a README table is what that command shows. A README without markers passes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- table: (?P<file>\S+)(?P<parts>(?: [a-z]+)*) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
PARTS = ("table", "comparisons", "noise", "machines")


class TableError(Exception):
    """A marker naming a file that is missing or unreadable, or an unknown part."""


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TableError(f"{path}: not found (a README table marker names it)") from None
    except (OSError, ValueError) as exc:
        raise TableError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: not a results file (a JSON object with 'rows' or 'runs')")
    return data


def render(file: str, parts: list[str], root: Path = ROOT) -> str:
    """The generated text of one block (ends with a newline)."""
    from croma.errors import CromaError
    from croma.report import format_table, markdown_comparisons, markdown_noise_sweep, rebuild

    path = root / file
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise TableError(f"table marker for {file}: unknown part(s) {', '.join(bad)} (parts: {', '.join(PARTS)})")
    data = _load(path)
    if path.name == "results.json" and (path.parent / "episodes.csv").exists():
        try:
            data, diffs = rebuild(path.parent)
        except CromaError as exc:
            raise TableError(str(exc)) from None
        if diffs:
            raise TableError(f"{file}: {len(diffs)} number(s) differ from episodes.csv beside it, e.g. {diffs[0]}")
    out = []
    for part in parts:
        if part == "machines":
            if not isinstance(data.get("comparisons"), list) or "summary" not in data:
                raise TableError(f"{file}: part 'machines' needs a compare_machines.py file ('rows', 'comparisons', 'summary')")
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from compare_machines import markdown as machines_markdown

            out.append(machines_markdown(data))
            continue
        if part == "noise":
            if not isinstance(data.get("runs"), list):
                raise TableError(f"{file}: part 'noise' needs a noise_sweep.json ('runs')")
            out.append(markdown_noise_sweep(data["runs"]))
            continue
        if not isinstance(data.get("rows"), list):
            raise TableError(f"{file}: part {part!r} needs a benchmark results.json ('rows')")
        if part == "table":
            out.append("```text\n" + format_table(data) + "\n```")
        else:
            out.append(markdown_comparisons(data))
    return "\n\n".join(out) + "\n"


def fill(text: str, root: Path = ROOT) -> tuple[str, int]:
    """``text`` with every block regenerated, and the number of blocks."""
    count = 0

    def one(m: re.Match) -> str:
        nonlocal count
        count += 1
        parts = m.group("parts").split() or ["table"]
        return m.group(1) + render(m.group("file"), parts, root) + m.group(5)

    return BLOCK.sub(one, text), count


def _pages(root: Path) -> list[Path]:
    """README.md and every hand-written docs page (not the generated docs/results/files-*.md)."""
    docs = root / "docs"
    pages = sorted(p for p in docs.rglob("*.md") if not p.name.startswith("files-")) if docs.is_dir() else []
    return [root / "README.md", *pages]


def _one(readme: Path, root: Path, check: bool) -> int:
    try:
        text = readme.read_text(encoding="utf-8")
        new, count = fill(text, root)
    except (OSError, TableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if count == 0:
        return 0
    if new == text:
        print(f"{readme.relative_to(root) if readme.is_relative_to(root) else readme}: {count} table(s) match their results files")
        return 0
    if check:
        old_blocks = [m.group("body") for m in BLOCK.finditer(text)]
        new_blocks = [m.group("body") for m in BLOCK.finditer(new)]
        stale = [m.group("file") for m, a, b in zip(BLOCK.finditer(text), old_blocks, new_blocks) if a != b]
        print(f"{readme}: {len(stale)} table(s) differ from their results files: {', '.join(stale)} "
              f"(run python experiments/tools/readme_tables.py --write)", file=sys.stderr)
        return 1
    from episodes.cache import atomic_write

    atomic_write(readme, lambda fh: fh.write(new.encode("utf-8")))
    print(f"{readme}: rewrote {count} table(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate (--write) or check (--check) the README's and the docs' "
                                 "result tables.")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a table differs from its results file")
    mode.add_argument("--write", action="store_true", help="rewrite the tables from their results files")
    ap.add_argument("--readme", default=None, help="one Markdown file (default: README.md and every docs/ page "
                    "but the generated docs/results/files-*.md)")
    ap.add_argument("--root", default=None, help="the folder marker paths are relative to (default: the repository root)")
    args = ap.parse_args(argv)
    root = Path(args.root) if args.root else ROOT
    pages = [Path(args.readme)] if args.readme else _pages(root)
    codes = [_one(page, root, args.check) for page in pages]
    if args.readme and codes == [0] and not BLOCK.search(Path(args.readme).read_text(encoding="utf-8")):
        print(f"{args.readme}: no <!-- table: FILE --> markers; nothing to check")
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
