"""The two-level (seeds, then episodes) bootstrap of croma.stats against hand computations."""

import itertools
import math
import time

import pytest
import torch

from croma.stats import (
    mean_ci95,
    paired_two_level,
    two_level_draws,
    two_level_interval,
    two_level_means,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _data(seeds, episodes, *, seed=0, spread=0.0):
    """Per-episode accuracies on a 4-point grid (25 queries) with a per-seed offset of ``spread``."""
    g = torch.Generator().manual_seed(seed)
    x = 4.0 * torch.randint(0, 26, (seeds, episodes), generator=g).double()
    return x + spread * torch.arange(seeds, dtype=torch.float64)[:, None]


def _explicit(x, resamples, seed, mode):
    """The bootstrap as a slow double loop over the same generator draws (the documented order)."""
    S, E = len(x), len(x[0])
    g = torch.Generator().manual_seed(seed)
    seed_idx = torch.randint(S, (resamples, S), generator=g).tolist()
    shape = (resamples, E) if mode == "shared" else (resamples, S, E)
    ep_idx = torch.randint(E, shape, generator=g).tolist()
    out = []
    for b in range(resamples):
        cells = []
        for j in range(S):
            eps = ep_idx[b] if mode == "shared" else ep_idx[b][j]
            for e in eps:
                cells.append(x[seed_idx[b][j]][e])
        out.append(math.fsum(cells) / len(cells))
    return out


@pytest.mark.parametrize("mode", ["shared", "nested"])
def test_vectorised_bootstrap_equals_the_explicit_double_loop(mode):
    x = _data(3, 7, spread=5.0)
    got = two_level_means(x, resamples=50, seed=3, mode=mode)
    want = _explicit(x.tolist(), 50, 3, mode)
    assert got.tolist() == pytest.approx(want, abs=1e-9)
    # several tables at once use the same draws as each alone
    y = torch.stack([x, 100 - x])
    both = two_level_means(y, resamples=50, seed=3, mode=mode)
    assert torch.equal(both[0], got) and both[1].tolist() == pytest.approx(_explicit((100 - x).tolist(), 50, 3, mode))


def test_exact_bootstrap_distribution_by_enumeration():
    """2 seeds x 2 episodes: the 4 x 4 equally likely (seed draw, episode draw) outcomes."""
    x = [[10.0, 20.0], [30.0, 60.0]]
    exact: dict[float, float] = {}
    for s in itertools.product(range(2), repeat=2):
        for e in itertools.product(range(2), repeat=2):
            m = sum(x[sj][ei] for sj in s for ei in e) / 4
            exact[m] = exact.get(m, 0.0) + 1 / 16
    # by hand: seeds (0,0) with episodes (0,0) -> 10; (1,1) with (1,1) -> 60; mixed -> e.g. 30
    assert exact[10.0] == 1 / 16 and exact[60.0] == 1 / 16
    B = 40000
    stats = two_level_means(torch.tensor(x), resamples=B, seed=1)
    values, counts = torch.unique(stats, return_counts=True)
    assert set(values.tolist()) == set(exact)
    for v, c in zip(values.tolist(), counts.tolist()):
        assert c / B == pytest.approx(exact[v], abs=0.01)
    r = two_level_interval(torch.tensor(x), resamples=B, seed=1)
    # the exact 2.5% / 97.5% points: 10 has mass 1/16 > 2.5%, 60 likewise
    assert (r["ci95_low"], r["ci95_high"]) == (10.0, 60.0)
    assert r["mean"] == 30.0 and r["seeds"] == 2 and r["episodes"] == 2


def test_one_seed_is_the_episode_bootstrap():
    # by hand: episodes [0, 100] -> means 0 (1/4), 50 (1/2), 100 (1/4): interval [0, 100]
    r = two_level_interval([[0.0, 100.0]], resamples=4000)
    assert (r["ci95_low"], r["mean"], r["ci95_high"]) == (0.0, 50.0, 100.0)
    # 600 episodes: within Monte-Carlo error of the normal interval 1.96 sd / sqrt(n)
    x = _data(1, 600, seed=5)
    r = two_level_interval(x)
    m, half = mean_ci95(x[0].tolist())
    assert r["mean"] == pytest.approx(m, abs=1e-9)
    assert r["ci95"] == pytest.approx(half, rel=0.1)
    assert r["ci95_low"] < m < r["ci95_high"]


def test_width_grows_with_seed_spread():
    base = _data(1, 200).expand(3, 200)  # three seeds that agree on every episode, then moved apart
    offsets = torch.tensor([[-1.0], [0.0], [1.0]], dtype=torch.float64)
    widths = [two_level_interval(base + d * offsets)["ci95"] for d in (0.0, 2.0, 5.0, 10.0)]
    assert widths == sorted(widths) and widths[-1] > 2 * widths[0]
    # the episode interval of the seed-averaged accuracies (before this interval) ignores that spread
    flat = [mean_ci95((base + d * offsets).mean(0).tolist())[1] for d in (0.0, 10.0)]
    assert flat[0] == pytest.approx(flat[1])


def test_paired_interval_excludes_zero_when_one_method_is_uniformly_better():
    b = _data(3, 300, seed=2, spread=3.0)
    g = torch.Generator().manual_seed(9)
    a = b + 0.5 + torch.rand(b.shape, generator=g, dtype=torch.float64)  # better on every cell by 0.5-1.5
    c = paired_two_level(a, b)
    assert 0.5 < c["ci95_low"] <= c["mean_diff"] <= c["ci95_high"] < 1.5
    assert c["seeds"] == 3 and c["episodes"] == 300
    # the same comparison without pairing would not tell them apart
    ra, rb = two_level_interval(a), two_level_interval(b)
    assert ra["ci95_low"] < rb["ci95_high"]
    d = paired_two_level(b, a)
    assert d["ci95_high"] < 0 and d["mean_diff"] == pytest.approx(-c["mean_diff"])


def test_deterministic_and_errors():
    x = _data(3, 50, spread=1.0)
    assert two_level_interval(x) == two_level_interval(x.clone())
    assert two_level_interval(x, seed=1) != two_level_interval(x, seed=2)
    a1, _ = two_level_draws(3, 50, 10, 0, "shared")
    assert a1.shape == (10, 3)
    with pytest.raises(ValueError, match="same seeds and episodes"):
        paired_two_level(x, x[:2])
    with pytest.raises(ValueError, match="non-finite"):
        two_level_interval(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="seeds, episodes"):
        two_level_interval([1.0, 2.0])
    with pytest.raises(ValueError, match="mode"):
        two_level_interval(x, mode="flat")


def test_ten_methods_three_seeds_600_episodes_is_fast():
    x = _data(30, 600, seed=4).reshape(10, 3, 600)  # 10 methods x 3 seeds x 600 episodes
    two_level_draws.cache_clear()
    t = time.perf_counter()
    for _ in range(3):  # three k
        two_level_interval(x)
        paired_two_level(x[:1].expand(9, 3, 600), x[1:])
    assert time.perf_counter() - t < 5.0  # < 1 s on an idle core; slack for a shared machine
