"""Task families: how a task's tensors are gathered from a benchmark, and its loss.

A family turns task indices into a *batch* — a dict of tensors with a leading task dimension,
gathered from the benchmark's features by the samplers' row indices — and defines the loss of
one task as a function of the model (run functionally, with the task's parameters swapped in).

Families (registry ``FAMILIES``):

* ``align`` — a batch of cross-modal pairs (strong or weak, from ``AlignmentTaskSampler``);
  loss = the chosen alignment objective ``loss(z_source, z_target)``.
* ``source_cls`` — an N-way episode in the source modality (support + query rows from the
  source classification rows); loss = cross-entropy through the shared classifier.
* ``target_cls`` — an N-way episode in the target modality over meta-train classes (uses
  target labels: the oracle baseline's hook).
* ``align_multi`` — alignment over every modality pair of a benchmark with three or more
  modalities (:mod:`croma.meta.multimodal`); ``build_family("align", ...)`` picks it itself.
* ``target_recon`` — a batch of unlabeled target items of meta-train classes; loss =
  ``model.reconstruction_loss(x)`` (unsupervised baseline's hook; needs
  ``ModelConfig.reconstruction``).

Task ``i`` of a family is a pure function of ``(seed, family, i)``.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from croma.errors import CromaError, hint
from croma.meta.multimodal import AlignMultiFamily, uses_multi_alignment
from episodes.data import PreparedBenchmark
from episodes.errors import DataError
from episodes.registry import Registry
from episodes.samplers import AlignmentTaskSampler, ClassificationTaskSampler, episode_generator

__all__ = [
    "FAMILIES",
    "TaskFamily",
    "AlignFamily",
    "SourceClsFamily",
    "TargetClsFamily",
    "TargetReconFamily",
    "derive_seed",
    "build_family",
    "register_family",
    "model_inputs",
]


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from ``seed`` and any keys (``hash`` is salted per process; this is not)."""
    text = ":".join([str(int(seed))] + [str(k) for k in keys])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def model_inputs(model: nn.Module, bench: PreparedBenchmark, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Encoder inputs of the source and target modality on ``device``, preprocessed once.

    Returns:
        ``{modality: tensor [n, *shape]}`` (``model.preprocess`` applied when the model has it).
    """
    out = {}
    for mod in (bench.source, bench.target):
        feats = bench.data[mod].features.to(device)
        pre = getattr(model, "preprocess", None)
        out[mod] = pre(mod, feats) if callable(pre) else feats
    return out


def _prefix_filter(prefixes: Sequence[str]) -> Callable[[str], bool]:
    pre = tuple(prefixes)
    return lambda name: name.startswith(pre)


class TaskFamily:
    """Base class. Subclasses set ``name`` and implement :meth:`sample` and :meth:`loss`.

    Attributes:
        name: registry name.
        inputs: ``{modality: [n, *shape]}`` encoder inputs (on the training device).
    """

    name = "base"

    def __init__(self, bench: PreparedBenchmark, inputs: Mapping[str, torch.Tensor]) -> None:
        self.bench = bench
        self.inputs = dict(inputs)
        self.source, self.target = bench.source, bench.target

    def sample(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Tensors of tasks ``indices`` stacked along a leading task dimension ``[T, ...]``."""
        raise NotImplementedError

    def begin(self, seed: int) -> None:
        """Called before the inner loops of one call; ``seed`` is a pure function of the run's
        seed, the iteration and the task indices (for objectives that draw noise)."""

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scalar loss of one task (``batch`` without the task dimension); ``model`` is run functionally."""
        raise NotImplementedError

    def trainable(self, name: str) -> bool:
        """Whether the inner loop updates parameter ``name`` (others cannot change the loss)."""
        return True

    def _rows(self, modality: str, rows: torch.Tensor) -> torch.Tensor:
        x = self.inputs[modality]
        return x[rows.to(x.device)]


class AlignFamily(TaskFamily):
    """Alignment tasks: ``loss_module(embed(source, xs), embed(target, xt), **context)``.

    Batch: ``xs [T, B, *source_shape]``, ``xt [T, B, *target_shape]``.

    Context the objective asks for (its ``context_keys``), built here so that the objectives keep
    the settings their papers assume:

    * ``generator`` — a generator seeded per call by :meth:`begin` (``cmcr``'s noise).
    * ``weights_from`` — when the objective's ``resolve_weights(source_frozen)`` (``cwcl``'s
      ``weights`` hyper-parameter, ``auto`` resolved with ``source_frozen`` = the source modality
      has a frozen pretrained backbone in ``bench.info["backbones"]``) says ``frozen_source``: the
      batch's raw source features ``xs`` as ``[B, D]`` vectors (``[B, T, F]`` sequences: the mean
      over time; images and other shapes: flattened), so that CWCL's intra-modal weights come from
      the frozen features, not from the encoder being trained.
    * ``memory_a`` / ``memory_b`` — when the objective has ``memory_size = K > 0`` (``cmcr``'s
      ``memory=K``): a fixed bank of K source and K target items drawn once, seeded by
      ``(seed, "align", "memory")``, from the benchmark's meta-train alignment rows
      (``align_source_rows`` / ``align_target_rows``; fewer if there are fewer rows), embedded by
      the current encoders at each step (the objective detaches them). Constant across steps and
      tasks, hence vmap-safe.

    Attributes:
        objective_settings: the resolved choices, e.g. ``{"weights": "frozen_source"}`` or
            ``{"memory": 16}`` (empty for objectives without such options), for logs and records.
    """

    name = "align"

    def __init__(self, bench, inputs, *, loss_module: nn.Module, batch_size: int, seed: int, **_: object) -> None:
        super().__init__(bench, inputs)
        d_s, d_t = bench.data[bench.source], bench.data[bench.target]
        self.sampler = AlignmentTaskSampler(
            bench.align_mode,
            batch_size=batch_size,
            seed=derive_seed(seed, "align"),
            pairs=bench.pairs,
            source_rows=bench.align_source_rows,
            target_rows=bench.align_target_rows,
            source_clusters=d_s.clusters,
            target_clusters=d_t.clusters,
        )
        self.loss_module = loss_module
        self._filter = _prefix_filter((f"encoders.{self.source}.", f"encoders.{self.target}.", "align."))
        keys = tuple(getattr(loss_module, "context_keys", ()) or ())
        self._wants_generator = "generator" in keys
        self.generator: torch.Generator | None = None
        self.objective_settings: dict[str, object] = {}
        # cwcl: where the intra-modal weights come from
        self._weights_from_xs = False
        resolve = getattr(loss_module, "resolve_weights", None)
        if "weights_from" in keys and callable(resolve):
            frozen = self.source in dict(bench.info.get("backbones") or {})
            mode = resolve(frozen)
            self.objective_settings["weights"] = mode
            if mode == "frozen_source":
                x = self.inputs[self.source]
                if not x.is_floating_point() or x.dim() < 2:
                    raise CromaError(
                        f"--loss-hp weights=frozen_source: the {self.source} features are {x.dtype} of shape "
                        f"{tuple(x.shape[1:])} per item, not vectors the weights can be computed from; use "
                        f"--backbone {self.source}=NAME (a frozen pretrained backbone) or --loss-hp weights=encoder"
                    )
                self._weights_from_xs = True
        # cmcr: a fixed memory bank drawn once from the meta-train alignment rows
        self.bank_source: torch.Tensor | None = None
        self.bank_target: torch.Tensor | None = None
        k = int(getattr(loss_module, "memory_size", 0) or 0)
        if k > 0 and "memory_a" in keys and "memory_b" in keys:
            rows = {}
            for key, mod, pool in (("source", self.source, bench.align_source_rows),
                                   ("target", self.target, bench.align_target_rows)):
                pool = torch.as_tensor(pool, dtype=torch.long).cpu()
                if pool.numel() == 0:
                    raise CromaError(f"--loss-hp memory={k}: the benchmark has no {mod} alignment rows to fill "
                                     f"the memory bank from")
                gen = episode_generator(derive_seed(seed, "align", "memory"), 0, key)
                rows[key] = pool[torch.randperm(pool.numel(), generator=gen)[:k]].sort().values
            self.bank_source = self._rows(self.source, rows["source"])
            self.bank_target = self._rows(self.target, rows["target"])
            self.objective_settings["memory"] = int(min(rows["source"].numel(), rows["target"].numel()))

    def begin(self, seed: int) -> None:
        """Objectives that draw noise (``cmcr``) get a generator seeded per call, so a run stays a
        pure function of its seed (exact resume); the noise differs between the batched and the
        sequential path and between task splits."""
        if self._wants_generator:
            dev = next(iter(self.inputs.values())).device
            self.generator = torch.Generator(device=dev).manual_seed(int(seed))

    def sample(self, indices):
        tasks = [self.sampler.sample(int(i)) for i in indices]
        src = torch.stack([t.source_rows for t in tasks])
        tgt = torch.stack([t.target_rows for t in tasks])
        return {"xs": self._rows(self.source, src), "xt": self._rows(self.target, tgt)}

    @staticmethod
    def _vectors(x: torch.Tensor) -> torch.Tensor:
        """Frozen features of one task's batch as vectors: ``[B, D]`` as is, ``[B, T, F]`` mean over
        time, other shapes flattened -> ``[B, D']``."""
        if x.dim() == 2:
            return x
        if x.dim() == 3:
            return x.mean(dim=1)
        return x.flatten(1)

    def loss(self, model, batch):
        zs = model.embed(self.source, batch["xs"])
        zt = model.embed(self.target, batch["xt"])
        context: dict[str, object] = {}
        if self.generator is not None:
            context["generator"] = self.generator
        if self._weights_from_xs:
            context["weights_from"] = self._vectors(batch["xs"])
        if self.bank_source is not None:
            context["memory_a"] = model.embed(self.source, self.bank_source)
            context["memory_b"] = model.embed(self.target, self.bank_target)
        return self.loss_module(zs, zt, **context)

    def trainable(self, name):
        return self._filter(name)


class _ClsFamily(TaskFamily):
    """N-way episodes in one modality; the loss is cross-entropy over support + query rows.

    Batch: ``x [T, N*(K+Q), *shape]``, ``y long [T, N*(K+Q)]`` in ``0..N-1``.
    """

    modality_attr = "source"

    def __init__(self, bench, inputs, *, ways: int, shots: int, queries: int, seed: int, **_: object) -> None:
        super().__init__(bench, inputs)
        self.modality = getattr(bench, self.modality_attr)
        data = bench.data[self.modality]
        if self.modality_attr == "source":
            classes, rows = bench.splits.get("source_train", []), bench.classify_source_rows
        else:
            classes, rows = bench.splits.get("meta_train", []), None
        try:
            self.sampler = ClassificationTaskSampler(
                data.labels, classes, ways=ways, shots=shots, queries=queries, seed=derive_seed(seed, self.name), rows=rows
            )
        except DataError as exc:
            which = "source" if self.modality_attr == "source" else "target"
            advice = hint(f"{self.name}_tasks", "use fewer ways, shots or queries (TrainConfig; --ways, --shots, "
                          "--queries)", ways=ways, shots=shots, queries=queries)
            raise DataError(f"{bench.name} {which} classification tasks for meta-training ({self.modality}, "
                            f"{ways}-way {shots}-shot, {queries} queries): {exc}; {advice}") from exc
        self._filter = _prefix_filter(
            (f"encoders.{self.modality}.", "classifier.") + (("align.",) if self.modality == bench.target else ())
        )

    def sample(self, indices):
        tasks = [self.sampler.sample(int(i)) for i in indices]
        rows = torch.stack([torch.cat([t.support_rows, t.query_rows]) for t in tasks])
        labels = torch.stack([torch.cat([t.support_labels, t.query_labels]) for t in tasks])
        x = self._rows(self.modality, rows)
        return {"x": x, "y": labels.to(x.device)}

    def loss(self, model, batch):
        logits = model.classify(model.embed(self.modality, batch["x"]))
        return F.cross_entropy(logits, batch["y"])

    def trainable(self, name):
        return self._filter(name)


class SourceClsFamily(_ClsFamily):
    """Source-modality classification tasks (CROMA's classification tasks)."""

    name = "source_cls"
    modality_attr = "source"


class TargetClsFamily(_ClsFamily):
    """Target-modality classification tasks on meta-train classes (oracle baseline hook)."""

    name = "target_cls"
    modality_attr = "target"


class TargetReconFamily(TaskFamily):
    """Unlabeled target reconstruction: ``model.reconstruction_loss(x)``.

    Batch: ``x [T, B, *target_shape]`` drawn from target rows of meta-train classes.
    """

    name = "target_recon"

    def __init__(self, bench, inputs, *, batch_size: int, seed: int, model: nn.Module | None = None, **_: object) -> None:
        super().__init__(bench, inputs)
        if model is not None and getattr(model, "recon", None) is None:
            raise CromaError("target_recon tasks need a model with a reconstruction head (ModelConfig.reconstruction=True; "
                             "croma train --reconstruction)")
        self.rows = bench.rows_of_classes(bench.target, bench.splits.get("meta_train", []))
        if self.rows.numel() < 2:
            raise CromaError(f"{bench.name}: target_recon tasks need >= 2 target items of meta-train classes")
        self.batch_size = min(int(batch_size), int(self.rows.numel()))
        self.seed = derive_seed(seed, "target_recon")

    def sample(self, indices):
        picks = []
        for i in indices:
            g = episode_generator(self.seed, int(i), "recon")
            picks.append(self.rows[torch.randperm(self.rows.numel(), generator=g)[: self.batch_size]])
        return {"x": self._rows(self.target, torch.stack(picks))}

    def loss(self, model, batch):
        return model.reconstruction_loss(batch["x"])

    def trainable(self, name):
        return not name.startswith(f"encoders.{self.source}.") and not name.startswith("classifier.")


FAMILIES: Registry[type[TaskFamily]] = Registry("task family")
"""The task-family registry: name -> :class:`TaskFamily` subclass (dict-like: ``FAMILIES[name]``,
``name in FAMILIES``, iteration over names in registration order)."""


def register_family(name: str, cls: type[TaskFamily] | None = None):
    """Register a :class:`TaskFamily` subclass under ``name`` (decorator or call).

    Args:
        name: the registry key (``--task-weights name=W``).
        cls: the class (None: return a decorator).

    Returns:
        ``cls``, or (without it) the decorator, which returns the class unchanged.

    Raises:
        ValueError: ``name`` already registered.
    """
    return FAMILIES.register(name, cls)


for _name, _cls in (("align", AlignFamily), ("source_cls", SourceClsFamily), ("target_cls", TargetClsFamily),
                    ("target_recon", TargetReconFamily), ("align_multi", AlignMultiFamily)):
    register_family(_name, _cls)
del _name, _cls


def build_family(name: str, bench: PreparedBenchmark, inputs: Mapping[str, torch.Tensor], **kw: object) -> TaskFamily:
    """Instantiate family ``name``.

    Keyword args (each family takes what it needs): ``loss_module``, ``batch_size`` (alignment /
    reconstruction batch), ``ways``, ``shots``, ``queries``, ``seed``, ``model``.

    ``align`` on a benchmark with more than two modalities holding alignment rows builds
    ``align_multi`` (:mod:`croma.meta.multimodal`): every modality pair present is aligned.

    Raises:
        ValueError: unknown family. DataError: the benchmark cannot supply such tasks.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r}; expected one of {', '.join(FAMILIES)}")
    if name == "align" and uses_multi_alignment(bench):
        name = "align_multi"
    return FAMILIES.get(name)(bench, inputs, **kw)
