"""Symmetric label noise for robustness studies (CROMA paper, Fig. 7)."""

from __future__ import annotations

import numpy as np
import torch

from episodes.samplers import episode_generator

__all__ = ["symmetric_label_noise"]


def symmetric_label_noise(labels, rate: float, num_classes: int, seed: int):
    """Corrupt labels symmetrically.

    Each label, independently with probability ``rate``, is replaced by a class drawn
    uniformly from the *other* ``num_classes - 1`` classes.

    Args:
        labels: ``[n]`` integer labels in ``0..num_classes-1`` (tensor, numpy array or list).
        rate: corruption probability in ``[0, 1)``.
        num_classes: number of classes (>= 2 when rate > 0).
        seed: the result is a pure function of ``(labels, rate, num_classes, seed)``.

    Returns:
        New labels of the same type (tensor on the input's device / numpy array / list).

    Raises:
        ValueError: rate outside ``[0, 1)``, num_classes < 2, or a label out of range.
    """
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise rate must be in [0, 1) (got {rate})")
    if num_classes < 2 and rate > 0:
        raise ValueError(f"symmetric label noise needs num_classes >= 2 (got {num_classes})")
    kind = "tensor" if isinstance(labels, torch.Tensor) else "numpy" if isinstance(labels, np.ndarray) else "list"
    t = torch.as_tensor(labels)
    device = t.device if kind == "tensor" else None
    t = t.detach().cpu().to(torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    g = episode_generator(seed, 0, "symmetric-noise")
    flip = torch.rand(t.shape, generator=g) < rate
    offset = torch.randint(1, max(num_classes, 2), t.shape, generator=g)
    out = torch.where(flip, (t + offset) % num_classes, t)
    if kind == "tensor":
        return out.to(device=device, dtype=torch.as_tensor(labels).dtype)
    if kind == "numpy":
        return out.numpy().astype(np.asarray(labels).dtype)
    return out.tolist()
