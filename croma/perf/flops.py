"""Counting and peak helpers for the benchmarks: device sync, a float32 matmul peak, FLOP counts."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

__all__ = ["sync", "matmul_peak", "count_flops"]


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(n: int = 1024, reps: int = 3, device: torch.device | str = "cpu") -> list[float]:
    """Seconds per ``[n, n] @ [n, n]`` float32 product, ``reps`` timings (after one warm-up)."""
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev)
    b = torch.randn(n, n, generator=g).to(dev)
    out = torch.empty(n, n, device=dev)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(dev)
        times.append(time.perf_counter() - t0)
    return times


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter.FlopCounterMode``: matrix products,
    convolutions, attention; elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
