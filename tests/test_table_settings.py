"""`croma train --config RESULTS.json`: the table's croma row as one training run."""

import json

import pytest

from croma.config import TrainConfig


def test_train_from_a_table_uses_the_settings_croma_was_trained_with(tmp_path, run_cli, monkeypatch):
    """The TrainConfig `croma train --config results.json` builds equals the one the benchmark's croma
    unit handed to its trainer (every setting but where checkpoints go), and the run trains."""
    import croma.baselines.reptile_runs as rr

    seen: list[TrainConfig] = []
    real = rr.CromaTrainer

    def spy(cfg, *a, **k):
        seen.append(cfg)
        return real(cfg, *a, **k)

    monkeypatch.setattr(rr, "CromaTrainer", spy)
    out = tmp_path / "table"
    rc, _, err = run_cli(["benchmark", "synthetic", "--ways", "3", "--methods", "croma", "--budget-steps", "400",
                          "--eval-tasks", "3", "--shots", "1", "--train-seeds", "1", "--jobs", "1", "--seed", "4",
                          "--method-hp", "croma.inner_lr=0.002", "--embed-dim", "16", "--quiet", "--out", str(out)])
    assert rc == 0, err
    assert len(seen) == 1
    monkeypatch.setattr(rr, "CromaTrainer", real)
    # a table folder is not a model: evaluate / predict say how to make one from it
    from croma.errors import CromaError
    from croma.runmodel import load_model

    rc, _, err = run_cli(["evaluate", str(out)])
    assert rc == 2 and "is a croma benchmark results folder" in err and f"--config {out / 'results.json'}" in err
    with pytest.raises(CromaError, match="benchmark results folder"):
        load_model(out)

    from croma.cli import build_parser
    from croma.cli.train import config_from_args

    run = tmp_path / "run"
    args = build_parser().parse_args(["train", "synthetic", "--config", str(out / "results.json"),
                                      "--checkpoint-dir", str(run), "--quiet"])
    cfg = config_from_args(args)
    # the benchmark hands its trainer the data it loaded (front-end: the preset's), so that trainer's
    # own `features` field is unused; croma train loads the data itself with the preset's front-end
    local = {"checkpoint_dir", "checkpoint_every", "device", "progress", "features"}
    mine = {k: v for k, v in cfg.flat().items() if k not in local}
    theirs = {k: v for k, v in seen[0].flat().items() if k not in local}
    assert mine == theirs and cfg.features == "compact"
    assert cfg.inner_lr == 0.002 and cfg.model["embed_dim"] == 16 and cfg.seed == 4 and cfg.iterations == 400 // 40

    # the run trains with the units' one thread whatever the process has (rounding, so the model, follows it)
    import torch

    import croma.fit

    threads, real_train = [], croma.fit.train

    def counting(*a, **k):
        threads.append(torch.get_num_threads())
        return real_train(*a, **k)

    monkeypatch.setattr(croma.fit, "train", counting)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rc, stdout, err = run_cli(["train", "synthetic", "--config", str(out / "results.json"), "--checkpoint-dir",
                                   str(run)])
        assert threads == [1] and torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)
    assert rc == 0, err
    assert "settings from" in err and "the table's croma settings" in err and "= 10 iterations" in err
    assert "trained 10/10 iterations" in stdout and "given flags change" not in err
    # the run keeps what the table's croma unit kept (the untrained start a candidate, the benchmark's
    # meta-val score) and fine-tunes each k as that unit chose on meta-val, so croma evaluate on the
    # table's episodes gives the table's cell
    table = json.loads((out / "results.json").read_text())
    unit = json.loads(next((out / "units").glob("croma-seed4.json")).read_text())["facts"]
    from croma.runmodel import load_model

    model = load_model(run)
    ckpt = __import__("torch").load(run / "best.pt", weights_only=True)
    assert ckpt["best_iteration"] == unit["notes"]["best_iteration"]
    assert ckpt["best_val"] == pytest.approx(unit["notes"]["best_val"], abs=1e-9)
    assert model.finetune["chosen_on"] == "meta_val" and "chosen on meta-val for k=1" in repr(model)
    assert model.setting_for(3)["chosen_for_k"] == 1 and "chosen_for_k" not in model.setting_for(1)  # says whose
    for k, ch in unit["eval_choice"].items():
        mine = model.finetune["per_k"][k]
        assert {f: mine[f] for f in ("head_init", "finetune", "finetune_steps", "finetune_lr")} == \
            {f: ch[f] for f in ("head_init", "finetune", "finetune_steps", "finetune_lr")}
    assert "meta-test fine-tuning chosen on meta-val as the table chooses" in stdout
    ev = table["config"]["eval"]
    assert (f"the table's meta-test episodes: croma evaluate {run} --seed {ev['seed']} --repeats {ev['repeats']} "
            f"--eval-tasks {ev['tasks']} --queries {ev['queries']} --shots 1") in stdout
    assert "head init" not in stdout  # the per-k choice, not the training head, is what meta-test uses
    rc, stdout, err = run_cli(["evaluate", str(run), "--shots", "1", "--seed", str(ev["seed"]), "--repeats",
                               str(ev["repeats"]), "--eval-tasks", str(ev["tasks"]), "--json"])
    assert rc == 0, err
    row = json.loads(stdout[stdout.index("{"):])["rows"][0]
    cell = next(r for r in table["rows"] if r["method"] == "croma" and r["shots"] == 1)
    # the same episodes and arithmetic; the table's mean went through float32 percents (each within
    # 100 * 2**-24 = 6e-6 of its exact value), so the means agree to that
    assert row["accuracy_mean"] == pytest.approx(cell["accuracy_mean"], abs=6e-6)
    assert row["setting"] == f"{cell['head_init']}/{cell['finetune_steps']}/{cell['finetune_lr']:g}/{cell['finetune']}"
    rc, stdout, err = run_cli(["train", "synthetic", "--config", str(out / "results.json"), "--checkpoint-dir",
                               str(tmp_path / "run3"), "--iterations", "3"])
    assert rc == 0, err
    assert "given flags change iterations=3" in err and "trained 3/3 iterations" in stdout


