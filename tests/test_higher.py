"""The optional `higher` inner-loop backend: same adapted parameters as the torch.func paths."""

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from croma.cli import main
from croma.config import TrainConfig
from croma.errors import CromaError
from croma.fit import CromaTrainer
from croma.meta.functional import FunctionalModel, meta_parameters
from croma.meta.inner import InnerConfig, import_higher, run_batched, run_higher, run_inner, run_sequential


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.enc(x))


def _setup(scale):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = TinyNet()
    fm = FunctionalModel(net)
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(3, 9, 6, generator=g), "y": torch.randint(0, 3, (3, 9), generator=g)}

    def task_loss(m, b):
        return scale * F.cross_entropy(m(b["x"]), b["y"])

    theta = meta_parameters(net)
    trainable = {k: v for k, v in theta.items() if not k.startswith("enc.0.")}
    constant = {k: v for k, v in theta.items() if k.startswith("enc.0.")}
    return (lambda p, b: fm(p, task_loss, b)), trainable, constant, batch


# scale 1e-8: gradients near Adam's eps, where higher's placement of eps (before the bias correction) shows
@pytest.mark.parametrize("opt, scale, lr", [("sgd", 1.0, 0.05), ("adam", 1.0, 0.05), ("adam", 1e-8, 1e-3)])
def test_higher_gives_the_same_adapted_parameters_as_torch_func(opt, scale, lr):
    pytest.importorskip("higher")
    loss_fn, trainable, constant, batch = _setup(scale)
    cfg = InnerConfig(steps=4, lr=lr, optimizer=opt)
    got, got_losses = run_higher(loss_fn, trainable, constant, batch, cfg)
    ref_b, ref_losses = run_batched(loss_fn, trainable, constant, batch, cfg)
    ref_s, _ = run_sequential(loss_fn, trainable, constant, batch, cfg)
    assert set(got) == set(trainable) and got_losses.shape == (3, 4)
    for k in trainable:
        assert got[k].shape == (3, *trainable[k].shape)
        assert not torch.equal(got[k], trainable[k].expand_as(got[k]))  # it moved
        torch.testing.assert_close(got[k], ref_s[k], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got[k], ref_b[k], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_losses, ref_losses, atol=1e-6, rtol=1e-5)
    assert not any(v.requires_grad for v in got.values())


def test_run_inner_dispatches_to_higher_and_rejects_unknown_modes():
    pytest.importorskip("higher")
    loss_fn, trainable, constant, batch = _setup(1.0)
    cfg = InnerConfig(steps=2, lr=0.01)
    a, _ = run_inner("higher", loss_fn, trainable, constant, batch, cfg)
    b, _ = run_higher(loss_fn, trainable, constant, batch, cfg)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="batched, sequential, higher"):
        run_inner("jax", loss_fn, trainable, constant, batch, cfg)


def _cfg(**kw):
    base = dict(iterations=3, meta_batch=4, task_mix=0.5, inner_steps=2, inner_lr=0.01, align_batch=8, ways=3, shots=2,
                queries=2, eval_every=0, checkpoint_every=0, seed=2, loss="cwcl", model={"embed_dim": 8, "hidden": 16})
    base.update(kw)
    return TrainConfig(**base)


def test_training_with_higher_matches_batched(bench):
    pytest.importorskip("higher")
    runs = {}
    for mode in ("batched", "higher"):
        tr = CromaTrainer(_cfg(inner_loop=mode), bench)
        while tr.iteration < tr.cfg.iterations:
            tr.outer_step()
        runs[mode] = tr.theta
    for k in runs["batched"]:
        torch.testing.assert_close(runs["higher"][k], runs["batched"][k], atol=1e-5, rtol=0)
    assert TrainConfig(inner_loop="higher").to_dict()["inner"]["loop"] == "higher"


def test_cli_train_inner_loop_higher(tmp_path, capsys):
    pytest.importorskip("higher")
    rc = main(["train", "synthetic", "--quiet", "--inner-loop", "higher", "--iterations", "2", "--meta-batch", "2",
               "--inner-steps", "1", "--ways", "3", "--shots", "2", "--queries", "1", "--embed-dim", "8", "--hidden", "16",
               "--align-batch", "8", "--eval-every", "2", "--eval-tasks", "2", "--finetune-steps", "1",
               "--checkpoint-dir", str(tmp_path / "h")])
    assert rc == 0 and "trained 2/2 iterations" in capsys.readouterr().out


def test_missing_higher_is_one_line_naming_the_extra(bench, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "higher", None)  # import higher -> ImportError
    with pytest.raises(CromaError, match=r"pip install 'croma-meta\[higher\]'"):
        import_higher()
    with pytest.raises(CromaError, match="--inner-loop higher"):
        CromaTrainer(_cfg(inner_loop="higher"), bench)
    rc = main(["train", "synthetic", "--quiet", "--inner-loop", "higher", "--iterations", "1", "--checkpoint-dir",
               str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --inner-loop higher needs the optional package 'higher'")
