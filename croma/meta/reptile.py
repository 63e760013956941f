"""The Reptile outer update and its step-size schedule.

``theta <- theta + eps_t * mean_i(phi_i - theta)``, where the mean runs over *all* tasks of the
meta-batch. The trainer computes ``sum_i(phi_i - theta)`` over any subset of the tasks
(:meth:`croma.meta.trainer.CromaTrainer.task_deltas`), so a meta-batch can be split across
processes and the sums all-reduced before :func:`reptile_update`.
"""

from __future__ import annotations

from typing import Mapping

import torch

from croma.meta.functional import Params

__all__ = ["linear_epsilon", "reptile_update"]


def linear_epsilon(iteration: int, iterations: int, start: float, final: float) -> float:
    """Outer step size at 0-based ``iteration`` of ``iterations``: linear from ``start`` to ``final``.

    ``iteration = 0`` gives ``start``; the last iteration (``iterations - 1``) gives ``final``.
    """
    if iterations <= 1:
        return float(start)
    frac = min(max(iteration, 0), iterations - 1) / (iterations - 1)
    return float(start + (final - start) * frac)


def reptile_update(theta: Mapping[str, torch.Tensor], mean_delta: Mapping[str, torch.Tensor], epsilon: float) -> Params:
    """``theta + epsilon * mean_delta`` key-wise (a name missing from ``mean_delta`` is unchanged).

    Args:
        theta: meta-parameters ``{name: tensor}``.
        mean_delta: ``mean_i(phi_i - theta)`` per name, same shapes.
        epsilon: outer step size.

    Returns:
        New meta-parameters (``theta`` is not modified).
    """
    return {k: (v + epsilon * mean_delta[k]) if k in mean_delta else v.clone() for k, v in theta.items()}
