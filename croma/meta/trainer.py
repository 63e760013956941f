"""CROMA meta-training (Liang et al., Algorithm 1, with Reptile): :class:`CromaTrainer`, :func:`train`.

Meta-parameters ``theta`` = all trainable parameters of the :class:`croma.model.CrossModalModel`
(both encoders, the alignment layer, the shared classifier). Outer iteration ``t``:

1. the meta-batch has ``meta_batch`` tasks: ``round(meta_batch * task_mix)`` alignment tasks,
   the rest source classification tasks (or any family mix via ``task_weights``); task ``j`` of
   iteration ``t`` is task ``t * count_f + (j - offset_f)`` of its family ``f`` — a pure
   function of ``(seed, t, j)``;
2. per task: ``phi = theta``, S inner steps of SGD/Adam on the task loss (batched: one vmapped
   computation per chunk of at most ``task_chunk`` tasks of one family; sequential: a Python
   loop — the reference; higher: the optional ``higher`` package's optimisers);
3. ``theta <- theta + eps_t * mean_tasks(phi - theta)``, ``eps_t`` linear from ``meta_lr`` to
   ``meta_lr_final``.

For distribution, one outer step is ``trainer.chunked_deltas(theta, t, chunk_ids, all_reduce)``
over this rank's chunks (fixed groups of tasks whose composition does not depend on the number
of processes), then ``reptile_update(theta, deltas_sum / total, eps)``: the chunks' sums are
all-reduced as rows of one buffer and added in chunk order, so the result is bitwise the same
with any number of processes (``task_deltas(theta, t, task_ids)`` sums any subset of task ids,
equal up to rounding). Pass a
:class:`croma.distributed.Distributed` as ``dist`` to do exactly that (see that module): ranks
share each meta-batch and the meta-val episodes; only rank 0 writes checkpoints and shows progress.

Every ``eval_every`` iterations the meta-val accuracy (fixed episodes) selects ``best.pt``;
meta-test is never used for selection. ``last.pt`` is written every ``checkpoint_every``
iterations and at the end; ``resume=True`` continues from it to bitwise the same parameters as
an uninterrupted run (CPU): everything a step depends on is ``(theta, seed, iteration)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from croma.checkpoint import FORMAT, load_checkpoint, plain, save_checkpoint
from croma.errors import CromaError, NonFiniteLossError
from croma.evaluate import HEAD_INITS, EvalConfig, choose_head_init, evaluate_kshot
from croma.meta.functional import FunctionalModel, Params, meta_parameters, split_params, tree_all_finite
from croma.meta.inner import INNER_LOOPS, INNER_OPTIMIZERS, InnerConfig, import_higher, run_inner
from croma.meta.reptile import chunk_layout, linear_epsilon, pack_chunks, reptile_update, sum_chunks
from croma.meta.tasks import FAMILIES, TaskFamily, build_family, derive_seed, model_inputs
from episodes.data import ModalityData, PreparedBenchmark

__all__ = [
    "TrainConfig",
    "TrainResult",
    "CromaTrainer",
    "train",
    "resolve_device",
    "load_bench",
    "bench_to",
    "build_from_config",
    "eval_config_from",
    "task_plan",
]

# Fields that may differ between an interrupted run and its --resume (they do not change results).
RUNTIME_FIELDS = frozenset({"device", "checkpoint_dir", "stop_after", "time_budget_s", "data_root", "cache_dir"})


@dataclass
class TrainConfig:
    """Everything that defines a CROMA training run (stored in checkpoints as plain types).

    Attributes:
        benchmark: name for ``episodes.datasets.load_benchmark`` (``synthetic`` for tests).
        features: ``sequence`` (front-end output as is: byte ids, log-mel frames, images) or
            ``compact`` (``episodes.features.compact_benchmark``: n-gram / audio-statistics
            vectors for MLP encoders, as the ``quick`` benchmark preset uses).
        data_root, cache_dir, manifest, source, target: passed to the loader.
        loss, loss_hp: alignment objective (``croma.losses.get_loss(loss, **loss_hp)``).
        iterations: outer iterations.
        meta_batch: tasks per outer iteration.
        task_mix: fraction of alignment tasks (the rest: source classification).
        task_weights: optional ``{family: fraction}`` over ``align``, ``source_cls``,
            ``target_cls``, ``target_recon``; overrides ``task_mix``.
        inner_steps, inner_lr, inner_optimizer: the inner loop (``sgd`` | ``adam``).
        inner_loop: ``batched`` (vmap), ``sequential`` (reference) or ``higher`` (the optional
            ``higher`` package's differentiable optimisers, one task at a time; meta-val then
            fine-tunes with ``sequential``).
        task_chunk: tasks per chunk. Each family's tasks of a meta-batch are processed in
            consecutive chunks of at most this many (one vmapped inner loop per chunk), and the
            chunks' Reptile deltas are summed in chunk order; processes of a distributed run take
            whole chunks, so the meta-parameters do not depend on the number of processes
            (bitwise on CPU). 0: one chunk per family (rounding then depends on the world size).
        compile_inner: run the batched inner step through ``torch.compile`` (faster per step
            after a one-off compile per chunk shape; see :class:`croma.meta.inner.InnerConfig`).
        meta_lr, meta_lr_final: Reptile step size, linearly annealed over the run.
        ways, shots, queries: classification episodes (source tasks and evaluation).
        align_batch: pairs per alignment task.
        eval_every: meta-val every this many iterations (0: never; best = last).
        eval_tasks, eval_shots, eval_queries: meta-val episodes.
        finetune, finetune_steps, finetune_lr, finetune_optimizer: meta-val/test fine-tuning
            (``None`` lr/optimizer: the inner loop's).
        head_init: ``meta`` | ``zero`` | ``prototype`` | ``auto`` (chosen on meta-val at the end).
        checkpoint_every: write ``last.pt`` every this many iterations (0: only at the end).
        checkpoint_dir: run directory (``None``: no files).
        seed: seeds model init, benchmark splits and every task.
        device: ``auto`` | ``cpu`` | ``cuda`` (``auto`` picks CUDA when available).
        model: :class:`croma.model.ModelConfig` fields (``num_classes`` is set to ``ways``).
        stop_after: stop (as if interrupted) once this many iterations are done.
        time_budget_s: stop after this much wall-clock training time (checkpointed).
        frozen: parameter-name prefixes no task family updates (e.g. ``["encoders."]``: only the
            shared alignment layer and classifier are meta-learned).
        val_label_noise: symmetric noise on the support labels of meta-val episodes (checkpoint
            selection then sees what meta-test under label noise sees).
        backbones: ``{modality: backbone}`` frozen front-ends (``croma.backbones``; empty: the
            defaults). Weights: ``model["image_weights"]``, ``model["text_model"]``, ``audio_model``.
        audio_model: local transformers audio-model directory (``--backbone audio=hf``).
        skip_bad: leave out unreadable items instead of stopping.
        split_classes: ``[TRAIN, VAL, TEST]`` class counts of a seeded class split (None: by
            fraction, with at least ``ways`` classes per split when there are ``3 x ways``).
    """

    benchmark: str = "synthetic"
    features: str = "sequence"
    data_root: str | None = None
    cache_dir: str | None = None
    manifest: str | None = None
    source: str | None = None
    target: str | None = None
    loss: str = "cwcl"
    loss_hp: dict[str, Any] = field(default_factory=dict)
    iterations: int = 1000
    meta_batch: int = 8
    task_mix: float = 0.5
    task_weights: dict[str, float] | None = None
    inner_steps: int = 5
    inner_lr: float = 1e-3
    inner_optimizer: str = "adam"
    inner_loop: str = "batched"
    task_chunk: int = 32
    compile_inner: bool = False
    meta_lr: float = 1.0
    meta_lr_final: float = 0.0
    ways: int = 5
    shots: int = 5
    queries: int = 5
    align_batch: int = 32
    eval_every: int = 100
    eval_tasks: int = 8
    eval_shots: list[int] = field(default_factory=lambda: [5])
    eval_queries: int = 5
    finetune: str = "all"
    finetune_steps: int = 10
    finetune_lr: float | None = None
    finetune_optimizer: str | None = None
    head_init: str = "meta"
    checkpoint_every: int = 100
    checkpoint_dir: str | None = None
    seed: int = 0
    device: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)
    stop_after: int | None = None
    time_budget_s: float | None = None
    frozen: list[str] = field(default_factory=list)
    val_label_noise: float = 0.0
    backbones: dict[str, str] = field(default_factory=dict)
    audio_model: str | None = None
    skip_bad: bool = False
    split_classes: list[int] | None = None

    def validate(self) -> None:
        """Raise ValueError naming the offending field (as its CLI flag) when out of range."""

        def need(cond: bool, flag: str, what: str, value: Any) -> None:
            if not cond:
                raise ValueError(f"--{flag} must be {what} (got {value})")

        for name, lo in (
            ("iterations", 1), ("meta_batch", 1), ("inner_steps", 1), ("ways", 2), ("shots", 1),
            ("queries", 0), ("align_batch", 2), ("eval_every", 0), ("eval_tasks", 1), ("eval_queries", 1),
            ("finetune_steps", 0), ("checkpoint_every", 0), ("task_chunk", 0),
        ):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= lo, name.replace("_", "-"), f"an integer >= {lo}", v)
        need(self.features in ("sequence", "compact"), "features", "sequence or compact", self.features)
        need(0.0 <= self.task_mix <= 1.0, "task-mix", "in [0, 1]", self.task_mix)
        need(math.isfinite(self.inner_lr) and self.inner_lr > 0, "inner-lr", "a finite number > 0", self.inner_lr)
        need(math.isfinite(self.meta_lr) and self.meta_lr > 0, "meta-lr", "a finite number > 0", self.meta_lr)
        need(math.isfinite(self.meta_lr_final) and self.meta_lr_final >= 0, "meta-lr-final", "a finite number >= 0", self.meta_lr_final)
        need(self.inner_optimizer in INNER_OPTIMIZERS, "inner-optimizer", "sgd or adam", self.inner_optimizer)
        need(self.inner_loop in INNER_LOOPS, "inner-loop", ", ".join(INNER_LOOPS), self.inner_loop)
        need(self.head_init in HEAD_INITS + ("auto",), "head-init", "meta, zero, prototype or auto", self.head_init)
        need(self.finetune in ("all", "head"), "finetune", "all or head", self.finetune)
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device", "auto, cpu or cuda", self.device)
        need(bool(self.eval_shots) and all(int(k) >= 1 for k in self.eval_shots), "eval-shots", "integers >= 1", self.eval_shots)
        if self.finetune_lr is not None:
            need(math.isfinite(self.finetune_lr) and self.finetune_lr > 0, "finetune-lr", "a finite number > 0", self.finetune_lr)
        if self.finetune_optimizer is not None:
            need(self.finetune_optimizer in INNER_OPTIMIZERS, "finetune-optimizer", "sgd or adam", self.finetune_optimizer)
        if self.task_weights is not None:
            bad = sorted(set(self.task_weights) - set(FAMILIES))
            need(not bad, "task-weights", f"over {', '.join(FAMILIES)}", bad)
            need(all(w >= 0 for w in self.task_weights.values()) and sum(self.task_weights.values()) > 0,
                 "task-weights", "non-negative with a positive sum", self.task_weights)
        need(isinstance(self.frozen, (list, tuple)) and all(isinstance(p, str) and p for p in self.frozen),
             "frozen", "a list of parameter-name prefixes", self.frozen)
        need(isinstance(self.val_label_noise, (int, float)) and 0.0 <= self.val_label_noise < 1.0,
             "label-noise", "in [0, 1)", self.val_label_noise)
        if self.stop_after is not None:
            need(self.stop_after >= 1, "stop-after", "an integer >= 1", self.stop_after)
        if self.time_budget_s is not None:
            need(self.time_budget_s > 0, "time-budget", "> 0 seconds", self.time_budget_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (checkpoint ``config``)."""
        return plain(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        theta: final meta-parameters; best_theta: meta-parameters with the best meta-val accuracy
        (``theta`` when never validated); iteration: iterations completed; best_val: best meta-val
        accuracy (percent) or None; best_iteration; head_init: chosen head initialisation;
        history: list of plain dicts; finished: True when all iterations ran.
    """

    theta: Params
    best_theta: Params
    iteration: int
    best_val: float | None
    best_iteration: int | None
    head_init: str
    history: list[dict[str, Any]]
    finished: bool
    head_scores: dict[str, float] | None = None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU -> CromaError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CromaError("--device cuda requested but no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def bench_to(bench: PreparedBenchmark, device: torch.device | str) -> PreparedBenchmark:
    """A shallow copy of ``bench`` whose feature tensors live on ``device`` (indices stay on CPU)."""
    data = {
        m: ModalityData(features=d.features.to(device), labels=d.labels, clusters=d.clusters, ids=d.ids)
        for m, d in bench.data.items()
    }
    return PreparedBenchmark(
        name=bench.name, source=bench.source, target=bench.target, class_names=bench.class_names,
        cluster_names=bench.cluster_names, data=data, pairs=bench.pairs, splits=bench.splits,
        align_source_rows=bench.align_source_rows, align_target_rows=bench.align_target_rows,
        classify_source_rows=bench.classify_source_rows, align_mode=bench.align_mode, info=bench.info,
    )


def load_bench(cfg: TrainConfig, *, progress: bool = False) -> PreparedBenchmark:
    """Load ``cfg.benchmark`` with its front-ends and backbones (:func:`croma.backbones.load_prepared`;
    splits seeded by ``cfg.seed``, sized for ``cfg.ways``-way tasks)."""
    from croma.backbones import load_prepared

    return load_prepared(
        cfg.benchmark, compact=cfg.features == "compact", backbones=cfg.backbones,
        image_weights=cfg.model.get("image_weights"), text_model=cfg.model.get("text_model"),
        audio_model=cfg.audio_model, ways=cfg.ways, split_classes=cfg.split_classes,
        device=str(resolve_device(cfg.device)) if cfg.device != "cpu" else "cpu",
        data_root=cfg.data_root, manifest=cfg.manifest, source=cfg.source, target=cfg.target,
        seed=cfg.seed, cache_dir=cfg.cache_dir, progress=progress, skip_bad=cfg.skip_bad,
    )


def build_from_config(cfg: TrainConfig, bench: PreparedBenchmark):
    """The :class:`croma.model.CrossModalModel` a config describes (seeded by ``cfg.seed``, on CPU)."""
    from croma.model import ModelConfig, build_model

    mc = dict(cfg.model)
    mc["num_classes"] = cfg.ways
    names = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(mc) - names)
    if unknown:
        raise CromaError(f"unknown model setting(s) {', '.join(unknown)} in the configuration")
    return build_model(ModelConfig(**mc), bench, seed=cfg.seed)


def eval_config_from(cfg: TrainConfig, **overrides: Any) -> EvalConfig:
    """The :class:`EvalConfig` matching a training config (fine-tuning settings, ways, seed)."""
    head = cfg.head_init if cfg.head_init != "auto" else "meta"
    base = EvalConfig(
        shots=list(cfg.eval_shots), ways=cfg.ways, tasks=cfg.eval_tasks, queries=cfg.eval_queries, repeats=1,
        split="meta_val", head_init=head, finetune=cfg.finetune, finetune_steps=cfg.finetune_steps,
        finetune_lr=cfg.finetune_lr if cfg.finetune_lr is not None else cfg.inner_lr,
        finetune_optimizer=cfg.finetune_optimizer or cfg.inner_optimizer, seed=cfg.seed,
        nearest_centroid=False, retrieval=False, inner_loop="sequential" if cfg.inner_loop == "higher" else cfg.inner_loop,
        label_noise=cfg.val_label_noise,
    )
    for k, v in overrides.items():
        setattr(base, k, v)
    return base


def task_plan(cfg: TrainConfig) -> list[tuple[str, int]]:
    """``[(family, count), ...]`` of one meta-batch (counts sum to ``meta_batch``; zeros dropped).

    ``task_weights`` is rounded by largest remainder; otherwise ``align = round(meta_batch *
    task_mix)`` and ``source_cls`` takes the rest.
    """
    if cfg.task_weights:
        total = sum(cfg.task_weights.values())
        raw = {f: cfg.meta_batch * w / total for f, w in cfg.task_weights.items()}
        counts = {f: int(math.floor(v)) for f, v in raw.items()}
        left = cfg.meta_batch - sum(counts.values())
        for f in sorted(raw, key=lambda f: (-(raw[f] - counts[f]), list(FAMILIES).index(f)))[:left]:
            counts[f] += 1
        plan = [(f, counts[f]) for f in FAMILIES if counts.get(f, 0) > 0]
    else:
        n_align = int(round(cfg.meta_batch * cfg.task_mix))
        plan = [("align", n_align), ("source_cls", cfg.meta_batch - n_align)]
        plan = [(f, c) for f, c in plan if c > 0]
    return plan


class CromaTrainer:
    """Meta-trains a :class:`croma.model.CrossModalModel` with batched Reptile.

    Args:
        cfg: the run's configuration (validated here).
        bench: the benchmark (default: loaded from ``cfg``); moved to the training device.
        model: a model to train (default: built from ``cfg``); only run functionally — its own
            parameters are never modified by training.
        loss_module: the alignment objective (default ``croma.losses.get_loss(cfg.loss, **cfg.loss_hp)``).
        progress: show a tqdm progress bar (rank 0 only).
        dist: a :class:`croma.distributed.Distributed` to split meta-batches and meta-val
            episodes across its ranks (None: this process does everything).

    Attributes:
        theta: current meta-parameters ``{name: tensor}``; iteration: iterations completed.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        bench: PreparedBenchmark | None = None,
        *,
        model: torch.nn.Module | None = None,
        loss_module: torch.nn.Module | None = None,
        progress: bool = False,
        dist: Any = None,
        tensorboard: bool = False,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.tensorboard = tensorboard  # also log metrics.csv's rows to <checkpoint_dir>/tensorboard
        self.dist = dist  # croma.distributed.Distributed or None
        self.is_writer = dist is None or dist.rank == 0
        progress = progress and self.is_writer
        if dist is not None and cfg.checkpoint_dir:
            dist.checkpoint = Path(cfg.checkpoint_dir) / "last.pt"  # named in its error messages
        self.device = resolve_device(cfg.device)
        bench = bench if bench is not None else load_bench(cfg, progress=progress)
        self.bench = bench_to(bench, self.device)
        self.model = (model if model is not None else build_from_config(cfg, bench)).to(self.device)
        self.model.eval()  # no dropout randomness under vmap; no BatchNorm statistics updates
        self.fm = FunctionalModel(self.model)
        self.inputs = model_inputs(self.model, self.bench, self.device)
        self.plan = task_plan(cfg)
        self.chunks = chunk_layout(self.plan, cfg.task_chunk)  # meta-batch task ids per chunk
        if cfg.inner_loop == "higher":
            import_higher()  # fail before any work when the optional package is missing
        need_align = any(f == "align" for f, _ in self.plan)
        if loss_module is None and need_align:
            from croma.losses import get_loss

            loss_module = get_loss(cfg.loss, **dict(cfg.loss_hp))
        if loss_module is not None:
            loss_module = loss_module.to(self.device)
        self.loss_module = loss_module
        self.families: dict[str, TaskFamily] = {
            name: build_family(
                name, self.bench, self.inputs, loss_module=loss_module, batch_size=cfg.align_batch, ways=cfg.ways,
                shots=cfg.shots, queries=cfg.queries, seed=cfg.seed, model=self.model,
            )
            for name, _ in self.plan
        }
        self.inner_cfg = InnerConfig(steps=cfg.inner_steps, lr=cfg.inner_lr, optimizer=cfg.inner_optimizer,
                                     compile=bool(cfg.compile_inner))
        self.theta: Params = meta_parameters(self.model)
        self.best_theta: Params | None = None
        self.iteration = 0
        self.best_val: float | None = None
        self.best_iteration: int | None = None
        self.head_init = cfg.head_init
        self.head_scores: dict[str, float] | None = None
        self.history: list[dict[str, Any]] = []
        self._acc: dict[str, list[float]] = {}
        self.progress = progress
        if cfg.eval_every:  # fail before training when meta-val episodes cannot be drawn
            from croma.evaluate import _episode_batch

            ecfg = self.eval_config()
            _episode_batch(self.bench, self.inputs[self.bench.target], ecfg, max(ecfg.shots), 0)

    # ------------------------------------------------------------------ one outer step
    @property
    def meta_batch(self) -> int:
        return self.cfg.meta_batch

    def locate(self, iteration: int, task_ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Map meta-batch task ids of ``iteration`` to ``[(family, [family task index, ...])]``."""
        out: list[tuple[str, list[int]]] = []
        offset = 0
        ids = sorted(int(j) for j in task_ids)
        if ids and (ids[0] < 0 or ids[-1] >= self.meta_batch):
            raise ValueError(f"task ids must lie in [0, {self.meta_batch}) (got {ids})")
        for fam, count in self.plan:
            mine = [iteration * count + (j - offset) for j in ids if offset <= j < offset + count]
            if mine:
                out.append((fam, mine))
            offset += count
        return out

    def _group_deltas(
        self, theta: Mapping[str, torch.Tensor], iteration: int, task_ids: Sequence[int]
    ) -> tuple[Params, int, dict[str, torch.Tensor]]:
        """Inner loops of tasks ``task_ids`` (one computation per family) and their summed deltas.

        Returns ``({name: sum_i(phi_i - theta)} for the names the tasks train, n_tasks,
        {family: losses [T, S]})``.
        """
        deltas: Params = {}
        losses: dict[str, torch.Tensor] = {}
        n = 0
        for fam_name, indices in self.locate(iteration, task_ids):
            fam = self.families[fam_name]
            batch = fam.sample(indices)
            fam.begin(derive_seed(self.cfg.seed, "noise", iteration, fam_name, *indices))
            frozen = tuple(self.cfg.frozen)
            train, const = split_params(theta, lambda n, f=fam: f.trainable(n) and not n.startswith(frozen))
            fm, loss = self.fm, fam.loss

            def loss_fn(p, b, fm=fm, loss=loss):
                return fm(p, loss, b)

            adapted, fam_losses = run_inner(self.cfg.inner_loop, loss_fn, train, const, batch, self.inner_cfg)
            for k in train:
                d = (adapted[k] - theta[k].unsqueeze(0)).sum(0)
                deltas[k] = deltas[k] + d if k in deltas else d
            losses[fam_name] = fam_losses.detach()
            n += len(indices)
        return deltas, n, losses

    def task_deltas(
        self, theta: Mapping[str, torch.Tensor], iteration: int, task_ids: Sequence[int] | None = None
    ) -> tuple[Params, int, dict[str, torch.Tensor]]:
        """Sum over tasks ``task_ids`` (default: the whole meta-batch) of ``phi_i - theta``.

        The tasks run chunk by chunk (:attr:`chunks`, one batched inner loop per chunk; a chunk
        only partly in ``task_ids`` runs the part) and the sums are added in chunk order.

        Args:
            theta: meta-parameters.
            iteration: 0-based outer iteration (selects the tasks).
            task_ids: subset of ``range(meta_batch)`` (e.g. one rank's share).

        Returns:
            ``(deltas_sum, n_tasks, losses)``: ``{name: tensor}`` for every name of ``theta`` (zeros
            where no task changes it), the number of tasks summed, and ``{family: losses [T, S]}``
            (the loss before each inner step).
        """
        ids = set(range(self.meta_batch) if task_ids is None else (int(j) for j in task_ids))
        if ids and (min(ids) < 0 or max(ids) >= self.meta_batch):
            raise ValueError(f"task ids must lie in [0, {self.meta_batch}) (got {sorted(ids)})")
        deltas = {k: torch.zeros_like(v) for k, v in theta.items()}
        losses: dict[str, list[torch.Tensor]] = {}
        n = 0
        for chunk in self.chunks:
            mine = [j for j in chunk if j in ids]
            if not mine:
                continue
            d, k, l = self._group_deltas(theta, iteration, mine)
            for name, v in d.items():
                deltas[name] = deltas[name] + v
            for fam, v in l.items():
                losses.setdefault(fam, []).append(v)
            n += k
        return deltas, n, {fam: torch.cat(v) for fam, v in losses.items()}

    def chunk_deltas(self, theta: Mapping[str, torch.Tensor], iteration: int, chunk_ids: Sequence[int] | None = None):
        """``{chunk id: (summed deltas of the names it trains, n_tasks, {family: losses [T, S]})}``
        for chunks ``chunk_ids`` of :attr:`chunks` (default: all), each one batched inner loop."""
        ids = range(len(self.chunks)) if chunk_ids is None else chunk_ids
        return {int(c): self._group_deltas(theta, iteration, self.chunks[int(c)]) for c in ids}

    def chunked_deltas(
        self,
        theta: Mapping[str, torch.Tensor],
        iteration: int,
        chunk_ids: Sequence[int] | None = None,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[Params, int, dict[str, torch.Tensor]]:
        """The meta-batch's summed deltas, world-size invariant (what :meth:`outer_step` uses).

        Computes chunks ``chunk_ids`` (default: all), packs them in a ``[chunks, L]`` buffer
        (:func:`croma.meta.reptile.pack_chunks`), lets ``all_reduce`` (a distributed sum over
        the processes, each holding its own chunks) fill in the others' rows, and adds the rows
        in chunk order (:func:`croma.meta.reptile.sum_chunks`).

        Returns:
            ``(deltas_sum, n_tasks, {family: [[mean first-step loss, mean last-step loss]]})``.
        """
        families = [f for f, _ in self.plan]
        buf = pack_chunks(theta, families, len(self.chunks), self.chunk_deltas(theta, iteration, chunk_ids))
        if all_reduce is not None:
            buf = all_reduce(buf)
        return sum_chunks(buf, theta, families)

    def epsilon(self, iteration: int) -> float:
        """Outer step size at 0-based ``iteration``."""
        return linear_epsilon(iteration, self.cfg.iterations, self.cfg.meta_lr, self.cfg.meta_lr_final)

    def outer_step(
        self,
        task_ids: Sequence[int] | None = None,
        reduce: Callable[[Params, int, dict[str, torch.Tensor]], tuple[Params, int, dict[str, torch.Tensor]]] | None = None,
        *,
        chunk_ids: Sequence[int] | None = None,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Run iteration ``self.iteration`` and update ``theta``.

        By default the update comes from :meth:`chunked_deltas` (chunks ``chunk_ids``, default
        all, combined by ``all_reduce`` when given): bitwise the same for any split of the
        chunks over processes. With ``task_ids`` or ``reduce`` it comes from
        :meth:`task_deltas` instead (any split of the tasks; equal up to rounding).

        Args:
            task_ids: the share of the meta-batch this process computes (default: all of it).
            reduce: combines the shares across processes, ``(deltas_sum, n, losses) ->
                (total_deltas_sum, total_n, losses)`` (e.g. ``all_reduce`` of the sums); the
                update then uses ``total_deltas_sum / total_n``.
            chunk_ids: the chunks (of :attr:`chunks`) this process computes.
            all_reduce: sums the ``[chunks, L]`` buffer over processes (in place or new).

        Raises:
            NonFiniteLossError: a task loss or the new meta-parameters are not finite; ``theta``
            and the iteration counter stay unchanged.
        """
        it = self.iteration
        if task_ids is not None or reduce is not None:
            deltas, n, losses = self.task_deltas(self.theta, it, task_ids)
            if reduce is not None:
                deltas, n, losses = reduce(deltas, n, losses)
        else:
            deltas, n, losses = self.chunked_deltas(self.theta, it, chunk_ids, all_reduce)
        for fam, l in losses.items():
            if not bool(torch.isfinite(l).all()):
                self._non_finite(f"{fam} loss", it)
        eps = self.epsilon(it)
        new_theta = reptile_update(self.theta, {k: v / n for k, v in deltas.items()}, eps)
        if not tree_all_finite(new_theta):
            self._non_finite("meta-parameter update", it)
        self.theta = new_theta
        self.iteration = it + 1
        rec = {"epsilon": eps}
        for fam, l in losses.items():
            rec[f"{fam}_loss"] = float(l[:, 0].mean()) if l.numel() else float("nan")
            rec[f"{fam}_loss_last"] = float(l[:, -1].mean()) if l.numel() else float("nan")
        return rec

    def _sync_from_rank0(self) -> None:
        """Make every rank hold rank 0's state (parameters, iteration, selection; rank 0 may be
        the only one that could read ``last.pt`` when machines do not share a file system)."""
        d = self.dist
        d.iteration = None
        meta = d.broadcast_object(
            {"iteration": self.iteration, "best_val": self.best_val, "best_iteration": self.best_iteration,
             "head_init": self.head_init, "head_scores": self.head_scores, "history": self.history,
             "has_best": self.best_theta is not None},
            "broadcast of the initial state",
        )
        self.theta = d.broadcast_params(self.theta, "broadcast of the initial state")
        self.iteration, self.best_val, self.best_iteration = meta["iteration"], meta["best_val"], meta["best_iteration"]
        self.head_init, self.head_scores, self.history = meta["head_init"], meta["head_scores"], list(meta["history"])
        if meta["has_best"]:
            src = self.best_theta if self.best_theta is not None else self.theta
            self.best_theta = d.broadcast_params(src, "broadcast of the initial state")
        else:
            self.best_theta = None

    def _non_finite(self, what: str, it: int) -> None:
        where = ""
        last = self._path("last.pt")
        if last is not None and last.is_file():
            where = f"; the last good checkpoint {last} is intact"
        elif last is not None:
            where = f"; no checkpoint was written to {last.parent} yet"
        raise NonFiniteLossError(
            f"non-finite {what} at iteration {it + 1}{where} (lower --inner-lr or --meta-lr)"
        )

    # ------------------------------------------------------------------ evaluation / selection
    def eval_config(self, **overrides: Any) -> EvalConfig:
        """Meta-val :class:`EvalConfig` of this run (``overrides`` replace fields)."""
        return eval_config_from(self.cfg, **overrides)

    def validate(self, theta: Mapping[str, torch.Tensor] | None = None) -> float:
        """Meta-val accuracy (percent, mean over ``eval_shots``) of ``theta`` (default: current)."""
        theta = self.theta if theta is None else theta
        res = evaluate_kshot(self.model, self.bench, self.eval_config(), params=theta, inputs=self.inputs, dist=self.dist)
        return sum(r["accuracy_mean"] for r in res["rows"]) / len(res["rows"])

    # ------------------------------------------------------------------ checkpoints
    def state(self, kind: str, theta: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The checkpoint payload (see :mod:`croma.checkpoint`)."""
        return {
            "format": FORMAT,
            "kind": kind,
            "model": {k: v.detach().cpu().clone() for k, v in theta.items()},
            "iteration": int(self.iteration),
            "config": self.cfg.to_dict(),
            "rng": {
                "torch_cpu": torch.get_rng_state(),
                "task_seed": torch.tensor([int(self.cfg.seed)], dtype=torch.long),
            },
            "outer_state": {
                "epsilon_next": torch.tensor(self.epsilon(self.iteration), dtype=torch.float64),
                "iteration": torch.tensor(int(self.iteration), dtype=torch.long),
            },
            "best_val": self.best_val,
            "best_iteration": self.best_iteration,
            "head_init": self.head_init,
            "head_scores": self.head_scores,
            "history": [dict(h) for h in self.history],
        }

    def _path(self, name: str) -> Path | None:
        return Path(self.cfg.checkpoint_dir) / name if self.cfg.checkpoint_dir else None

    def save(self) -> None:
        """Write ``last.pt`` (and ``best.pt`` when no meta-val has produced one) atomically."""
        last = self._path("last.pt")
        if last is None or not self.is_writer:
            return
        if self.cfg.eval_every == 0:  # nothing selects: best is the latest
            save_checkpoint(self._path("best.pt"), self.state("best", self.theta))
        save_checkpoint(last, self.state("last", self.theta))

    def resume(self) -> bool:
        """Continue from ``<checkpoint_dir>/last.pt`` when it exists; True when resumed.

        Raises:
            CromaError: the checkpoint was made with different training settings.
        """
        from croma.checkpoint import check_parameters, train_config

        last = self._path("last.pt")
        if last is None or not last.is_file():
            return False
        ckpt = load_checkpoint(last)
        stored = train_config(ckpt, last).to_dict()
        mine = self.cfg.to_dict()
        diff = [k for k in mine if k not in RUNTIME_FIELDS and stored.get(k) != mine[k]]
        if diff:
            k = diff[0]
            raise CromaError(
                f"cannot --resume {last}: it was trained with {k}={stored.get(k)!r}, not {mine[k]!r} "
                f"(pass the same settings, or a new --checkpoint-dir)"
            )
        check_parameters(ckpt["model"], self.theta, last)
        self.theta = {k: ckpt["model"][k].to(device=self.device, dtype=v.dtype) for k, v in self.theta.items()}
        self.iteration = int(ckpt["iteration"])
        self.best_val = ckpt.get("best_val")
        self.best_iteration = ckpt.get("best_iteration")
        self.head_init = ckpt.get("head_init", self.cfg.head_init)
        self.head_scores = ckpt.get("head_scores")
        self.history = list(ckpt.get("history", []))
        best = self._path("best.pt")
        if best is not None and self.best_val is not None and (best.is_file() or self.is_writer):
            if not best.is_file():
                raise CromaError(
                    f"cannot --resume {last}: meta-val selected iteration {self.best_iteration} but {best} is missing, "
                    f"so the selected parameters are lost (restore {best.name}, or start a new --checkpoint-dir)"
                )
            b = load_checkpoint(best)
            check_parameters(b["model"], self.theta, best)
            self.best_theta = {k: b["model"][k].to(device=self.device, dtype=v.dtype) for k, v in self.theta.items()}
        elif best is not None and self.cfg.eval_every == 0 and not best.is_file() and self.is_writer:
            save_checkpoint(best, self.state("best", self.theta))  # nothing selects: best is the latest
        return True

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: bool = False, on_iteration: Callable[["CromaTrainer", dict], None] | None = None) -> TrainResult:
        """Train until ``cfg.iterations`` (or ``stop_after`` / ``time_budget_s``), with meta-val,
        checkpoints and (``head_init="auto"``) the final head choice.

        Args:
            resume: continue from ``last.pt`` in ``cfg.checkpoint_dir`` when present.
            on_iteration: called after each iteration with ``(trainer, record)``; ``record`` is the
                row written to ``<checkpoint_dir>/metrics.csv`` (:mod:`croma.runlog`: iteration,
                family losses, epsilon, val_acc or None, seconds, optimizer_steps).
        """
        from tqdm.auto import tqdm

        cfg = self.cfg
        if resume:
            self.resume()
        if self.dist is not None:
            self._sync_from_rank0()
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not self.progress, desc="croma train", dynamic_ncols=True)
        t0 = time.perf_counter()
        last_val: float | None = self.history[-1].get("val_acc") if self.history else None
        runlog = None
        if self.is_writer and cfg.checkpoint_dir:
            from croma.runlog import RunLog, metric_columns

            runlog = RunLog(cfg.checkpoint_dir, metric_columns([f for f, _ in self.plan]),
                            start_iteration=self.iteration, tensorboard=self.tensorboard)
        seconds0, steps_per_iteration = (runlog.seconds_offset if runlog else 0.0), self.meta_batch * cfg.inner_steps
        try:
            while self.iteration < cfg.iterations:
                if self.dist is not None:
                    self.dist.iteration = self.iteration + 1
                    if cfg.task_chunk > 0:  # whole chunks per rank: bitwise the same for any world size
                        rec = self.outer_step(chunk_ids=self.dist.shard(len(self.chunks)), all_reduce=self.dist.reduce_chunks)
                    else:
                        rec = self.outer_step(self.dist.shard(self.meta_batch), self.dist.reduce_deltas([f for f, _ in self.plan]))
                else:
                    rec = self.outer_step()
                for k, v in rec.items():
                    self._acc.setdefault(k, []).append(v)
                it = self.iteration
                done = it == cfg.iterations
                log_now = False
                if cfg.eval_every and (it % cfg.eval_every == 0 or done):
                    last_val = self.validate()
                    log_now = True
                    if self.best_val is None or last_val > self.best_val:
                        self.best_val, self.best_iteration = last_val, it
                        self.best_theta = {k: v.clone() for k, v in self.theta.items()}
                        if self._path("best.pt") is not None and self.is_writer:
                            save_checkpoint(self._path("best.pt"), self.state("best", self.theta))
                ckpt_now = bool(cfg.checkpoint_every and it % cfg.checkpoint_every == 0) or done
                stop = (cfg.stop_after is not None and it >= cfg.stop_after) or (
                    cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s
                )
                if self.dist is not None and cfg.time_budget_s is not None:  # clocks differ: stop together
                    stop = self.dist.any(stop, "all_reduce")
                if log_now or ckpt_now or stop:
                    entry: dict[str, Any] = {"iteration": it}
                    entry.update({k: sum(v) / len(v) for k, v in self._acc.items()})
                    if log_now:
                        entry["val_acc"] = last_val
                    self.history.append(entry)
                    self._acc = {}
                row = {"iteration": it, **rec, "val_acc": last_val if log_now else None,
                       "seconds": round(seconds0 + time.perf_counter() - t0, 3), "optimizer_steps": it * steps_per_iteration}
                if runlog is not None:
                    runlog.write(row)
                if ckpt_now or stop:
                    self.save()
                bar.update(1)
                if self.progress:
                    post = {k.replace("_loss", ""): f"{v:.3f}" for k, v in rec.items() if k.endswith("_loss")}
                    if last_val is not None:
                        post["val"] = f"{last_val:.1f}%"
                    bar.set_postfix(post, refresh=False)
                if on_iteration is not None:
                    on_iteration(self, row)
                if stop and not done:
                    break
        finally:
            bar.close()
            if runlog is not None:
                runlog.close()
        finished = self.iteration >= cfg.iterations
        if self.best_theta is None:
            self.best_theta = {k: v.clone() for k, v in self.theta.items()}
        if finished and cfg.head_init == "auto" and self.head_scores is None:
            self.head_init, self.head_scores = choose_head_init(
                self.model, self.bench, self.eval_config(), params=self.best_theta, inputs=self.inputs, dist=self.dist
            )
            if self._path("best.pt") is not None and self.is_writer:
                best_state = self.state("best", self.best_theta)
                save_checkpoint(self._path("best.pt"), best_state)
                save_checkpoint(self._path("last.pt"), self.state("last", self.theta))
        return TrainResult(
            theta=self.theta, best_theta=self.best_theta, iteration=self.iteration, best_val=self.best_val,
            best_iteration=self.best_iteration, head_init=self.head_init, history=self.history,
            finished=finished, head_scores=self.head_scores,
        )


def train(
    cfg: TrainConfig,
    bench: PreparedBenchmark | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    model: torch.nn.Module | None = None,
    loss_module: torch.nn.Module | None = None,
    dist: Any = None,
    callback: Callable[[dict], Any] | None = None,
    tensorboard: bool = False,
) -> TrainResult:
    """Meta-train with CROMA (see :class:`CromaTrainer`); the one-call entry point.

    ``dist``: a :class:`croma.distributed.Distributed` when this process is one rank of several.
    ``callback``: called after every outer iteration with that iteration's ``metrics.csv`` row
    (a dict: ``iteration``, ``<family>_loss``, ``val_acc`` or None, ``seconds``,
    ``optimizer_steps``...), also when no ``checkpoint_dir`` is set.
    ``tensorboard``: also log the rows to ``<checkpoint_dir>/tensorboard`` (extra ``[tensorboard]``).
    """
    trainer = CromaTrainer(cfg, bench, model=model, loss_module=loss_module, progress=progress, dist=dist,
                           tensorboard=tensorboard)
    on_iteration = None if callback is None else (lambda _trainer, row: callback(dict(row)))
    return trainer.fit(resume=resume, on_iteration=on_iteration)
