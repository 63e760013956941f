"""Hostile checkpoints and runs (issue causes 2, 3, 5, 9, 13): refused with one line, never a false report.

A tiny synthetic run is trained once; each test edits a copy of its checkpoints.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from croma.checkpoint import load_checkpoint
from croma.cli import main
from croma.config import TrainConfig
from croma.errors import NonFiniteLossError
from croma.fit import train

TINY = [
    "--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--seed", "1",
]
EVAL = ["--shots", "1", "--repeats", "1", "--eval-tasks", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "2", "--checkpoint-every", "2",
                 "--checkpoint-dir", str(d)]) == 0
    return d


@pytest.fixture()
def run(trained, tmp_path):
    d = tmp_path / "r"
    shutil.copytree(trained, d)
    return d


def _edit(path, fn):
    ck = torch.load(path, weights_only=True)
    fn(ck)
    torch.save(ck, path)


def _one_line(rc, err, *needles):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# ---------------------------------------------------------------- cause 2: NaN parameters
def test_nan_checkpoint_is_refused_not_scored(run_cli, run, capsys):
    _edit(run / "best.pt", lambda ck: ck["model"].update({k: torch.full_like(v, float("nan")) for k, v in ck["model"].items()}))
    rc, out, err = run_cli(["evaluate", str(run), *EVAL])
    _one_line(rc, err, "best.pt", "NaN")
    assert "accuracy" not in out and "R@1" not in out


def test_collapsed_embeddings_do_not_score_perfect_retrieval(run_cli, run, capsys):
    _edit(run / "best.pt", lambda ck: ck["model"].update({k: torch.zeros_like(v) for k, v in ck["model"].items()}))
    rc, out, err = run_cli(["evaluate", str(run), *EVAL, "--json"])
    assert rc == 0, err
    ret = json.loads(out[out.index("{"):])["retrieval"]
    assert ret is not None and ret["r1_mean"] == 0.0 and ret["r10_mean"] < 100.0  # was 100 / 100 / 100


# ---------------------------------------------------------------- cause 3: best.pt deleted
def test_resume_with_best_deleted_is_refused(run_cli, run, capsys):
    (run / "best.pt").unlink()
    rc, out, err = run_cli(["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "2", "--checkpoint-every",
                         "2", "--checkpoint-dir", str(run), "--resume"])
    _one_line(rc, err, "best.pt")
    assert "wrote" not in out and not (run / "best.pt").exists()


def test_evaluate_with_best_deleted_does_not_silently_use_last(run_cli, run, capsys):
    (run / "best.pt").unlink()
    rc, out, err = run_cli(["evaluate", str(run), *EVAL])
    _one_line(rc, err, "best.pt", "--checkpoint last")
    rc, out, err = run_cli(["evaluate", str(run), *EVAL, "--checkpoint", "last"])
    assert rc == 0 and "accuracy" in out.lower()


def test_resume_without_selection_rewrites_best(run_cli, tmp_path, capsys):
    d = tmp_path / "r0"
    args = ["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "0", "--checkpoint-dir", str(d)]
    assert main(args) == 0
    (d / "best.pt").unlink()
    capsys.readouterr()
    rc, out, err = run_cli(args + ["--resume"])
    assert rc == 0 and (d / "best.pt").is_file() and "best.pt" in out
    assert torch.equal(*(next(iter(load_checkpoint(d / n)["model"].values())) for n in ("best.pt", "last.pt")))


# ---------------------------------------------------------------- cause 5: checkpoint schema
BAD_CHECKPOINTS = {
    "no-config": lambda ck: ck.pop("config"),
    "string-config": lambda ck: ck.update(config="cwcl"),
    "list-model": lambda ck: ck.update(model=[1, 2]),
    "int-tensor": lambda ck: ck["model"].update({next(iter(ck["model"])): torch.ones(2, dtype=torch.long)}),
    "string-iteration": lambda ck: ck.update(iteration="3"),
    "string-ways": lambda ck: ck["config"].update(ways="5"),
    "tensor-seed": lambda ck: ck["config"].update(seed=torch.ones(1)),
    "list-history": lambda ck: ck.update(history=[1]),
    "bad-head": lambda ck: ck.update(head_init=3),
    "wrong-shape": lambda ck: ck["model"].update({k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in ck["model"].items()}),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_malformed_checkpoint_is_one_line_for_evaluate(run_cli, case, run, capsys):
    _edit(run / "best.pt", BAD_CHECKPOINTS[case])
    rc, _, err = run_cli(["evaluate", str(run), *EVAL])
    _one_line(rc, err, "best.pt")


@pytest.mark.parametrize("case", ["wrong-shape", "string-ways", "no-config", "list-model"])
def test_malformed_checkpoint_is_one_line_for_resume(run_cli, case, run, capsys):
    _edit(run / "last.pt", BAD_CHECKPOINTS[case])
    rc, _, err = run_cli(["train", "synthetic", *TINY, "--iterations", "2", "--eval-every", "2", "--checkpoint-every", "2",
                       "--checkpoint-dir", str(run), "--resume"])  # the stored settings: only the file is bad
    _one_line(rc, err, "last.pt", "malformed" if case != "wrong-shape" else "shape")


# ---------------------------------------------------------------- cause 9: diverging run
def test_diverging_run_does_not_claim_a_checkpoint_that_was_never_written(tmp_path):
    from episodes.datasets.synthetic import make_synthetic_benchmark

    bench = make_synthetic_benchmark(num_classes=12, per_class=8, source_dim=6, target_dim=5, latent_dim=3, seed=0)
    # inner_lr at its maximum (croma.bounds.BOUNDS, the flags' and the API's): diverges at iteration 2
    cfg = TrainConfig(iterations=3, meta_batch=2, inner_steps=2, inner_lr=1e4, inner_optimizer="sgd", align_batch=4,
                      ways=3, shots=1, queries=1, eval_every=0, checkpoint_every=100, checkpoint_dir=str(tmp_path / "d"),
                      loss="nce", model={"embed_dim": 4, "hidden": 8})
    with pytest.raises(NonFiniteLossError) as exc:
        train(cfg, bench)
    msg = str(exc.value)
    assert "intact" not in msg and "no checkpoint was written" in msg
    assert not (tmp_path / "d" / "last.pt").exists()


# ---------------------------------------------------------------- cause 13: paths from the caller
def test_evaluate_uses_callers_paths_not_the_checkpoints(run_cli, run, tmp_path, capsys, monkeypatch):
    import croma.runs as trainer_mod

    stored = {"data_root": str(tmp_path / "stored-data"), "cache_dir": str(tmp_path / "stored-cache"),
              "manifest": str(tmp_path / "stored.jsonl")}
    _edit(run / "best.pt", lambda ck: ck["config"].update(stored))
    seen = []
    real = trainer_mod.load_bench

    def spy(cfg, **kw):
        seen.append((cfg.data_root, cfg.cache_dir, cfg.manifest))
        return real(cfg, **kw)

    monkeypatch.setattr(trainer_mod, "load_bench", spy)
    rc, _, err = run_cli(["evaluate", str(run), *EVAL])
    assert rc == 0, err
    assert seen == [(None, None, None)]
    rc, _, err = run_cli(["evaluate", str(run), *EVAL, "--data-root", str(tmp_path / "mine"), "--cache-dir",
                       str(tmp_path / "mycache")])
    assert rc == 0 and seen[-1] == (str(tmp_path / "mine"), str(tmp_path / "mycache"), None)
    # a manifest run needs the caller's --manifest; the stored path is never read
    _edit(run / "best.pt", lambda ck: ck["config"].update(benchmark="manifest", source="text", target="audio"))
    rc, _, err = run_cli(["evaluate", str(run), *EVAL])
    _one_line(rc, err, "--manifest")
    rc, _, err = run_cli(["evaluate", str(run), *EVAL, "--manifest", str(tmp_path / "mine.jsonl")])
    _one_line(rc, err, "mine.jsonl")
    assert "stored" not in err
