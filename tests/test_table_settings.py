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

    rc, stdout, err = run_cli(["train", "synthetic", "--config", str(out / "results.json"), "--checkpoint-dir",
                               str(run)])
    assert rc == 0, err
    assert "settings from" in err and "the table's croma settings" in err and "= 10 iterations" in err
    assert "trained 10/10 iterations" in stdout and "given flags change" not in err
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
