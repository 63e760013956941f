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

``accuracy_ci95`` is the 95% half-width over episodes; ``comparisons`` are paired over the same
episodes (accuracy points, :func:`croma.stats.paired_comparison`).

Accuracies are in percent.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

ROW_KEYS = ("method", "shots", "accuracy_mean", "accuracy_std", "repeats", "target_samples", "target_labels")


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
    if with_ci:
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
    return "\n".join(out)


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write results.json, results.csv and results.png into ``out_dir`` as one set: all three are
    rendered first, written to temporary files and only then moved into place, so a failure (a
    full disk, a plot that cannot be drawn) leaves none of the new files and any earlier set intact
    (:func:`episodes.cache.atomic_write_set`).

    Raises:
        OSError: naming the file that could not be written (e.g. ``cannot write .../results.png:
            no space left on device``).
    """
    out = Path(out_dir)
    paths = {"json": out / "results.json", "csv": out / "results.csv", "png": out / "results.png"}
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
    _write_set(data)
    return paths


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
    data = {out / "noise_sweep.json": (json.dumps({"runs": results}, indent=2) + "\n").encode()}
    for k in shots:
        data[out / f"noise_sweep_{k}shot.png"] = plot_noise_sweep(results, int(k))
    _write_set(data)  # all or none, like write_results
    return list(data)
