"""Benchmark results: the Table-1-shaped text table, results.json / .csv / .png, noise plots.

Everything here takes plain dicts (the ``results.json`` schema) so results can be re-rendered
from a saved file.

``results.json``::

    {"benchmark", "loss", "ways", "label_noise", "preset", "seed", "wall_seconds", "budget_steps",
     "train_seeds",
     "rows": [{"method", "shots", "accuracy_mean", "accuracy_std", "repeats",
               "accuracy_ci95", "episodes", "accuracy_seed_std", "examples",
               "target_samples", "target_labels", ...}],
     "comparisons": [{"method", "baseline", "shots", "mean_diff", "ci95_low", "ci95_high", "episodes"}],
     "config": {...}}

``accuracy_ci95`` is half the width of the row's 95% interval (``accuracy_ci95_low`` /
``accuracy_ci95_high``: its bounds); ``comparisons`` are paired over the same seeds and episodes
(accuracy points). Results written by ``croma benchmark`` since the two-level interval state it in
``"interval"`` (:func:`croma.stats.interval_text`, settings in ``"interval_settings"``): a two-level
bootstrap over training seeds and episodes (:func:`croma.stats.two_level_interval`,
:func:`croma.stats.paired_two_level`); rows also keep ``accuracy_per_seed``. Older files hold the
normal interval over episodes (:func:`croma.stats.mean_ci95`). ``"machine"``: CPU model, threads,
torch, Python and platform of the run.

``episodes.csv`` (beside results.json, written in the same set): one line per method, k, training
seed and meta-test episode: ``method, shots, seed, episode, hash, accuracy``. ``hash`` is a digest
of the episode's support / query rows and labels (:func:`episode_digest`), the same for every
method and seed (the pairing, checkable); ``accuracy`` is in percent, rounded to 1e-6 (every
statistic is computed from these rounded values, so :func:`rebuild` gives the same numbers).

Accuracies are in percent.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

ROW_KEYS = ("method", "shots", "accuracy_mean", "accuracy_std", "repeats", "target_samples", "target_labels")
EPISODES_FILE = "episodes.csv"
EPISODE_FIELDS = ("method", "shots", "seed", "episode", "hash", "accuracy")
EPISODES_KEY = "episode_table"  # in a run_benchmark result (never in results.json): the episodes.csv lines
DIGITS = 6  # per-episode accuracies are rounded to 1e-6 points before any statistic


def _methods_in_order(rows: Iterable[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["method"] not in seen:
            seen.append(r["method"])
    return seen


def format_table(result: dict[str, Any]) -> str:
    """Render rows as the paper's Table 1: method | #target samples(labels) | k-shot columns.

    Cells are ``mean ± 95% half-width`` over episodes (``mean ± std over repeats`` for results
    written before intervals existed). With a ``comparisons`` list (croma against each baseline,
    paired over identical episodes), a baseline's cell is marked ``+`` when croma is above it with
    a paired interval excluding 0, and ``-`` when croma is below it likewise.
    """
    rows = result["rows"]
    shots = sorted({int(r["shots"]) for r in rows})
    methods = _methods_in_order(rows)
    by = {(r["method"], int(r["shots"])): r for r in rows}
    marks: dict[tuple[str, int], str] = {}
    for c in result.get("comparisons") or []:
        if c["ci95_low"] > 0:
            marks[(c["baseline"], int(c["shots"]))] = "+"
        elif c["ci95_high"] < 0:
            marks[(c["baseline"], int(c["shots"]))] = "-"
    with_ci = any("accuracy_ci95" in r for r in rows)
    two_level = bool(result.get("interval"))
    header = ["method", "#target samples(labels)"] + [f"{k}-shot" for k in shots] + ["train s", "opt steps"]
    lines = []
    for m in methods:
        first = next(r for r in rows if r["method"] == m)
        cells = [m, f"{first['target_samples']}({first['target_labels']})"]
        for k in shots:
            r = by.get((m, k))
            if r is None:
                cells.append("-")
                continue
            spread = r["accuracy_ci95"] if with_ci else r["accuracy_std"]
            cells.append(f"{r['accuracy_mean']:.1f} ± {spread:.1f}{marks.get((m, k), ' ') if marks else ''}")
        cells.append(f"{first.get('train_seconds', 0.0):.1f}")
        cells.append(str(first.get("optimizer_steps", "-")))
        lines.append(cells)
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    title = (
        f"{result.get('benchmark')} | {result.get('ways')}-way | loss={result.get('loss')} | "
        f"label noise={result.get('label_noise')} | preset={result.get('preset')} | seed={result.get('seed')}"
    )
    if result.get("budget_steps"):
        title += f" | budget={result['budget_steps']} steps/method"
    out = [title, fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(l) for l in lines]
    if with_ci and two_level:
        n = next((r.get("episodes") for r in rows if r.get("episodes")), None)
        seeds = result.get("train_seeds") or 1
        out.append(
            f"accuracy in % on unseen target classes, mean over {seeds} training seed{'s' if seeds != 1 else ''} x "
            f"{n} episodes ± half the 95% interval (two-level bootstrap: seeds, then episodes)"
        )
        if marks:
            out.append("+ / -: croma above / below this method, paired 95% interval (same seeds and episodes) excludes 0")
    elif with_ci:
        n = next((r.get("episodes") for r in rows if r.get("episodes")), None)
        seeds = result.get("train_seeds") or 1
        out.append(
            f"accuracy in % on unseen target classes, mean ± 95% interval over {n} episodes per cell"
            + (f" (each episode averaged over {seeds} training seeds)" if seeds > 1 else "")
        )
        if marks:
            out.append("+ / -: croma above / below this method, paired 95% interval over the same episodes excludes 0")
    else:
        out.append("accuracy in % on unseen target classes, mean ± std over repeats")
    labelled = [m for m in methods if _uses_labels(next(r for r in rows if r["method"] == m))]
    if labelled:
        out.append(f"meta-trained with target labels of the meta-train classes (croma uses none): {', '.join(labelled)}")
    return "\n".join(out)


def _uses_labels(row: dict) -> bool:
    v = row.get("target_labels")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write results.json, results.csv, results.png (and episodes.csv, when ``result`` carries
    per-episode lines under :data:`EPISODES_KEY`) into ``out_dir`` as one set: all of them are
    rendered first, written to temporary files and only then moved into place, so a failure (a
    full disk, a plot that cannot be drawn) leaves none of the new files and any earlier set intact
    (:func:`episodes.cache.atomic_write_set`).

    Raises:
        OSError: naming the file that could not be written (e.g. ``cannot write .../results.png:
            no space left on device``).
    """
    out = Path(out_dir)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "png": out / "results.png"}
    episode_lines = result.get(EPISODES_KEY)
    result = results_json_dict(result)
    extra = sorted({k for r in result["rows"] for k in r} - set(ROW_KEYS))
    keys = list(ROW_KEYS) + extra
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in result["rows"]:
        w.writerow(r)
    data = {
        paths["json"]: (json.dumps(result, indent=2, sort_keys=False) + "\n").encode(),
        paths["csv"]: buf.getvalue().encode(),
        paths["png"]: plot_accuracy_vs_shots(result),
    }
    if episode_lines is not None:  # per-episode accuracies with episode hashes, in the same set
        paths["episodes"] = out / EPISODES_FILE
        data[paths["episodes"]] = episodes_csv(episode_lines)
    _write_set(data)
    return paths


