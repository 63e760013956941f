"""Few-shot cross-modal retrieval over a split's strong pairs (a diagnostic of
:func:`croma.evaluate.evaluate_kshot`): R@1/5/10 of source queries against target galleries."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from croma.meta.functional import FunctionalModel, Params
from croma.meta.tasks import derive_seed
from croma.stats import mean_ci95, mean_std, wilson_interval
from episodes.data import PreparedBenchmark

__all__ = ["retrieval_recalls"]


@torch.no_grad()
def retrieval_recalls(
    fm: FunctionalModel, theta: Params, bench: PreparedBenchmark, inputs: Mapping[str, torch.Tensor], cfg: Any
) -> dict[str, Any] | None:
    """Few-shot cross-modal retrieval of the split's strong pairs: for ``cfg.repeats`` galleries of
    ``cfg.retrieval_gallery`` pairs, how often a source item's own target item ranks in the top
    1 / 5 / 10 by cosine similarity (ties count against it). None without two such pairs.

    ``r{k}_std`` is the spread of the per-gallery recalls (0 when every gallery holds all pairs);
    ``r{k}_ci95`` is the half-width of a 95 % interval over the queries (``1.96 · sd / √n``, each
    query's hits averaged over the galleries it was drawn into, ``n = queries``): the population a
    new data set's retrieval is uncertain over. ``r{k}_ci95_low`` / ``r{k}_ci95_high``: Wilson's
    95 % interval over the same queries, inside [0, 100] (what ``croma evaluate`` prints).

    Returns:
        ``{"gallery", "repeats", "queries", "r1_mean", "r1_std", "r1_ci95", "r5_mean", ...}`` in percent.
    """
    pairs = bench.pairs
    if pairs.numel() == 0:
        return None
    classes = torch.as_tensor(bench.splits.get(cfg.split, []), dtype=torch.long)
    lab_s = bench.data[bench.source].labels
    lab_t = bench.data[bench.target].labels
    keep = torch.isin(lab_t[pairs[:, 1]], classes) & torch.isin(lab_s[pairs[:, 0]], classes)
    pairs = pairs[keep]
    if pairs.shape[0] < 2:
        return None
    size = min(cfg.retrieval_gallery, int(pairs.shape[0]))
    recalls: dict[int, list[float]] = {1: [], 5: [], 10: []}
    hits = {k: torch.zeros(pairs.shape[0], dtype=torch.float64) for k in recalls}  # per query (pair row)
    drawn = torch.zeros(pairs.shape[0], dtype=torch.float64)
    for r in range(cfg.repeats):
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, cfg.split, "retrieval", r))
        rows = torch.randperm(pairs.shape[0], generator=g)[:size]
        pick = pairs[rows]
        drawn[rows] += 1
        xs = inputs[bench.source][pick[:, 0].to(inputs[bench.source].device)]
        xt = inputs[bench.target][pick[:, 1].to(inputs[bench.target].device)]
        zs = F.normalize(fm(theta, lambda m, v: m.embed(bench.source, v), xs), dim=-1)
        zt = F.normalize(fm(theta, lambda m, v: m.embed(bench.target, v), xt), dim=-1)
        sim = zs @ zt.T  # [G, G]; row i: source query i against all target items
        # items scoring at least as high as the true match (ties count against it, so collapsed
        # embeddings score chance, not 100); a query whose scores are not finite never counts as found
        true = sim.diagonal()[:, None]
        rank = (sim >= true).sum(1) - 1
        rank = torch.where(torch.isfinite(sim).all(1), rank, torch.full_like(rank, sim.shape[1]))
        for k in recalls:
            found = (rank < k).cpu()
            recalls[k].append(100.0 * float(found.float().mean()))
            hits[k][rows] += found.double()
    seen = drawn > 0
    out: dict[str, Any] = {"gallery": size, "repeats": cfg.repeats, "queries": int(seen.sum())}
    for k, vals in recalls.items():
        out[f"r{k}_mean"], out[f"r{k}_std"] = mean_std(vals)
        per_query = (hits[k][seen] / drawn[seen]).tolist()
        out[f"r{k}_ci95"] = mean_ci95([100.0 * v for v in per_query])[1]
        # Wilson's interval over the queries (each query's hit fraction summed: exact successes when
        # every gallery holds every pair), kept inside [0, 100] where 1.96 sd / sqrt(n) is not
        out[f"r{k}_ci95_low"], out[f"r{k}_ci95_high"] = wilson_interval(sum(per_query), len(per_query))
    return out
