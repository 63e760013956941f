"""Outer algorithms and the meta-batch plan.

An outer algorithm turns the adapted parameters of a chunk of tasks into the chunk's summed
*direction*; the meta-parameters then move ``theta <- theta + eps_t * sum / n_tasks`` (see
:func:`croma.meta.reptile.reptile_update`). Because only the per-task direction differs, every
algorithm shares the chunked, world-size-invariant reduction of the trainer.

* ``reptile`` (Nichol et al., 2018): direction ``phi_i - theta``.
* ``fomaml`` (first-order MAML, Finn et al., 2017): direction ``-grad L_i(phi_i)``, the task
  loss's gradient at the adapted parameters, on the task's own batch (classification tasks:
  support and query items together; alignment tasks: the task's pairs). Its ``meta_lr`` is an
  ordinary outer learning rate (e.g. 1e-3), not Reptile's interpolation factor.

Adding an algorithm is one function registered in :data:`OUTER_ALGORITHMS` with the signature
``(theta, adapted, task_grad) -> {name: summed direction}``: ``adapted`` holds the chunk's
adapted parameters ``[T, ...]`` of the names the tasks train, and ``task_grad(params)`` returns
the per-task gradients ``[T, ...]`` of the task losses at ``params`` (one vmapped call).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch

from croma.meta.functional import Params
from episodes.registry import Registry

__all__ = ["OUTER_ALGORITHMS", "register_outer", "reptile_direction", "fomaml_direction", "task_plan"]

OuterFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], Callable[[Params], Params]], Params]

OUTER_ALGORITHMS: Registry[OuterFn] = Registry("outer algorithm")


def register_outer(name: str, *, info: Any = None):
    """Decorator registering an outer algorithm (see the module docstring).

    Args:
        name: the registry key (``croma train --outer name``).
        info: its one-line formula or description (``croma.OUTER_ALGORITHMS.info(name)``).

    Returns:
        The decorator; it returns the function unchanged.
    """
    return OUTER_ALGORITHMS.register(name, info=info)


@register_outer("reptile", info="theta += eps * mean_i(phi_i - theta)")
def reptile_direction(theta: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor],
                      task_grad: Callable[[Params], Params]) -> Params:
    """Reptile: ``sum_i (phi_i - theta)``."""
    return {k: (v - theta[k].unsqueeze(0)).sum(0) for k, v in adapted.items()}


@register_outer("fomaml", info="theta -= eps * mean_i grad L_i(phi_i)  (first-order MAML)")
def fomaml_direction(theta: Mapping[str, torch.Tensor], adapted: Mapping[str, torch.Tensor],
                     task_grad: Callable[[Params], Params]) -> Params:
    """First-order MAML: ``-sum_i grad L_i(phi_i)``."""
    grads = task_grad(dict(adapted))
    return {k: -grads[k].sum(0) for k in adapted}


def task_plan(cfg: Any) -> list[tuple[str, int]]:
    """``[(family, count), ...]`` of one meta-batch (counts sum to ``meta_batch``; zeros dropped).

    ``task_weights`` is rounded by largest remainder; otherwise ``align = round(meta_batch *
    task_mix)`` and ``source_cls`` takes the rest.
    """
    from croma.meta.tasks import FAMILIES

    if cfg.task_weights:
        total = sum(cfg.task_weights.values())
        raw = {f: cfg.meta_batch * w / total for f, w in cfg.task_weights.items()}
        counts = {f: int(math.floor(v)) for f, v in raw.items()}
        left = cfg.meta_batch - sum(counts.values())
        order: Sequence[str] = list(FAMILIES)
        for f in sorted(raw, key=lambda f: (-(raw[f] - counts[f]), order.index(f)))[:left]:
            counts[f] += 1
        return [(f, counts[f]) for f in FAMILIES if counts.get(f, 0) > 0]
    n_align = int(round(cfg.meta_batch * cfg.task_mix))
    plan = [("align", n_align), ("source_cls", cfg.meta_batch - n_align)]
    return [(f, c) for f, c in plan if c > 0]
