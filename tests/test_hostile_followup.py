"""Hostile-input sweep, follow-up: garbage torch files, empty output folders left by a refused
benchmark, episode-size refusals naming the right flags, flat config files, BOMs, an empty cache root.

Each input is generated in ``tmp_path`` (a few bytes); each refusal is one line ``error: ...``
naming the file or flag, exit code 2, and nothing left behind.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from croma.errors import CromaError


def _one_line(rc, err, *needles):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def _short(msg: str, *needles: str) -> None:
    msg = msg.rstrip("\n")
    assert "\n" not in msg and "weights_only" not in msg and len(msg) < 400, msg
    for n in needles:
        assert n in msg, (n, msg)


GARBAGE = {"text": b"garbage", "empty": b"", "zip": b"PK\x03\x04garbage"}


# ---------------------------------------------------------------- 1. garbage torch files
@pytest.mark.parametrize("body", sorted(GARBAGE))
def test_garbage_last_pt_on_resume_is_one_short_line(run_cli, tmp_path, body):
    run = tmp_path / "r"
    run.mkdir()
    (run / "last.pt").write_bytes(GARBAGE[body])
    rc, _, err = run_cli(["train", "synthetic", "--ways", "2", "--iterations", "1", "--eval-every", "0", "--resume",
                          "--quiet", "--device", "cpu", "--checkpoint-dir", str(run)])
    _one_line(rc, err, "last.pt", "could not be read safely")
    _short(err)
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # nothing written next to it


def test_garbage_config_pt_is_one_short_line(run_cli, tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"garbage")
    for argv in (["train", "synthetic", "--checkpoint-dir", str(tmp_path / "run")],
                 ["benchmark", "synthetic", "--out", str(tmp_path / "out")]):
        rc, _, err = run_cli([*argv, "--config", str(bad)])
        _one_line(rc, err, "x.pt", "not a PyTorch file")
        _short(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_checkpoint_holding_python_objects_names_the_global(tmp_path):
    from croma.checkpoint import load_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"format": "x", "model": {}, "odd": argparse.Namespace(a=1)}, path)
    with pytest.raises(CromaError) as info:
        load_checkpoint(path)
    _short(str(info.value), "last.pt", "argparse.Namespace", "never unpickles")


@pytest.mark.parametrize("body", sorted(GARBAGE))
def test_garbage_resnet18_weights_are_one_short_line(tmp_path, body):
    from croma.encoders.resnet import load_resnet18_backbone

    path = tmp_path / "w.pth"
    path.write_bytes(GARBAGE[body])
    with pytest.raises(CromaError) as info:
        load_resnet18_backbone(path)
    _short(str(info.value), "resnet18", "w.pth")


# ---------------------------------------------------------------- 2. croma benchmark leaves no empty --out
def test_benchmark_refused_leaves_no_empty_out_folder(run_cli, tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    for out in (tmp_path / "new" / "deep", kept):
        rc, _, err = run_cli(["benchmark", "synthetic", "--methods", "nope", "--quiet", "--device", "cpu",
                              "--out", str(out)])
        _one_line(rc, err, "nope")
    assert not (tmp_path / "new").exists()  # made by the run, empty: removed
    assert kept.is_dir()  # the user's own folder stays


def test_benchmark_noise_sweep_refused_on_its_data_leaves_nothing(run_cli, tmp_path, monkeypatch):
    from croma.benchmark_config import PRESETS

    monkeypatch.setitem(PRESETS["quick"], "train", {**PRESETS["quick"]["train"], "shots": 40})
    rc, _, err = run_cli(["benchmark", "synthetic", "--ways", "2", "--methods", "croma", "--shots", "1",
                          "--noise-sweep", "0,0.2", "--budget-steps", "8", "--quiet", "--device", "cpu",
                          "--strict-sizes", "--out", str(tmp_path / "o")])
    _one_line(rc, err, "source classification tasks for meta-training")
    assert not (tmp_path / "o").exists()


def test_new_folders_and_remove_if_empty_keep_what_was_written(tmp_path):
    from croma.checkpoint import new_folders, remove_if_empty

    made = new_folders(tmp_path / "a" / "b", tmp_path / "a" / "c")
    assert made == [tmp_path / "a" / "b", tmp_path / "a" / "c", tmp_path / "a"]
    for f in made[:2]:
        f.mkdir(parents=True)
    (tmp_path / "a" / "c" / "result.json").write_text("{}")
    remove_if_empty(made)
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "c" / "result.json").is_file()


@pytest.mark.parametrize("value, bad", [("0,abc", "'abc'"), ("x", "'x'"), ("0.1,,nan?", "'nan?'")])
def test_noise_sweep_parse_error_names_the_flag_and_value(run_cli, tmp_path, value, bad):
    rc, _, err = run_cli(["benchmark", "synthetic", "--noise-sweep", value, "--out", str(tmp_path / "o")])
    _one_line(rc, err, "--noise-sweep", bad, "not a number")
    assert "_float_list" not in err and not (tmp_path / "o").exists()


def test_noise_sweep_type_raises_an_argparse_error():
    from croma.cli.benchmark import _float_list

    assert _float_list("0, 0.2,") == [0.0, 0.2]
    with pytest.raises(argparse.ArgumentTypeError, match="'abc' is not a number"):
        _float_list("0,abc")


# ---------------------------------------------------------------- 3. episode sizes: the flags that control them
def _manifest(folder, classes: int, per: int):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fixtures_layouts as F

    rows = F.image_text_rows(folder, classes, per)
    man = folder / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return man


def test_train_meta_val_refusal_names_eval_shots_not_shots(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    man = _manifest(tmp_path, classes=15, per=6)
    rc, _, err = run_cli(["train", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
                          "--shots", "1", "--queries", "1", "--align-batch", "4", "--quiet", "--device", "cpu",
                          "--strict-sizes", "--checkpoint-dir", str(tmp_path / "run")])
    _one_line(rc, err, "meta_val episodes", "shots 5 + queries 5", "--eval-shots", "eval_queries",
              "5 queries per class")
    assert "--shots" not in err and "--queries" not in err
    assert not (tmp_path / "run").exists()


def test_train_source_task_refusal_says_what_was_sampled(run_cli, tmp_path):
    rc, _, err = run_cli(["train", "synthetic", "--ways", "2", "--shots", "20", "--eval-every", "0", "--strict-sizes",
                          "--iterations", "1", "--quiet", "--device", "cpu", "--checkpoint-dir", str(tmp_path / "r")])
    _one_line(rc, err, "source classification tasks for meta-training", "2-way 20-shot, 5 queries",
              "use fewer --ways, --shots or --queries")
    assert not (tmp_path / "r").exists()


def test_benchmark_source_task_refusal_names_the_preset(run_cli, tmp_path, monkeypatch):
    from croma.benchmark_config import PRESETS

    monkeypatch.setitem(PRESETS["quick"], "train", {**PRESETS["quick"]["train"], "shots": 20})
    rc, _, err = run_cli(["benchmark", "synthetic", "--ways", "2", "--methods", "croma", "--shots", "1",
                          "--budget-steps", "8", "--quiet", "--device", "cpu", "--strict-sizes", "--out", str(tmp_path / "o")])
    _one_line(rc, err, "source classification tasks for meta-training", "--preset quick", "20-shot",
              "use fewer --ways")
    assert "--queries" not in err and not (tmp_path / "o").exists()


def test_error_hints_are_scoped_and_default_outside():
    from croma.errors import error_hints, hint

    assert hint("meta_val_episodes", "use fewer --shots") == "use fewer --shots"
    with error_hints(meta_val_episodes="use fewer --eval-shots ({queries} queries)"):
        assert hint("meta_val_episodes", "x", queries=3) == "use fewer --eval-shots (3 queries)"
        with error_hints(other="y"):
            assert hint("meta_val_episodes", "x", queries=4) == "use fewer --eval-shots (4 queries)"
    assert hint("meta_val_episodes", "default") == "default"


def test_croma_evaluate_keeps_its_own_hint(bench):
    from croma.evaluate import EvalConfig, _episode_batch
    from episodes.errors import DataError

    x = bench.data[bench.target].features
    with pytest.raises(DataError, match=r"use fewer ways, shots or queries \(EvalConfig; --ways, --shots, --queries\)$"):
        _episode_batch(bench, x, EvalConfig(ways=2, queries=100, split="meta_val"), 1, 0)


# ---------------------------------------------------------------- 4. flat config files
def test_model_flat_names_are_the_model_config_fields():
    from dataclasses import fields

    from croma.config import MODEL_FLAT
    from croma.model import ModelConfig

    assert set(MODEL_FLAT) == {f.name for f in fields(ModelConfig)} - {"num_classes"}


def test_every_train_flag_name_is_a_flat_setting():
    from croma.cli import build_parser
    from croma.config import TrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    not_settings = {"help", "resume", "quiet", "progress", "tensorboard", "config", "nproc", "dist_timeout",
                    "no_extra_modalities", "no_compile_inner"}  # the last two: negations of flat settings
    values = {"loss_hp": {"temperature": 0.1}, "task_weights": {"align": 1.0}, "split_classes": [2, 1, 1],
              "backbone": {"image": "pixels"}, "encoder": {"image": "mlp"}, "eval_shots": [1], "outer": "fomaml",
              "skip_bad": True, "compile_inner": True, "strict_sizes": True}
    names = [o[2:].replace("-", "_") for a in train._actions for o in a.option_strings if o.startswith("--")]
    assert "hidden" in names and "embed_dim" in names and "image_weights" in names
    checked = 0
    for name in names:
        if name in not_settings:
            continue
        value = values.get(name, 3)
        cfg = TrainConfig.from_dict({name: value})
        assert cfg.to_dict() == TrainConfig(**{name: value}).to_dict() != TrainConfig().to_dict(), name
        assert TrainConfig.flat_keys({name: value}), name
        checked += 1
    assert checked > 40


def test_flat_model_settings_in_from_dict_and_as_keywords():
    from croma.config import TrainConfig

    for cfg in (TrainConfig(hidden=16, embed_dim=8), TrainConfig.from_dict({"hidden": 16, "embed_dim": 8})):
        assert cfg.model == {"hidden": 16, "embed_dim": 8} and cfg.hidden == 16
    assert TrainConfig().hidden == 128  # unset: ModelConfig's default
    mixed = TrainConfig.from_dict({"model": {"hidden": 8, "embed_dim": 4}, "hidden": 16, "inner_lr": 0.01,
                                   "outer": {"iterations": 7}})
    assert mixed.model == {"hidden": 16, "embed_dim": 4} and mixed.inner_lr == 0.01 and mixed.iterations == 7
    cfg = TrainConfig.from_dict({"outer": "fomaml", "encoder": {"image": "mlp"}, "backbone": {"image": "pixels"}})
    assert cfg.algorithm == "fomaml" and cfg.model == {"encoders": {"image": "mlp"}} and cfg.backbones == {"image": "pixels"}
    assert TrainConfig.flat_keys({"hidden": 1, "outer": "fomaml", "backbone": {}}) == {"model", "algorithm", "backbones"}
    cfg.hidden = 32
    assert cfg.model["hidden"] == 32
    with pytest.raises(ValueError, match="'hiden'"):
        TrainConfig.from_dict({"hiden": 3})
    with pytest.raises(TypeError, match="'hiden'"):
        TrainConfig(hiden=3)


def test_nested_configs_written_before_still_round_trip():
    from croma.config import TrainConfig

    nested = TrainConfig(hidden=16, iterations=3, inner_lr=0.01, backbones={"image": "pixels"}).to_dict()
    assert "hidden" not in nested and nested["model"] == {"hidden": 16}
    assert TrainConfig.from_dict(nested).to_dict() == nested
    flat = {**TrainConfig().flat(), "model": {"hidden": 16}}
    assert TrainConfig.from_dict(flat).to_dict() == TrainConfig.from_dict({"model": {"hidden": 16}}).to_dict()


@pytest.mark.parametrize("suffix, text", [(".json", '{"hidden": 16, "embed_dim": 8, "benchmark": "synthetic"}'),
                                          (".toml", 'hidden = 16\nembed_dim = 8\nbenchmark = "synthetic"\n')])
@pytest.mark.parametrize("bom", [False, True])
def test_flat_config_file_with_or_without_bom_trains(run_cli, tmp_path, suffix, text, bom):
    conf = tmp_path / f"c{suffix}"
    conf.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    run = tmp_path / "run"
    rc, out, err = run_cli(["train", "--config", str(conf), "--ways", "2", "--iterations", "1", "--eval-every", "0",
                            "--meta-batch", "2", "--align-batch", "4", "--quiet", "--device", "cpu",
                            "--checkpoint-dir", str(run)])
    assert rc == 0, err
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["config"]["model"]["hidden"] == 16 and ckpt["config"]["model"]["embed_dim"] == 8


def test_benchmark_config_file_may_be_flat_too(tmp_path):
    from croma.cli import build_parser
    from croma.cli.benchmark import config_from_args
    from croma.config import nest_model_settings

    conf = tmp_path / "b.toml"
    conf.write_bytes(b"\xef\xbb\xbfhidden = 16\nencoder = {image = 'mlp'}\nways = 2\n[model]\nembed_dim = 8\nhidden = 4\n")
    for extra, hidden in (([], 16), (["--hidden", "32"], 32)):
        cfg = config_from_args(build_parser().parse_args(["benchmark", "synthetic", "--config", str(conf), *extra]))
        assert cfg.model == {"embed_dim": 8, "hidden": hidden, "encoders": {"image": "mlp"}} and cfg.ways == 2
    assert nest_model_settings({"backbone": {"image": "pixels"}, "seed": 1}) == {"backbones": {"image": "pixels"}, "seed": 1}


@pytest.mark.parametrize("suffix, text", [(".json", '{"iterations": 7}'), (".toml", "iterations = 7\n")])
def test_read_settings_accepts_a_bom(tmp_path, suffix, text):
    from croma.factory import load_config_file, read_settings

    conf = tmp_path / f"c{suffix}"
    conf.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_config_file(conf) == {"iterations": 7} and read_settings(conf) == ({"iterations": 7}, "file")


# ---------------------------------------------------------------- 6. the cache root itself refuses ""
@pytest.mark.parametrize("value", ["", "  "])
def test_cache_root_refuses_an_empty_cache_dir(value):
    from croma.cli.cache import _root

    with pytest.raises(ValueError, match="--cache-dir is empty"):
        _root(argparse.Namespace(cache_dir=value))


def test_benchmark_config_from_dict_takes_flat_model_names_as_the_cli_does():
    from croma.benchmark_config import BenchmarkConfig

    flat = BenchmarkConfig.from_dict({"benchmark": "synthetic", "hidden": 16, "encoder": {"text": "mlp"}})
    nested = BenchmarkConfig.from_dict({"benchmark": "synthetic", "model": {"hidden": 16, "encoders": {"text": "mlp"}}})
    assert flat == nested and flat.model == {"hidden": 16, "encoders": {"text": "mlp"}}
    assert BenchmarkConfig.from_dict({}) == BenchmarkConfig()
    with pytest.raises(ValueError, match="'hiddn'"):
        BenchmarkConfig.from_dict({"hiddn": 16})


def test_a_noise_sweep_plots_only_the_k_it_meta_tested_and_report_points_at_its_rates(run_cli, tmp_path):
    """A k the data cannot serve is dropped from every rate's run, so the sweep writes no empty plot
    for it and names the files it wrote; `croma report` on the sweep folder names the rates' folders."""
    out = tmp_path / "o"
    rc, stdout, err = run_cli(["benchmark", "synthetic", "--ways", "2", "--methods", "pretrain", "--shots", "1", "900",
                               "--noise-sweep", "0,0.2", "--train-seeds", "1", "--eval-tasks", "3", "--val-episodes", "3",
                               "--device", "cpu", "--out", str(out)])
    assert rc == 0, err
    assert (out / "noise_sweep_1shot.png").is_file() and not (out / "noise_sweep_900shot.png").exists()
    assert f"wrote {out}/noise_sweep.json and noise_sweep_1shot.png" in stdout
    rc, _, err = run_cli(["report", str(out)])
    assert rc == 2 and err.count("\n") == 1 and "holds a noise sweep" in err and "noise_0" in err
