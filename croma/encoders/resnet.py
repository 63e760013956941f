"""``resnet18``: torchvision ResNet-18 with weights from a local file + trainable projection.

No download ever happens: the user supplies the torchvision ImageNet checkpoint
(``resnet18-f37072fd.pth``, from https://download.pytorch.org/models/resnet18-f37072fd.pth)
as ``weights_path`` (CLI ``--image-weights PATH``). It is loaded with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from croma.encoders import register_encoder
from croma.errors import CromaError

RESNET18_FILE = "resnet18-f37072fd.pth"


def load_resnet18_backbone(weights_path: str | os.PathLike | None) -> nn.Module:
    """torchvision ResNet-18 with ``fc`` replaced by identity (``[B, 3, H, W] -> [B, 512]``).

    Raises:
        CromaError: ``weights_path`` missing, unreadable or not a ResNet-18 state_dict.
    """
    import torchvision

    if weights_path is None or not os.path.isfile(weights_path):
        raise CromaError(
            f"resnet18: weights file {str(weights_path)!r} not found; download the torchvision ImageNet "
            f"checkpoint {RESNET18_FILE} yourself (https://download.pytorch.org/models/{RESNET18_FILE}) "
            "and pass its path (--image-weights PATH)"
        )
    net = torchvision.models.resnet18(weights=None)
    try:
        import warnings

        with warnings.catch_warnings():  # e.g. torch's pickle-protocol notice: the error line says it all
            warnings.simplefilter("ignore")
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupted / not a tensor file / unsafe pickle
        from croma.errors import torch_load_problem

        raise CromaError(f"resnet18: cannot load weights file {str(weights_path)!r}: {torch_load_problem(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        net.load_state_dict(state)
    except Exception as exc:
        raise CromaError(
            f"resnet18: {str(weights_path)!r} is not a torchvision ResNet-18 state_dict ({RESNET18_FILE}): "
            + str(exc).splitlines()[0]
        ) from exc
    net.fc = nn.Identity()
    return net


@register_encoder("resnet18")
class ResNet18Encoder(nn.Module):
    """Pretrained ResNet-18 feature extractor (512-d, global average pool) + linear projection.

    Args:
        input_shape: ``(3, H, W)``; ImageNet-normalised images (32 x 32 works; larger is better).
        out_dim: output width.
        weights_path: local torchvision ResNet-18 state_dict file (required).
        frozen: backbone fixed (``requires_grad=False``, always eval mode so its BatchNorm uses
            the stored statistics, run under ``no_grad``); only the projection trains
            (default True). With ``frozen=False`` the BatchNorm layers still run in eval mode
            (stored statistics) so the encoder stays safe under ``vmap``.

    Shapes: ``[B, 3, H, W] -> [B, out_dim]``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_dim: int,
        *,
        weights_path: str | None = None,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] != 3:
            raise ValueError(f"resnet18: input_shape must be (3, H, W), got {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        self.out_dim = out_dim
        self.frozen = bool(frozen)
        self.backbone = load_resnet18_backbone(weights_path)
        if self.frozen:
            self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.proj = nn.Linear(512, out_dim)

    def train(self, mode: bool = True) -> "ResNet18Encoder":
        """Set train mode on the projection; the backbone's BatchNorm always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, out_dim]``."""
        x = x.to(self.proj.weight.dtype)
        if self.frozen:
            with torch.no_grad():
                feats = self.backbone(x)  # [B, 512]
        else:
            feats = self.backbone(x)
        return self.proj(feats)
