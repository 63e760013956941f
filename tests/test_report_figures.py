"""results.png and the noise-sweep plots draw the 95% interval the table prints (asymmetric where the
interval is), say so, and put x ticks at the shots that were run.

Every number below is a multiple of 1/4, exact in binary floating point, so the bar ends matplotlib
computes (mean - below, mean + above) equal the interval's bounds exactly.
"""

from matplotlib.container import ErrorbarContainer

from croma.report import accuracy_figure, noise_sweep_figure

# (method, shots) -> (mean, 95% interval low, high); repeats=1, so accuracy_std is 0, as on a real run
CELLS = {("croma", 1): (50.0, 45.25, 53.0), ("croma", 2): (60.5, 58.0, 61.75), ("croma", 5): (70.0, 66.5, 74.25),
         ("pretrain", 1): (40.0, 36.0, 43.5), ("pretrain", 2): (45.75, 44.0, 48.0), ("pretrain", 5): (52.0, 50.0, 52.5)}


def _result(noise: float = 0.0) -> dict:
    rows = [{"method": m, "shots": k, "accuracy_mean": mean, "accuracy_ci95_low": lo, "accuracy_ci95_high": hi,
             "accuracy_ci95": (hi - lo) / 2, "accuracy_std": 0.0, "repeats": 1, "target_samples": 0, "target_labels": 0}
            for (m, k), (mean, lo, hi) in CELLS.items()]
    return {"benchmark": "synthetic", "ways": 5, "loss": "cwcl", "label_noise": noise, "rows": rows}


def _bars(ax) -> dict[str, list[tuple[float, float, float]]]:
    """``{method: [(x, bar bottom, bar top), ...]}`` from the axes' error-bar containers."""
    out = {}
    for c in ax.containers:
        assert isinstance(c, ErrorbarContainer)
        _, _, barcols = c.lines
        out[c.get_label()] = [(float(s[0][0]), float(s[0][1]), float(s[1][1])) for s in barcols[0].get_segments()]
    return out


def test_accuracy_figure_bars_are_the_95_interval_and_ticks_are_the_shots():
    ax = accuracy_figure(_result()).axes[0]
    got = _bars(ax)
    for m in ("croma", "pretrain"):
        assert got[m] == [(float(k), CELLS[(m, k)][1], CELLS[(m, k)][2]) for k in (1, 2, 5)]
    assert [float(t) for t in ax.get_xticks()] == [1.0, 2.0, 5.0]  # no 1.5, 2.5, ... ticks
    assert "95% interval" in ax.get_xlabel()


def test_noise_sweep_bars_are_the_95_interval():
    ax = noise_sweep_figure([_result(0.0), _result(0.25)], 2).axes[0]
    assert _bars(ax)["croma"] == [(x, CELLS[("croma", 2)][1], CELLS[("croma", 2)][2]) for x in (0.0, 0.25)]
    assert "95% interval" in ax.get_xlabel()


def test_a_file_without_an_interval_draws_its_std_and_says_so():
    """Results older than the interval (no ``accuracy_ci95``): the std over repeats, as their table shows."""
    res = _result()
    for r in res["rows"]:
        for key in ("accuracy_ci95", "accuracy_ci95_low", "accuracy_ci95_high"):
            del r[key]
        r["accuracy_std"] = 1.5
    ax = accuracy_figure(res).axes[0]
    assert _bars(ax)["pretrain"] == [(float(k), CELLS[("pretrain", k)][0] - 1.5, CELLS[("pretrain", k)][0] + 1.5)
                                     for k in (1, 2, 5)]
    assert "std over repeats" in ax.get_xlabel() and "95%" not in ax.get_xlabel()
