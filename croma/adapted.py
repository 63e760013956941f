"""A run adapted to a support set: :class:`AdaptedModel` (``RunModel.adapt``) and its
:class:`Prediction`; the batched forward pass both :mod:`croma.runmodel` and this module use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["AdaptedModel", "Prediction"]


@dataclass
class Prediction:
    """What :meth:`AdaptedModel.predict` returns: reads like the pair ``(labels, scores)``
    (``labels, scores = prediction``; ``prediction[0]`` is ``labels``, ``prediction[1]`` is
    ``scores``, ``len(prediction) == 2``), with ``classes`` as an attribute.

    Attributes:
        labels: one label per value, from ``classes``.
        scores: ``float [n, N]`` class probabilities (softmax of the logits).
        classes: the N classes of the support set, in the order of ``scores``' columns.
    """

    labels: list[Any]
    scores: torch.Tensor
    classes: list[Any]

    def _pair(self) -> tuple[list[Any], torch.Tensor]:
        return (self.labels, self.scores)

    def __iter__(self):  # labels, scores = model.predict(values)
        return iter(self._pair())

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index):  # model.predict(values)[0]: the labels, as a tuple indexes (slices too)
        return self._pair()[index]


@dataclass
class _EvalLike:
    """The fields of :class:`croma.evaluate.EvalConfig` that fine-tuning reads."""

    ways: int
    head_init: str
    finetune: str
    finetune_steps: int
    finetune_lr: float
    finetune_optimizer: str
    prototype_scale: float = 1.0
    inner_loop: str = "batched"  # many episodes at once (croma.new_classes); one support set is one task


@dataclass
class AdaptedModel:
    """A run fine-tuned on a support set (:meth:`RunModel.adapt`): ``predict`` new items.

    Attributes:
        run: the :class:`RunModel` it was adapted from.
        params: the fine-tuned parameters ``{name: tensor}``.
        classes: the support set's classes; the classifier's row ``c`` is ``classes[c]``.
        setting: how it was fine-tuned (``head_init``, ``finetune``, steps, learning rate,
            optimiser, ``shots``, ``ways``).
    """

    run: Any  # the croma.runmodel.RunModel it was adapted from
    params: dict[str, torch.Tensor]
    classes: list[Any]
    setting: dict[str, Any]

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self.classes[:8])) + (", ..." if len(self.classes) > 8 else "")
        how = {k: v for k, v in self.setting.items() if k != "note"}
        return f"AdaptedModel(run={str(self.run.path)!r}, {len(self.classes)} classes [{shown}], setting={how})"

    def logits(self, values: Sequence[Any], *, ids: Sequence[str] | None = None, batch_size: int = 256) -> torch.Tensor:
        """``float [n, N]`` classifier logits of target-modality ``values``."""
        return self.logits_features(self.run.features(self.run.target, values, ids=ids), batch_size)

    def logits_features(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """:meth:`logits` of encoder inputs already made by the run's front-end (``RunModel.features``),
        the counterpart of ``RunModel.adapt_features``."""
        t = self.run.target
        return _forward(self.run.model, self.params, lambda m, v: m.classify(m.embed(t, v)), x, batch_size)

    def predict(self, values: Sequence[Any], *, ids: Sequence[str] | None = None) -> Prediction:
        """Labels and class probabilities of ``values``."""
        logits = self.logits(values, ids=ids)
        scores = F.softmax(logits.double(), dim=-1).float()
        idx = logits.argmax(-1).tolist()
        return Prediction(labels=[self.classes[i] for i in idx], scores=scores, classes=list(self.classes))

    def embed(self, values: Sequence[Any], *, ids: Sequence[str] | None = None) -> torch.Tensor:
        """Embeddings ``[n, E]`` of target-modality values with the fine-tuned parameters."""
        t = self.run.target
        x = self.run.features(t, values, ids=ids)
        return _forward(self.run.model, self.params, lambda m, v: m.embed(t, v), x, None)


def _forward(model: torch.nn.Module, params: Mapping[str, torch.Tensor], fn: Any, x: torch.Tensor,
             batch_size: int | None) -> torch.Tensor:
    """``fn(model, x)`` run functionally with ``params``, without gradients, in row batches of
    ``batch_size`` (None: one pass), on CPU."""
    from croma.meta.functional import FunctionalModel

    fm = FunctionalModel(model)
    step = batch_size or max(1, x.shape[0])
    with torch.no_grad():
        return torch.cat([fm(params, fn, x[i : i + step]) for i in range(0, x.shape[0], step)]).cpu()
