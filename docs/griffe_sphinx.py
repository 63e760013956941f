"""Griffe extension for the docs build: the docstrings use Sphinx roles and reST literal-block
markers, which Markdown shows as they are. Rewrite them as Markdown code before mkdocstrings
parses the docstrings: ``:func:`~croma.fit.train``` -> `` `train` ``, ``:class:`TrainConfig```
-> `` `TrainConfig` ``, a line ending in ``::`` -> ``:`` (the indented block after it is already a
code block in Markdown). The docstrings in the code stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|ref|term):`(~?)([^`]+)`")


def _role(m: re.Match) -> str:
    target = m.group(2).strip()
    if m.group(1):  # ~a.b.c: show the last component, as Sphinx does
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def markdown(text: str) -> str:
    """``text`` with Sphinx roles as code spans and reST ``::`` line endings as ``:``."""
    text = ROLE.sub(_role, text)
    return re.sub(r"(?<=\S)::[ \t]*$", ":", re.sub(r"^([ \t]*)::[ \t]*$", r"\1", text, flags=re.M), flags=re.M)


class SphinxRoles(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
