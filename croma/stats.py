"""Intervals and paired comparisons over meta-test episodes and training seeds.

Two kinds of interval:

* :func:`mean_ci95` / :func:`paired_comparison`: the normal approximation ``1.96 · sd / √n`` over
  episodes (sd with Bessel's correction), for one trained model (``croma evaluate``, meta-val).
* :func:`two_level_interval` / :func:`paired_two_level`: what ``croma benchmark`` reports. A
  two-level (hierarchical) percentile bootstrap over training seeds and episodes: each resample
  draws S training seeds with replacement, then E episodes with replacement, and takes the mean
  accuracy over the drawn (seed, episode) cells; the 95% interval is the 2.5th and 97.5th
  percentile of ``resamples`` such means. With one seed it is the ordinary episode bootstrap.
  A comparison ``a - b`` applies the same draws to the per-cell differences (paired by seed and
  by episode), so the variance the two methods share cancels. A method "beats" another only when
  the paired interval excludes 0.

Two ways to draw the episodes (``episodes=``): ``"shared"`` (default) draws one set of episode
indices per resample for every drawn seed, since every training seed of every method meets the
same meta-test episodes (a crossed design); ``"nested"`` draws each drawn seed's episodes
separately (seeds nested above episodes). ``"nested"`` treats the episode effect as independent
across seeds and so understates the episode part of the variance by up to a factor S;
``"shared"`` keeps it whole (and is slightly conservative for the seed x episode interaction).

Exactness: accuracies are quantised to 1e-6 points (:data:`QUANTUM`) and every resample mean is
an integer sum of quantised values computed in float64, which is exact below 2**53, so the
interval does not depend on the thread count, the BLAS or the machine: the same numbers give
the same interval bitwise anywhere. The draws come from a local ``torch.Generator`` seeded with
``seed`` (never the global RNG), in a documented order (:func:`two_level_draws`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import torch

__all__ = [
    "Z95", "QUANTUM", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "mean_ci95", "mean_std", "wilson_interval",
    "paired_comparison", "seed_std",
    "two_level_draws", "two_level_means", "two_level_interval", "paired_two_level", "interval_text",
    "split_level_means", "split_level_interval", "paired_split_level",
]

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


def wilson_interval(correct: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95 % interval ``(low, high)`` in percent of ``correct`` successes out of ``n``
    (kept inside [0, 100] and not degenerate at 0 or n correct, unlike ``1.96 · sd / √n``);
    ``correct`` may be fractional (summed per-item hit rates)."""
    if n > 0 and -1e-9 <= correct <= n + 1e-9:  # a sum of hit rates may round just past 0 or n
        correct = min(max(float(correct), 0.0), float(n))
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"wilson_interval needs 0 <= correct <= n and n > 0 (got {correct} of {n})")
    p = correct / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return 100.0 * max(0.0, mid - half), 100.0 * min(1.0, mid + half)


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


# ---------------------------------------------------------------------------------------------
# two-level bootstrap over training seeds and episodes

QUANTUM = 1e-6
"""Accuracies enter the bootstrap as integer multiples of this (1e-6 accuracy points)."""
BOOTSTRAP_RESAMPLES = 2000
"""Default number of bootstrap resamples."""
BOOTSTRAP_SEED = 0
"""Default seed of the bootstrap's local generator."""
EPISODE_MODES = ("shared", "nested")


def interval_text(seeds: int, episodes: int, resamples: int = BOOTSTRAP_RESAMPLES, *, mode: str = "shared",
                  seed: int = BOOTSTRAP_SEED) -> str:
    """One line naming the interval, as ``results.json`` states it (``"interval"``)."""
    draw = ("the same episode draw for every drawn seed" if mode == "shared" else "episodes drawn per drawn seed")
    return (f"two-level bootstrap over {seeds} training seed{'s' if seeds != 1 else ''} and {episodes} episodes "
            f"(seeds with replacement, then episodes with replacement, {draw}; paired by seed and episode), "
            f"{resamples} resamples, percentile 95%, generator seed {seed}")


