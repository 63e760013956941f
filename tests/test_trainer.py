"""CROMA trainer: batched == sequential, determinism, distributable deltas, task plans, hooks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from croma.config import TrainConfig
from croma.factory import build_from_config
from croma.fit import CromaTrainer, train
from croma.meta.functional import tree_equal
from croma.meta.outer import task_plan
from episodes.datasets.synthetic import make_synthetic_benchmark


class NCE(nn.Module):
    """Local InfoNCE (vmap/grad-safe) so these tests do not depend on the objectives' module."""

    def forward(self, zs, zt):
        logits = F.normalize(zs, dim=-1) @ F.normalize(zt, dim=-1).T / 0.2
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def cfg(**kw):
    base = dict(
        iterations=3, meta_batch=4, task_mix=0.5, inner_steps=2, inner_lr=0.05, inner_optimizer="sgd",
        align_batch=8, ways=5, shots=2, queries=2, eval_every=0, checkpoint_every=0, seed=0,
        model={"embed_dim": 8, "hidden": 16}, finetune_steps=3, finetune_lr=0.05, eval_tasks=4,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_batched_equals_sequential_after_three_outer_steps(bench, opt):
    kw = dict(inner_optimizer=opt, inner_lr=0.05 if opt == "sgd" else 0.01)
    a = train(cfg(inner_loop="batched", **kw), bench, loss_module=NCE())
    b = train(cfg(inner_loop="sequential", **kw), bench, loss_module=NCE())
    assert a.iteration == b.iteration == 3
    moved = 0
    theta0 = CromaTrainer(cfg(), bench, loss_module=NCE()).theta
    for k in a.theta:
        torch.testing.assert_close(a.theta[k], b.theta[k], atol=1e-5, rtol=0)
        moved += int(not torch.equal(a.theta[k], theta0[k]))
    assert moved == len(theta0)  # every meta-parameter (both encoders, align, classifier) was meta-learned


def test_weak_alignment_batched_equals_sequential():
    weak = make_synthetic_benchmark(num_classes=30, per_class=16, source_dim=12, target_dim=10, latent_dim=4, weak=True, seed=1)
    a = train(cfg(inner_loop="batched", align_batch=4, task_mix=1.0), weak, loss_module=NCE())
    b = train(cfg(inner_loop="sequential", align_batch=4, task_mix=1.0), weak, loss_module=NCE())
    for k in a.theta:
        torch.testing.assert_close(a.theta[k], b.theta[k], atol=1e-5, rtol=0)


def test_same_seed_same_numbers(bench):
    a = train(cfg(inner_optimizer="adam", inner_lr=0.01), bench, loss_module=NCE())
    b = train(cfg(inner_optimizer="adam", inner_lr=0.01), bench, loss_module=NCE())
    assert tree_equal(a.theta, b.theta)
    c = train(cfg(inner_optimizer="adam", inner_lr=0.01, seed=1), bench, loss_module=NCE())
    assert not tree_equal(a.theta, c.theta)


def test_task_deltas_split_over_subsets_sums_to_full(bench):
    """A rank can compute a share of the meta-batch; the summed shares equal the whole."""
    tr = CromaTrainer(cfg(meta_batch=6, task_mix=0.5), bench, loss_module=NCE())
    full, n_full, _ = tr.task_deltas(tr.theta, 2)
    d1, n1, _ = tr.task_deltas(tr.theta, 2, [0, 3, 5])
    d2, n2, _ = tr.task_deltas(tr.theta, 2, [1, 2, 4])
    assert (n_full, n1 + n2) == (6, 6)
    for k in full:
        torch.testing.assert_close(d1[k] + d2[k], full[k], atol=1e-6, rtol=1e-5)
    # the per-task contributions are pure functions of (seed, iteration, task id)
    again, _, _ = tr.task_deltas(tr.theta, 2, [3])
    alone = CromaTrainer(cfg(meta_batch=6, task_mix=0.5), bench, loss_module=NCE()).task_deltas(tr.theta, 2, [3])[0]
    assert tree_equal(again, alone)
    # locate maps ids to family task indices t * count + offset
    assert tr.locate(2, [0, 2, 3, 5]) == [("align", [6, 8]), ("source_cls", [6, 8])]
    with pytest.raises(ValueError, match="task ids"):
        tr.locate(0, [6])


def test_task_plan_counts():
    assert task_plan(cfg(meta_batch=8, task_mix=0.25)) == [("align", 2), ("source_cls", 6)]
    assert task_plan(cfg(meta_batch=5, task_mix=0.0)) == [("source_cls", 5)]
    assert task_plan(cfg(meta_batch=4, task_mix=1.0)) == [("align", 4)]
    plan = task_plan(cfg(meta_batch=7, task_weights={"align": 1, "source_cls": 1, "target_recon": 1}))
    assert dict(plan) == {"align": 3, "source_cls": 2, "target_recon": 2} and sum(c for _, c in plan) == 7


def test_source_only_tasks_leave_target_side_unchanged(bench):
    r = train(cfg(task_mix=0.0), bench)  # no alignment tasks: no objective needed
    theta0 = CromaTrainer(cfg(task_mix=0.0), bench).theta
    for k in theta0:
        changed = not torch.equal(r.theta[k], theta0[k])
        assert changed == (k.startswith("encoders.text.") or k.startswith("classifier.")), k


def test_training_does_not_touch_the_module_and_lowers_task_losses(bench):
    c = cfg(iterations=16, meta_batch=6, inner_optimizer="adam", inner_lr=0.01, inner_steps=3, eval_every=8,
            model={"embed_dim": 16, "hidden": 32}, head_init="auto")
    model = build_from_config(c, bench)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    tr = CromaTrainer(c, bench, model=model, loss_module=NCE())
    _, _, loss0 = tr.task_deltas(tr.theta, 50)  # held-out tasks (iteration 50 is never trained on)
    res = tr.fit()
    _, _, loss1 = tr.task_deltas(res.theta, 50)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    # the meta-learned init aligns unseen pair batches much better, and adapts better on source tasks
    assert loss1["align"][:, 0].mean() < 0.6 * loss0["align"][:, 0].mean()
    assert loss1["source_cls"][:, -1].mean() < loss0["source_cls"][:, -1].mean()
    assert [h["iteration"] for h in res.history if "val_acc" in h] == [8, 16]
    assert res.best_val == max(h["val_acc"] for h in res.history if "val_acc" in h)
    assert res.head_init in ("meta", "zero", "prototype") and set(res.head_scores) == {"meta", "zero", "prototype"}
    assert res.head_scores[res.head_init] == max(res.head_scores.values())


def test_oracle_and_reconstruction_hooks(bench):
    c = cfg(task_weights={"target_cls": 1, "target_recon": 1}, model={"embed_dim": 8, "hidden": 16, "reconstruction": True})
    a = train(c, bench)
    b = train(cfg(task_weights={"target_cls": 1, "target_recon": 1}, inner_loop="sequential",
                  model={"embed_dim": 8, "hidden": 16, "reconstruction": True}), bench)
    theta0 = CromaTrainer(c, bench).theta
    for k in a.theta:
        torch.testing.assert_close(a.theta[k], b.theta[k], atol=1e-5, rtol=0)
        assert torch.equal(a.theta[k], theta0[k]) == k.startswith("encoders.text."), k


@pytest.mark.parametrize(
    "kw, flag",
    [({"meta_lr": -1.0}, "--meta-lr"), ({"task_mix": 1.5}, "--task-mix"), ({"inner_steps": 0}, "--inner-steps"),
     ({"inner_optimizer": "rmsprop"}, "--inner-optimizer"), ({"head_init": "best"}, "--head-init"),
     ({"task_weights": {"bogus": 1.0}}, "--task-weights")],
)
def test_config_validation_names_the_flag(kw, flag):
    with pytest.raises(ValueError, match=flag):
        cfg(**kw).validate()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_short_training_on_cuda(bench):
    r = train(cfg(device="cuda", eval_every=3), bench, loss_module=NCE())
    assert all(v.device.type == "cuda" for v in r.theta.values())
    ref = train(cfg(device="cpu", eval_every=3), bench, loss_module=NCE())
    for k in r.theta:
        torch.testing.assert_close(r.theta[k].cpu(), ref.theta[k], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["nce", "clip", "cwcl", "pcmc", "pcmr", "cmcr"])
def test_every_registered_objective_trains_batched_like_sequential(bench, name):
    from croma.losses import list_losses

    assert name in list_losses()
    hp = {"noise_std": 0.0} if name == "cmcr" else {}  # noise-free: the two paths must agree
    a = train(cfg(loss=name, loss_hp=hp, task_mix=1.0, meta_batch=2, iterations=2), bench)
    b = train(cfg(loss=name, loss_hp=hp, task_mix=1.0, meta_batch=2, iterations=2, inner_loop="sequential"), bench)
    for k in a.theta:
        assert torch.isfinite(a.theta[k]).all()
        torch.testing.assert_close(a.theta[k], b.theta[k], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_noisy_objective_is_deterministic_and_resumable(bench, tmp_path, mode):
    """cmcr draws noise: the trainer seeds it per (seed, iteration, tasks), so runs repeat exactly."""
    c = dict(loss="cmcr", task_mix=1.0, meta_batch=2, iterations=4, inner_loop=mode, checkpoint_every=2)
    a = train(cfg(**c, checkpoint_dir=str(tmp_path / "a")), bench)
    b = train(cfg(**c, checkpoint_dir=str(tmp_path / "a")), bench)
    assert tree_equal(a.theta, b.theta)
    train(cfg(**c, checkpoint_dir=str(tmp_path / "b"), stop_after=2), bench)
    r = train(cfg(**c, checkpoint_dir=str(tmp_path / "b")), bench, resume=True)
    assert tree_equal(a.theta, r.theta)
    quiet = train(cfg(**{**c, "loss_hp": {"noise_std": 0.0}}), bench)
    assert not tree_equal(a.theta, quiet.theta)  # the noise is really used


def test_outer_step_with_a_reduce_hook_equals_the_full_step(bench):
    """What a distributed rank does: its share of the tasks, then the shares summed (all_reduce)."""
    full = CromaTrainer(cfg(meta_batch=4), bench, loss_module=NCE())
    rank0 = CromaTrainer(cfg(meta_batch=4), bench, loss_module=NCE())
    other = CromaTrainer(cfg(meta_batch=4), bench, loss_module=NCE())

    def reduce(deltas, n, losses):
        d2, n2, l2 = other.task_deltas(rank0.theta, rank0.iteration, [1, 3])
        return {k: v + d2[k] for k, v in deltas.items()}, n + n2, {**losses}

    for _ in range(2):
        full.outer_step()
        rank0.outer_step(task_ids=[0, 2], reduce=reduce)
    for k in full.theta:
        torch.testing.assert_close(rank0.theta[k], full.theta[k], atol=1e-6, rtol=1e-5)
