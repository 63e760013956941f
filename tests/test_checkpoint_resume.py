"""Checkpoints: safe loading, atomic writes, bitwise-exact resume, non-finite loss handling."""

import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from croma.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from croma.config import TrainConfig
from croma.errors import CromaError, NonFiniteLossError
from croma.fit import CromaTrainer, train
from croma.meta.functional import tree_all_finite, tree_equal


class NCE(nn.Module):
    def forward(self, zs, zt):
        logits = F.normalize(zs, dim=-1) @ F.normalize(zt, dim=-1).T / 0.2
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def cfg(d, **kw):
    base = dict(
        iterations=7, meta_batch=4, task_mix=0.5, inner_steps=2, inner_lr=0.01, inner_optimizer="adam",
        align_batch=8, ways=5, shots=2, queries=2, eval_every=2, eval_tasks=3, checkpoint_every=3,
        checkpoint_dir=str(d), seed=3, model={"embed_dim": 8, "hidden": 16}, finetune_steps=2, finetune_lr=0.05,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_resume_is_bitwise_identical(bench, tmp_path):
    straight = train(cfg(tmp_path / "a"), bench, loss_module=NCE())
    part = train(cfg(tmp_path / "b", stop_after=4), bench, loss_module=NCE())  # "interrupted" after 4
    assert not part.finished and part.iteration == 4
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 4
    resumed = train(cfg(tmp_path / "b"), bench, loss_module=NCE(), resume=True)
    assert resumed.finished and resumed.iteration == 7
    assert tree_equal(straight.theta, resumed.theta)
    la, lb = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    ba, bb = load_checkpoint(tmp_path / "a" / "best.pt"), load_checkpoint(tmp_path / "b" / "best.pt")
    assert tree_equal(la["model"], lb["model"]) and tree_equal(ba["model"], bb["model"])
    assert ba["best_val"] == bb["best_val"] and ba["best_iteration"] == bb["best_iteration"]
    assert [h["iteration"] for h in la["history"]] == [h["iteration"] for h in lb["history"]]
    assert [h.get("val_acc") for h in la["history"]] == [h.get("val_acc") for h in lb["history"]]


def test_a_timed_checkpoint_between_history_entries_resumes_bitwise(bench, tmp_path, monkeypatch):
    """A slow run also writes last.pt every CHECKPOINT_SECONDS (here: every iteration). Killed at an
    iteration that is neither a meta-val check nor a checkpoint_every one, it resumes from there to the
    same parameters and the same history (the loss sums since the last entry are in last.pt)."""
    import croma.fit

    straight = train(cfg(tmp_path / "a"), bench, loss_module=NCE())
    monkeypatch.setattr(croma.fit, "CHECKPOINT_SECONDS", 0.0)

    def kill_at_5(row):
        if row["iteration"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b"), bench, loss_module=NCE(), callback=kill_at_5)
    last = load_checkpoint(tmp_path / "b" / "last.pt")
    assert last["iteration"] == 5 and last["acc"]  # between entries (checks at 2, 4, 6; checkpoints at 3, 6)
    resumed = train(cfg(tmp_path / "b"), bench, loss_module=NCE(), resume=True)
    assert resumed.finished and tree_equal(straight.theta, resumed.theta)
    assert resumed.history == straight.history


def test_checkpoint_contents_load_with_weights_only(bench, tmp_path):
    res = train(cfg(tmp_path, iterations=3), bench, loss_module=NCE())
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["iteration"] == 3 and raw["kind"] == "last"
    assert set(raw["model"]) == set(res.theta) and tree_equal(raw["model"], res.theta)
    assert isinstance(raw["rng"]["torch_cpu"], torch.Tensor)
    assert isinstance(raw["outer_state"]["epsilon_next"], torch.Tensor)
    cfg_back = TrainConfig.from_dict(raw["config"])
    assert cfg_back.to_dict() == cfg(tmp_path, iterations=3).to_dict()
    assert all(isinstance(h, dict) for h in raw["history"])
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["kind"] == "best" and best["best_val"] == res.best_val
    assert tree_equal(best["model"], res.best_theta)
    # no temporary files left behind
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt", "metrics.csv"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(bench, tmp_path):
    c = cfg(tmp_path, iterations=6, checkpoint_every=2, eval_every=0)
    good = train(cfg(tmp_path / "ref", iterations=6, checkpoint_every=2, eval_every=0, stop_after=2), bench, loss_module=NCE())
    tr = CromaTrainer(c, bench, loss_module=NCE())
    fam = tr.families["source_cls"]
    orig = fam.loss
    fam.loss = lambda m, b: orig(m, b) * (float("nan") if tr.iteration >= 3 else 1.0)  # poison iteration 4
    with pytest.raises(NonFiniteLossError, match="iteration 4"):
        tr.fit()
    assert tr.iteration == 3 and tree_all_finite(tr.theta)
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["iteration"] == 2 and tree_all_finite(last["model"])
    assert tree_equal(last["model"], good.theta)
    # a diverging inner loop is caught too (the largest learning rate croma.bounds allows)
    with pytest.raises(NonFiniteLossError, match="iteration"):
        train(cfg(tmp_path / "big", inner_optimizer="sgd", inner_lr=1e4, inner_steps=3, eval_every=0), bench, loss_module=NCE())


def test_resume_refuses_different_settings(bench, tmp_path):
    train(cfg(tmp_path, iterations=3), bench, loss_module=NCE())
    with pytest.raises(CromaError, match="inner_lr"):
        train(cfg(tmp_path, iterations=3, inner_lr=0.02), bench, loss_module=NCE(), resume=True)
    # runtime-only fields may differ; a finished run resumes to itself
    r = train(cfg(tmp_path, iterations=3, stop_after=9), bench, loss_module=NCE(), resume=True)
    assert r.iteration == 3


def test_atomic_save_and_safe_load(tmp_path):
    p = tmp_path / "x.pt"
    save_checkpoint(p, {"format": FORMAT, "model": {"w": torch.ones(2)}, "iteration": 1})
    with pytest.raises(TypeError):
        save_checkpoint(p, {"format": FORMAT, "model": {"w": torch.zeros(2)}, "bad": object()})
    assert torch.equal(load_checkpoint(p)["model"]["w"], torch.ones(2))  # old file intact
    assert sorted(os.listdir(tmp_path)) == ["x.pt"]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CromaError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with open(tmp_path / "evil.pt", "wb") as fh:  # arbitrary objects are refused by weights_only
        pickle.dump({"format": FORMAT, "model": {}, "x": nn.Linear(1, 1)}, fh, protocol=2)
    with pytest.raises(CromaError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CromaError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
