"""A restricted unpickler for the CIFAR python-pickle layouts.

The CIFAR-10 / CIFAR-100 "python version" files are Python pickles, and loading an arbitrary
pickle can run code. :func:`load_restricted_pickle` reads them with an unpickler whose
``find_class`` admits only the globals those published files need to rebuild numpy arrays
(``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar``; ``_codecs.encode``, a pure
function protocol-2 pickles use for ``bytes``) plus plain containers
(``dict``, ``list``, ``str``/``bytes``, ``int`` are built by opcodes and need no global). Any
other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused with a
:class:`DataError` naming the file *before* it is called, so a crafted batch file runs nothing.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from episodes.errors import DataError

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "load_restricted_pickle"]

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copy_reg", "_reconstructor"),  # protocol-0/1 pickles written by Python 2
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, 'latin1')
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: binary file object.
        source: name of the file, used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self.source}: refused to load pickle: it references {module}.{name}, which a "
                "published CIFAR batch file never contains (possibly a crafted file)"
            )
        if module == "copy_reg":
            module = "copyreg"
        elif module == "__builtin__":
            module = "builtins"
        elif module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            import numpy as np

            core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
            return getattr(core.multiarray, name)
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - never in CIFAR files
        raise DataError(f"{self.source}: refused to load pickle: it uses persistent ids")


def load_restricted_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (``encoding='bytes'``).

    Returns:
        The unpickled object (for CIFAR: a dict with ``bytes`` keys such as ``b'data'``).

    Raises:
        DataError: the file is missing, truncated / not a pickle, or references a global
            outside :data:`ALLOWED_GLOBALS` (message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with open(p, "rb") as fh:
            return RestrictedUnpickler(fh, source=str(p)).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{p}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from None
