"""Per-episode accuracies (episodes.csv), the two-level statistics over them, and rebuilding a
benchmark's table and comparisons from its files (:func:`rebuild`, what ``croma report`` runs).
Re-exported by :mod:`croma.report`, whose docstring describes results.json and episodes.csv.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

EPISODES_FILE = "episodes.csv"
EPISODE_FIELDS = ("method", "shots", "seed", "episode", "hash", "accuracy")
DIGITS = 6  # per-episode accuracies are rounded to 1e-6 points before any statistic


def episode_digest(support_rows, support_labels, query_rows, query_labels) -> str:
    """16 hex digits of SHA-256 over an episode's support / query item rows and (noisy) labels
    (int64, little-endian): equal digests mean the same items with the same labels."""
    import hashlib

    import torch

    h = hashlib.sha256(b"croma-episode-v1")
    for t in (support_rows, support_labels, query_rows, query_labels):
        a = torch.as_tensor(t).detach().to("cpu", torch.int64).contiguous().numpy().astype("<i8", copy=False)
        h.update(len(a).to_bytes(8, "little"))
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def rounded(values: Iterable[float]) -> list[float]:
    """Per-episode accuracies as stored and used by every statistic: rounded to :data:`DIGITS`."""
    return [round(float(v), DIGITS) for v in values]


def interval_settings() -> dict[str, Any]:
    """The two-level bootstrap's settings as results.json records them (``"interval_settings"``)."""
    from croma import stats

    return {"method": "two-level bootstrap (seeds, then episodes), percentile", "resamples": stats.BOOTSTRAP_RESAMPLES,
            "seed": stats.BOOTSTRAP_SEED, "episodes": "shared", "level": 0.95, "rounding": 10.0 ** -DIGITS}


def _kw(settings: dict[str, Any] | None) -> dict[str, Any]:
    st = {**interval_settings(), **(settings or {})}
    return {"resamples": int(st["resamples"]), "seed": int(st["seed"]), "mode": str(st["episodes"]),
            "level": float(st["level"])}


