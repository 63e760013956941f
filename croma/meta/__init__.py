"""CROMA meta-learning mechanisms: functional parameters, batched inner loops, task families, outer steps.

The mechanisms the learner (:class:`croma.learner.MetaLearner`, the pure outer step) is built
from: :data:`~croma.meta.outer.OUTER_ALGORITHMS`, task families (:mod:`croma.meta.tasks`),
:func:`~croma.meta.reptile.reptile_update`, :func:`~croma.meta.inner.run_batched` /
:func:`~croma.meta.inner.run_sequential`.
"""

from croma.meta.functional import FunctionalModel, meta_parameters
from croma.meta.inner import InnerConfig, adapt, run_batched, run_inner, run_sequential
from croma.meta.outer import OUTER_ALGORITHMS, task_plan
from croma.meta.reptile import linear_epsilon, reptile_update

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
    "OUTER_ALGORITHMS",
    "task_plan",
]

# The fit loop (CromaTrainer, train, TrainResult) is croma.fit and TrainConfig is croma.config; both
# sit above this package, and `croma` re-exports them.
