"""The benchmarks' workload: the trainer on synthetic features, the naive learn2learn-style
reference, the allocator setting and the ``higher`` check (shared by :mod:`croma.perf.meta` and
:mod:`croma.perf.scaling`)."""

from __future__ import annotations

import sys

import torch

from croma.errors import CromaError

__all__ = ["tune_allocator", "naive_task_deltas", "higher_available"]


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


def _workload(inner_loop: str, *, repeats: int, meta_batch: int, device: str, inner_steps: int, inner_optimizer: str,
              ways: int, shots: int, queries: int, feature_dim: int, hidden: int, embed_dim: int, seed: int,
              task_chunk: int | None = None, compile_inner: bool = False):
    """The benchmark's :class:`~croma.learner.MetaLearner` (synthetic features, 2-layer MLP encoders, cls tasks)."""
    from croma.config import TrainConfig
    from croma.learner import MetaLearner
    from episodes.datasets.synthetic import make_synthetic_benchmark

    per_class = 2 * (shots + queries) + 2  # half of each class's source rows serve classification
    bench = make_synthetic_benchmark(
        num_classes=max(20, 4 * ways), per_class=per_class, source_dim=feature_dim, target_dim=feature_dim,
        latent_dim=16, seed=seed,
    )
    base = dict(
        iterations=max(2 * repeats + 2, 2), meta_batch=meta_batch, task_mix=0.0, inner_steps=inner_steps,
        inner_lr=1e-3, inner_optimizer=inner_optimizer, ways=ways, shots=shots, queries=queries,
        eval_every=0, checkpoint_every=0, seed=seed, device=device,
        model={"embed_dim": embed_dim, "hidden": hidden, "encoders": {bench.source: "mlp", bench.target: "mlp"},
               "encoder_hp": {bench.source: {"layers": 2}, bench.target: {"layers": 2}}},
    )
    if task_chunk is not None:
        base["task_chunk"] = task_chunk
    return MetaLearner(TrainConfig(**base, inner_loop=inner_loop, compile_inner=compile_inner), bench)


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
