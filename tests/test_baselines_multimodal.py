"""Ordinary-training baselines on three modalities (text + image + audio, some absent).

``align-classify``, ``align-meta-classify`` (its alignment phase) and ``shared-align`` align every
modality of the benchmark with the Reptile families' own code
(:class:`croma.meta.multimodal.AlignMultiFamily`): the extra modality's encoder trains, absent
items contribute no gradient, and without the extra modality (``--no-extra-modalities``) training
is bitwise what it is on two modalities.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures_layouts import write_three_modality_manifest

from croma.baselines.common import Budget, MethodContext, fresh_model
from croma.baselines.domain_adaptation import SharedBodyEncoder, shared_model
from croma.baselines.ordinary import MultiAlignTerm, ordinary_train
from croma.baselines.shared_sequence import SharedSequenceEncoder
from croma.benchmark import PRESETS, BenchmarkConfig, _contexts
from croma.losses import get_loss
from croma.meta.multimodal import AlignMultiFamily
from croma.meta.tasks import build_family, derive_seed, model_inputs
from episodes.data import ModalityData
from episodes.datasets import load_benchmark


@pytest.fixture(scope="module")
def benches(tmp_path_factory):
    """The three-modality manifest as a benchmark, and as the two-modality one (``extra=()``)."""
    root = tmp_path_factory.mktemp("bm")
    manifest = write_three_modality_manifest(Path(root) / "data")
    kw = dict(manifest=manifest, source="text", target="audio", cache_dir=Path(root) / "cache", seed=3, ways=2)
    return {"three": load_benchmark("manifest", **kw), "two": load_benchmark("manifest", **kw, extra=())}


def _ctx(bench, loss="pcmc", steps=4):
    cfg = BenchmarkConfig(benchmark="manifest", ways=2, shots=[1], device="cpu", progress=False, out=None, seed=3,
                          loss=loss, model={"embed_dim": 8, "hidden": 8})
    train, ev, _ = _contexts(cfg, bench, PRESETS["quick"])
    # 5 text-audio pairs; 6-8 items a class
    train = replace(train, align_batch=4, shots=1, queries=1, eval_shots=[1], eval_queries=1)
    knobs = {**PRESETS["quick"]["knobs"], "select": False, "ordinary_batch": 8}
    return MethodContext(bench=bench, train=train, eval=ev, budget_steps=steps, knobs=knobs)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("loss", ["pcmc", "clip"])
def test_ordinary_alignment_trains_the_extra_encoder(benches, loss):
    ctx = _ctx(benches["three"], loss)
    model = fresh_model(ctx)
    before = _state(model)
    info = ordinary_train(ctx, model, budget=Budget(steps=3), source_cls=True)
    after = model.state_dict()
    image = [k for k in before if k.startswith("encoders.image.")]
    assert image and any(not torch.equal(before[k], after[k]) for k in image), "the extra encoder trained"
    assert info["optimizer_steps"] == 3 and torch.isfinite(torch.tensor(info["losses"]["align"]))
    # examples count every item the alignment step passes through an encoder
    term = MultiAlignTerm(ctx.bench, model_inputs(model, ctx.bench, "cpu"), get_loss(loss),
                          batch_size=ctx.train.align_batch, seed=0, model=model)
    per_step = term.items + min(8, ctx.bench.classify_source_rows.numel())
    assert info["examples"] == 3 * per_step


def test_the_term_is_the_reptile_family(benches):
    """Same tuples, same batches, same loss as ``croma``'s ``align_multi`` tasks."""
    bench = benches["three"]
    ctx = _ctx(bench)
    model = fresh_model(ctx)
    inputs = model_inputs(model, bench, "cpu")
    seed = derive_seed(5, "align")
    term = MultiAlignTerm(bench, inputs, get_loss("pcmc"), batch_size=6, seed=seed, model=model)
    fam = build_family("align", bench, inputs, loss_module=get_loss("pcmc"), batch_size=6, seed=seed, model=model)
    assert isinstance(fam, AlignMultiFamily) and fam.modalities == ("text", "audio", "image")
    for step in (0, 3):
        want = {k: v[0] for k, v in fam.sample([step]).items()}
        got = term.batch(step)
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
        torch.testing.assert_close(term.loss(model, step), fam.loss(model, want), rtol=0, atol=0)