def row_statistics(per_seed: list[list[float]], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A row's accuracy fields from its per-seed episode accuracies ``[seeds][episodes]`` (percent).

    Returns:
        ``{"accuracy_mean", "accuracy_ci95" (half width), "accuracy_ci95_low", "accuracy_ci95_high",
        "episodes", "train_seeds", "accuracy_per_seed", "accuracy_seed_std"}``
        (:func:`croma.stats.two_level_interval`; ``accuracy_seed_std`` None for one seed).
    """
    import math

    from croma.stats import seed_std, two_level_interval

    r = two_level_interval(per_seed, **_kw(settings))
    means = [math.fsum(v) / len(v) for v in per_seed]
    return {
        "accuracy_mean": r["mean"], "accuracy_ci95": r["ci95"], "accuracy_ci95_low": r["ci95_low"],
        "accuracy_ci95_high": r["ci95_high"], "episodes": r["episodes"], "train_seeds": r["seeds"],
        "accuracy_per_seed": means, "accuracy_seed_std": seed_std(means) if len(means) > 1 else None,
    }


def compare_all(acc: dict[tuple[str, int], list[list[float]]], methods: list[str], shots: Iterable[int],
                settings: dict[str, Any] | None = None, method: str = "croma") -> list[dict[str, Any]]:
    """``method`` against every other method at every k, paired by seed and episode
    (:func:`croma.stats.paired_two_level`, one batch per k), in the order ``methods`` x ``shots``.

    Args:
        acc: ``(method, k) -> [seeds][episodes]`` accuracies in percent.
    """
    import math

    import torch

    from croma.stats import paired_two_level

    others = [m for m in methods if m != method]
    if method not in methods or not others:
        return []
    by: dict[tuple[str, int], dict[str, Any]] = {}
    for k in shots:
        k = int(k)
        a = torch.tensor(acc[(method, k)], dtype=torch.float64)
        b = torch.tensor([acc[(m, k)] for m in others], dtype=torch.float64)
        c = paired_two_level(a.expand_as(b), b, **_kw(settings))
        for i, m in enumerate(others):
            per_seed = [math.fsum(x) / len(x) - math.fsum(y) / len(y) for x, y in zip(acc[(method, k)], acc[(m, k)])]
            by[(m, k)] = {"method": method, "baseline": m, "shots": k, "mean_diff": c["mean_diff"][i],
                          "ci95_low": c["ci95_low"][i], "ci95_high": c["ci95_high"][i], "episodes": c["episodes"],
                          "seeds": c["seeds"], "mean_diff_per_seed": per_seed}
    return [by[(m, int(k))] for m in others for k in shots]


def episode_lines(method: str, shots: int, seeds: list[int], per_seed: list[list[float]],
                  hashes: list[str]) -> list[tuple]:
    """episodes.csv lines of one (method, k): ``(method, shots, seed, episode, hash, accuracy)``."""
    return [(method, int(shots), int(sd), e, hashes[e], a) for sd, accs in zip(seeds, per_seed) for e, a in enumerate(accs)]


def episodes_csv(lines: Iterable[tuple]) -> bytes:
    """The bytes of episodes.csv (header :data:`EPISODE_FIELDS`)."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EPISODE_FIELDS)
    for line in lines:
        w.writerow([repr(v) if isinstance(v, float) else v for v in line])
    return buf.getvalue().encode()


def read_episodes(path: str | os.PathLike) -> dict[str, Any]:
    """Read episodes.csv and check the pairing: every (method, k) has the same seeds, episodes
    ``0 .. E-1`` of every seed, and episode ``e`` at k has one hash for every method and seed.

    Returns:
        ``{"acc": {(method, k): [seeds][episodes]}, "seeds": {(method, k): [seed, ...]},
        "hashes": {k: [hash per episode]}, "methods": [...], "shots": [...]}`` (file order).

    Raises:
        CromaError: a missing or malformed file, or episodes that are not paired (named).
    """
    from croma.errors import CromaError

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CromaError(f"{p}: not found (croma benchmark writes it beside results.json; results written before "
                         "per-episode files cannot be rebuilt)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CromaError(f"cannot read {p}: {exc}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or tuple(header) != EPISODE_FIELDS:
        raise CromaError(f"{p}: the first line must be {','.join(EPISODE_FIELDS)} (got {header!r})")
    cells: dict[tuple[str, int], dict[int, dict[int, float]]] = {}
    hashes: dict[int, dict[int, str]] = {}
    methods: list[str] = []
    shots: list[int] = []
    for n, line in enumerate(reader, start=2):
        try:
            method, k_s, sd_s, e_s, digest, a_s = line
            k, sd, e, a = int(k_s), int(sd_s), int(e_s), float(a_s)
        except ValueError:
            raise CromaError(f"{p}, line {n}: expected {','.join(EPISODE_FIELDS)} with integer shots, seed, episode "
                             f"and a number accuracy (got {line!r})") from None
        if not 0.0 <= a <= 100.0:
            raise CromaError(f"{p}, line {n}: accuracy {a_s} is not a percentage in [0, 100]")
        if method not in methods:
            methods.append(method)
        if k not in shots:
            shots.append(k)
        seen = hashes.setdefault(k, {}).setdefault(e, digest)
        if seen != digest:
            raise CromaError(f"{p}, line {n}: {method} {k}-shot seed {sd} episode {e} has hash {digest}, another line "
                             f"{seen}: not the same episodes, so a comparison would not be paired")
        per = cells.setdefault((method, k), {}).setdefault(sd, {})
        if e in per:
            raise CromaError(f"{p}, line {n}: {method} {k}-shot seed {sd} episode {e} is listed twice")
        per[e] = a
    acc: dict[tuple[str, int], list[list[float]]] = {}
    seeds: dict[tuple[str, int], list[int]] = {}
    for key, per_seed in cells.items():
        n_ep = len(hashes[key[1]])
        for sd, eps in per_seed.items():
            if sorted(eps) != list(range(n_ep)):
                raise CromaError(f"{p}: {key[0]} {key[1]}-shot seed {sd} has {len(eps)} of the {n_ep} episodes "
                                 f"0..{n_ep - 1}; every method and seed needs all of them")
        seeds[key] = sorted(per_seed)
        acc[key] = [[per_seed[sd][e] for e in range(n_ep)] for sd in seeds[key]]
    if len({tuple(v) for v in seeds.values()}) > 1:
        raise CromaError(f"{p}: methods were run with different training seeds "
                         f"({'; '.join(f'{m} {k}-shot: {v}' for (m, k), v in seeds.items())}); comparisons pair by seed")
    return {"acc": acc, "seeds": seeds, "hashes": {k: [h[e] for e in range(len(h))] for k, h in hashes.items()},
            "methods": methods, "shots": shots}


def rebuild(results_dir: str | os.PathLike) -> tuple[dict[str, Any], list[str]]:
    """The table and comparisons of a benchmark folder recomputed from its files alone:
    results.json for what the table shows besides accuracies (target samples, steps, settings) and
    episodes.csv for every accuracy, interval and comparison (the interval settings results.json
    states, else the defaults).

    Returns:
        ``(result, differences)``: the rebuilt results.json dict and, for each number that differs
        from what results.json holds, one line naming it (empty when they agree exactly).

    Raises:
        CromaError: a missing or unreadable file, episodes that are not paired.
    """
    result, diffs, _ = rebuilt(results_dir)
    return result, diffs


def rebuilt(results_dir: str | os.PathLike) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """:func:`rebuild` and the folder's :func:`read_episodes` it was computed from (read once)."""
    from croma.errors import CromaError

    d = Path(results_dir)
    path = d / "results.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        rates = sorted(str(p) for p in d.glob("noise_*") if (p / "results.json").is_file())
        if (d / "noise_sweep.json").is_file() and rates:  # a --noise-sweep folder: one run per rate below it
            raise CromaError(f"{d} holds a noise sweep: report one rate's run at a time ({', '.join(rates[:3])}"
                             f"{', ...' if len(rates) > 3 else ''})") from None
        raise CromaError(f"{path}: not found (give the --out folder of a croma benchmark run)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CromaError(f"cannot read {path}: {exc}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("rows"), list):
        raise CromaError(f"{path}: not a croma benchmark results file (no 'rows')")
    ep = read_episodes(d / EPISODES_FILE)
    settings = saved.get("interval_settings")
    old_rows = {(r["method"], int(r["shots"])): r for r in saved["rows"]}
    rows = []
    for (m, k), per_seed in ep["acc"].items():
        base = dict(old_rows.get((m, k), {"method": m, "shots": k, "accuracy_std": 0.0, "repeats": None,
                                          "target_samples": "?", "target_labels": "?"}))
        base.update(row_statistics(per_seed, settings))
        rows.append(base)
    comparisons = compare_all(ep["acc"], ep["methods"], ep["shots"], settings)
    result = {**saved, "rows": rows, "comparisons": comparisons,
              "interval": saved.get("interval") or _interval_line(ep, settings)}
    diffs = []
    for r in rows:
        o = old_rows.get((r["method"], int(r["shots"])))
        for key in ("accuracy_mean", "accuracy_ci95_low", "accuracy_ci95_high"):
            if o is None or o.get(key) != r[key]:
                diffs.append(f"{r['method']} {r['shots']}-shot {key}: results.json {None if o is None else o.get(key)!r}, "
                             f"episodes.csv {r[key]!r}")
    old_c = {(c["baseline"], int(c["shots"])): c for c in saved.get("comparisons") or []}
    for c in comparisons:
        o = old_c.get((c["baseline"], c["shots"]))
        for key in ("mean_diff", "ci95_low", "ci95_high"):
            if o is None or o.get(key) != c[key]:
                diffs.append(f"croma - {c['baseline']} {c['shots']}-shot {key}: results.json "
                             f"{None if o is None else o.get(key)!r}, episodes.csv {c[key]!r}")
    return result, diffs, ep


def _interval_line(ep: dict[str, Any], settings: dict[str, Any] | None) -> str:
    from croma.stats import interval_text

    kw = _kw(settings)
    n_seeds = len(next(iter(ep["seeds"].values()), []))
    n_ep = len(next(iter(ep["hashes"].values()), []))
    return interval_text(n_seeds, n_ep, kw["resamples"], mode=kw["mode"], seed=kw["seed"])
