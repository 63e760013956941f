"""Registry of alignment objectives: ``register_loss``, ``get_loss``, ``list_losses``.

An objective is a plain function (the math, in the family's module) plus a thin
:class:`LossModule` subclass that only stores hyper-parameters. Every registered module is
called the same way::

    loss = get_loss("cwcl", temperature=0.1)
    value = loss(z_source, z_target, **context)   # z_* [N, D] -> scalar

so the trainer never needs to know which objective it runs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from episodes.registry import Registry

__all__ = [
    "HyperParameterError",
    "HyperRange",
    "LOSSES",
    "LossInfo",
    "LossModule",
    "get_loss",
    "list_losses",
    "loss_info",
    "loss_infos",
    "register_loss",
]


@dataclass(frozen=True)
class HyperRange:
    """The range of one numeric hyper-parameter: ``lo``..``hi`` (``lo_open`` / ``hi_open``: the
    end itself excluded), ``integer``: whole numbers only; ``usual``: where training is known to
    behave (an error after a NaN loss names a setting outside it). Values are always finite."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    usual: tuple[float, float] | None = None

    def _fmt(self, v: float) -> str:
        return str(int(v)) if self.integer else f"{v:g}"

    def text(self) -> str:
        """``(0, 100]``, ``[0, 8]``."""
        return f"{'(' if self.lo_open else '['}{self._fmt(self.lo)}, {self._fmt(self.hi)}{')' if self.hi_open else ']'}"

    def usual_text(self) -> str:
        return f"{self.usual[0]:g} to {self.usual[1]:g}" if self.usual else self.text()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range (``must be ...``), or None. Tensors are not inspected."""
        if isinstance(value, torch.Tensor):
            return None
        what = ("an integer" if self.integer else "a finite number") + f" in {self.text()}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return f"must be {what}"
        if self.integer and not isinstance(value, numbers.Integral):
            return f"must be {what}"
        if value < self.lo or (self.lo_open and value == self.lo):
            return f"must be {'>' if self.lo_open else '>='} {self._fmt(self.lo)}"
        if value > self.hi or (self.hi_open and value == self.hi):
            return f"must be {'<' if self.hi_open else '<='} {self._fmt(self.hi)}"
        return None

    def usual_ok(self, value: Any) -> bool:
        """Whether ``value`` lies in the usual range (always true without one, or for tensors)."""
        if self.usual is None or isinstance(value, torch.Tensor) or not isinstance(value, numbers.Real):
            return True
        return self.usual[0] <= value <= self.usual[1]


class HyperParameterError(ValueError):
    """A hyper-parameter value out of its range; ``key`` and ``value`` name it."""

    def __init__(self, message: str, key: str, value: Any) -> None:
        super().__init__(message)
        self.key, self.value = key, value


def _finite_problem(value: Any) -> str | None:
    """Every numeric hyper-parameter of every objective must be finite (ranged or not)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
        return "must be a finite number"
    return None


