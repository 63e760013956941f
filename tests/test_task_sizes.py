"""Task sizes that fit the data (croma.task_sizes): the rule against hand-computed cases, and small
data sets (15 classes x 6 items) running croma benchmark / croma train at their default 5-way."""

import json
import sys
from pathlib import Path

import pytest
import torch

from croma.errors import CromaError
from croma.task_sizes import capacity, fit_task_sizes

torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent


def _fit(counts, **kw):
    base = dict(ways=5, shots=5, queries=5)
    base.update(kw)
    return fit_task_sizes(counts, **base)


# ---------------------------------------------------------------- the rule, by hand
def test_capacity_is_the_ways_th_largest_count():
    assert capacity([10, 2, 10, 10, 2, 10], 5) == 2  # 5 classes with >= 2 items, only 4 with >= 3
    assert capacity([9, 9, 9, 9], 5) == 0  # fewer classes than ways
    assert capacity([4] * 5, 5) == 4


def test_data_that_fits_is_left_alone():
    s = _fit({"source_cls": [10] * 5, "meta_val": [15] * 5, "meta_test": [20] * 5}, align_batch=32, align_pairs=40,
             eval_shots=[1, 5], eval_queries=5, test_shots=[1, 5, 10], test_queries=5, val_serves_test=True)
    assert not s.changed and s.dropped == [] and s.reasons == []
    assert (s.shots, s.queries, s.align_batch, s.eval_shots, s.eval_queries, s.test_shots, s.test_queries) == (
        5, 5, 32, [1, 5], 5, [1, 5, 10], 5)


def test_meta_training_lowers_queries_first_then_shots_down_to_one():
    # 7 items in 5 classes: 5 shots kept, queries 5 -> 2
    s = _fit({"source_cls": [7, 7, 7, 7, 7, 30]})
    assert (s.shots, s.queries) == (5, 2) and s.changed
    # 3 items: queries down to 0, then shots 5 -> 3 (the loss uses support and query items alike)
    s = _fit({"source_cls": [3] * 5})
    assert (s.shots, s.queries) == (3, 0)
    assert s.reasons == ["only 0 of 5 source-train classes have 4 classification items (half of a class's "
                         "alignable source items are kept for alignment)"]
    # the floor: one item per class
    assert (lambda t: (t.shots, t.queries))(_fit({"source_cls": [1, 1, 1, 1, 1]})) == (1, 0)
    # the tightest family counts (the oracle's target tasks beside croma's source tasks)
    s = _fit({"source_cls": [9] * 5, "target_cls": [4, 4, 4, 4, 4, 2]})
    assert (s.shots, s.queries) == (4, 0) and "meta-train classes" in s.reasons[0]
    # asked queries 0: shots go down
    assert _fit({"source_cls": [3] * 5}, queries=0).shots == 3


def test_nothing_fits_at_the_floor_is_an_error_with_the_numbers():
    with pytest.raises(CromaError, match=r"source classification tasks .*only 4 of 6 classes have an item "
                                         r"\(the largest: 3, 3, 2, 2, 0\)"):
        _fit({"source_cls": [3, 3, 2, 2, 0, 0]})
    with pytest.raises(CromaError, match=r"meta-val episodes .*1-shot 1-query: only 3 of 5 meta-val classes have "
                                         r"2 items \(the largest: 9, 9, 9, 1, 1\)"):
        _fit({"meta_val": [9, 9, 9, 1, 1]}, eval_shots=[1], eval_queries=1)
    with pytest.raises(CromaError, match=r"meta-val episodes .*the largest: 9, 9 \(only 2 classes\)"):
        _fit({"meta_val": [9, 9]}, eval_shots=[1], eval_queries=1)
    with pytest.raises(CromaError, match=r"alignment tasks need >= 2 pairs.*1 available"):
        _fit({}, align_batch=8, align_pairs=1)


def test_alignment_batch_is_lowered_to_the_pairs_available():
    s = _fit({}, align_batch=32, align_pairs=15)
    assert s.align_batch == 15 and s.reasons == ["15 alignment pairs in all"]
    assert _fit({}, align_batch=32, align_pairs=None).align_batch == 32  # weak / multi-way: capped by the sampler


