"""Benchmark tables as text and Markdown: the Table-1-shaped accuracy table (:func:`format_table`),
croma's paired comparisons (:func:`format_comparisons`, :func:`markdown_comparisons`) and a noise
sweep (:func:`markdown_noise_sweep`). Used by ``croma benchmark``, ``croma report`` and
experiments/tools/readme_tables.py; re-exported by :mod:`croma.report`. Plain dicts in (the
``results.json`` schema, see :mod:`croma.report`); accuracies in percent.
"""

from __future__ import annotations

from typing import Any, Iterable


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
        f"label noise={result.get('label_noise')} | preset={result.get('preset')} | seed={_seeds(result.get('seed'))}"
    )
    if result.get("budget_steps"):
        title += f" | budget={result['budget_steps']} steps/method"
    out = [title, fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(l) for l in lines]
    pooled = result.get("splits") if isinstance(result.get("splits"), list) else None
    n = next((r.get("episodes") for r in rows if r.get("episodes")), None)
    seeds = result.get("train_seeds") or 1
    if with_ci and pooled:
        out.append(f"accuracy in % on unseen target classes, mean over {len(pooled)} class splits (--seed "
                   f"{', '.join(str(s.get('seed')) for s in pooled)}) x {seeds} training seed{'s' if seeds != 1 else ''} x "
                   f"{n} episodes ± half the 95% interval (three-level bootstrap: splits, seeds, then episodes)")
        if marks:
            out.append("+ / -: croma above / below this method, paired 95% interval (same splits, seeds and episodes) "
                       "excludes 0")
    elif with_ci and two_level:
        out.append(
            f"accuracy in % on unseen target classes, mean over {seeds} training seed{'s' if seeds != 1 else ''} x "
            f"{n} episodes ± half the 95% interval (two-level bootstrap: seeds, then episodes)"
        )
        if marks:
            out.append("+ / -: croma above / below this method, paired 95% interval (same seeds and episodes) excludes 0")
    elif with_ci:
        out.append(
            f"accuracy in % on unseen target classes, mean ± 95% interval over {n} episodes per cell"
            + (f" (each episode averaged over {seeds} training seeds)" if seeds > 1 else "")
        )
        if marks:
            out.append("+ / -: croma above / below this method, paired 95% interval over the same episodes excludes 0")
    else:
        out.append("accuracy in % on unseen target classes, mean ± std over repeats")
    if with_ci:
        out += _interval_caveats(result, rows, pooled=bool(pooled)) + _kept_start_lines(result)
    labelled = [m for m in methods if _uses_labels(next(r for r in rows if r["method"] == m))]
    if labelled:
        out.append(f"meta-trained with target labels of the meta-train classes (croma uses none): {', '.join(labelled)}")
    bc = (result.get("config") or {}).get("benchmark_config") or {}
    if bc.get("val_episodes") is not None or bc.get("val_halving"):  # a lighter meta-val choice than the preset's
        how = [f"{bc['val_episodes']} meta-val episodes per candidate"] if bc.get("val_episodes") is not None else []
        out.append("fine-tuning setting chosen on " + ", ".join(how + (["by successive halving"] if bc.get("val_halving")
                                                                         else [])) + " (--val-episodes / --val-halving)")
    return "\n".join(out)


def _interval_caveats(result: dict[str, Any], rows: list[dict], pooled: bool = False) -> list[str]:
    """What a cell's ± does not cover, said under the table where it matters: a zero-width interval
    (every episode scored the same, typically 100 %) and a meta-test split of few classes (the
    episodes then redraw the same classes and items; another class split is a larger change)."""
    out = []
    flat = [r for r in rows if r.get("accuracy_ci95") == 0 and r.get("episodes", 0) > 1]
    if flat:
        cells = ", ".join(f"{r['method']} {int(r['shots'])}-shot" for r in flat[:3]) + (", ..." if len(flat) > 3 else "")
        out.append(f"± 0.0 ({cells}): every episode of every seed scored the same, so resampling them shows no "
                   "spread; that is not certainty (more episodes, classes or queries could)")
    test = ((result.get("config") or {}).get("splits") or {}).get("meta_test")
    ways = result.get("ways")
    if not pooled and isinstance(test, list) and isinstance(ways, int) and 0 < len(test) < 3 * ways:
        out.append(f"meta-test has {len(test)} classes for {ways}-way episodes: the ± covers training seeds and episodes "
                   "drawn from these classes, not another choice of classes (rerun with other --seed values, which "
                   "draw other class splits, and pool them: croma report DIR1 DIR2 ...)")
    return out


def _kept_start_lines(result: dict[str, Any]) -> list[str]:
    """Methods whose training never beat their untrained start on meta-val (``best_iteration`` /
    ``best_step`` 0 in a seed's notes): their row measures the model before training."""
    kept: dict[str, tuple[int, int]] = {}
    for name, m in ((result.get("config") or {}).get("methods") or {}).items():
        seeds = [s.get("notes") or {} for s in (m or {}).get("seeds") or [] if isinstance(s, dict)]
        marks = [n.get("best_iteration", n.get("best_step")) for n in seeds if isinstance(n, dict)]
        marks = [b for b in marks if isinstance(b, int) and not isinstance(b, bool)]
        if marks and 0 in marks:
            kept[name] = (marks.count(0), len(marks))
    if not kept:
        return []
    every = [n for n, (z, t) in kept.items() if z == t]
    some = [f"{n} on {z} of {t} seeds" for n, (z, t) in kept.items() if z < t]
    parts = ([f"{', '.join(every)}: on every seed"] if every else []) + some
    return [f"meta-val kept the untrained start ({'; '.join(parts)}): no check during training beat it, so such a "
            "row measures the model before its training (a larger --budget-steps trains longer between checks)"]


def _seeds(seed: Any) -> str:
    return ",".join(map(str, seed)) if isinstance(seed, list) else str(seed)


def _uses_labels(row: dict) -> bool:
    v = row.get("target_labels")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


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
