"""Encoder registry: ``register_encoder(name)``, ``get_encoder(name, input_shape, out_dim, **hp)``.

An encoder maps ``[B, *input_shape] -> [B, out_dim]`` and has an ``out_dim`` attribute.
Meta-learned encoders are safe under ``torch.func.functional_call`` + ``vmap`` with batched
parameters + ``grad``: no BatchNorm running statistics, no in-place ops on parameters, no
data-dependent Python branches. Frozen parts (``resnet18``/``bert`` with ``frozen=True``) have
``requires_grad=False`` and stay in eval mode.

Names: ``mlp`` (feature vectors), ``lstm`` and ``cnn1d`` (byte ids ``long [L]`` or frames
``float [C, T]``), ``cnn2d`` (``float [C, H, W]``), ``resnet18`` (torchvision, local weights
file), ``bert`` (transformers, local directory).
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from episodes.registry import Registry

ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder")
"""The encoder registry: name -> factory ``(input_shape, out_dim, **hp) -> nn.Module``."""


def register_encoder(name: str) -> Callable:
    """Class/factory decorator registering an encoder under ``name``.

    The factory is called as ``factory(input_shape, out_dim, **hp)``.

    Args:
        name: the registry key (``--encoder MOD=name``).

    Returns:
        The decorator; it returns the class or factory unchanged.
    """

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ENCODERS and ENCODERS.get(name) is not factory:
            raise ValueError(f"encoder {name!r} is already registered")
        return ENCODERS.register(name, factory, overwrite=True)  # re-registering the same factory is a no-op

    return deco


def list_encoders() -> list[str]:
    """Names of all registered encoders, sorted."""
    return sorted(ENCODERS.names())


def encoder_hyperparameters(name: str) -> list[str]:
    """Names of the keyword hyper-parameters encoder ``name`` accepts."""
    factory = _get_factory(name)
    sig = inspect.signature(factory)
    return [p.name for p in list(sig.parameters.values()) if p.kind == p.KEYWORD_ONLY]


def _get_factory(name: str) -> Callable[..., nn.Module]:
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; available: {', '.join(list_encoders())}")
    return ENCODERS.get(name)


def get_encoder(name: str, input_shape: tuple[int, ...], out_dim: int, **hp) -> nn.Module:
    """Build encoder ``name`` mapping ``[B, *input_shape] -> [B, out_dim]``.

    Raises:
        ValueError: unknown ``name`` or a hyper-parameter ``name`` does not accept.
    """
    factory = _get_factory(name)
    allowed = set(encoder_hyperparameters(name))
    unknown = sorted(set(hp) - allowed)
    if unknown:
        raise ValueError(
            f"encoder {name!r} got unknown hyper-parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed)) or '(none)'}"
        )
    if int(out_dim) <= 0:
        raise ValueError(f"encoder {name!r}: out_dim must be positive, got {out_dim}")
    return factory(tuple(int(s) for s in input_shape), int(out_dim), **hp)


# Register the built-in encoders (imports have no side effects beyond registration), in listing order.
# isort: off
from croma.encoders import mlp as _mlp  # noqa: E402,F401
from croma.encoders import sequence as _sequence  # noqa: E402,F401
from croma.encoders import cnn2d as _cnn2d  # noqa: E402,F401
from croma.encoders import resnet as _resnet  # noqa: E402,F401
from croma.encoders import bert as _bert  # noqa: E402,F401
# isort: on

__all__ = ["ENCODERS", "register_encoder", "get_encoder", "list_encoders", "encoder_hyperparameters"]
