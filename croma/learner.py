"""The meta-learner: one outer step of CROMA (Liang et al., Algorithm 1) as a pure function.

Meta-parameters ``theta`` = all trainable parameters of the :class:`croma.model.CrossModalModel`
(both encoders, the alignment layer, the shared classifier). Outer iteration ``t``
(:meth:`MetaLearner.step`, ``(theta, t) -> theta'``, nothing else changes):

1. the meta-batch has ``meta_batch`` tasks: ``round(meta_batch * task_mix)`` alignment tasks,
   the rest source classification tasks (or any family mix via ``task_weights``; see
   :func:`croma.meta.outer.task_plan`); task ``j`` of iteration ``t`` is task
   ``t * count_f + (j - offset_f)`` of its family ``f`` — a pure function of ``(seed, t, j)``;
2. per task: ``phi = theta``, S inner steps of SGD/Adam on the task loss (batched: one vmapped
   computation per chunk of at most ``task_chunk`` tasks of one family; sequential: the same
   per-task function in a Python loop — the reference; higher: the optional package);
3. each task contributes the outer algorithm's direction (:mod:`croma.meta.outer`: Reptile
   ``phi - theta``, first-order MAML ``-grad L(phi)``) and
   ``theta <- theta + eps_t * mean_tasks(direction)``, ``eps_t`` linear from ``meta_lr`` to
   ``meta_lr_final``.

For distribution, :meth:`MetaLearner.chunked_deltas` runs this rank's chunks (fixed groups of
tasks whose composition does not depend on the number of processes), all-reduces the chunks'
sums as rows of one buffer and adds them in chunk order, so the result is bitwise the same with
any number of processes (:meth:`task_deltas` sums any subset of task ids, equal up to rounding).
The fit loop around it (meta-val selection, checkpoints, metrics) is :class:`croma.fit.CromaTrainer`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch.func import grad, vmap

from croma.config import TrainConfig
from croma.errors import NonFiniteLossError, non_finite_advice
from croma.factory import build_components
from croma.meta.functional import FunctionalModel, Params, meta_parameters, split_params, tree_all_finite
from croma.meta.inner import InnerConfig, import_higher, run_inner
from croma.meta.outer import OUTER_ALGORITHMS, task_plan
from croma.meta.reptile import chunk_layout, linear_epsilon, pack_chunks, reptile_update, sum_chunks
from croma.meta.tasks import TaskFamily, build_family, derive_seed, model_inputs
from croma.task_sizes import fit_run_sizes
from episodes.data import PreparedBenchmark

__all__ = ["MetaLearner"]


class MetaLearner:
    """Meta-batches of tasks and the outer step of a :class:`~croma.config.TrainConfig`.

    Args:
        cfg: the run's configuration (validated here).
        bench: the benchmark (default: loaded as ``cfg`` says); moved to the run's device.
        model: the model (default: built from ``cfg``); only run functionally — its own
            parameters are never modified.
        loss_module: the alignment objective (default: ``cfg.loss`` with ``cfg.loss_hp``).
        progress: show a progress bar (rank 0 only).
        dist: a :class:`croma.distributed.Distributed` (or None).

    Attributes:
        theta: current meta-parameters ``{name: tensor}``.
        iteration: iterations completed.
        cfg: the configuration run: ``cfg`` with the task sizes the data can fill
            (:mod:`croma.task_sizes`; ``task_sizes`` says what was lowered, and why).
    """

    def __init__(self, cfg: TrainConfig, bench: PreparedBenchmark | None = None, *,
                 model: torch.nn.Module | None = None, loss_module: torch.nn.Module | None = None,
                 progress: bool = False, dist: Any = None) -> None:
        cfg.validate()
        cfg.check_memory()  # sizes whose product exceeds this machine: one line naming them, before any work
        self.cfg = cfg
        self.dist = dist  # croma.distributed.Distributed or None
        self.is_writer = dist is None or dist.rank == 0
        self.plan = task_plan(cfg)
        if cfg.inner_loop == "higher":
            import_higher()  # fail before any work when the optional package is missing
        comp = build_components(cfg, bench, model=model, loss_module=loss_module, progress=progress and self.is_writer)
        self.device, self.bench, self.model, self.loss_module = comp.device, comp.bench, comp.model, comp.loss_module
        # task sizes the data can fill (croma.task_sizes): a copy of cfg when lowered, never cfg itself
        self.cfg, _, self.task_sizes = fit_run_sizes(cfg, self.bench, families=[f for f, _ in self.plan],
                                                     meta_val=bool(cfg.eval_every) or cfg.head_init == "auto")
        if progress and self.is_writer:
            from croma.bench_data import data_notes
            from croma.log import info

            if self.task_sizes.changed or self.task_sizes.align_clusters is not None:
                info(self.task_sizes.line())
            for line in data_notes(self.bench, pixels=False) if bench is None else ():  # else said by its loader
                info(line)
        cfg = self.cfg
        self.model.eval()  # no dropout randomness under vmap; no BatchNorm statistics updates
        self.fm = FunctionalModel(self.model)
        self.inputs = model_inputs(self.model, self.bench, self.device)
        self.chunks = chunk_layout(self.plan, cfg.task_chunk)  # meta-batch task ids per chunk
        self.direction = OUTER_ALGORITHMS.get(cfg.algorithm)
        self.families: dict[str, TaskFamily] = {
            name: build_family(
                name, self.bench, self.inputs, loss_module=self.loss_module, batch_size=cfg.align_batch,
                ways=cfg.ways, shots=cfg.shots, queries=cfg.queries, seed=cfg.seed, model=self.model,
            )
            for name, _ in self.plan
        }
        self.inner_cfg = InnerConfig(steps=cfg.inner_steps, lr=cfg.inner_lr, optimizer=cfg.inner_optimizer,
                                     compile=bool(cfg.compile_inner))
        self.theta: Params = meta_parameters(self.model)
        # the parameters some task family of the plan can change: the only ones chunk buffers carry
        frozen = tuple(cfg.frozen)
        self.moving = [k for k in self.theta
                       if not k.startswith(frozen) and any(f.trainable(k) for f in self.families.values())]
        self.iteration = 0

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

            def task_grad(params, loss_fn=loss_fn, const=const, batch=batch):
                def one(p, b):
                    return loss_fn({**const, **p}, b)

                return vmap(grad(one))(params, batch)

            for k, d in self.direction(theta, adapted, task_grad).items():
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
        parts = self.chunk_deltas(theta, iteration, chunk_ids)
        buf = pack_chunks(theta, families, len(self.chunks), parts, names=self.moving)
        if all_reduce is not None:
            buf = all_reduce(buf)
        return sum_chunks(buf, theta, families, names=self.moving)

    def epsilon(self, iteration: int) -> float:
        """Outer step size at 0-based ``iteration``."""
        return linear_epsilon(iteration, self.cfg.iterations, self.cfg.meta_lr, self.cfg.meta_lr_final)

    def step(
        self,
        theta: Mapping[str, torch.Tensor],
        iteration: int,
        *,
        task_ids: Sequence[int] | None = None,
        reduce: Callable[[Params, int, dict[str, torch.Tensor]], tuple[Params, int, dict[str, torch.Tensor]]] | None = None,
        chunk_ids: Sequence[int] | None = None,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[Params, dict[str, float]]:
        """One outer step, pure: ``(theta, iteration) -> (theta', record)``.

        By default the update comes from :meth:`chunked_deltas` (chunks ``chunk_ids``, default
        all, combined by ``all_reduce`` when given): bitwise the same for any split of the
        chunks over processes. With ``task_ids`` or ``reduce`` it comes from :meth:`task_deltas`
        instead (any split of the tasks, ``reduce`` combining the shares; equal up to rounding).

        Raises:
            NonFiniteLossError: a task loss or the new meta-parameters are not finite.
        """
        if task_ids is not None or reduce is not None:
            deltas, n, losses = self.task_deltas(theta, iteration, task_ids)
            if reduce is not None:
                deltas, n, losses = reduce(deltas, n, losses)
        else:
            deltas, n, losses = self.chunked_deltas(theta, iteration, chunk_ids, all_reduce)
        for fam, l in losses.items():
            if not bool(torch.isfinite(l).all()):
                self._non_finite(f"{fam} loss", iteration)
        eps = self.epsilon(iteration)
        new_theta = reptile_update(theta, {k: v / n for k, v in deltas.items()}, eps)
        if not tree_all_finite(new_theta):
            self._non_finite("meta-parameter update", iteration)
        rec = {"epsilon": eps}
        for fam, l in losses.items():
            rec[f"{fam}_loss"] = float(l[:, 0].mean()) if l.numel() else float("nan")
            rec[f"{fam}_loss_last"] = float(l[:, -1].mean()) if l.numel() else float("nan")
        return new_theta, rec

    def outer_step(self, task_ids: Sequence[int] | None = None, reduce=None, *,
                   chunk_ids: Sequence[int] | None = None, all_reduce=None) -> dict[str, float]:
        """:meth:`step` from ``self.theta`` at ``self.iteration``; on success both advance (on a
        non-finite loss or update neither changes)."""
        self.theta, rec = self.step(self.theta, self.iteration, task_ids=task_ids, reduce=reduce,
                                    chunk_ids=chunk_ids, all_reduce=all_reduce)
        self.iteration += 1
        return rec

    def checkpoint_hint(self) -> str:
        """Text appended to non-finite errors (the fit loop names its last good checkpoint)."""
        return ""

    def _non_finite(self, what: str, it: int) -> None:
        raise NonFiniteLossError(
            f"non-finite {what} at iteration {it + 1}{self.checkpoint_hint()} "
            f"({non_finite_advice(what, self.cfg, getattr(self, 'loss_module', None))})"
        )
