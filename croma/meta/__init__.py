"""CROMA meta-learning: functional parameters, batched inner loops, Reptile, the trainer.

Public entry points: :class:`~croma.meta.trainer.TrainConfig`, :func:`~croma.meta.trainer.train`,
:class:`~croma.meta.trainer.CromaTrainer` (``task_deltas`` for distributed splits),
:func:`~croma.meta.reptile.reptile_update`, :func:`~croma.meta.inner.run_batched` /
:func:`~croma.meta.inner.run_sequential`.
"""

from croma.meta.functional import FunctionalModel, meta_parameters
from croma.meta.inner import InnerConfig, adapt, run_batched, run_inner, run_sequential
from croma.meta.reptile import linear_epsilon, reptile_update

_LAZY = ("CromaTrainer", "TrainConfig", "TrainResult", "task_plan", "train")


def __getattr__(name: str):
    # the trainer imports croma.evaluate, which imports croma.meta.*: load it on first use
    if name in _LAZY:
        from croma.meta import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'croma.meta' has no attribute {name!r}")

__all__ = [
    "FunctionalModel",
    "meta_parameters",
    "InnerConfig",
    "adapt",
    "run_batched",
    "run_sequential",
    "run_inner",
    "linear_epsilon",
    "reptile_update",
    "CromaTrainer",
    "TrainConfig",
    "TrainResult",
    "task_plan",
    "train",
]