def results_json_dict(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as results.json holds it: without the per-episode lines (those go to episodes.csv)."""
    return {k: v for k, v in result.items() if k != EPISODES_KEY}


def _write_set(data: dict[Path, bytes]) -> None:
    """Every ``path: bytes`` of ``data``, all or none (:func:`episodes.cache.atomic_write_set`)."""
    from episodes.cache import atomic_write_set

    atomic_write_set({path: (lambda fh, b=blob: fh.write(b)) for path, blob in data.items()})


def _new_figure():
    """A figure that belongs to nobody: matplotlib's object API, no pyplot, no global backend.

    Creating and saving it neither selects a backend nor registers the figure with pyplot, so
    a notebook's backend and its open figures are left alone.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    return fig, fig.add_subplot()


def figure_png(fig) -> bytes:
    """PNG bytes of a :class:`matplotlib.figure.Figure` (rendered with the Agg canvas)."""
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def accuracy_figure(result: dict[str, Any]):
    """:class:`matplotlib.figure.Figure`: accuracy against shots, one line per method, std error bars.

    Args:
        result: what :func:`croma.benchmark.run_benchmark` returns (``rows`` with ``method``,
            ``shots``, ``accuracy_mean``, ``accuracy_std``).
    """
    fig, ax = _new_figure()
    rows = result["rows"]
    for m in _methods_in_order(rows):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["shots"])
        ax.errorbar(
            [r["shots"] for r in rs], [r["accuracy_mean"] for r in rs], yerr=[r["accuracy_std"] for r in rs],
            marker="o", capsize=3, label=m,
        )
    ways = result.get("ways")
    if ways:
        ax.axhline(100.0 / ways, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("shots (k)")
    ax.set_ylabel("accuracy on unseen target classes (%)")
    ax.set_title(f"{result.get('benchmark')}: {ways}-way, loss={result.get('loss')}, noise={result.get('label_noise')}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_accuracy_vs_shots(result: dict[str, Any]) -> bytes:
    """PNG bytes of :func:`accuracy_figure`."""
    return figure_png(accuracy_figure(result))


def noise_sweep_figure(results: list[dict[str, Any]], shots: int):
    """:class:`matplotlib.figure.Figure`: accuracy against label-noise rate at ``shots``, one line
    per method (paper Fig. 7). ``results``: what :func:`croma.benchmark.run_noise_sweep` returns."""
    fig, ax = _new_figure()
    methods = _methods_in_order(r for res in results for r in res["rows"])
    for m in methods:
        xs, ys, es = [], [], []
        for res in sorted(results, key=lambda r: r["label_noise"]):
            for r in res["rows"]:
                if r["method"] == m and int(r["shots"]) == shots:
                    xs.append(res["label_noise"])
                    ys.append(r["accuracy_mean"])
                    es.append(r["accuracy_std"])
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
    ax.set_xlabel("symmetric label-noise rate on target labels")
    ax.set_ylabel(f"{shots}-shot accuracy (%)")
    ax.set_title(f"{results[0].get('benchmark')}: robustness to label noise")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_noise_sweep(results: list[dict[str, Any]], shots: int) -> bytes:
    """PNG bytes of :func:`noise_sweep_figure`."""
    return figure_png(noise_sweep_figure(results, shots))


def figures(result: dict[str, Any] | list[dict[str, Any]], shots: Iterable[int] | None = None) -> dict[str, Any]:
    """The benchmark's plots as figure objects, for a notebook or a caller's own saving.

    Args:
        result: a :func:`croma.benchmark.run_benchmark` result, or the list a noise sweep returns.
        shots: the k of the noise-sweep plots (default: every k in the results).

    Returns:
        ``{"results": Figure}`` for one result; ``{"noise_sweep_<k>shot": Figure, ...}`` for a
        sweep (named as the PNG files the benchmark writes). Show one in a notebook
        with ``display(fig)``; nothing is registered with pyplot.
    """
    if isinstance(result, dict):
        return {"results": accuracy_figure(result)}
    if shots is None:
        shots = sorted({int(r["shots"]) for res in result for r in res["rows"]})
    return {f"noise_sweep_{k}shot": noise_sweep_figure(result, int(k)) for k in shots}


def write_noise_sweep(results: list[dict[str, Any]], out_dir: str | os.PathLike, shots: Iterable[int]) -> list[Path]:
    """Write ``noise_sweep.json`` and ``noise_sweep_<k>shot.png`` for each k."""
    out = Path(out_dir)
    runs = [results_json_dict(r) for r in results]
    data = {out / "noise_sweep.json": (json.dumps({"runs": runs}, indent=2) + "\n").encode()}
    for k in shots:
        data[out / f"noise_sweep_{k}shot.png"] = plot_noise_sweep(results, int(k))
    _write_set(data)  # all or none, like write_results
    return list(data)


# ---------------------------------------------------------------------------------------------
# per-episode accuracies, the two-level statistics, and rebuilding a table from the files


def machine_info() -> dict[str, Any]:
    """The machine a run's numbers came from: CPU model, thread counts, torch, Python, platform."""
    import platform

    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


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
    from croma.errors import CromaError

    d = Path(results_dir)
    path = d / "results.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
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
    return result, diffs


def _interval_line(ep: dict[str, Any], settings: dict[str, Any] | None) -> str:
    from croma.stats import interval_text

    kw = _kw(settings)
    n_seeds = len(next(iter(ep["seeds"].values()), []))
    n_ep = len(next(iter(ep["hashes"].values()), []))
    return interval_text(n_seeds, n_ep, kw["resamples"], mode=kw["mode"], seed=kw["seed"])


def _signed(v: float) -> str:
    return f"{v:+.1f}".replace("-", "\u2212")


def _plain_num(v: float) -> str:
    return f"{v:.1f}".replace("-", "\u2212")


def comparison_cells(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparisons as a grid: header ``["croma −", "1-shot", ...]`` and one line per baseline
    with cells ``+13.6 [12.7, 14.5]`` (mean difference [95% interval], accuracy points)."""
    comps = result.get("comparisons") or []
    shots = sorted({int(c["shots"]) for c in comps})
    baselines = _methods_in_order({"method": c["baseline"]} for c in comps)
    by = {(c["baseline"], int(c["shots"])): c for c in comps}
    method = comps[0]["method"] if comps else "croma"
    header = [f"{method} \u2212"] + [f"{k}-shot" for k in shots]
    lines = []
    for b in baselines:
        cells = [b]
        for k in shots:
            c = by.get((b, k))
            cells.append("-" if c is None else
                         f"{_signed(c['mean_diff'])} [{_plain_num(c['ci95_low'])}, {_plain_num(c['ci95_high'])}]")
        lines.append(cells)
    return header, lines


def format_comparisons(result: dict[str, Any]) -> str:
    """The comparisons as an aligned text table (empty string when there are none)."""
    header, lines = comparison_cells(result)
    if not lines:
        return ""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    out = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines]
    if result.get("interval"):
        out.append(f"accuracy points, paired 95% interval: {result['interval']}")
    return "\n".join(out)


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    """A GitHub Markdown table (``|`` in cells escaped)."""
    cell = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def markdown_comparisons(result: dict[str, Any]) -> str:
    """The comparisons as a Markdown table (the README's "CROMA −" table)."""
    return markdown_table(*comparison_cells(result))


def markdown_noise_sweep(results: list[dict[str, Any]]) -> str:
    """A noise sweep (``noise_sweep.json``'s ``runs``) as a Markdown table: one line per method and
    k, one column per noise rate, cells ``mean ± half interval``."""
    runs = sorted(results, key=lambda r: r["label_noise"])
    methods = _methods_in_order(r for res in runs for r in res["rows"])
    shots = sorted({int(r["shots"]) for res in runs for r in res["rows"]})
    header = ["method", "shots"] + [f"noise {runs[0]['label_noise']:g}"] + [f"{r['label_noise']:g}" for r in runs[1:]]
    lines = []
    for k in shots:
        for m in methods:
            cells = [m, str(k)]
            for res in runs:
                r = next((x for x in res["rows"] if x["method"] == m and int(x["shots"]) == k), None)
                spread = None if r is None else r.get("accuracy_ci95", r.get("accuracy_std"))
                cells.append("-" if r is None else f"{r['accuracy_mean']:.1f} ± {spread:.1f}")
            lines.append(cells)
    return markdown_table(header, lines)
