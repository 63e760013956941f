"""``align_multi``: alignment tasks over every modality of a benchmark (three or more).

A manifest row may carry text, image and audio, some absent; the benchmark then keeps the
modalities besides source and target as *extra* modalities and its
:meth:`~episodes.data.PreparedBenchmark.alignment_tuples` give, per item of a meta-train class,
its row in each modality (``-1`` = absent). The trainer builds this family in place of ``align``
when more than two modalities hold such rows (:func:`croma.meta.tasks.build_family`), so plans,
``--task-weights align=W`` and budgets still say ``align``.

The loss of one task:

* objectives with ``forward_multi`` (``pcmc``, ``pcmr``, the coordination paper's objectives):
  **one call aligning all modalities at once**, absent items masked. Batch: ``B`` tuples,
  ``x_<modality> [T, B, *shape]`` for every modality (a placeholder row where absent) and
  ``present bool [T, B, M]``.
* any other objective: the **mean of the pairwise objective over every modality pair** held by
  at least two tuples, each pair on ``min(B, n_pair)`` tuples holding both (fixed sizes, so tasks
  stack and vmap). Pairs run in modality order (source, target, extras): ``loss(z_a, z_b)`` with
  ``a`` before ``b``, so ``cwcl`` teaches the later modality from the earlier one. Batch:
  ``p<k>_a`` / ``p<k>_b`` ``[T, B_k, *shape]`` for pair ``k``.

Task ``i`` is a pure function of ``(seed, i)``. The class implements the task-family interface
of :class:`croma.meta.tasks.TaskFamily` without subclassing it: ``croma.meta.tasks`` imports this
module to register it, and the import graph stays acyclic.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import torch
from torch import nn

from croma.errors import CromaError
from episodes.data import PreparedBenchmark
from episodes.samplers import TupleTaskSampler

__all__ = ["AlignMultiFamily", "uses_multi_alignment"]


def _derive_seed(seed: int, *keys: object) -> int:
    """As :func:`croma.meta.tasks.derive_seed` (same hash), without importing it."""
    text = ":".join([str(int(seed))] + [str(k) for k in keys])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _used_columns(tuples: torch.Tensor) -> list[int]:
    return [k for k in range(tuples.shape[1]) if bool((tuples[:, k] >= 0).any())]


def uses_multi_alignment(bench: PreparedBenchmark) -> bool:
    """True when more than two modalities of ``bench`` hold multi-way alignment rows (then
    ``align`` tasks are built as ``align_multi``)."""
    mods = getattr(bench, "modalities", (bench.source, bench.target))
    if len(mods) <= 2:
        return False
    tuples = bench.alignment_tuples()
    return tuples.shape[0] >= 2 and len(_used_columns(tuples)) > 2


class AlignMultiFamily:
    """Alignment tasks over every modality pair present (see the module docstring).

    Args:
        bench: the benchmark (``alignment_tuples`` over ``bench.modalities``).
        inputs: ``{modality: [n, *shape]}`` encoder inputs; modalities missing here (the extra
            ones) are taken from ``bench.data`` and ``model.preprocess``.
        loss_module: the alignment objective.
        batch_size: B (capped at the number of tuples, per pair at the pair's count).
        seed: run seed. model: the model (for ``preprocess``).

    Raises:
        CromaError: no objective. DataError: too few tuples.
    """

    name = "align_multi"

    def __init__(self, bench: PreparedBenchmark, inputs: Mapping[str, torch.Tensor], *,
                 loss_module: nn.Module | None = None, batch_size: int, seed: int, model: nn.Module | None = None,
                 **_: object) -> None:
        if loss_module is None:
            raise CromaError("align_multi tasks need an alignment objective (plan them as 'align': a benchmark with "
                             "more than two modalities builds them automatically)")
        self.bench = bench
        self.inputs = dict(inputs)
        self.source, self.target = bench.source, bench.target
        tuples = bench.alignment_tuples()
        self.sampler = TupleTaskSampler(tuples, batch_size=batch_size, seed=_derive_seed(seed, "align_multi"))
        all_mods = tuple(getattr(bench, "modalities", (bench.source, bench.target)))
        self.columns = _used_columns(tuples)
        self.modalities = tuple(all_mods[k] for k in self.columns)
        self.pairs = [(all_mods[a], all_mods[b]) for a, b in self.sampler.pair_list]
        device = next(iter(self.inputs.values())).device if self.inputs else torch.device("cpu")
        pre = getattr(model, "preprocess", None)
        for mod in self.modalities:
            if mod not in self.inputs:
                feats = bench.data[mod].features.to(device)
                self.inputs[mod] = pre(mod, feats) if callable(pre) else feats
        self.loss_module = loss_module
        self.joint = callable(getattr(loss_module, "forward_multi", None))
        self._prefixes = tuple(f"encoders.{m}." for m in self.modalities) + ("align.",)
        keys = tuple(getattr(loss_module, "context_keys", ()) or ())
        self._wants_generator = "generator" in keys
        self.generator: torch.Generator | None = None
        if int(getattr(loss_module, "memory_size", 0) or 0) > 0:
            raise CromaError("--loss-hp memory=K: the memory bank is not supported by alignment over three or more "
                             "modalities (align_multi); use memory=0")
        # cwcl: per pair, intra-modal weights from the earlier modality's frozen features when it has a
        # pretrained backbone (as ``align`` does for the source)
        self.objective_settings: dict[str, object] = {}
        self._weights_from: list[bool] = [False] * len(self.pairs)
        resolve = getattr(loss_module, "resolve_weights", None)
        if "weights_from" in keys and callable(resolve):
            frozen = dict(bench.info.get("backbones") or {})
            modes = [resolve(a in frozen) for a, _ in self.pairs]
            self.objective_settings["weights"] = {f"{a}-{b}": m for (a, b), m in zip(self.pairs, modes)}
            self._weights_from = [m == "frozen_source" and self.inputs[a].is_floating_point()
                                  for (a, _), m in zip(self.pairs, modes)]

    def begin(self, seed: int) -> None:
        """Objectives that draw noise (``cmcr``) get a generator seeded per call (as ``align``)."""
        if self._wants_generator:
            dev = next(iter(self.inputs.values())).device
            self.generator = torch.Generator(device=dev).manual_seed(int(seed))

    def _rows(self, modality: str, rows: torch.Tensor) -> torch.Tensor:
        x = self.inputs[modality]
        return x[rows.to(x.device)]

    def sample(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Tensors of tasks ``indices`` stacked along a leading task dimension ``[T, ...]``."""
        if self.joint:
            tasks = [self.sampler.sample(int(i)) for i in indices]
            rows = torch.stack([t.rows for t in tasks])  # [T, B, M]
            present = torch.stack([t.present for t in tasks])  # [T, B, M]
            batch = {f"x_{m}": self._rows(m, rows[:, :, k]) for m, k in zip(self.modalities, self.columns)}
            batch["present"] = present[:, :, self.columns].to(next(iter(batch.values())).device)
            return batch
        per_task = [self.sampler.sample_pairs(int(i)) for i in indices]  # T x [B_k, 2] per pair
        batch = {}
        for k, (a, b) in enumerate(self.pairs):
            rows = torch.stack([t[k] for t in per_task])  # [T, B_k, 2]
            batch[f"p{k}_a"] = self._rows(a, rows[:, :, 0])
            batch[f"p{k}_b"] = self._rows(b, rows[:, :, 1])
        return batch

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of one task (``batch`` without the task dimension)."""
        if self.joint:
            embs = [model.embed(m, batch[f"x_{m}"]) for m in self.modalities]  # M x [B, E]
            return self.loss_module.forward_multi(embs, present=batch["present"])
        ctx: dict[str, object] = {"generator": self.generator} if self.generator is not None else {}
        total = None
        for k, (a, b) in enumerate(self.pairs):
            xa = batch[f"p{k}_a"]
            if self._weights_from[k]:
                ctx["weights_from"] = xa if xa.dim() == 2 else (xa.mean(dim=1) if xa.dim() == 3 else xa.flatten(1))
            else:
                ctx.pop("weights_from", None)
            term = self.loss_module(model.embed(a, xa), model.embed(b, batch[f"p{k}_b"]), **ctx)
            total = term if total is None else total + term
        return total / len(self.pairs)

    def items_per_task(self) -> int:
        """Items one task passes through encoders (``examples`` in results): ``B x M`` for a joint
        objective (placeholder rows of absent items included), ``2 x sum_k B_k`` for the pairwise mean."""
        s = self.sampler
        return s.batch_size * len(self.modalities) if self.joint else 2 * sum(s.pair_sizes)

    def trainable(self, name: str) -> bool:
        """Encoders of the modalities aligned, and the target-side ``align`` layer."""
        return name.startswith(self._prefixes)
