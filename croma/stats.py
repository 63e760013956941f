"""Intervals and paired comparisons over meta-test episodes.

Every accuracy croma prints is a mean over episodes with a normal-approximation 95% interval
(``1.96 · sd / √n``, sd with Bessel's correction). Two methods are compared on *identical*
episodes (same classes, support and query items, same noisy support labels): the per-episode
differences are averaged and given the same interval, so the episode-to-episode variance that
both methods share cancels out. A method "beats" another only when the paired interval
excludes 0.

What the interval covers: the choice of episodes, for the trained model(s) at hand. Training
seed variance is separate (``croma benchmark --train-seeds S`` reports it as
``accuracy_seed_std``); with several seeds the per-episode accuracy is first averaged over the
seeds, so the interval is over episodes of the seed-averaged method.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["Z95", "mean_ci95", "mean_std", "paired_comparison", "seed_std"]

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def _as_list(values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError("no values: an interval needs at least one episode")
    if not all(math.isfinite(v) for v in out):
        raise ValueError("non-finite accuracy among the episodes")
    return out


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width ``1.96 · sd / √n`` (half-width 0 for a single value).

    Args:
        values: per-episode accuracies (any unit; the result has the same unit).

    Returns:
        ``(mean, half_width)``.

    Raises:
        ValueError: empty or non-finite input.
    """
    v = _as_list(values)
    n = len(v)
    mean = math.fsum(v) / n
    if n < 2:
        return mean, 0.0
    var = math.fsum((x - mean) ** 2 for x in v) / (n - 1)
    return mean, Z95 * math.sqrt(var / n)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (Bessel; 0 for one value) of a few numbers, e.g. per-repeat means."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired difference ``a - b`` over identical episodes.

    Args:
        a, b: per-episode accuracies of two methods on the same episodes, in the same order.

    Returns:
        ``{"mean_diff", "ci95_low", "ci95_high", "episodes"}``.

    Raises:
        ValueError: lengths differ, empty or non-finite input.
    """
    a, b = _as_list(a), _as_list(b)
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same episodes: {len(a)} against {len(b)} accuracies")
    mean, half = mean_ci95([x - y for x, y in zip(a, b)])
    return {"mean_diff": mean, "ci95_low": mean - half, "ci95_high": mean + half, "episodes": len(a)}


def seed_std(means: Sequence[float]) -> float:
    """Standard deviation (Bessel) of per-seed mean accuracies; 0 for one seed."""
    v = _as_list(means)
    if len(v) < 2:
        return 0.0
    m = math.fsum(v) / len(v)
    return math.sqrt(math.fsum((x - m) ** 2 for x in v) / (len(v) - 1))