@lru_cache(maxsize=4)  # a [resamples, episodes] float64 table each (9.6 MB at 2000 x 600)
def two_level_draws(seeds: int, episodes: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    mode: str = "shared") -> tuple[torch.Tensor, torch.Tensor]:
    """The bootstrap's draws, as counts (how often each seed / episode was drawn).

    Order of the draws on ``torch.Generator().manual_seed(seed)``: first the seed indices
    ``randint(seeds, (resamples, seeds))``, then the episode indices ``randint(episodes,
    (resamples, episodes))`` (``mode="shared"``) or ``randint(episodes, (resamples, seeds,
    episodes))`` (``"nested"``: row ``j`` for the ``j``-th drawn seed).

    Returns:
        ``(seed_idx, episode_counts)``: ``seed_idx`` long ``[resamples, seeds]``; ``episode_counts``
        float64 ``[resamples, episodes]`` (shared) or ``[resamples, seeds, episodes]`` (nested), each
        row summing to ``episodes``. Cached (read-only: do not modify).

    Raises:
        ValueError: fewer than one seed / episode / resample, or an unknown mode.
    """
    if mode not in EPISODE_MODES:
        raise ValueError(f"episodes mode must be one of {', '.join(EPISODE_MODES)} (got {mode!r})")
    if min(seeds, episodes, resamples) < 1:
        raise ValueError(f"a bootstrap needs >= 1 seed, episode and resample (got {seeds}, {episodes}, {resamples})")
    g = torch.Generator().manual_seed(int(seed))
    seed_idx = torch.randint(seeds, (resamples, seeds), generator=g)
    shape = (resamples, episodes) if mode == "shared" else (resamples, seeds, episodes)
    ep_idx = torch.randint(episodes, shape, generator=g)
    counts = torch.zeros(shape, dtype=torch.float64).scatter_add_(-1, ep_idx, torch.ones(shape, dtype=torch.float64))
    return seed_idx, counts


