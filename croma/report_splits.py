"""Pooling benchmark folders run on different class splits (``croma report DIR1 DIR2 ...``).

A benchmark's interval covers training seeds and meta-test episodes, both drawn on *one* class split.
With few meta-test classes (a small data set: 5 classes for 5-way) which classes land in meta-test
can move a table more than either: the same command with another ``--seed`` draws another split.
:func:`pool_splits` reads such folders (each checked by :func:`croma.report_episodes.rebuild`, its episodes read once),
checks that they are the same experiment on different splits, and gives one table whose cells are
means over splits, seeds and episodes with a three-level bootstrap interval
(:func:`croma.stats.split_level_interval`; croma's comparisons paired within each split by seed
and episode, :func:`croma.stats.paired_split_level`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

# what must agree between the folders (results.json keys): the same experiment, split aside
SAME = ("benchmark", "loss", "ways", "label_noise", "preset", "budget_steps", "train_seeds")


def _split_of(result: dict[str, Any]) -> tuple:
    splits = (result.get("config") or {}).get("splits") or {}
    return tuple(tuple(map(str, splits.get(k) or ())) for k in ("meta_train", "meta_val", "meta_test"))


def pool_splits(dirs: Sequence[str | os.PathLike]) -> tuple[dict[str, Any], list[str]]:
    """One table over ``P >= 2`` benchmark folders of the same experiment on different class splits.

    Returns:
        ``(result, differences)``: a results.json-shaped dict (rows and comparisons over splits x
        seeds x episodes, ``"splits"``: per folder its ``--seed``, meta-test classes and row means;
        ``"interval"``: how the interval was drawn) and the folders' own rebuild differences
        (:func:`croma.report_episodes.rebuild`), each prefixed with its folder.

    Raises:
        CromaError: fewer than 2 folders, a folder that cannot be rebuilt, folders that differ in
            an experiment setting, methods, k, seeds or episode counts, or two with the same split.
    """
    import torch

    from croma.errors import CromaError
    from croma.report_episodes import _kw, rebuilt
    from croma.stats import paired_split_level, split_level_interval

    if len(dirs) < 2:
        raise CromaError("pooling class splits needs at least 2 benchmark folders (the same command with other --seed)")
    built, eps, diffs = [], [], []
    for d in dirs:
        result, dd, ep = rebuilt(d)
        built.append(result)
        eps.append(ep)
        diffs += [f"{d}: {x}" for x in dd]
    first, name0 = built[0], str(dirs[0])
    for d, r, ep in zip(dirs[1:], built[1:], eps[1:]):
        for key in SAME:
            if r.get(key) != first.get(key):
                raise CromaError(f"{d}: {key} is {r.get(key)!r}, {name0} has {first.get(key)!r}: pooling needs the same "
                                 "experiment on other class splits (only --seed may differ)")
        for what in ("methods", "shots"):
            if sorted(map(str, ep[what])) != sorted(map(str, eps[0][what])):
                raise CromaError(f"{d}: {what} {ep[what]} differ from {name0}'s {eps[0][what]}")
    seen: dict[tuple, str] = {}
    for d, r in zip(dirs, built):
        split = _split_of(r)
        if not split[2]:
            raise CromaError(f"{d}: results.json names no class split (config.splits); it cannot be pooled")
        if split in seen:
            raise CromaError(f"{d} has the same class split as {seen[split]} (the same --seed?): pooling would count one "
                             "split twice")
        seen[split] = str(d)
    methods, shots = eps[0]["methods"], eps[0]["shots"]
    settings = first.get("interval_settings")
    kw = _kw(settings)
    acc: dict[tuple[str, int], torch.Tensor] = {}
    for m in methods:
        for k in shots:
            per = [ep["acc"][(m, k)] for ep in eps]
            shapes = {(len(p), len(p[0])) for p in per}
            if len(shapes) > 1:
                raise CromaError(f"{m} {k}-shot: the folders hold different seeds x episodes "
                                 f"({', '.join(f'{d}: {len(p)} x {len(p[0])}' for d, p in zip(dirs, per))})")
            acc[(m, k)] = torch.tensor(per, dtype=torch.float64)
    rows = []
    for m in methods:
        for k in shots:
            r = split_level_interval(acc[(m, k)], **kw)
            base = {key: v for key, v in next(x for x in first["rows"] if x["method"] == m and int(x["shots"]) == k).items()
                    if key in ("method", "shots", "target_labels", "head_init", "finetune")}
            per_split = [next(x for x in b["rows"] if x["method"] == m and int(x["shots"]) == k) for b in built]
            base.update({
                "accuracy_mean": r["mean"], "accuracy_ci95": r["ci95"], "accuracy_ci95_low": r["ci95_low"],
                "accuracy_ci95_high": r["ci95_high"], "episodes": r["episodes"], "train_seeds": r["seeds"],
                "splits": r["splits"], "accuracy_per_split": [x["accuracy_mean"] for x in per_split],
                "target_samples": _joined([x.get("target_samples") for x in per_split]),
                "target_labels": _joined([x.get("target_labels") for x in per_split]),
                "train_seconds": math.fsum(float(x.get("train_seconds") or 0.0) for x in per_split) / len(per_split),
                "optimizer_steps": _joined([x.get("optimizer_steps") for x in per_split]),
            })
            rows.append(base)
    comparisons = []
    if "croma" in methods:
        for b in [m for m in methods if m != "croma"]:
            for k in shots:
                c = paired_split_level(acc[("croma", k)], acc[(b, k)], **kw)
                per = [next(x for x in r.get("comparisons") or [] if x["baseline"] == b and int(x["shots"]) == k)
                       for r in built]
                comparisons.append({"method": "croma", "baseline": b, "shots": k, "mean_diff": c["mean_diff"],
                                    "ci95_low": c["ci95_low"], "ci95_high": c["ci95_high"], "episodes": c["episodes"],
                                    "seeds": c["seeds"], "splits": c["splits"],
                                    "mean_diff_per_split": [x["mean_diff"] for x in per]})
    n_s, n_e = rows[0]["train_seeds"], rows[0]["episodes"]
    interval = (f"three-level bootstrap over {len(dirs)} class splits, {n_s} training seed{'s' if n_s != 1 else ''} "
                f"and {n_e} episodes per split (splits with replacement, then each drawn split's seeds and episodes "
                f"with replacement, one episode draw for its seeds; paired by split, seed and episode), "
                f"{kw['resamples']} resamples, percentile 95%, generator seed {kw['seed']}")
    result = {key: first.get(key) for key in SAME}
    result.update({
        "seed": [r.get("seed") for r in built], "rows": rows, "comparisons": comparisons, "interval": interval,
        "interval_settings": {**(settings or {}), "method": "three-level bootstrap (class splits, seeds, then episodes), "
                              "percentile"},
        "splits": [{"folder": str(d), "seed": r.get("seed"), "meta_test": list(_split_of(r)[2])}
                   for d, r in zip(dirs, built)],
        "config": {"benchmark_config": (first.get("config") or {}).get("benchmark_config")},
    })
    return result, diffs


def _joined(values: list[Any]) -> Any:
    """One value when the folders agree, else their range as text (``"72-96"``)."""
    if len(set(map(str, values))) == 1:
        return values[0]
    try:
        return f"{min(values)}-{max(values)}"
    except TypeError:
        return "/".join(map(str, values))
