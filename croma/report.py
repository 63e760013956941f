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
     "task_sizes": {...}, "skipped_items": <items --skip-bad left out>, "config": {...}}

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

from croma.report_episodes import (  # noqa: F401  (re-exported)
    DIGITS,
    EPISODE_FIELDS,
    EPISODES_FILE,
    compare_all,
    episode_digest,
    episode_lines,
    episodes_csv,
    interval_settings,
    read_episodes,
    rebuild,
    rounded,
    row_statistics,
)
from croma.report_tables import (  # noqa: F401  (re-exported)
    _methods_in_order,
    comparison_cells,
    format_comparisons,
    format_table,
    markdown_comparisons,
    markdown_noise_sweep,
    markdown_table,
)

ROW_KEYS = ("method", "shots", "accuracy_mean", "accuracy_std", "repeats", "target_samples", "target_labels")
EPISODES_KEY = "episode_table"  # in a run_benchmark result (never in results.json): the episodes.csv lines


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
    ep_lines = result.get(EPISODES_KEY)
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
    if ep_lines is not None:  # per-episode accuracies with episode hashes, in the same set
        paths["episodes"] = out / EPISODES_FILE
        data[paths["episodes"]] = episodes_csv(ep_lines)
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


def _bars(rows: list[dict[str, Any]]) -> tuple[list[list[float]], str]:
    """Error bars of ``rows`` as the table's ± gives them: ``([below...], [above...])`` (matplotlib's
    asymmetric ``yerr``) and what they are. Rows with the 95% interval's bounds (``accuracy_ci95_low`` /
    ``accuracy_ci95_high``) give those; rows with its half-width alone (older files) give it both ways;
    files with no interval at all give ``accuracy_std`` (over repeats), as their table does."""
    if rows and all(r.get("accuracy_ci95") is not None for r in rows):
        below, above = [], []
        for r in rows:
            m = float(r["accuracy_mean"])
            lo, hi = r.get("accuracy_ci95_low"), r.get("accuracy_ci95_high")
            if lo is None or hi is None:
                lo, hi = m - float(r["accuracy_ci95"]), m + float(r["accuracy_ci95"])
            below.append(max(0.0, m - float(lo)))  # a mean rounded past a degenerate interval's bound: no bar
            above.append(max(0.0, float(hi) - m))
        return [below, above], "error bars: 95% interval"
    std = [float(r.get("accuracy_std") or 0.0) for r in rows]
    return [std, std], "error bars: std over repeats"


def accuracy_figure(result: dict[str, Any]):
    """:class:`matplotlib.figure.Figure`: accuracy against shots, one line per method, error bars
    from the 95% interval the table's ± gives (asymmetric where the interval is); x ticks at the shots.

    Args:
        result: what :func:`croma.benchmark.run_benchmark` returns (``rows`` with ``method``,
            ``shots``, ``accuracy_mean``, ``accuracy_ci95_low`` / ``accuracy_ci95_high``; files
            without an interval: ``accuracy_std``).
    """
    fig, ax = _new_figure()
    rows = result["rows"]
    what = _bars(rows)[1]
    for m in _methods_in_order(rows):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["shots"])
        ax.errorbar([r["shots"] for r in rs], [r["accuracy_mean"] for r in rs], yerr=_bars(rs)[0],
                    marker="o", capsize=3, label=m)
    ways = result.get("ways")
    if ways:
        ax.axhline(100.0 / ways, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(sorted({int(r["shots"]) for r in rows}))  # the k that were run, not 1.5, 2.5, ...
    ax.set_xlabel(f"shots (k); {what}")
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
    per method (paper Fig. 7), error bars as :func:`accuracy_figure`'s. ``results``: what
    :func:`croma.benchmark.run_noise_sweep` returns."""
    fig, ax = _new_figure()
    methods = _methods_in_order(r for res in results for r in res["rows"])
    for m in methods:
        xs, rs = [], []
        for res in sorted(results, key=lambda r: r["label_noise"]):
            for r in res["rows"]:
                if r["method"] == m and int(r["shots"]) == shots:
                    xs.append(res["label_noise"])
                    rs.append(r)
        if xs:
            ax.errorbar(xs, [r["accuracy_mean"] for r in rs], yerr=_bars(rs)[0], marker="o", capsize=3, label=m)
    ax.set_xlabel(f"symmetric label-noise rate on target labels; {_bars([r for res in results for r in res['rows']])[1]}")
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


def sweep_shots(results: list[dict[str, Any]], shots: Iterable[int]) -> list[int]:
    """The k of ``shots`` that a noise sweep's runs meta-tested (a k the data could not serve was dropped)."""
    ran = {int(r["shots"]) for res in results for r in res.get("rows", [])}
    return [int(k) for k in shots if int(k) in ran]


def write_noise_sweep(results: list[dict[str, Any]], out_dir: str | os.PathLike, shots: Iterable[int]) -> list[Path]:
    """Write ``noise_sweep.json`` and ``noise_sweep_<k>shot.png`` for each k the runs meta-tested."""
    out = Path(out_dir)
    runs = [results_json_dict(r) for r in results]
    data = {out / "noise_sweep.json": (json.dumps({"runs": runs}, indent=2) + "\n").encode()}
    for k in sweep_shots(results, shots):
        data[out / f"noise_sweep_{k}shot.png"] = plot_noise_sweep(results, int(k))
    _write_set(data)  # all or none, like write_results
    return list(data)


def machine_info() -> dict[str, Any]:
    """The machine a run's numbers came from: CPU model, the vector instructions torch's kernels use
    (``cpu_capability``; with ``MKL_ENABLE_INSTRUCTIONS`` / ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` / ... when
    set, which change them and so the rounding), thread counts, torch, Python, platform."""
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
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_env": {k: os.environ[k] for k in ("MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                  "DNNL_MAX_CPU_ISA", "MKL_CBWR")
                       if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