def _quantised(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.dim() < 2:
        raise ValueError(f"per-seed episode accuracies must be [..., seeds, episodes] (got shape {tuple(t.shape)})")
    if t.shape[-1] < 1 or t.shape[-2] < 1:
        raise ValueError("no values: an interval needs at least one seed and one episode")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("non-finite accuracy among the episodes")
    if float(t.abs().max()) > 1e8:
        raise ValueError("accuracies beyond 1e8: the bootstrap expects accuracy points (0-100)")
    return torch.round(t / QUANTUM)


def two_level_means(x: Any, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    mode: str = "shared") -> torch.Tensor:
    """Bootstrap distribution of the mean over (seed, episode) cells.

    Args:
        x: accuracies ``[..., S, E]`` (seed ``s``, episode ``e``); leading dimensions are
            independent tables resampled with the *same* draws.
        resamples, seed, mode: see :func:`two_level_draws`.

    Returns:
        float64 ``[..., resamples]``: resample ``b`` is ``mean_j mean_e x[s_bj, e_b·]`` over the
        drawn seeds ``s_bj`` and episodes, in multiples of :data:`QUANTUM` (exact).
    """
    q = _quantised(x)
    return _two_level_totals(q, resamples, seed, mode) / (q.shape[-2] * q.shape[-1]) * QUANTUM


def _two_level_totals(q: torch.Tensor, resamples: int, seed: int, mode: str) -> torch.Tensor:
    """:func:`two_level_means` before its division: per resample the sum over the drawn (seed,
    episode) cells of the quantised accuracies ``q`` ``[..., S, E]``, an exact integer in float64."""
    S, E = q.shape[-2], q.shape[-1]
    seed_idx, counts = two_level_draws(S, E, resamples, seed, mode)
    lead = q.shape[:-2]
    flat = q.reshape(-1, E)  # [T * S, E]

    def scored(c: torch.Tensor) -> torch.Tensor:
        """w[..., b, s] = sum_e c[b, e] q[..., s, e] (exact integers): draw b scored on every seed."""
        return (flat @ c.T).reshape(*lead, S, resamples).transpose(-1, -2)

    if mode == "shared":  # every drawn seed sees the same episode draw
        w = scored(counts)
        total = torch.gather(w, -1, seed_idx.expand(*lead, resamples, S)).sum(-1)
    else:
        total = torch.zeros(*lead, resamples, dtype=torch.float64)
        for j in range(S):  # the j-th drawn seed: its own episode draw
            w = scored(counts[:, j, :])
            total = total + torch.gather(w, -1, seed_idx[:, j:j + 1].expand(*lead, resamples, 1)).squeeze(-1)
    return total


def _percentiles(stats: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo_hi = torch.quantile(stats, probs, dim=-1)  # linear interpolation (numpy's default)
    return lo_hi[0], lo_hi[1]


def _grid_mean(x: Any) -> torch.Tensor:
    """Mean over the last two dimensions from the quantised values: an exact integer sum, so the
    same on every machine (a float reduction's order depends on the CPU's vector width)."""
    q = _quantised(x)
    return q.sum(dim=(-2, -1)) / (q.shape[-2] * q.shape[-1]) * QUANTUM


def two_level_interval(x: Any, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       mode: str = "shared", level: float = 0.95) -> dict[str, Any]:
    """Mean accuracy over seeds and episodes with its two-level percentile bootstrap interval.

    Args:
        x: accuracies ``[S, E]`` (one table) or ``[..., S, E]`` (several, the same draws).
        resamples, seed, mode: see :func:`two_level_draws`. level: coverage (0.95).

    Returns:
        ``{"mean", "ci95_low", "ci95_high", "ci95", "seeds", "episodes", "resamples"}``; ``ci95``
        is half the interval's width; floats for one table, lists for several.
    """
    t = torch.as_tensor(x, dtype=torch.float64)
    stats = two_level_means(t, resamples=resamples, seed=seed, mode=mode)
    lo, hi = _percentiles(stats, level)
    mean = _grid_mean(t)
    out = lambda v: v.tolist()  # noqa: E731 - float for 0-d, list otherwise
    return {"mean": out(mean), "ci95_low": out(lo), "ci95_high": out(hi), "ci95": out((hi - lo) / 2),
            "seeds": int(t.shape[-2]), "episodes": int(t.shape[-1]), "resamples": int(resamples)}


def paired_two_level(a: Any, b: Any, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     mode: str = "shared", level: float = 0.95) -> dict[str, Any]:
    """Paired difference ``a - b`` over the same seeds and episodes, two-level bootstrap interval.

    Args:
        a, b: accuracies ``[S, E]`` of two methods; cell ``(s, e)`` of both is training seed ``s``
            on episode ``e`` (the same episode for both).

    Returns:
        ``{"mean_diff", "ci95_low", "ci95_high", "episodes", "seeds", "resamples"}``.

    Raises:
        ValueError: shapes differ, empty or non-finite input.
    """
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if ta.shape != tb.shape:
        raise ValueError(f"paired comparison needs the same seeds and episodes: {tuple(ta.shape)} against {tuple(tb.shape)}")
    # the difference of quantised values, so that the interval is that of the two files' numbers
    d = (_quantised(ta) - _quantised(tb)) * QUANTUM
    r = two_level_interval(d, resamples=resamples, seed=seed, mode=mode, level=level)
    return {"mean_diff": r["mean"], "ci95_low": r["ci95_low"], "ci95_high": r["ci95_high"],
            "episodes": r["episodes"], "seeds": r["seeds"], "resamples": r["resamples"]}


# ---------------------------------------------------------------------------------------------
# three levels: class splits, then training seeds, then episodes


def split_level_means(x: Any, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      mode: str = "shared") -> torch.Tensor:
    """Bootstrap distribution of the mean over (split, seed, episode) cells of runs on ``P`` class
    splits (the same command with another ``--seed``): each resample draws ``P`` splits with
    replacement and, for the ``j``-th drawn split, a two-level draw of its seeds and episodes
    (:func:`two_level_means`, its own draw per slot; episodes differ between splits, so nothing is
    shared across them).

    Args:
        x: accuracies ``[..., P, S, E]``; leading dimensions are resampled with the same draws.
        resamples, seed, mode: as :func:`two_level_draws` (``mode`` applies within a split).

    Returns:
        float64 ``[..., resamples]``, exact as :func:`two_level_means` (integer sums of quanta).

    Draws: the split indices ``randint(P, (resamples, P))`` on ``torch.Generator().manual_seed(seed)``;
    slot ``j`` of resample ``b`` uses two-level draw ``b * P + j`` of :func:`two_level_draws` with
    ``resamples * P`` resamples and generator seed ``seed + 1``.
    """
    q = _quantised(x)
    if q.dim() < 3:
        raise ValueError(f"per-split accuracies must be [..., splits, seeds, episodes] (got shape {tuple(q.shape)})")
    P, S, E = q.shape[-3], q.shape[-2], q.shape[-1]
    # every split scored on every slot's two-level draw: integer totals [..., P, resamples * P]
    totals = _two_level_totals(q, resamples * P, seed + 1, mode)
    totals = totals.reshape(*q.shape[:-2], resamples, P)  # [..., P(split), b, j(slot)]
    split_idx = torch.randint(P, (resamples, P), generator=torch.Generator().manual_seed(int(seed)))
    lead = q.shape[:-3]
    picked = torch.gather(totals.movedim(-3, -1), -1, split_idx.expand(*lead, resamples, P).unsqueeze(-1)).squeeze(-1)
    return picked.sum(-1) / (P * S * E) * QUANTUM


def split_level_interval(x: Any, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                         mode: str = "shared", level: float = 0.95) -> dict[str, Any]:
    """Mean over splits, seeds and episodes with its three-level percentile bootstrap interval
    (:func:`split_level_means`); ``x`` is ``[..., P, S, E]``. Returns the keys of
    :func:`two_level_interval` and ``"splits"``."""
    t = torch.as_tensor(x, dtype=torch.float64)
    stats = split_level_means(t, resamples=resamples, seed=seed, mode=mode)  # checks the shape
    lo, hi = _percentiles(stats, level)
    mean = _grid_mean(t.reshape(*t.shape[:-3], -1, t.shape[-1]))  # over splits x seeds, then episodes
    out = lambda v: v.tolist()  # noqa: E731
    return {"mean": out(mean), "ci95_low": out(lo), "ci95_high": out(hi), "ci95": out((hi - lo) / 2),
            "splits": int(t.shape[-3]), "seeds": int(t.shape[-2]), "episodes": int(t.shape[-1]),
            "resamples": int(resamples)}


def paired_split_level(a: Any, b: Any, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       mode: str = "shared", level: float = 0.95) -> dict[str, Any]:
    """Paired difference ``a - b`` over the same splits, seeds and episodes (``[..., P, S, E]``),
    three-level bootstrap interval; keys as :func:`paired_two_level` and ``"splits"``."""
    ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if ta.shape != tb.shape:
        raise ValueError(f"paired comparison needs the same splits, seeds and episodes: {tuple(ta.shape)} against "
                         f"{tuple(tb.shape)}")
    d = (_quantised(ta) - _quantised(tb)) * QUANTUM
    r = split_level_interval(d, resamples=resamples, seed=seed, mode=mode, level=level)
    return {"mean_diff": r["mean"], "ci95_low": r["ci95_low"], "ci95_high": r["ci95_high"], "episodes": r["episodes"],
            "seeds": r["seeds"], "splits": r["splits"], "resamples": r["resamples"]}