def test_a_table_budgeted_in_seconds_is_refused_with_one_line(tmp_path, run_cli):
    res = {"rows": [], "config": {"benchmark_config": {"benchmark": "synthetic", "budget_seconds": 5.0, "ways": 3}}}
    (tmp_path / "results.json").write_text(json.dumps(res))
    rc, _, err = run_cli(["train", "synthetic", "--config", str(tmp_path / "results.json"),
                          "--checkpoint-dir", str(tmp_path / "r")])
    assert rc == 2 and err.count("\n") == 1 and "--budget-steps" in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("bad", [{"preset": "nope"}, {"ways": 0}])
def test_a_bad_table_names_the_file(tmp_path, run_cli, bad):
    res = {"rows": [], "config": {"benchmark_config": {"benchmark": "synthetic", **bad}}}
    (tmp_path / "results.json").write_text(json.dumps(res))
    rc, _, err = run_cli(["train", "synthetic", "--config", str(tmp_path / "results.json"),
                          "--checkpoint-dir", str(tmp_path / "r")])
    assert rc == 2 and err.count("\n") == 1 and "results.json" in err and not (tmp_path / "r").exists()


def test_the_settings_line_says_a_budget_not_spent_in_whole_iterations():
    """A budget that is no whole number of iterations: the line said "100 optimiser steps = 2
    iterations of 8 tasks x 5 inner steps" (80 steps)."""
    from croma.benchmark_config import BenchmarkConfig
    from croma.table_settings import table_train_config

    cfg, even = table_train_config(BenchmarkConfig(benchmark="synthetic", budget_steps=4000))
    per = cfg.meta_batch * cfg.inner_steps
    whole = 7 * per
    cfg, even = table_train_config(BenchmarkConfig(benchmark="synthetic", budget_steps=whole))
    assert cfg.iterations == 7 and f"preset quick, {whole} optimiser steps = 7 iterations of " in even
    cfg, text = table_train_config(BenchmarkConfig(benchmark="synthetic", budget_steps=whole + per // 2))
    assert cfg.iterations == 7
    assert f"a budget of {whole + per // 2} optimiser steps, {whole} used = 7 iterations of {cfg.meta_batch} tasks" in text
