"""Inner loops, functional optimisers and the Reptile update against naive references."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from croma.meta.functional import FunctionalModel, meta_parameters, split_params, tree_equal
from croma.meta.inner import InnerConfig, adapt, run_batched, run_sequential
from croma.meta.reptile import linear_epsilon, reptile_update


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 4))
        self.head = nn.Linear(4, 3)
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.head(self.enc(x))


def _net(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet()


def _tasks(T=4, n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(T, n, 6, generator=g), "y": torch.randint(0, 3, (T, n), generator=g)}


def _loss_fn(fm):
    def task_loss(m, b):
        return F.cross_entropy(m(b["x"]), b["y"])

    return lambda p, b: fm(p, task_loss, b)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_adapt_matches_torch_optim(opt):
    """The functional inner loop equals torch.optim on a deep copy of the module."""
    net = _net()
    fm = FunctionalModel(net)
    theta = meta_parameters(net)
    b = {k: v[0] for k, v in _tasks().items()}
    cfg = InnerConfig(steps=4, lr=0.05, optimizer=opt)
    adapted, losses = adapt(_loss_fn(fm), theta, {}, b, cfg)

    ref = _net()
    params = [p for p in ref.parameters() if p.requires_grad]
    o = torch.optim.SGD(params, lr=0.05) if opt == "sgd" else torch.optim.Adam(params, lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    ref_losses = []
    for _ in range(4):
        o.zero_grad()
        loss = F.cross_entropy(ref(b["x"]), b["y"])
        ref_losses.append(loss.item())
        loss.backward()
        o.step()
    for n, p in ref.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(adapted[n], p.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses, torch.tensor(ref_losses), atol=1e-6, rtol=1e-5)
    assert losses[-1] < losses[0]
    # the module itself was not touched
    assert tree_equal(meta_parameters(net), meta_parameters(_net()))
    assert "frozen.weight" not in theta


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_batched_equals_sequential(opt):
    net = _net()
    fm = FunctionalModel(net)
    theta = meta_parameters(net)
    train, const = split_params(theta, lambda n: not n.startswith("enc.0."))
    batch = _tasks(T=5)
    cfg = InnerConfig(steps=3, lr=0.1, optimizer=opt)
    pb, lb = run_batched(_loss_fn(fm), train, const, batch, cfg)
    ps, ls = run_sequential(_loss_fn(fm), train, const, batch, cfg)
    assert set(pb) == set(train) and lb.shape == (5, 3)
    for k in train:
        assert pb[k].shape == (5, *train[k].shape)
        torch.testing.assert_close(pb[k], ps[k], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lb, ls, atol=1e-6, rtol=1e-5)
    # each batched task equals adapting that task alone
    one, _ = adapt(_loss_fn(fm), train, const, {k: v[2] for k, v in batch.items()}, cfg)
    for k in train:
        torch.testing.assert_close(pb[k][2], one[k], atol=1e-6, rtol=1e-5)


def test_constant_params_stay_fixed_and_sgd_step_by_hand():
    """One SGD step on a linear least-squares loss equals the hand-derived update."""
    w = torch.tensor([[1.0, -2.0]])
    b = torch.tensor([0.5])
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    y = torch.tensor([[1.0], [0.0]])

    def loss_fn(p, batch):
        return ((batch["x"] @ p["w"].T + p["b"] - batch["y"]) ** 2).mean()

    adapted, losses = adapt(loss_fn, {"w": w}, {"b": b}, {"x": x, "y": y}, InnerConfig(steps=1, lr=0.1, optimizer="sgd"))
    r = x @ w.T + b - y  # residuals [2, 1]
    grad_w = 2 * (r * x).mean(0, keepdim=True)
    torch.testing.assert_close(adapted["w"], w - 0.1 * grad_w)
    assert set(adapted) == {"w"}
    torch.testing.assert_close(losses, (r**2).mean().reshape(1))


def test_reptile_single_task_step_one_equals_adapted():
    net = _net()
    fm = FunctionalModel(net)
    theta = meta_parameters(net)
    batch = _tasks(T=1)
    cfg = InnerConfig(steps=3, lr=0.1, optimizer="adam")
    phi, _ = run_batched(_loss_fn(fm), theta, {}, batch, cfg)
    mean_delta = {k: (phi[k] - theta[k]).mean(0) for k in theta}
    new = reptile_update(theta, mean_delta, 1.0)
    for k in theta:
        torch.testing.assert_close(new[k], phi[k][0], atol=1e-7, rtol=0)
    half = reptile_update(theta, mean_delta, 0.5)
    for k in theta:
        torch.testing.assert_close(half[k], theta[k] + 0.5 * (phi[k][0] - theta[k]))
    # theta untouched; a key missing from the delta stays put
    partial = reptile_update(theta, {"head.bias": torch.ones(3)}, 2.0)
    torch.testing.assert_close(partial["head.bias"], theta["head.bias"] + 2.0)
    assert torch.equal(partial["enc.0.weight"], theta["enc.0.weight"])


def test_linear_epsilon():
    assert linear_epsilon(0, 11, 1.0, 0.0) == 1.0
    assert math.isclose(linear_epsilon(5, 11, 1.0, 0.0), 0.5)
    assert linear_epsilon(10, 11, 1.0, 0.0) == 0.0
    assert linear_epsilon(0, 1, 0.3, 0.0) == 0.3
    assert math.isclose(linear_epsilon(2, 5, 0.2, 1.0), 0.6)


def test_inner_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        InnerConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="steps"):
        InnerConfig(steps=-1)
    with pytest.raises(ValueError, match="lr"):
        InnerConfig(lr=float("nan"))
