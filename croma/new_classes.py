"""k-shot accuracy of a trained run on *your* new classes (``croma evaluate RUN --new-classes FILE``).

``croma predict`` scores one support set; one draw says little. :func:`evaluate_new_classes` draws
many N-way k-shot episodes from a labelled pool of classes the run never saw (a manifest file of
the run's target modality), fine-tunes the run on each support set as ``RunModel.adapt`` does
(meta-val's setting for that k) and scores its queries: per k the mean accuracy with a 95 %
interval over episodes (``1.96 · sd / √n``, one trained run: training variance is not in it).
Items are featurised once through the run's fitted front-end; episode ``i`` of shot ``k`` is a
pure function of ``(seed, k, i)``.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import torch

from croma.errors import CromaError
from croma.stats import mean_ci95

__all__ = ["evaluate_new_classes"]


def evaluate_new_classes(model: Any, values: Sequence[Any], labels: Sequence[Hashable], *,
                         shots: Sequence[int] = (1, 5), episodes: int = 100, ways: int | None = None,
                         queries: int = 5, seed: int = 0, ids: Sequence[str] | None = None,
                         progress: bool = False, **settings: Any) -> dict[str, Any]:
    """Episodes of ``ways`` classes drawn from ``labels``' classes, per k in ``shots``.

    Args:
        model: a :class:`croma.runmodel.RunModel`.
        values, labels: the labelled pool (target-modality values; any hashable labels).
        ways: N (default: the run's ways, or every class when there are fewer, at least 2).
        queries: query items per class, lowered for a k when fewer than N classes have ``k +
            queries`` items (down to 1); a k that cannot be served with one query is dropped.
        seed: episode seed.
        progress: a progress bar over the episodes, with the time left (stderr).
        settings: fine-tuning settings that replace meta-val's choice for every k, as
            :meth:`croma.runmodel.RunModel.adapt` takes them (``steps``, ``lr``, ``finetune``,
            ``head_init``, ``optimizer``); None values are left to the choice.

    Returns:
        ``{"ways", "classes", "items", "episodes", "rows": [{"shots", "queries", "accuracy_mean",
        "accuracy_ci95", "accuracies", "setting"}], "dropped": [{"shots", "why"}]}``, accuracies in %.

    Raises:
        CromaError: fewer than 2 classes, bad sizes, no k that fits, an unreadable item.
    """
    from episodes.samplers import ClassificationTaskSampler

    values, labels = list(values), list(labels)
    settings = {key: v for key, v in settings.items() if v is not None}
    if len(values) != len(labels):
        raise CromaError(f"new classes: {len(values)} items but {len(labels)} labels")
    names = sorted(set(labels), key=lambda c: (str(c), repr(c)))
    if len(names) < 2:
        raise CromaError(f"new classes: {len(names)} class given; k-shot episodes need labelled items of >= 2 classes")
    if episodes < 1 or queries < 1 or not shots or any(int(k) < 1 for k in shots):
        raise CromaError(f"new classes: episodes, queries and every k must be >= 1 (got episodes={episodes}, "
                         f"queries={queries}, shots={list(shots)})")
    n_way = int(ways) if ways is not None else max(2, min(int(model.config.outer.ways), len(names)))
    if not 2 <= n_way <= len(names):
        raise CromaError(f"new classes: --ways {n_way} needs 2 to {len(names)} classes (the file has {len(names)})")
    y = torch.tensor([names.index(c) for c in labels], dtype=torch.long)
    counts = torch.bincount(y, minlength=len(names))
    x = model.features(model.target, values, ids=ids)  # once, through the run's front-end
    rows, dropped = [], []
    from episodes.progress import progress_bar

    ks = sorted({int(k) for k in shots})
    bar = progress_bar(total=len(ks) * int(episodes), desc="new classes", unit="episode", disable=not progress)
    for k in ks:
        q = int(queries)
        while q >= 1 and int((counts >= k + q).sum()) < n_way:
            q -= 1
        if q < 1:
            dropped.append({"shots": k, "why": f"only {int((counts >= k + 1).sum())} of {len(names)} classes have "
                                              f"{k + 1} items ({n_way} needed for {n_way}-way {k}-shot 1-query)"})
            continue
        sampler = ClassificationTaskSampler(y, list(range(len(names))), ways=n_way, shots=k, queries=q,
                                            seed=int(seed) * 1000 + k)
        accs, setting = _episode_accuracies(model, x, sampler, n_way, k, int(episodes), settings, bar)
        mean, half = mean_ci95(accs)
        rows.append({"shots": k, "queries": q, "accuracy_mean": mean, "accuracy_ci95": half, "accuracies": accs,
                     "setting": setting})
    bar.close()
    if not rows:
        raise CromaError("new classes: no k fits: " + "; ".join(f"k={d['shots']}: {d['why']}" for d in dropped))
    return {"ways": n_way, "classes": [str(c) for c in names], "items": len(values), "episodes": int(episodes),
            "rows": rows, "dropped": dropped}


def _episode_accuracies(model: Any, x: torch.Tensor, sampler: Any, n_way: int, k: int, episodes: int,
                        settings: dict, bar: Any = None) -> tuple[list[float], dict]:
    """Query accuracies (%) of episodes ``0 .. episodes-1`` and the setting they ran: each episode
    fine-tuned as ``model.adapt`` fine-tunes its support set, a chunk of episodes at a time as one
    batched computation (:class:`croma.finetune._Episodes`, as meta-test runs; the same numbers as
    one ``adapt`` + ``predict`` per episode up to rounding)."""
    from croma.finetune import _Episodes

    setting, ev = model._finetune_setting(n_way, k, **settings)
    setting = {key: v for key, v in setting.items() if key != "note"}
    setting.update(shots=k, ways=n_way)
    eps = _Episodes(model.model, model.target, ev, names=list(model.theta))
    # adapt orders an episode's labels 0..N-1 by their text ("10" before "2"): the same order here
    order = sorted(range(n_way), key=lambda c: (str(c), repr(c)))
    local = torch.tensor([order.index(c) for c in range(n_way)], device=x.device)
    z_all = eps.embed_all(model.theta, x) if (eps.frozen_embedding or ev.head_init == "prototype") else None
    accs: list[float] = []
    for start in range(0, episodes, eps.chunk):
        t = sampler.sample_many(start, min(eps.chunk, episodes - start))
        rs, rq = t.support_rows.to(x.device), t.query_rows.to(x.device)
        b = {"xs": x[rs], "ys": local[t.support_labels.to(x.device)], "xq": x[rq],
             "yq": local[t.query_labels.to(x.device)], "rs": rs, "rq": rq}
        with torch.enable_grad():
            acc = eps.accuracies(model.theta, b, z_all)
        accs += [100.0 * float(a) for a in acc.double().tolist()]
        if bar is not None:
            bar.update(int(acc.shape[0]))
    return accs, setting
