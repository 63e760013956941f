"""The benchmarks' workload: the trainer on synthetic features, the naive learn2learn-style
reference, the allocator setting and the ``higher`` check (shared by :mod:`croma.perf.meta` and
:mod:`croma.perf.scaling`)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch

from croma.errors import CromaError

__all__ = ["Workload", "as_workload", "tune_allocator", "naive_task_deltas", "higher_available"]


def tune_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Ask glibc's malloc to keep freed tensor buffers for reuse (process-wide; for CLIs).

    Batched inner loops allocate multi-megabyte tensors ([tasks, *param shape]) every step; by
    default glibc serves those with fresh ``mmap`` pages and returns them on ``free``, so every
    step pays page faults (on a VM several times the arithmetic). Raising ``M_MMAP_THRESHOLD``
    and ``M_TRIM_THRESHOLD`` keeps them in the heap. Returns True when applied (glibc only); a
    no-op elsewhere. Only applications (``croma`` subcommands) should call this.
    """
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and bool(mallopt(m_trim_threshold, int(trim_threshold)))


@dataclass(frozen=True)
class Workload:
    """The benchmarks' workload: one meta-batch of ``meta_batch`` source classification tasks
    (``ways``-way ``shots``-shot + ``queries`` queries) with ``inner_steps`` inner steps of
    ``inner_optimizer``, on a synthetic benchmark with ``feature_dim``-d features and 2-layer MLP
    encoders ``feature_dim -> hidden -> embed_dim`` plus the shared classifier.

    ``task_chunk``: ``TrainConfig.task_chunk`` (None: its default). One description of the sizes
    for :func:`croma.perf.meta.run_meta_bench`, :func:`croma.perf.scaling.run_scaling_bench` and
    their worker processes (:meth:`to_dict` / ``Workload(**d)``).
    """

    meta_batch: int = 16
    inner_steps: int = 5
    inner_optimizer: str = "adam"
    ways: int = 5
    shots: int = 5
    queries: int = 5
    feature_dim: int = 256
    hidden: int = 128
    embed_dim: int = 64
    seed: int = 0
    task_chunk: int | None = None

    def validate(self) -> "Workload":
        """``self``, or a :class:`CromaError` naming the flag of the first bad size."""
        for flag, v, lo in (("meta-batch", self.meta_batch, 1), ("inner-steps", self.inner_steps, 1),
                            ("hidden", self.hidden, 1), ("ways", self.ways, 2), ("shots", self.shots, 1),
                            ("queries", self.queries, 0), ("feature-dim", self.feature_dim, 1),
                            ("embed-dim", self.embed_dim, 1)):
            if v < lo:
                raise CromaError(f"--{flag} must be >= {lo} (got {v})")
        if self.inner_optimizer not in ("sgd", "adam"):
            raise CromaError(f"--inner-optimizer must be sgd or adam (got {self.inner_optimizer!r})")
        if self.task_chunk is not None and self.task_chunk < 0:
            raise CromaError(f"--task-chunk must be >= 0 (got {self.task_chunk})")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON), ``Workload(**d)`` rebuilds it."""
        return asdict(self)

    def describe(self) -> str:
        """``"16 tasks/meta-batch (5-way 5-shot + 5 queries), 5 inner steps (adam), 2-layer MLP encoders 256->128->64"``."""
        return (f"{self.meta_batch} tasks/meta-batch ({self.ways}-way {self.shots}-shot + {self.queries} queries), "
                f"{self.inner_steps} inner steps ({self.inner_optimizer}), 2-layer MLP encoders "
                f"{self.feature_dim}->{self.hidden}->{self.embed_dim}")

    def trainer(self, inner_loop: str = "batched", *, device: str = "cpu", repeats: int = 5, compile_inner: bool = False):
        """A :class:`~croma.learner.MetaLearner` running this workload with ``inner_loop``
        (``batched`` | ``sequential`` | ``higher``) on ``device``; enough outer iterations for
        ``repeats`` timed meta-batches plus warm-ups."""
        from croma.config import TrainConfig
        from croma.learner import MetaLearner
        from episodes.datasets.synthetic import make_synthetic_benchmark

        per_class = 2 * (self.shots + self.queries) + 2  # half of each class's source rows serve classification
        bench = make_synthetic_benchmark(
            num_classes=max(20, 4 * self.ways), per_class=per_class, source_dim=self.feature_dim,
            target_dim=self.feature_dim, latent_dim=16, seed=self.seed,
        )
        base = dict(
            iterations=max(2 * repeats + 2, 2), meta_batch=self.meta_batch, task_mix=0.0, inner_steps=self.inner_steps,
            inner_lr=1e-3, inner_optimizer=self.inner_optimizer, ways=self.ways, shots=self.shots, queries=self.queries,
            eval_every=0, checkpoint_every=0, seed=self.seed, device=device,
            model={"embed_dim": self.embed_dim, "hidden": self.hidden,
                   "encoders": {bench.source: "mlp", bench.target: "mlp"},
                   "encoder_hp": {bench.source: {"layers": 2}, bench.target: {"layers": 2}}},
        )
        if self.task_chunk is not None:
            base["task_chunk"] = self.task_chunk
        return MetaLearner(TrainConfig(**base, inner_loop=inner_loop, compile_inner=compile_inner), bench)


def as_workload(workload: Workload | None = None, **sizes: Any) -> Workload:
    """``workload`` (default ``Workload()``) with the keyword ``sizes`` replaced, validated."""
    from dataclasses import replace

    return replace(workload or Workload(), **sizes).validate()


def _workload(inner_loop: str, *, repeats: int, device: str, compile_inner: bool = False, **sizes: Any):
    """``Workload(**sizes).trainer(inner_loop, device=device, repeats=repeats, compile_inner=compile_inner)``."""
    return Workload(**sizes).trainer(inner_loop, device=device, repeats=repeats, compile_inner=compile_inner)


def naive_task_deltas(trainer, theta: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
    """The meta-batch's summed Reptile deltas the way learn2learn-style code computes them.

    Per task: ``copy.deepcopy`` of the model (holding ``theta``), a fresh ``torch.optim.Adam``
    (or ``SGD``) over the parameters the task trains, and ``zero_grad`` / ``loss.backward()`` /
    ``step()`` with plain autograd, one task after another. The reference point for what the
    functional, batched path saves; the result equals :meth:`MetaLearner.task_deltas` up to
    rounding.
    """
    import copy

    from croma.meta.functional import load_parameters
    from croma.meta.tasks import derive_seed

    cfg, icfg = trainer.cfg, trainer.inner_cfg
    base = copy.deepcopy(trainer.model)
    load_parameters(base, theta)
    frozen = tuple(cfg.frozen)
    deltas = {k: torch.zeros_like(v) for k, v in theta.items()}
    for fam_name, indices in trainer.locate(iteration, range(trainer.meta_batch)):
        fam = trainer.families[fam_name]
        batch = fam.sample(indices)
        fam.begin(derive_seed(cfg.seed, "noise", iteration, fam_name, *indices))
        for i in range(len(indices)):
            b = {k: v[i] for k, v in batch.items()}
            model = copy.deepcopy(base)
            named = [(n, p) for n, p in model.named_parameters() if n in theta and fam.trainable(n) and not n.startswith(frozen)]
            params = [p for _, p in named]
            if icfg.optimizer == "adam":
                opt = torch.optim.Adam(params, lr=icfg.lr, betas=(icfg.beta1, icfg.beta2), eps=icfg.eps)
            else:
                opt = torch.optim.SGD(params, lr=icfg.lr)
            for _ in range(icfg.steps):
                opt.zero_grad()
                loss = fam.loss(model, b)
                loss.backward()
                opt.step()
            with torch.no_grad():
                for n, p in named:
                    deltas[n] += p - theta[n]
    return deltas


def higher_available() -> bool:
    """True when the optional ``higher`` package imports."""
    try:
        from croma.meta.inner import import_higher

        import_higher()
    except CromaError:
        return False
    return True