class _Recorder:
    """The model, keeping each embedding it returns (with its gradient)."""

    def __init__(self, model):
        self.model, self.z = model, {}

    def embed(self, modality, x):
        z = self.model.embed(modality, x)
        z.retain_grad()
        self.z[modality] = z
        return z


def test_absent_items_contribute_zero_gradient(benches):
    bench = benches["three"]
    model = fresh_model(_ctx(bench))
    term = MultiAlignTerm(bench, model_inputs(model, bench, "cpu"), get_loss("pcmc"), batch_size=6, seed=1, model=model)
    mods = term.family.modalities
    for step in range(4):
        batch = term.batch(step)
        present = batch["present"]
        if present.all():
            continue
        rec = _Recorder(model)
        term.family.loss(rec, batch).backward()
        for k, m in enumerate(mods):
            g = rec.z[m].grad  # [B, E]: what each item's embedding receives
            assert torch.all(g[~present[:, k]] == 0), m
            assert g[present[:, k]].abs().sum() > 0, m
        model.zero_grad(set_to_none=True)
        # parameter gradients do not depend on what stands in for an absent item
        params = [p for _, p in model.named_parameters()]
        ref = torch.autograd.grad(term.family.loss(model, batch), params, allow_unused=True)
        noisy = dict(batch)
        g = torch.Generator().manual_seed(step)
        for k, m in enumerate(mods):
            x = batch[f"x_{m}"].clone()
            gone = ~present[:, k]
            if x.is_floating_point():
                x[gone] = torch.randn(x[gone].shape, generator=g)
            else:
                x[gone] = torch.randint(1, 200, x[gone].shape, generator=g).to(x.dtype)
            noisy[f"x_{m}"] = x
        moved = torch.autograd.grad(term.family.loss(model, noisy), params, allow_unused=True)
        for a, b in zip(ref, moved):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        return
    pytest.fail("no step drew an absent item")


def test_pairwise_objective_is_the_mean_over_pairs_holding_both(benches):
    bench = benches["three"]
    model = fresh_model(_ctx(bench, "clip"))
    inputs = model_inputs(model, bench, "cpu")
    term = MultiAlignTerm(bench, inputs, get_loss("clip"), batch_size=6, seed=2, model=model)
    fam = term.family
    assert not fam.joint and set(fam.pairs) == {("text", "audio"), ("text", "image"), ("audio", "image")}
    tuples = bench.alignment_tuples()
    col = {m: k for k, m in enumerate(bench.modalities)}
    want = []
    for (a, b), rows in zip(fam.pairs, fam.sampler.sample_pairs(0)):
        assert (rows >= 0).all()
        held = {(int(r[col[a]]), int(r[col[b]])) for r in tuples.tolist() if r[col[a]] >= 0 and r[col[b]] >= 0}
        assert {tuple(r) for r in rows.tolist()} <= held, "each pair on tuples holding both"
        za = model.embed(a, fam.inputs[a][rows[:, 0]])
        zb = model.embed(b, fam.inputs[b][rows[:, 1]])
        want.append(get_loss("clip")(za, zb))
    torch.testing.assert_close(term.loss(model, 0), torch.stack(want).mean())


@pytest.mark.parametrize("method", ["align-classify", "shared-align"])
def test_without_the_extra_modality_training_is_the_two_modality_one(benches, method):
    """``all_modalities=False`` (or ``--no-extra-modalities``: a benchmark without the extra) trains
    source and target bitwise as on two modalities."""
    two, three = _ctx(benches["two"], "cwcl"), _ctx(benches["three"], "cwcl")
    build = fresh_model if method == "align-classify" else (lambda c: shared_model(c, extras=c.bench is three.bench))
    runs = []
    for ctx, all_mods in ((two, True), (three, False)):
        model = build(ctx)
        ordinary_train(ctx, model, budget=Budget(steps=3), all_modalities=all_mods)
        runs.append(model.state_dict())
    assert set(runs[1]) >= set(runs[0])
    for k, v in runs[0].items():
        assert torch.equal(v, runs[1][k]), k


