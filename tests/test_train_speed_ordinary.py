"""Ordinary training's optimiser (:class:`croma.baselines.ordinary.PlainAdam`): bitwise the update
of ``torch.optim.Adam`` (its CPU default), alone and inside ``ordinary_train``; ``fused_adam`` opt-in."""

from dataclasses import replace

import pytest
import torch

from croma.baselines import ordinary
from croma.baselines.common import Budget, MethodContext, fresh_model
from croma.baselines.domain_adaptation import shared_model
from croma.baselines.ordinary import PlainAdam, make_adam, ordinary_train
from croma.benchmark import PRESETS, BenchmarkConfig, _contexts


def _params(g):
    shapes = [(7, 5), (7,), (3, 7), (3,), (1,)]
    return [torch.randn(s, generator=g) for s in shapes]


@pytest.mark.parametrize("lr", [1e-3, 3e-4, 0.1])
def test_plain_adam_equals_torch_adam_bitwise(lr):
    g = torch.Generator().manual_seed(0)
    start = _params(g)
    a = [p.clone().requires_grad_() for p in start]
    b = [p.clone().requires_grad_() for p in start]
    ref, mine = torch.optim.Adam(a, lr=lr), PlainAdam(b, lr)
    for step in range(60):
        for i, (pa, pb) in enumerate(zip(a, b)):
            if i == 3 and step % 3 == 0:  # sometimes no gradient: skipped, its step count stays
                pa.grad = pb.grad = None
                continue
            grad = torch.randn(pa.shape, generator=g) * 10.0 ** float(torch.randint(-6, 3, (1,), generator=g))
            if step == 5:
                grad[..., 0] = 0.0
            pa.grad, pb.grad = grad.clone(), grad.clone()
        ref.step()
        mine.step()
        for pa, pb in zip(a, b):
            assert torch.equal(pa, pb), f"step {step}"
    mine.zero_grad()
    assert all(p.grad is None for p in b)


def test_make_adam_choice():
    p = [torch.zeros(3, requires_grad=True)]
    assert isinstance(make_adam(p, 1e-3), PlainAdam)
    fused = make_adam(p, 1e-3, fused=True)
    assert isinstance(fused, torch.optim.Adam) and fused.defaults["fused"]
    cplx = [torch.zeros(3, dtype=torch.complex64, requires_grad=True)]
    assert isinstance(make_adam(cplx, 1e-3), torch.optim.Adam)


def _ctx(bench, **knobs):
    cfg = BenchmarkConfig(benchmark="synthetic", shots=[1], repeats=1, eval_tasks=4, ways=3, device="cpu",
                          out=None, progress=False)
    train, ev, _ = _contexts(cfg, bench, PRESETS["quick"])
    train = replace(train, eval_tasks=4, model=dict(embed_dim=16, hidden=32))
    k = dict(PRESETS["quick"]["knobs"], val_episodes=4, val_checks=2, ordinary_batch=16)
    k.update(knobs)
    return MethodContext(bench=bench, train=train, eval=ev, budget_steps=30, knobs=k)


def _train(ctx, make_model, monkeypatch, adam=None, **kw):
    if adam is not None:
        monkeypatch.setattr(ordinary, "make_adam", adam)
    model = make_model(ctx)
    info = ordinary_train(ctx, model, budget=Budget(steps=30), **kw)
    monkeypatch.undo()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info


@pytest.mark.parametrize("terms", [
    dict(align_weight=1.0, source_cls=True),
    dict(align_weight=0.0, source_cls=True, target_cls=True, confusion_weight=0.5),
])
def test_ordinary_train_same_numbers_as_torch_adam(bench, monkeypatch, terms):
    """The whole loop (selection on meta-val included) ends on the same parameters, losses and
    selection as with ``torch.optim.Adam``."""
    ctx = _ctx(bench)
    make = shared_model if terms.get("confusion_weight") else fresh_model
    torch_adam = lambda params, lr, fused=False: torch.optim.Adam(list(params), lr=lr)  # noqa: E731
    ref, info_ref = _train(ctx, make, monkeypatch, torch_adam, **terms)
    new, info_new = _train(ctx, make, monkeypatch, **terms)
    assert ref.keys() == new.keys()
    assert all(torch.equal(ref[k], new[k]) for k in ref)
    for key in ("losses", "start_val", "best_val", "best_step", "examples", "optimizer_steps"):
        assert info_ref[key] == info_new[key], key


def test_fused_adam_knob_is_opt_in(bench, monkeypatch):
    seen = []

    def spy(params, lr, *, fused=False):
        seen.append(fused)
        return make_adam(params, lr, fused=fused)

    for knobs in ({}, {"fused_adam": True}):
        _train(_ctx(bench, select=False, **knobs), fresh_model, monkeypatch, spy, align_weight=1.0)
    assert seen == [False, True]