class LossModule(nn.Module):
    """Base class of registered objectives: stores hyper-parameters, has no parameters.

    Subclasses implement ``forward(z_source, z_target, **context) -> scalar`` and may override
    :meth:`check_hyper` to validate values at construction time.

    Attributes:
        hparams: the resolved hyper-parameters (defaults updated with the given ones).
    """

    loss_name: str = ""
    paper: str = ""
    formula: str = ""
    hyper_defaults: Mapping[str, Any] = {}
    hyper_ranges: Mapping[str, HyperRange] = {}
    context_keys: tuple[str, ...] = ()

    def __init__(self, **hp: Any) -> None:
        super().__init__()
        unknown = sorted(set(hp) - set(self.hyper_defaults))
        if unknown:
            allowed = ", ".join(sorted(self.hyper_defaults)) or "none"
            raise ValueError(
                f"unknown hyper-parameter {unknown[0]!r} for loss {self.loss_name!r} (allowed: {allowed})"
            )
        resolved = dict(self.hyper_defaults)
        for key, value in hp.items():
            default = resolved[key]
            if isinstance(default, numbers.Real) and not isinstance(default, bool) and default is not None:
                if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
                    raise ValueError(
                        f"hyper-parameter {key!r} of loss {self.loss_name!r} must be a number (got {value!r})"
                    )
            resolved[key] = value
        for key, value in hp.items():  # non-finite first: inf passes "> 0" in check_hyper
            rng = self.hyper_ranges.get(key)
            if _finite_problem(value) is not None:
                what = f"a finite number in {rng.text()}" if rng is not None else "a finite number"
                raise HyperParameterError(f"{key} of loss {self.loss_name!r} must be {what} (got {value!r})", key, value)
        self.check_hyper(resolved)
        for key, value in hp.items():
            rng = self.hyper_ranges.get(key)
            problem = rng.problem(value) if rng is not None else None
            if problem is not None:
                raise HyperParameterError(f"{key} of loss {self.loss_name!r} {problem} (got {value!r})", key, value)
        self.hparams: dict[str, Any] = resolved

    def check_hyper(self, hp: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming a hyper-parameter whose value is out of range."""

    def _check_context(self, context: Mapping[str, Any]) -> None:
        unknown = sorted(set(context) - set(self.context_keys))
        if unknown:
            allowed = ", ".join(self.context_keys) or "none"
            raise ValueError(
                f"unknown context argument {unknown[0]!r} for loss {self.loss_name!r} (allowed: {allowed})"
            )

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())


@dataclass(frozen=True)
class LossInfo:
    """What the registry knows about one objective (for ``croma losses`` and docs).

    Attributes:
        name: registered name.
        paper: the source paper / equations.
        formula: one-line formula.
        hyper: default hyper-parameters.
        cls: the module class.
        ranges: ``{hyper-parameter: HyperRange}`` (what ``get_loss`` accepts; ``croma losses``
            shows them).
    """

    name: str
    paper: str
    formula: str
    hyper: Mapping[str, Any]
    cls: type[LossModule]
    ranges: Mapping[str, HyperRange] = field(default_factory=dict)


LOSSES: Registry[type[LossModule]] = Registry("loss")
"""The objective registry: name -> LossModule subclass; ``info(name)`` is its :class:`LossInfo`."""

T = TypeVar("T", bound=type[LossModule])


def register_loss(
    name: str, *, paper: str = "", hyper: Mapping[str, Any] | None = None, formula: str = "",
    ranges: Mapping[str, HyperRange] | None = None,
) -> Callable[[T], T]:
    """Class decorator registering a :class:`LossModule` subclass under ``name``.

    Args:
        name: registry key (lower case, unique).
        paper: citation of the objective (authors, short title, equations).
        hyper: default hyper-parameters; ``get_loss`` accepts exactly these keys.
        formula: one-line formula for documentation tables.
        ranges: ``{hyper-parameter: HyperRange}``: the values ``get_loss`` accepts (checked when
            the objective is built, i.e. when a configuration is validated). Every numeric
            hyper-parameter must be finite, ranged or not.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: ``name`` already registered, the class is not a LossModule, or a range for
            an unknown hyper-parameter.
    """

    def deco(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, LossModule)):
            raise ValueError(f"register_loss({name!r}) must decorate a LossModule subclass")
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        stray = sorted(set(ranges or {}) - set(hyper or {}))
        if stray:
            raise ValueError(f"register_loss({name!r}): a range for {stray[0]!r}, which is not a hyper-parameter")
        cls.loss_name = name
        cls.paper = paper
        cls.formula = formula
        cls.hyper_defaults = dict(hyper or {})
        cls.hyper_ranges = dict(ranges or {})
        info = LossInfo(name=name, paper=paper, formula=formula, hyper=dict(hyper or {}), cls=cls,
                        ranges=dict(ranges or {}))
        return LOSSES.register(name, cls, info=info)

    return deco


def _lookup(name: str) -> LossInfo:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (available: {', '.join(list_losses())})")
    return LOSSES.info(name)


def get_loss(name: str, **hp: Any) -> LossModule:
    """Build the registered objective ``name`` with hyper-parameters ``hp``.

    Args:
        name: a registered objective (:func:`list_losses`).
        **hp: its hyper-parameters (``croma losses`` lists each objective's, with defaults).

    Returns:
        an ``nn.Module`` called as ``loss(z_source [N, D], z_target [N, D], **context) -> scalar``.

    Raises:
        ValueError: unknown name (lists the available ones), unknown hyper-parameter (names it),
            or a value out of range.
    """
    return _lookup(name).cls(**hp)


def list_losses() -> list[str]:
    """Sorted names of the registered objectives.

    Returns:
        The names, sorted.
    """
    return sorted(LOSSES.names())


def loss_info(name: str) -> LossInfo:
    """Registry entry of ``name`` (paper, formula, default hyper-parameters); ValueError if unknown."""
    return _lookup(name)


def loss_infos() -> list[LossInfo]:
    """Registry entries of all objectives, sorted by name."""
    return [LOSSES.info(n) for n in list_losses()]
