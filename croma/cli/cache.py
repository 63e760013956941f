"""`croma cache info|clear`: what the feature cache holds, and removing it.

The root is ``--cache-dir``, else ``$CROMA_CACHE``, else ``~/.cache/croma`` (the same as every
other command). See :mod:`episodes.cache_admin` for the layout.
"""

from __future__ import annotations

import json
import sys


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _cache_dir_flag(p) -> None:
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="cache root (default: $CROMA_CACHE, else $XDG_CACHE_HOME/croma or ~/.cache/croma)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "cache",
        help="show or clear the feature cache",
        description="Show the feature cache (location, size, entries per data set and modality / backbone) "
        "or clear it, wholly or one data set's entries.",
    )
    csub = p.add_subparsers(dest="cache_command", metavar="{info,clear}", parser_class=type(p))
    info = csub.add_parser("info", help="location, size and entries per data set and modality / backbone")
    _cache_dir_flag(info)
    info.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    info.set_defaults(func=run_info)
    clear = csub.add_parser(
        "clear", help="remove cache entries (all, or one data set's)",
        description="Remove the feature cache's entries (all, or one data set's). Only files croma wrote "
        "there are removed (feature entries recognised by their CROMAFEAT1 header, generated WAV files and their "
        "index); anything else, and anything behind a symbolic link, stays and is listed.")
    _cache_dir_flag(clear)
    which = clear.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", metavar="NAME", help="remove only this data set's entries")
    which.add_argument("--all", action="store_true", help="remove every entry")
    clear.set_defaults(func=run_clear)

    def no_action(args) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=no_action)


def _root(args):
    from pathlib import Path

    from episodes.cache import default_cache_dir

    if args.cache_dir is None:
        return default_cache_dir()
    if not str(args.cache_dir).strip():  # Path("") is the current folder: never clear ./features by mistake
        raise ValueError("--cache-dir is empty: give a path, or leave the flag out")
    return Path(args.cache_dir).expanduser()


def run_info(args) -> int:
    from episodes.cache_admin import cache_groups

    root = _root(args)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--cache-dir {root} is a file, not a folder")
    groups = cache_groups(root)
    total = sum(g.bytes for g in groups)
    if args.json:
        print(json.dumps({"root": str(root), "bytes": total, "groups": [g.to_dict() for g in groups]}, indent=1))
        return 0
    print(f"cache: {root} ({_human(total)} in {sum(g.entries for g in groups)} entries)")
    if not groups:
        print("(empty)")
        return 0
    rows = [("data set", "kind", "modality/backbone", "entries", "size")]
    rows += [(g.dataset, g.kind, g.part, str(g.entries), _human(g.bytes)) for g in groups]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    sys.stdout.flush()
    return 0


def run_clear(args) -> int:
    from episodes.cache_admin import clear_cache

    root = _root(args)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--cache-dir {root} is a file, not a folder")
    cleared = clear_cache(root, None if args.all else args.dataset)
    files, freed = cleared
    what = "all data sets" if args.all else f"data set {args.dataset}"
    print(f"removed {files} file(s), {_human(freed)}, of {what} from {root}")
    skipped = getattr(cleared, "skipped", [])
    if skipped:  # only verified entries go, never through a symbolic link: say what stayed
        print(f"kept {len(skipped)} thing(s) that are not cache entries or are symbolic links:")
        for path, why in skipped[:_SHOW_SKIPPED]:
            print(f"  {path}: {why}")
        if len(skipped) > _SHOW_SKIPPED:
            print(f"  ... and {len(skipped) - _SHOW_SKIPPED} more")
    return 0


_SHOW_SKIPPED = 10
