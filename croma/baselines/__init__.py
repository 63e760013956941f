"""The paper's methods and baselines, one file per family, behind one registry.

A method is a function ``fn(ctx: MethodContext) -> MethodOutcome`` registered with
:func:`register_method`; :mod:`croma.benchmark` runs any registered method under the same
budget and meta-tests it on unseen target classes. The registry is filled by importing the
family modules at the bottom of this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from episodes.registry import Registry

__all__ = ["METHODS", "MethodSpec", "register_method", "get_method", "list_methods", "methods_for"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: the ``--methods`` name.
        family: file / family it belongs to.
        description: one line for tables and ``--help``.
        uses_target_labels: meta-training sees target-modality labels (oracle-type methods).
        uses_target_samples: meta-training sees target-modality items (labelled or not).
        shared_body: a domain-adaptation method that shares one encoder body across modalities.
        fn: ``fn(ctx) -> MethodOutcome``.
        applies: ``applies(bench) -> bool`` (default: always).
    """

    name: str
    family: str
    description: str
    uses_target_labels: bool
    uses_target_samples: bool
    shared_body: bool
    fn: Callable[..., Any]
    applies: Callable[[Any], bool]


METHODS: Registry[MethodSpec] = Registry("method")
"""The method registry: name -> :class:`MethodSpec` (table order = registration order)."""


def register_method(
    name: str,
    *,
    family: str,
    description: str,
    uses_target_labels: bool = False,
    uses_target_samples: bool = False,
    shared_body: bool = False,
    applies: Callable[[Any], bool] | None = None,
):
    """Decorator registering ``fn(ctx) -> MethodOutcome`` under ``name``.

    Args:
        name: the registry key (``croma benchmark --methods name``).
        family: the file / family it belongs to (e.g. ``alignment``, ``domain_adaptation``).
        description: one line for tables and ``--help``.
        uses_target_labels: meta-training sees target-modality labels (oracle-type methods).
        uses_target_samples: meta-training sees target-modality items (labelled or not).
        shared_body: a domain-adaptation method that shares one encoder body across modalities.
        applies: ``applies(bench) -> bool``: whether it can run on a benchmark (None: always).

    Returns:
        The decorator; it returns ``fn`` unchanged.

    Raises:
        ValueError: ``name`` already registered (when decorating).
    """

    def deco(fn):
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        METHODS.register(name, MethodSpec(
            name, family, description, uses_target_labels, uses_target_samples, shared_body, fn,
            applies or (lambda bench: True),
        ))
        return fn

    return deco


def list_methods() -> list[str]:
    """Registered method names in table order."""
    return METHODS.names()


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; ValueError listing the names when unknown."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS.names())}")
    return METHODS.get(name)


def methods_for(bench) -> list[str]:
    """Methods that apply to ``bench`` (the default of ``--methods``)."""
    return [m for m, spec in METHODS.items() if spec.applies(bench)]


# Fill the registry (table order). Imported last: the family modules import this one.
# isort: off
from croma.baselines import alignment as _alignment  # noqa: E402,F401
from croma.baselines import meta_learning as _meta_learning  # noqa: E402,F401
from croma.baselines import domain_adaptation as _domain_adaptation  # noqa: E402,F401
# isort: on
