"""``mlp``: feature vectors ``[B, D]`` (or any ``[B, *shape]``, flattened) -> ``[B, out_dim]``."""

from __future__ import annotations

import math

import torch
from torch import nn

from croma.encoders import register_encoder

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """``gelu`` | ``relu`` | ``tanh`` -> module; ValueError naming the value otherwise."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


@register_encoder("mlp")
class MLPEncoder(nn.Module):
    """Multi-layer perceptron over flattened features.

    Args:
        input_shape: per-example shape; flattened to ``D = prod(input_shape)``.
        out_dim: output width.
        hidden: hidden width (default 128).
        layers: number of linear layers (>= 1; default 2).
        norm: LayerNorm after each hidden linear layer (default True).
        activation: ``gelu`` | ``relu`` | ``tanh``.

    Shapes: ``[B, *input_shape] -> [B, out_dim]``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        *,
        hidden: int = 128,
        layers: int = 2,
        norm: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"mlp: layers must be >= 1, got {layers}")
        if hidden < 1:
            raise ValueError(f"mlp: hidden must be >= 1, got {hidden}")
        self.input_shape = tuple(input_shape)
        self.out_dim = out_dim
        in_dim = int(math.prod(self.input_shape)) if self.input_shape else 1
        mods: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            mods.append(nn.Linear(width, hidden))
            if norm:
                mods.append(nn.LayerNorm(hidden))
            mods.append(make_activation(activation))
            width = hidden
        mods.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, *input_shape] -> [B, out_dim]``."""
        x = x.reshape(x.shape[0], -1).to(self.net[0].weight.dtype)
        return self.net(x)
