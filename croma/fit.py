"""The fit loop: :class:`CromaTrainer` and :func:`train`.

:class:`CromaTrainer` runs :class:`croma.learner.MetaLearner`'s pure outer step until
``cfg.iterations`` (or ``stop_after`` / ``time_budget_s``). Every ``eval_every`` iterations the
meta-val accuracy (fixed episodes) selects ``best.pt``; meta-test is never used for selection.
``last.pt`` is written every ``checkpoint_every`` iterations, every :data:`CHECKPOINT_SECONDS`
of a slow single-process run, and at the end (:class:`croma.checkpoint.Checkpointer`); ``resume=True`` continues from it to bitwise the same
parameters as an uninterrupted run (CPU): everything a step depends on is
``(theta, seed, iteration)``. Pass a :class:`croma.distributed.Distributed` as ``dist`` to share
each meta-batch and the meta-val episodes between ranks; only rank 0 writes checkpoints and
shows progress.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from croma.checkpoint import Checkpointer
from croma.config import TrainConfig
from croma.evaluate import EvalConfig, choose_head_init, evaluate_kshot
from croma.factory import eval_config_from
from croma.learner import MetaLearner
from croma.meta.functional import Params
from episodes.data import PreparedBenchmark

__all__ = ["CromaTrainer", "TrainResult", "train", "CHECKPOINT_SECONDS"]

#: besides every ``checkpoint_every`` iterations, ``last.pt`` is written once this many seconds have
#: passed since the last write (single process), so that Ctrl-C or SIGTERM in a slow run loses at most
#: about this much training; which iterations it lands on does not change any number (the loss sums
#: since the last history entry travel with it: :meth:`CromaTrainer.progress_state`)
CHECKPOINT_SECONDS = 300.0


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        theta: final meta-parameters.
        best_theta: meta-parameters with the best meta-val accuracy (``theta`` when never
            validated).
        iteration: iterations completed.
        best_val: best meta-val accuracy (percent) or None.
        best_iteration: the iteration of ``best_theta`` (None when never validated).
        head_init: chosen head initialisation.
        history: list of plain dicts.
        finished: True when all iterations ran.
        head_scores: meta-val accuracy (percent) of each head initialisation when the config's
            ``head_init="auto"`` chose among them at the end of training; else None.
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


class CromaTrainer(MetaLearner):
    """Meta-trains a :class:`croma.model.CrossModalModel` with batched Reptile (or another outer
    algorithm), with meta-val selection, checkpoints and metrics.

    Args:
        cfg, bench, model, loss_module, dist: as :class:`~croma.learner.MetaLearner`.
        progress: show a tqdm progress bar (rank 0 only).
        tensorboard: also log metrics.csv's rows to ``<checkpoint_dir>/tensorboard``.
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
        super().__init__(cfg, bench, model=model, loss_module=loss_module, progress=progress, dist=dist)
        self.tensorboard = tensorboard
        self.progress = progress and self.is_writer
        if dist is not None and cfg.checkpoint_dir:
            dist.checkpoint = Path(cfg.checkpoint_dir) / "last.pt"  # named in its error messages
        cfg = self.cfg  # the task sizes the data can fill (croma.task_sizes): what checkpoints store
        self.checkpointer = Checkpointer(cfg.checkpoint_dir, cfg, is_writer=self.is_writer)
        if cfg.checkpoint_dir:  # a run folder is a self-contained model (croma.runmodel.load_model)
            from croma.runcard import serving_card

            self.checkpointer.serving = serving_card(self.bench)
        self.best_theta: Params | None = None
        self.best_val: float | None = None
        self.best_iteration: int | None = None
        self.head_init = cfg.head_init
        self.head_scores: dict[str, float] | None = None
        self.history: list[dict[str, Any]] = []
        self._acc: dict[str, list[float]] = {}
        if cfg.eval_every:  # fail before training when meta-val episodes cannot be drawn
            from croma.evaluate import _episode_batch

            ecfg = self.eval_config()
            _episode_batch(self.bench, self.inputs[self.bench.target], ecfg, max(ecfg.shots), 0)

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
    def progress_state(self) -> dict[str, Any]:
        """What a checkpoint stores besides parameters and configuration."""
        return {"iteration": self.iteration, "epsilon_next": self.epsilon(self.iteration), "best_val": self.best_val,
                "best_iteration": self.best_iteration, "head_init": self.head_init, "head_scores": self.head_scores,
                "history": self.history, "acc": self._acc}

    def state(self, kind: str, theta: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The checkpoint payload (see :mod:`croma.checkpoint`)."""
        return self.checkpointer.state(kind, theta, self.progress_state())

    def _path(self, name: str) -> Path | None:
        return self.checkpointer.path(name)

    def checkpoint_hint(self) -> str:
        return self.checkpointer.last_good()

    def save(self) -> None:
        """Write ``last.pt`` (and ``best.pt`` when no meta-val has produced one) atomically."""
        if self.cfg.eval_every == 0:  # nothing selects: best is the latest
            self.checkpointer.save("best", self.theta, self.progress_state())
        self.checkpointer.save("last", self.theta, self.progress_state())

    def resume(self) -> bool:
        """Continue from ``<checkpoint_dir>/last.pt`` when it exists; True when resumed.

        Raises:
            CromaError: the checkpoint was made with different training settings.
        """
        got = self.checkpointer.load_resume(self.theta, self.device)
        if got is None:
            return False
        self.theta, self.iteration = got["theta"], got["iteration"]
        self.checkpointer.run_id = got.get("run_id") or self.checkpointer.run_id  # the run continues
        self.best_val, self.best_iteration = got["best_val"], got["best_iteration"]
        self.head_init, self.head_scores, self.history = got["head_init"], got["head_scores"], got["history"]
        self._acc = got.get("acc") or {}
        self.best_theta = got["best_theta"]
        best = self._path("best.pt")
        if best is not None and self.cfg.eval_every == 0 and not best.is_file():
            self.checkpointer.save("best", self.theta, self.progress_state())  # nothing selects: best is the latest
        return True

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: bool = False, on_iteration: Callable[["CromaTrainer", dict], None] | None = None) -> TrainResult:
        """Train until ``cfg.iterations`` (or ``stop_after`` / ``time_budget_s``), with meta-val,
        checkpoints and (``head_init="auto"``) the final head choice.

        Args:
            resume: continue from ``last.pt`` in ``cfg.checkpoint_dir`` when present.
            on_iteration: called after each iteration with ``(trainer, record)``; ``record`` is the
                row written to ``<checkpoint_dir>/metrics.csv`` (:mod:`croma.runlog`: iteration,
                family losses, epsilon, val_acc or None, seconds, optimizer_steps, run_id).

        Raises:
            croma.runlock.RunFolderInUse: another process writes to ``cfg.checkpoint_dir``.
            CromaError: on resume, ``last.pt`` / ``best.pt`` / ``metrics.csv`` come from different runs.
        """
        with self._run_folder(resume):  # one writer per run folder (croma.runlock)
            return self._fit(resume=resume, on_iteration=on_iteration)

    @contextlib.contextmanager
    def _run_folder(self, resume: bool):
        """Hold ``cfg.checkpoint_dir``'s lock (the writer only) and check its files before any write."""
        folder = self.cfg.checkpoint_dir
        if not (self.is_writer and folder):
            yield
            return
        from croma.runlock import check_run_files, check_same_run, lock_run_folder

        with lock_run_folder(folder, "checkpoint_dir"):
            check_run_files(folder, "checkpoint_dir")
            if resume:
                check_same_run(folder)
            yield

    def _fit(self, *, resume: bool, on_iteration: Callable[["CromaTrainer", dict], None] | None) -> TrainResult:
        from episodes.progress import progress_bar as tqdm

        cfg = self.cfg
        if resume:
            self.resume()
        if self.is_writer and cfg.checkpoint_dir and self.checkpointer.run_id is None:
            from croma.runlock import new_run_id

            self.checkpointer.run_id = new_run_id()  # a new run; a resumed one keeps last.pt's
        if self.dist is not None:
            self._sync_from_rank0()
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not self.progress, desc="croma train", dynamic_ncols=True)
        t0 = saved_at = time.perf_counter()
        last_val: float | None = self.history[-1].get("val_acc") if self.history else None
        runlog = None
        if self.is_writer and cfg.checkpoint_dir:
            from croma.runlog import RunLog, metric_columns

            runlog = RunLog(cfg.checkpoint_dir, metric_columns([f for f, _ in self.plan]),
                            start_iteration=self.iteration, tensorboard=self.tensorboard,
                            run_id=self.checkpointer.run_id, hparams=cfg.flat())
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
                            self.checkpointer.save("best", self.theta, self.progress_state())
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
                    row["run_id"] = runlog.run_id
                    runlog.write(row)
                if ckpt_now or stop or (self.dist is None and cfg.checkpoint_every and
                                        time.perf_counter() - saved_at >= CHECKPOINT_SECONDS):
                    self.save()  # also every CHECKPOINT_SECONDS of a slow run: an interruption loses less
                    saved_at = time.perf_counter()
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
            self.checkpointer.save("best", self.best_theta, self.progress_state())
            self.checkpointer.save("last", self.theta, self.progress_state())
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
    validate: Callable[[Any, Mapping[str, torch.Tensor]], float] | None = None,
    keep_start: bool = False,
) -> TrainResult:
    """Meta-train with CROMA (see :class:`CromaTrainer`); the one-call entry point.

    Args:
        cfg: the run's settings (validated here).
        bench: the prepared benchmark (None: loaded as ``cfg`` says, :func:`croma.load_bench`).
        resume: continue from ``<checkpoint_dir>/last.pt`` (same settings required).
        progress: show a progress bar.
        model: the model (None: built from ``cfg``, :func:`croma.build_model`).
        loss_module: the alignment objective (None: ``cfg.loss`` with ``cfg.loss_hp``).
        dist: a :class:`croma.distributed.Distributed` when this process is one rank of several.
        callback: called after every outer iteration with that iteration's ``metrics.csv`` row
            (a dict: ``iteration``, ``<family>_loss``, ``val_acc`` or None, ``seconds``,
            ``optimizer_steps``...), also when no ``checkpoint_dir`` is set.
        tensorboard: also log the rows to ``<checkpoint_dir>/tensorboard`` (extra ``[tensorboard]``).
        validate: the meta-val score that selects ``best`` (``validate(model, theta)`` -> percent;
            None: :meth:`CromaTrainer.validate`), e.g. a benchmark's
            :func:`croma.baselines.common.meta_val_score`.
        keep_start: score the untrained start first and keep it as ``best`` (iteration 0) until a
            meta-val check beats it, as ``croma benchmark`` selects (a fresh run only).

    Returns:
        A :class:`TrainResult`: the final and the best meta-parameters, the iterations run, the
        best meta-val accuracy and the chosen head initialisation.
    """
    trainer = CromaTrainer(cfg, bench, model=model, loss_module=loss_module, progress=progress, dist=dist,
                           tensorboard=tensorboard)
    on_iteration = None if callback is None else (lambda _trainer, row: callback(dict(row)))
    if validate is not None:
        trainer.validate = lambda theta=None: validate(trainer.model, dict(trainer.theta if theta is None else theta))
    if keep_start and not (resume and trainer.checkpointer.path("last.pt") is not None
                           and trainer.checkpointer.path("last.pt").is_file()):
        trainer.best_val, trainer.best_iteration = trainer.validate(), 0
        trainer.best_theta = {k: v.clone() for k, v in trainer.theta.items()}
        if trainer.is_writer and cfg.checkpoint_dir:  # best.pt holds the start until meta-val finds better
            from croma.runlock import new_run_id

            trainer.checkpointer.run_id = new_run_id()
            trainer.checkpointer.save("best", trainer.theta, trainer.progress_state())
            trainer.checkpointer.save("last", trainer.theta, trainer.progress_state())  # --resume continues from here
    return trainer.fit(resume=resume, on_iteration=on_iteration)
