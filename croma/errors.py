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


# ------------------------------------------------------------------ out of memory, non-finite losses
_SIZES: ContextVar[dict[str, str] | None] = ContextVar("croma_sizes", default=None)


def note_sizes(what: str, sizes: str) -> None:
    """Remember the sizes of the run about to start (``what``: training, meta-test ...), so that an
    out-of-memory error later can name them (:func:`out_of_memory_message`)."""
    _SIZES.set({**(_SIZES.get() or {}), what: sizes})


def out_of_memory_message(exc: BaseException) -> str | None:
    """One line for an out-of-memory error (``MemoryError``, torch's ``OutOfMemoryError``, a CPU
    allocator's ``not enough memory``) naming the sizes noted by :func:`note_sizes`; None for any
    other exception."""
    text = str(exc).strip()
    low = text.lower()
    if not (isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
            k in low for k in ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory")))):
        return None
    import re

    m = re.search(r"tried to allocate ([\d.]+ ?[KMGT]?i?B|\d+ bytes)", text, re.IGNORECASE)
    asked = f" allocating {m.group(1)}" if m else ""
    sizes = "; ".join(f"{k}: {v}" for k, v in (_SIZES.get() or {}).items())
    return (f"out of memory{asked}" + (f" with {sizes}" if sizes else "")
            + ": lower these sizes (or --task-chunk, --eval-tasks), or use a machine with more memory")


def non_finite_advice(what: str, cfg: object = None, objective: object = None) -> str:
    """What to change when ``what`` (``align loss``, ``source_cls loss``, ``meta-parameter update``)
    became NaN or infinite: the objective's setting when one lies outside its usual range
    (:class:`croma.losses.registry.HyperRange`), else the learning rates (with their values)."""
    lrs = "lower --inner-lr or --meta-lr"
    if cfg is not None and hasattr(cfg, "inner_lr"):
        lrs = f"lower --inner-lr (now {cfg.inner_lr:g}) or --meta-lr (now {cfg.meta_lr:g})"
    lrs = hint("non_finite_lr", lrs)
    if what.startswith("meta-parameter") and cfg is not None and hasattr(cfg, "meta_lr"):
        return hint("non_finite_meta_lr", f"lower --meta-lr (now {cfg.meta_lr:g})")
    if what.startswith("align") and objective is not None:
        return _objective_advice(objective, lrs)
    return lrs


def _objective_advice(objective: object, lrs: str) -> str:
    ranges = getattr(objective, "hyper_ranges", {}) or {}
    hp = getattr(objective, "hparams", {}) or {}
    odd = [f"{k}={hp[k]!r} (usual {r.usual_text()})" for k, r in ranges.items() if k in hp and not r.usual_ok(hp[k])]
    name = getattr(objective, "loss_name", "") or "the objective"
    if odd:
        return f"likely the objective's setting: --loss {name} --loss-hp {', '.join(odd)}; or {lrs}"
    return f"{lrs}, or check the objective's settings (--loss {name} --loss-hp)"


def ordinary_non_finite_advice(terms: list[str], lr: float, objective: object = None) -> str:
    """:func:`non_finite_advice` for ordinary (non-meta) training: ``terms`` are the loss terms that
    became non-finite (``align``, ``source_cls``, ``confusion`` ...), ``lr`` the method's ordinary_lr."""
    lrs = f"lower the method's ordinary_lr (now {lr:g}: --method-hp METHOD.ordinary_lr)"
    if "align" in terms and objective is not None:
        return _objective_advice(objective, f"lower align_weight or {lrs}")
    if "confusion" in terms:
        return f"lower confusion_weight (--method-hp METHOD.confusion_weight) or {lrs}"
    return lrs
