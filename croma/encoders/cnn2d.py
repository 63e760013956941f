"""``cnn2d``: a small conv net for images ``[B, 3, H, W]`` or spectrograms ``[B, 1, F, T]``.

GroupNorm (no running statistics), so it is safe under ``vmap`` with batched parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from croma.encoders import register_encoder
from croma.encoders.mlp import make_activation


def _groups(channels: int, wanted: int) -> int:
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


@register_encoder("cnn2d")
class Conv2dEncoder(nn.Module):
    """``layers`` x (conv3x3 stride 2 -> GroupNorm -> act) -> global mean pool -> linear.

    Args:
        input_shape: ``(C, H, W)`` (or ``(H, W)``, treated as one channel).
        out_dim: output width.
        channels: width of the first conv; doubles per layer up to ``4 * channels``
            (default 32).
        layers: number of conv layers (default 3).
        groups: GroupNorm groups (default 8; 0 disables normalisation).
        activation: ``relu`` | ``gelu`` | ``tanh``.

    Shapes: ``[B, C, H, W]`` -> ``[B, out_dim]``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        *,
        channels: int = 32,
        layers: int = 3,
        groups: int = 8,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if len(input_shape) == 2:
            input_shape = (1, *input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"cnn2d: input_shape must be (C, H, W), got {tuple(input_shape)}")
        if layers < 1 or channels < 1:
            raise ValueError(f"cnn2d: layers and channels must be >= 1, got {layers}, {channels}")
        self.input_shape = tuple(input_shape)
        self.out_dim = out_dim
        blocks: list[nn.Module] = []
        in_ch = input_shape[0]
        for i in range(layers):
            width = channels * min(2**i, 4)
            blocks.append(nn.Conv2d(in_ch, width, 3, stride=2, padding=1))
            if groups > 0:
                blocks.append(nn.GroupNorm(_groups(width, groups), width))
            blocks.append(make_activation(activation))
            in_ch = width
        self.features = nn.Sequential(*blocks)
        self.proj = nn.Linear(in_ch, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, out_dim]``."""
        x = x.to(self.proj.weight.dtype).reshape(x.shape[0], *self.input_shape)
        h = self.features(x)  # [B, C', H', W']
        return self.proj(h.mean(dim=(2, 3)))
