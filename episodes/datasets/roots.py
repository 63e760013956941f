"""Where the user's data sets live: ``--data-root DIR`` or ``$CROMA_DATA``.

Under the data root each data set keeps its published folder name: ``cifar-10-batches-py/``,
``cifar-100-python/``, ``ESC-50-master/``, ``Yummly28K/`` and ``wilderness/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from episodes.errors import DataError

__all__ = ["ENV_VAR", "resolve_data_root", "require_dir", "require_file"]

ENV_VAR = "CROMA_DATA"


def resolve_data_root(data_root: str | os.PathLike | None, *, dataset: str = "") -> Path:
    """The data root: ``data_root`` if given, else ``$CROMA_DATA``.

    Raises:
        DataError: neither is set, or the directory does not exist (names ``--data-root`` and
            ``CROMA_DATA``).
    """
    what = f"{dataset}: " if dataset else ""
    if data_root is None or str(data_root) == "":
        env = os.environ.get(ENV_VAR)
        if not env:
            raise DataError(f"{what}no data root: pass --data-root DIR or set the environment variable {ENV_VAR}")
        root, origin = Path(env).expanduser(), f"${ENV_VAR}"
    else:
        root, origin = Path(data_root).expanduser(), "--data-root"
    if not root.is_dir():
        raise DataError(f"{what}data root {root} (from {origin}) is not a directory")
    return root


def require_dir(path: Path, *, layout: str, published: str) -> Path:
    """Return ``path`` if it is a directory, else raise a :class:`DataError` naming it, the
    expected layout and where the data set is published."""
    if not path.is_dir():
        raise DataError(f"{path}: directory not found; expected layout {layout} (published at {published})")
    return path


def require_file(path: Path, *, layout: str, published: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DataError` naming it, the expected
    layout and where the data set is published."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected layout {layout} (published at {published})")
    return path
