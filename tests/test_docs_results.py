"""The results pages of the docs site: experiments/tools/docs_results.py renders results files
(benchmark results and meta-val tuning records) as Markdown tables, refills result blocks in
hand-written pages, and the checked-in pages are up to date with experiments/results/."""

from __future__ import annotations

import json

from conftest import load_tool


def _tool():
    return load_tool("docs_results")


def _bench_file() -> dict:
    row = lambda m, k, acc, ci: {"method": m, "shots": k, "accuracy_mean": acc, "accuracy_ci95": ci, "episodes": 600,
                                 "target_samples": 10, "target_labels": 0, "train_seconds": 1.25, "optimizer_steps": 300,
                                 "centroid_mean": acc - 1, "head_init": "zero", "finetune_steps": 25, "finetune": "all"}
    return {"benchmark": "toy", "loss": "clip", "ways": 5, "label_noise": 0.0, "preset": "quick", "seed": 0,
            "budget_steps": 300, "train_seeds": 1, "wall_seconds": 12.0,
            "rows": [row("pretrain", 1, 40.04, 1.06), row("pretrain", 5, 70.0, 0.9),
                     row("croma", 1, 50.0, 1.0), row("croma", 5, 69.0, 0.8)],
            "comparisons": [{"method": "croma", "baseline": "pretrain", "shots": 1, "mean_diff": 9.96,
                             "ci95_low": 9.0, "ci95_high": 10.9, "episodes": 600},
                            {"method": "croma", "baseline": "pretrain", "shots": 5, "mean_diff": -1.0,
                             "ci95_low": -1.5, "ci95_high": -0.5, "episodes": 600}],
            "config": {"benchmark_config": {"source": "text", "target": "image", "backbones": {"image": "resnet18"}}}}


def test_benchmark_file_renders_cells_marks_and_differences(tmp_path):
    tool = _tool()
    res = tmp_path / "results"
    res.mkdir()
    (res / "toy.json").write_text(json.dumps(_bench_file()))
    (res / "broken.json").write_text("{not json")
    pages = tool.render(res)
    text = pages["files-benchmarks.md"]
    assert "Source: `experiments/results/toy.json`" in text
    assert "Data **toy (text → image)**" in text and "`image=resnet18`" in text
    # mean ± interval to one decimal; croma above pretrain at 1 shot (+), below at 5 shots (−)
    assert "| `pretrain` | 10(0) | 40.0 ± 1.1 + | 70.0 ± 0.9 − | 1.2 | 300 |" in text
    assert "| `croma` | 10(0) | 50.0 ± 1.0 | 69.0 ± 0.8 | 1.2 | 300 |" in text
    assert "| `croma` − `pretrain` | +10.0 [9.0, 10.9] | −1.0 [−1.5, −0.5] |" in text
    assert "| `croma` | 49.0 · zero/25/all | 68.0 · zero/25/all |" in text
    assert "`broken.json`: not readable as JSON" in text
    assert pages["files-meta-val.md"].count("No tuning records.") == 1


def test_tuning_record_marks_the_best_trial(tmp_path):
    tool = _tool()
    res = tmp_path / "results"
    res.mkdir()
    trial = lambda hp, s: {"hp": hp, "meta_val": {"1": s - 10, "5": s + 10}, "score": s}
    (res / "tune.json").write_text(json.dumps({"benchmark": "toy", "score": "mean over k",
                                               "methods": {"croma": [trial({"loss": "nce"}, 80.0),
                                                                     trial({"loss": "clip"}, 81.5)]},
                                               "chosen": {"croma": {"loss": "clip"}}}))
    text = tool.render(res)["files-meta-val.md"]
    assert "| loss=nce | 70.0 | 90.0 | 80.00 |" in text
    assert "| loss=clip | 71.5 | 91.5 | **81.50** |" in text
    assert "- `croma`: loss=clip" in text


def test_blocks_are_refilled_and_bad_blocks_reported(tmp_path):
    tool = _tool()
    res = tmp_path / "results"
    res.mkdir()
    (res / "toy.json").write_text(json.dumps(_bench_file()))
    page = "intro\n<!-- results: toy.json table -->\nstale\n<!-- /results -->\nafter\n"
    new, problems = tool.fill(page, res)
    assert problems == [] and "stale" not in new and new.endswith("<!-- /results -->\nafter\n")
    assert "| `croma` | 10(0) | 50.0 ± 1.0 | 69.0 ± 0.8 | 1.2 | 300 |" in new and "Source:" not in new
    assert tool.fill(new, res)[0] == new  # idempotent: a second build rewrites nothing
    _, problems = tool.fill("<!-- results: missing.json -->\n<!-- /results -->\n", res)
    assert problems and "missing.json" in problems[0]


def test_checked_in_pages_are_up_to_date():
    """docs/results/ matches experiments/results/ (else: python experiments/tools/docs_results.py)."""
    assert _tool().main(["--check"]) == 0
