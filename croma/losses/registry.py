"""Registry of alignment objectives: ``register_loss``, ``get_loss``, ``list_losses``.

An objective is a plain function (the math, in the family's module) plus a thin
:class:`LossModule` subclass that only stores hyper-parameters. Every registered module is
called the same way::

    loss = get_loss("cwcl", temperature=0.1)
    value = loss(z_source, z_target, **context)   # z_* [N, D] -> scalar

so the trainer never needs to know which objective it runs.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from episodes.registry import Registry

__all__ = [
    "LOSSES",
    "LossInfo",
    "LossModule",
    "get_loss",
    "list_losses",
    "loss_info",
    "loss_infos",
    "register_loss",
]


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
        self.check_hyper(resolved)
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
        name: registered name. paper: the source paper / equations. formula: one-line formula.
        hyper: default hyper-parameters. cls: the module class.
    """

    name: str
    paper: str
    formula: str
    hyper: Mapping[str, Any]
    cls: type[LossModule]


LOSSES: Registry[type[LossModule]] = Registry("loss")
"""The objective registry: name -> LossModule subclass; ``info(name)`` is its :class:`LossInfo`."""

T = TypeVar("T", bound=type[LossModule])


def register_loss(
    name: str, *, paper: str = "", hyper: Mapping[str, Any] | None = None, formula: str = ""
) -> Callable[[T], T]:
    """Class decorator registering a :class:`LossModule` subclass under ``name``.

    Args:
        name: registry key (lower case, unique).
        paper: citation of the objective (authors, short title, equations).
        hyper: default hyper-parameters; ``get_loss`` accepts exactly these keys.
        formula: one-line formula for documentation tables.

    Raises:
        ValueError: ``name`` already registered, or the class is not a LossModule.
    """

    def deco(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, LossModule)):
            raise ValueError(f"register_loss({name!r}) must decorate a LossModule subclass")
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        cls.loss_name = name
        cls.paper = paper
        cls.formula = formula
        cls.hyper_defaults = dict(hyper or {})
        info = LossInfo(name=name, paper=paper, formula=formula, hyper=dict(hyper or {}), cls=cls)
        return LOSSES.register(name, cls, info=info)

    return deco


def _lookup(name: str) -> LossInfo:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r} (available: {', '.join(list_losses())})")
    return LOSSES.info(name)


def get_loss(name: str, **hp: Any) -> LossModule:
    """Build the registered objective ``name`` with hyper-parameters ``hp``.

    Returns:
        an ``nn.Module`` called as ``loss(z_source [N, D], z_target [N, D], **context) -> scalar``.

    Raises:
        ValueError: unknown name (lists the available ones), unknown hyper-parameter (names it),
            or a value out of range.
    """
    return _lookup(name).cls(**hp)


def list_losses() -> list[str]:
    """Sorted names of the registered objectives."""
    return sorted(LOSSES.names())


def loss_info(name: str) -> LossInfo:
    """Registry entry of ``name`` (paper, formula, default hyper-parameters); ValueError if unknown."""
    return _lookup(name)


def loss_infos() -> list[LossInfo]:
    """Registry entries of all objectives, sorted by name."""
    return [LOSSES.info(n) for n in list_losses()]