def test_meta_val_lowers_queries_then_drops_shots_never_below_one():
    mv = {"meta_val": [8] * 5}
    s = _fit(mv, eval_shots=[1, 5], eval_queries=5)
    assert (s.eval_shots, s.eval_queries) == ([1, 5], 3)  # 5 + 3 = 8 items
    s = _fit({"meta_val": [4] * 5}, eval_shots=[1, 5], eval_queries=5)
    assert (s.eval_shots, s.eval_queries) == ([1], 1)
    assert s.dropped == [{"split": "meta_val", "k": 5, "why": "only 0 of 5 meta-val classes have 6 items"}]
    s = _fit({"meta_val": [3] * 5}, eval_shots=[5, 10], eval_queries=5)  # none servable: the largest k that is
    assert (s.eval_shots, s.eval_queries) == ([2], 1) and "k=2 instead" in s.line()


def test_meta_test_k_is_never_lowered_only_dropped_with_the_reason():
    s = _fit({"meta_test": [6] * 5}, test_shots=[1, 5, 10], test_queries=5)
    assert (s.test_shots, s.test_queries) == ([1, 5], 1)  # one query count for every kept k
    assert s.dropped == [{"split": "meta_test", "k": 10, "why": "only 0 of 5 meta-test classes have 11 items"}]
    s = _fit({"meta_test": [8, 8, 8, 8, 8, 20]}, test_shots=[1, 5], test_queries=5)
    assert (s.test_shots, s.test_queries) == ([1, 5], 3)
    # croma benchmark chooses each k's fine-tuning on meta-val: a k meta-val cannot serve is dropped too
    s = _fit({"meta_test": [20] * 5, "meta_val": [6] * 5}, test_shots=[1, 5, 10], test_queries=5,
             val_serves_test=True)
    assert s.test_shots == [1, 5] and s.test_queries == 1 and "meta-val classes" in s.dropped[0]["why"]
    with pytest.raises(CromaError, match=r"no meta-test k of 5,10 can be served.*meta-test classes: 5, 5, 5, 5, 5;"):
        _fit({"meta_test": [5] * 5}, test_shots=[5, 10], test_queries=5)


def test_strict_changes_nothing_and_raises_nothing():
    s = _fit({"source_cls": [0] * 5, "meta_test": [1] * 5}, test_shots=[10], test_queries=5, strict=True)
    assert not s.changed and (s.shots, s.queries, s.test_shots) == (5, 5, [10]) and s.strict


def test_record_is_plain_json_and_the_line_says_what_was_asked():
    s = _fit({"source_cls": [3] * 5, "meta_val": [6] * 5, "meta_test": [6] * 5}, align_batch=32, align_pairs=15,
             eval_shots=[1, 5], eval_queries=5, test_shots=[1, 5, 10], test_queries=5, val_serves_test=True)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["changed"] and d["requested"]["meta_train"] == {"ways": 5, "shots": 5, "queries": 5, "align_batch": 32}
    assert d["used"] == {"meta_train": {"ways": 5, "shots": 3, "queries": 0, "align_batch": 15},
                         "meta_val": {"shots": [1, 5], "queries": 1}, "meta_test": {"shots": [1, 5], "queries": 1}}
    assert d["capacity"] == {"source_cls": 3, "meta_val": 6, "meta_test": 6, "align_pairs": 15}
    line = s.line()
    assert "\n" not in line and line.startswith("task sizes: meta-train 5-way 3-shot 0-query, 15 pairs")
    assert "(asked 5-shot 5-query, 32 pairs:" in line and "meta-val shots 1,5 with 1 query (asked 5)" in line
    assert "meta-test k=1,5 with 1 query (asked 5; k=10 dropped: only 0 of 5 meta-test classes have 11 items)" in line


# ---------------------------------------------------------------- the Python API
def _small_bench():
    from episodes.datasets.synthetic import make_synthetic_benchmark

    return make_synthetic_benchmark(num_classes=15, per_class=6, source_dim=6, target_dim=5, latent_dim=3, seed=0,
                                    split_fractions=(1 / 3, 1 / 3, 1 / 3))