def test_shared_align_gives_the_extra_modality_an_encoder_and_trains_it(benches):
    bench = benches["three"]
    ctx = _ctx(bench, "pcmc")
    plain = shared_model(ctx)
    assert set(plain.encoders) == {"text", "audio"}  # shared, shared-confusion, shared-target-labels
    model = shared_model(ctx, extras=True)
    assert set(model.encoders) == {"text", "audio", "image"}
    two = shared_model(_ctx(benches["two"], "pcmc")).state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in two.items()), "source/target as without extras"
    # image pixels fit neither body: the encoder the other methods build for them
    assert not isinstance(model.encoders["image"], (SharedBodyEncoder, SharedSequenceEncoder))
    before = _state(model)
    ordinary_train(ctx, model, budget=Budget(steps=3))
    image = [k for k in before if k.startswith("encoders.image.")]
    assert any(not torch.equal(before[k], model.state_dict()[k]) for k in image)


def _as(bench, kind):
    """``bench`` with features of one kind: ``sequence`` (text byte ids, audio frames, image as
    3 x 1024 frames) or ``vector`` (byte ids as floats, mean audio frame, flattened image)."""
    def mod(m, f):
        d = bench.data[m]
        return ModalityData(f(d.features), d.labels, d.clusters, d.ids)

    if kind == "sequence":
        data = {**bench.data, "image": mod("image", lambda x: x.flatten(2))}
    else:
        data = {"text": mod("text", lambda x: x.float()), "audio": mod("audio", lambda x: x.mean(-1)),
                "image": mod("image", lambda x: x.flatten(1))}
    return replace(bench, data=data)


@pytest.mark.parametrize("kind", ["sequence", "vector"])
def test_an_extra_modality_of_the_body_kind_joins_the_shared_body(benches, kind):
    bench = _as(benches["three"], kind)
    ctx = _ctx(bench, "clip")
    model = shared_model(ctx, extras=True)
    enc = model.encoders
    assert isinstance(enc["image"], SharedBodyEncoder if kind == "vector" else SharedSequenceEncoder)
    assert enc["image"].body is enc["text"].body is enc["audio"].body
    assert enc["image"].input is not enc["text"].input
    before = _state(model)
    ordinary_train(ctx, model, budget=Budget(steps=3))
    own = [k for k in before if k.startswith("encoders.image.input.")]
    assert own and any(not torch.equal(before[k], model.state_dict()[k]) for k in own)


@pytest.mark.parametrize("loss", ["pcmc", "clip"])
def test_examples_count_every_modality_for_reptile_and_ordinary_alike(benches, loss):
    """An align_multi task passes ``B x 3`` items (joint) or ``2 x sum_pairs min(B, n_pair)``."""
    from croma.baselines.reptile_runs import budgeted_reptile

    bench = benches["three"]
    ctx = _ctx(bench, loss)
    model = fresh_model(ctx)
    tuples = bench.alignment_tuples()
    have = tuples >= 0
    if loss == "pcmc":
        want = min(4, tuples.shape[0]) * 3
    else:
        want = 2 * sum(min(4, int((have[:, a] & have[:, b]).sum())) for a, b in ((0, 1), (0, 2), (1, 2)))
    term = MultiAlignTerm(bench, model_inputs(model, bench, "cpu"), get_loss(loss), batch_size=4, seed=0, model=model)
    assert term.items == want
    _, info = budgeted_reptile(ctx, model=model, task_weights={"align": 1.0}, budget=Budget(steps=8),
                               overrides={"meta_batch": 2, "inner_steps": 1, "eval_tasks": 2})
    assert info["examples"] == info["outer_steps"] * 2 * want


def test_target_samples_count_target_items_of_every_alignment_tuple(benches):
    from croma.baselines.common import target_pool_counts

    three, two = benches["three"], benches["two"]
    tuples = three.alignment_tuples()
    col = tuples[:, three.modalities.index("audio")]
    fit = set((three.info.get("frontend_fit_rows") or {}).get("audio", []))
    want = fit | set(three.align_target_rows.tolist()) | set(col[col >= 0].tolist())
    assert target_pool_counts(three, align=True) == (len(want), 0)
    assert target_pool_counts(two, align=True) == (len(fit | set(two.align_target_rows.tolist())), 0)
