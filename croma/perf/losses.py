"""`croma bench losses`: forward + backward time of every registered objective.

For each objective and each batch size N, random embeddings ``z_source, z_target [N, D]`` (from a
seeded local generator, ``requires_grad``) go through ``loss(z_source, z_target)`` and
``.backward()``; one warm-up call, then ``repeats`` timed calls; the figure is the median in
milliseconds. Everything runs in one process with ``torch.set_num_threads(threads)`` (restored
afterwards). On CUDA the device is synchronised around each timed call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from croma.factory import resolve_device  # noqa: F401  (one device rule; re-exported)
from croma.losses import get_loss, list_losses
from croma.perf.flops import sync

__all__ = ["LossBenchConfig", "LossBenchRow", "format_loss_bench", "resolve_device", "run_loss_bench"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LossBenchConfig:
    """Workload of the objectives benchmark.

    Attributes:
        sizes: batch sizes N (each >= 2). dim: embedding size D. repeats: timed calls per cell.
        device: ``auto`` (CUDA when present) | ``cpu`` | ``cuda``. threads: torch CPU threads.
        losses: objective names (default: all registered). dtype: ``float32`` | ``float64``.
        seed: seed of the input generator.
    """

    sizes: Sequence[int] = (64, 256, 1024)
    dim: int = 256
    repeats: int = 5
    device: str = "auto"
    threads: int = 1
    losses: Sequence[str] | None = None
    dtype: str = "float32"
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field (as its CLI flag) that is out of range."""
        if not self.sizes:
            raise ValueError("--sizes needs at least one batch size")
        bad = [n for n in self.sizes if int(n) < 2]
        if bad:
            raise ValueError(f"--sizes must all be >= 2 (got {bad[0]})")
        if self.dim < 1:
            raise ValueError(f"--dim must be >= 1 (got {self.dim})")
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1 (got {self.repeats})")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1 (got {self.threads})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda (got {self.device!r})")
        if self.dtype not in _DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(_DTYPES)} (got {self.dtype!r})")
        for name in self.losses or ():
            if name not in list_losses():
                raise ValueError(f"unknown loss {name!r} (available: {', '.join(list_losses())})")


@dataclass(frozen=True)
class LossBenchRow:
    """One measured cell: objective ``loss`` at batch size ``n`` (times in milliseconds)."""

    loss: str
    n: int
    dim: int
    device: str
    median_ms: float
    min_ms: float
    repeats: int


def run_loss_bench(cfg: LossBenchConfig) -> list[LossBenchRow]:
    """Time forward + backward of each objective for each N.

    Args:
        cfg: the workload (validated here).

    Returns:
        one :class:`LossBenchRow` per (objective, N), objectives in ``cfg.losses`` order
        (default: sorted registry names), sizes in ``cfg.sizes`` order.

    Raises:
        ValueError / CromaError: a field out of range, or CUDA requested but absent.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    dtype = _DTYPES[cfg.dtype]
    names = list(cfg.losses) if cfg.losses else list_losses()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    rows: list[LossBenchRow] = []
    try:
        gen = torch.Generator().manual_seed(cfg.seed)
        for name in names:
            loss = get_loss(name).to(device)
            for n in cfg.sizes:
                n = int(n)
                zs = torch.randn(n, cfg.dim, generator=gen, dtype=dtype).to(device).requires_grad_(True)
                zt = torch.randn(n, cfg.dim, generator=gen, dtype=dtype).to(device).requires_grad_(True)
                times = []
                for r in range(cfg.repeats + 1):  # the first call is a warm-up
                    zs.grad = None
                    zt.grad = None
                    sync(device)
                    t0 = time.perf_counter()
                    loss(zs, zt).backward()
                    sync(device)
                    if r > 0:
                        times.append((time.perf_counter() - t0) * 1000.0)
                rows.append(
                    LossBenchRow(
                        loss=name, n=n, dim=cfg.dim, device=str(device),
                        median_ms=statistics.median(times), min_ms=min(times), repeats=cfg.repeats,
                    )
                )
    finally:
        torch.set_num_threads(old_threads)
    return rows


def format_loss_bench(rows: Sequence[LossBenchRow]) -> str:
    """Table ``loss | N=.. | N=..`` of median forward+backward milliseconds (one line per loss)."""
    sizes: list[int] = []
    names: list[str] = []
    cell: dict[tuple[str, int], float] = {}
    for row in rows:
        if row.n not in sizes:
            sizes.append(row.n)
        if row.loss not in names:
            names.append(row.loss)
        cell[(row.loss, row.n)] = row.median_ms
    head = ["loss"] + [f"N={n}" for n in sizes]
    body = [[name] + [f"{cell[(name, n)]:.3f}" if (name, n) in cell else "-" for n in sizes] for name in names]
    widths = [max(len(r[c]) for r in [head] + body) for c in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in body]
    return "\n".join(out)