def _cfg(**kw):
    from croma.config import TrainConfig

    base = dict(benchmark="synthetic", iterations=1, meta_batch=2, inner_steps=1, inner_optimizer="sgd",
                inner_lr=0.05, eval_every=1, eval_tasks=2, eval_shots=[1, 5], checkpoint_every=0,
                model={"embed_dim": 8, "hidden": 8}, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_runs_on_a_copy_with_the_fitted_sizes():
    from croma.fit import CromaTrainer

    bench = _small_bench()
    counts = {c: int((bench.data[bench.source].labels[bench.classify_source_rows] == c).sum())
              for c in bench.splits["source_train"]}
    assert len(counts) >= 5 and max(counts.values()) < 10  # 5-shot 5-query cannot be filled
    cfg = _cfg()
    trainer = CromaTrainer(cfg, bench)
    assert (cfg.shots, cfg.queries, cfg.eval_queries) == (5, 5, 5)  # the caller's config is not changed
    assert trainer.cfg is not cfg and trainer.cfg.shots + trainer.cfg.queries <= max(counts.values())
    assert trainer.checkpointer.cfg is trainer.cfg  # what checkpoints store
    info = bench.info["task_sizes"]
    assert info["used"]["meta_train"]["shots"] == trainer.cfg.shots and info["requested"]["meta_train"]["shots"] == 5
    with pytest.raises(Exception, match="lower --align-batch to at most 15"):  # as before this module
        CromaTrainer(_cfg(strict_sizes=True), bench)


def test_trainer_keeps_the_callers_config_when_the_data_fits(bench):
    from croma.fit import CromaTrainer

    cfg = _cfg(ways=3, shots=2, queries=2, eval_shots=[1, 2], eval_queries=2)
    trainer = CromaTrainer(cfg, bench)
    assert trainer.cfg is cfg and not trainer.task_sizes.changed


# ---------------------------------------------------------------- the commands, on 15 classes x 6 items
@pytest.fixture
def small_manifest(tmp_path, monkeypatch):
    sys.path.insert(0, str(HERE))
    import fixtures_layouts as F

    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    rows = F.image_text_rows(tmp_path, classes=15, per=6)
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return man


def test_benchmark_runs_at_its_default_5_way_and_records_the_sizes(run_cli, small_manifest, tmp_path, monkeypatch):
    from croma.benchmark_config import PRESETS

    quick = PRESETS["quick"]  # a tiny meta-val budget (the sizes do not depend on it)
    monkeypatch.setitem(quick, "knobs", {**quick["knobs"], "val_episodes": 2, "val_checks": 1, "finetune_grid": [0, 1]})
    monkeypatch.setitem(quick, "train", {**quick["train"], "eval_tasks": 2, "meta_batch": 2, "inner_steps": 1,
                                         "model": {"embed_dim": 8, "hidden": 8}})
    out = tmp_path / "out"
    rc, so, err = run_cli(["benchmark", "manifest", "--manifest", str(small_manifest), "--source", "text", "--target",
                           "image", "--methods", "croma", "--budget-steps", "2", "--eval-tasks", "2", "--repeats", "1",
                           "--finetune-modes", "head", "--device", "cpu", "--out", str(out)])
    assert rc == 0, err
    lines = [x for x in so.splitlines() if x.startswith("task sizes:")]
    assert len(lines) == 1 and "meta-train 5-way 3-shot 0-query, 15 pairs per alignment task" in lines[0]
    assert "k=10 dropped: only 0 of 5 meta-test classes have 11 items" in lines[0]
    res = json.loads((out / "results.json").read_text())
    assert res["task_sizes"]["used"]["meta_test"] == {"shots": [1, 5], "queries": 1}
    assert res["task_sizes"]["requested"]["meta_test"] == {"shots": [1, 5, 10], "queries": 5}
    assert sorted(r["shots"] for r in res["rows"]) == [1, 5]
    outer, ev = res["config"]["train"]["outer"], res["config"]["train"]["eval"]
    assert (outer["shots"], outer["queries"], outer["align_batch"], ev["queries"]) == (3, 0, 15, 1)
    assert res["config"]["benchmark_config"]["shots"] == [1, 5, 10]  # what was asked, to rerun it


def test_train_runs_at_its_default_5_way_and_the_checkpoint_holds_the_sizes(run_cli, small_manifest, tmp_path):
    from croma.checkpoint import load_checkpoint

    argv = ["train", "manifest", "--manifest", str(small_manifest), "--source", "text", "--target", "image",
            "--features", "compact", "--iterations", "1", "--meta-batch", "2", "--inner-steps", "1", "--eval-every",
            "1", "--eval-tasks", "2", "--embed-dim", "8", "--hidden", "8", "--device", "cpu"]
    rc, so, err = run_cli(argv + ["--checkpoint-dir", str(tmp_path / "run")])
    assert rc == 0, err
    lines = [x for x in err.splitlines() if x.startswith("task sizes:")]
    assert len(lines) == 1 and "meta-train 5-way 3-shot 0-query, 15 pairs per alignment task" in lines[0]
    assert "meta-val shots 5 with 1 query (asked 5)" in lines[0]
    cfg = load_checkpoint(tmp_path / "run" / "last.pt")["config"]
    flat = cfg if "shots" in cfg else {**cfg["outer"], **{f"eval_{k}": v for k, v in cfg["eval"].items()}}
    assert (flat["shots"], flat["queries"], flat["align_batch"], flat["eval_queries"]) == (3, 0, 15, 1)
    # the same command resumes: the sizes fitted again are those the checkpoint holds
    rc, _, err = run_cli(argv + ["--resume", "--quiet", "--checkpoint-dir", str(tmp_path / "run")])
    assert rc == 0, err
    # --strict-sizes: as before, a one-line refusal naming the task
    rc, _, err = run_cli(argv + ["--strict-sizes", "--quiet", "--checkpoint-dir", str(tmp_path / "strict")])
    assert rc == 2 and err.startswith("error: ") and "lower --align-batch to at most 15" in err


# ---------------------------------------------------------------- fewer than 3 x 5 classes: fewer ways
def test_ten_classes_run_3_way_and_say_so(run_cli, tmp_path, monkeypatch):
    """A seeded split of 10 classes cannot hold 5-way tasks in meta-train, meta-val and meta-test:
    benchmark and train run 3-way (the largest that fits), say so in the task-sizes line and record
    it; the run folder then evaluates and resumes at 3-way; --strict-sizes refuses as before."""
    from croma.benchmark_config import PRESETS
    from croma.checkpoint import load_checkpoint

    sys.path.insert(0, str(HERE))
    import fixtures_layouts as F

    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in F.image_text_rows(tmp_path, classes=10, per=6)))
    quick = PRESETS["quick"]
    monkeypatch.setitem(quick, "knobs", {**quick["knobs"], "val_episodes": 2, "val_checks": 1, "finetune_grid": [0, 1]})
    monkeypatch.setitem(quick, "train", {**quick["train"], "eval_tasks": 2, "meta_batch": 2, "inner_steps": 1,
                                         "model": {"embed_dim": 8, "hidden": 8}})
    data = ["manifest", "--manifest", str(man), "--source", "text", "--target", "image", "--device", "cpu"]
    rc, so, err = run_cli(["benchmark", *data, "--methods", "croma", "--budget-steps", "2", "--eval-tasks", "2",
                           "--repeats", "1", "--finetune-modes", "head", "--out", str(tmp_path / "out")])
    assert rc == 0, err
    line = next(x for x in so.splitlines() if x.startswith("task sizes:"))
    assert line.startswith("task sizes: meta-train 3-way") and "(asked 5-way, " in line and "10 target classes" in line
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["ways"] == 3 and res["task_sizes"]["requested"]["meta_train"]["ways"] == 5
    assert res["task_sizes"]["used"]["meta_train"]["ways"] == 3

    argv = ["train", *data, "--features", "compact", "--iterations", "1", "--meta-batch", "2", "--inner-steps", "1",
            "--eval-every", "1", "--eval-tasks", "2", "--embed-dim", "8", "--hidden", "8"]
    rc, _, err = run_cli(argv + ["--checkpoint-dir", str(tmp_path / "run")])
    assert rc == 0, err
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    cfg = ckpt["config"]
    assert (cfg["ways"] if "ways" in cfg else cfg["outer"]["ways"]) == 3
    assert [v.shape[0] for k, v in ckpt["model"].items() if k.endswith("weight")][-1] == 3  # a 3-way classifier
    rc, _, err = run_cli(argv + ["--resume", "--quiet", "--checkpoint-dir", str(tmp_path / "run")])
    assert rc == 0, err
    rc, so, err = run_cli(["evaluate", str(tmp_path / "run"), "--manifest", str(man), "--shots", "1", "--eval-tasks",
                           "2", "--repeats", "1"])
    assert rc == 0, err
    rc, _, err = run_cli(argv + ["--strict-sizes", "--quiet", "--checkpoint-dir", str(tmp_path / "strict")])
    assert rc == 2 and "cannot give 5-way tasks" in err and "lower --ways (at most 3)" in err
