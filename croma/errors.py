"""Errors the CLI turns into one line ``error: ...`` and exit code 2."""

from __future__ import annotations

from contextvars import ContextVar


class CromaError(Exception):
    """A user-facing error: bad configuration, bad checkpoint, bad flag value.

    The message must say what is wrong and what to do about it.
    """


class NonFiniteLossError(CromaError):
    """Training produced a NaN or infinite loss."""


def torch_load_problem(exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a few words fit for one error line.

    torch's own messages are several sentences (and the one for a file holding arbitrary Python
    objects suggests ``weights_only=False``, which croma never does); an empty file raises a bare
    ``EOFError``, a text file a ``KeyError`` holding one byte value.
    """
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        import re

        m = re.search(r"GLOBAL\s+([\w.]+)", text)
        if m is None and "Unsupported operand" in text:
            return "not a PyTorch file (torch.save output), or a corrupt one"
        what = f" ({m.group(1)})" if m else ""
        return (f"it holds Python objects other than tensors{what}, which croma never unpickles: save a state dict "
                "of tensors instead")
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    if isinstance(exc, RuntimeError) and any(k in text for k in ("zip archive", "PytorchStreamReader", "magic number")):
        return "not a PyTorch file, or a truncated / corrupt one"
    if isinstance(exc, (KeyError, pickle.UnpicklingError, UnicodeDecodeError)):
        return "not a PyTorch file (torch.save output)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


_HINTS: ContextVar[dict[str, str] | None] = ContextVar("croma_error_hints", default=None)


class error_hints:  # noqa: N801 - used as a context manager, like contextlib's
    """``with error_hints(key="use fewer --ways ..."):``: inside the block, :func:`hint` returns the
    command's own advice for ``key``. A setting checked deep in the library (e.g. the meta-val
    episode sizes) is controlled by different flags in ``croma train``, ``croma benchmark`` and
    ``croma evaluate``; the command running says which."""

    def __init__(self, **hints: str) -> None:
        self.hints = hints
        self._token = None

    def __enter__(self) -> "error_hints":
        self._token = _HINTS.set({**(_HINTS.get() or {}), **self.hints})
        return self

    def __exit__(self, *exc: object) -> None:
        _HINTS.reset(self._token)


def hint(key: str, default: str, **values: object) -> str:
    """The advice for ``key`` set by :class:`error_hints` (else ``default``), formatted with ``values``."""
    text = (_HINTS.get() or {}).get(key, default)
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError):
        return text
