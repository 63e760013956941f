"""MkDocs hook: regenerate the results pages from experiments/results/*.json before a build.

The generator is experiments/tools/docs_results.py (standard library only): it writes
docs/results/files-*.md and refills ``<!-- results: FILE -->`` blocks in hand-written pages,
rewriting a page only when its text changes (so ``mkdocs serve`` does not rebuild in a loop). A
block that cannot be filled is a warning, so ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.croma")
_TOOL = Path(__file__).resolve().parents[1] / "experiments" / "tools" / "docs_results.py"


def on_pre_build(config, **kwargs) -> None:
    spec = importlib.util.spec_from_file_location("croma_docs_results", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    docs = Path(config["docs_dir"])
    changed, problems = mod.write(docs / "results", docs=docs)
    for p in changed:
        log.info("regenerated %s", p.relative_to(docs))
    for problem in problems:
        log.warning("results: %s", problem)
