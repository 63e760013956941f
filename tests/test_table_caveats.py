"""The table says what its ± does not cover: a zero-width interval and a meta-test of few classes."""

from croma.report_tables import format_table


def _result(test_classes, ci95=(1.2, 0.0)):
    rows = [{"method": m, "shots": 5, "accuracy_mean": mean, "accuracy_ci95": c, "episodes": 20,
             "target_samples": 80, "target_labels": 0, "train_seconds": 0.0, "optimizer_steps": 0}
            for m, mean, c in (("croma", 98.0, ci95[0]), ("pretrain", 100.0, ci95[1]))]
    return {"benchmark": "manifest", "ways": 5, "rows": rows, "train_seeds": 1, "interval": "two-level",
            "config": {"splits": {"meta_train": ["a"] * 20, "meta_val": ["b"] * 5, "meta_test": test_classes}}}


def test_a_zero_width_interval_is_named_and_not_called_certainty():
    table = format_table(_result([f"c{i}" for i in range(20)]))
    assert "100.0 ± 0.0" in table
    line = next(l for l in table.splitlines() if l.startswith("± 0.0"))
    assert "pretrain 5-shot" in line and "croma" not in line and "not certainty" in line
    assert "meta-test has" not in table  # 20 classes for 5-way: not few


def test_a_meta_test_of_few_classes_says_the_interval_is_over_those_classes():
    table = format_table(_result([f"c{i}" for i in range(5)], ci95=(1.2, 0.4)))
    assert "meta-test has 5 classes for 5-way episodes" in table and "--seed" in table
    assert "± 0.0" not in table


def test_croma_evaluate_names_a_zero_width_interval_too():
    from croma.evaluate import format_results

    rows = [{"shots": k, "accuracy_mean": m, "accuracy_std": 0.0, "accuracy_ci95": c, "episodes": 40}
            for k, m, c in ((1, 81.5, 2.1), (5, 100.0, 0.0))]
    text = format_results({"split": "meta_test", "ways": 5, "tasks": 8, "repeats": 5, "queries": 5,
                           "head_init": "meta", "finetune": "all", "rows": rows})
    assert "100.00 ±  0.00" in text
    assert "± 0.00 (k=5): every episode scored the same" in text and "k=1" not in text


def test_a_method_that_kept_its_untrained_start_is_named():
    """A method whose meta-val checks never beat its untrained start (best_iteration / best_step 0
    in a seed's notes) is named under the table, with how many seeds; one that trained is not."""
    result = _result([f"c{i}" for i in range(20)], ci95=(1.2, 0.4))
    result["config"]["methods"] = {
        "croma": {"seeds": [{"notes": {"best_iteration": 0}}, {"notes": {"best_iteration": 0}}]},
        "shared": {"seeds": [{"notes": {"best_step": 0}}, {"notes": {"best_step": 500}}]},
        "oracle": {"seeds": [{"notes": {"best_iteration": 7}}, {"notes": {"best_iteration": 3}}]},
        "pretrain": {"seeds": [{"notes": {}}, {"notes": {}}]},
    }
    line = next(l for l in format_table(result).splitlines() if l.startswith("meta-val kept the untrained start"))
    assert "croma: on every seed" in line and "shared on 1 of 2 seeds" in line
    assert "oracle" not in line and "pretrain" not in line
    del result["config"]["methods"]
    assert "untrained start" not in format_table(result)
