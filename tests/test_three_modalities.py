"""Three modalities (issue 11 item 4): a manifest row carries text, image and audio, some absent.

A tiny manifest in the real on-disk format (text strings, PNG images, WAV clips) is meta-trained
through the CLI (``croma train manifest --source text --target audio``); the extra modality
(image) joins the benchmark, alignment covers every modality pair present, and ``pcmc`` /
``pcmr`` align all modalities at once with absent items masked.
"""

import json

import pytest
import torch
from fixtures_layouts import write_three_modality_manifest

from croma.cli import main
from croma.losses import clip_loss, get_loss
from croma.meta.functional import FunctionalModel, split_params
from croma.meta.inner import InnerConfig, run_inner
from croma.meta.multimodal import AlignMultiFamily
from croma.meta.tasks import AlignFamily, build_family, model_inputs
from episodes.data import PreparedBenchmark
from episodes.datasets import load_benchmark, load_dataset
from episodes.errors import DataError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The manifest, a 2-iteration pcmc run of ``croma train`` on it, and the benchmark."""
    root = tmp_path_factory.mktemp("three")
    manifest = write_three_modality_manifest(root / "data")
    cache, out = root / "cache", root / "run"
    argv = ["train", "manifest", "--manifest", str(manifest), "--source", "text", "--target", "audio",
            "--checkpoint-dir", str(out), "--cache-dir", str(cache), "--loss", "pcmc", "--iterations", "2",
            "--ways", "2", "--shots", "1", "--queries", "1", "--align-batch", "6", "--meta-batch", "4",
            "--inner-steps", "1", "--eval-tasks", "2", "--eval-shots", "1", "--finetune-steps", "1",
            "--embed-dim", "8", "--hidden", "8", "--device", "cpu", "--quiet", "--seed", "3"]
    rc = main(argv)
    bench = load_benchmark("manifest", manifest=manifest, source="text", target="audio", cache_dir=cache, seed=3,
                           ways=2)
    return {"rc": rc, "manifest": manifest, "cache": cache, "out": out, "bench": bench}


def _model(bench, seed=0):
    from croma.model import ModelConfig, build_model

    return build_model(ModelConfig(embed_dim=8, hidden=8, num_classes=2), bench, seed=seed).eval()


def test_cli_trains_every_modality(run):
    from croma.checkpoint import load_checkpoint
    from croma.config import TrainConfig
    from croma.factory import build_model

    assert run["rc"] == 0
    ckpt = load_checkpoint(run["out"] / "last.pt")
    image = {k: v for k, v in ckpt["model"].items() if k.startswith("encoders.image.")}
    assert image, "the extra modality has an encoder"
    init = build_model(TrainConfig.from_dict(ckpt["config"]), run["bench"]).state_dict()
    assert any(not torch.equal(v, init[k]) for k, v in image.items()), "align_multi tasks trained the image encoder"


def test_all_three_modalities_in_the_benchmark(run):
    bench = run["bench"]
    assert set(bench.data) == {"text", "audio", "image"}
    assert bench.modalities == ("text", "audio", "image")
    assert bench.info["extra_modalities"] == ["image"]
    ds = load_dataset("manifest", manifest=run["manifest"], source="text", target="audio")
    assert ds.extra == ("image",)
    for mod in bench.data:
        assert len(bench.data[mod]) == len(ds.items_with(mod))
    assert bench.data["image"].features.shape[1:] == (3, 32, 32)


def test_alignment_tuples_cover_every_pair_and_only_meta_train(run):
    bench = run["bench"]
    tuples = bench.alignment_tuples()
    mods = bench.modalities
    # the expected rows, straight from the manifest
    train = {bench.class_names[c] for c in bench.splits["meta_train"]}
    align_src_ids = {bench.data["text"].ids[r] for r in bench.align_source_rows.tolist()}
    expected = {}
    for line in run["manifest"].read_text().splitlines():
        rec = json.loads(line)
        if rec["label"] not in train:
            continue
        have = {m for m in mods if m in rec and (m != "text" or rec["id"] in align_src_ids)}
        if len(have) >= 2:
            expected[rec["id"]] = have
    got = {}
    for row in tuples.tolist():
        ids = {bench.data[m].ids[r] for m, r in zip(mods, row) if r >= 0}
        assert len(ids) == 1, "one item per row"
        got[ids.pop()] = {m for m, r in zip(mods, row) if r >= 0}
    assert got == expected
    # every modality pair is present, and the family aligns all three
    for a in range(3):
        for b in range(a + 1, 3):
            assert ((tuples[:, a] >= 0) & (tuples[:, b] >= 0)).sum() >= 2, (mods[a], mods[b])
    fam = build_family("align", bench, model_inputs(_model(bench), bench, "cpu"), loss_module=get_loss("clip"),
                       batch_size=4, seed=0, model=_model(bench))
    assert isinstance(fam, AlignMultiFamily)
    assert set(fam.pairs) == {("text", "audio"), ("text", "image"), ("audio", "image")}
    # no held-out class in any alignment row; classification rows never align
    held_out = set(bench.splits["meta_val"]) | set(bench.splits["meta_test"])
    for col, mod in enumerate(mods):
        rows = tuples[:, col][tuples[:, col] >= 0]
        assert not set(bench.data[mod].labels[rows].tolist()) & held_out
    assert not set(tuples[:, 0].tolist()) & set(bench.classify_source_rows.tolist())
    bench.validate()


def test_validate_refuses_a_held_out_class_in_the_tuples(run, monkeypatch):
    bench = run["bench"]
    held = bench.splits["meta_test"][0]
    bad = int(bench.rows_of_classes("image", [held])[0])
    rows = torch.cat([bench.alignment_tuples(), torch.tensor([[-1, -1, bad]])])
    monkeypatch.setattr(PreparedBenchmark, "alignment_tuples", lambda self: rows)
    with pytest.raises(DataError, match="outside meta-train"):
        bench.validate()


def test_two_modalities_stay_as_before(run):
    bench = load_benchmark("manifest", manifest=run["manifest"], source="text", target="audio",
                           cache_dir=run["cache"], seed=3, ways=2, extra=())
    assert set(bench.data) == {"text", "audio"} and bench.modalities == ("text", "audio")
    three = run["bench"]
    for key in ("pairs", "align_source_rows", "align_target_rows", "classify_source_rows"):
        assert torch.equal(getattr(bench, key), getattr(three, key))
    assert bench.splits == three.splits and bench.class_names == three.class_names
    model = _model(bench)
    fam = build_family("align", bench, model_inputs(model, bench, "cpu"), loss_module=get_loss("clip"),
                       batch_size=4, seed=0, model=model)
    assert type(fam) is AlignFamily
    # the extra encoder leaves every other initial parameter as the two-modality model has it
    two, more = _model(bench).state_dict(), _model(three).state_dict()
    assert set(more) - set(two) and all(k.startswith("encoders.image.") for k in set(more) - set(two))
    assert all(torch.equal(v, more[k]) for k, v in two.items())


def test_pcmc_of_two_modalities_is_clip():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    pcmc = get_loss("pcmc", temperature=0.1)
    full = torch.ones(7, 2, dtype=torch.bool)
    want = clip_loss(a, b, temperature=0.1)
    torch.testing.assert_close(pcmc.forward_multi([a, b]), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(pcmc.forward_multi([a, b], present=full), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(pcmc(a, b), want, rtol=0, atol=1e-6)
    from croma.losses import loss_info

    assert "clip" in loss_info("pcmc").formula and "clip" in loss_info("pcmc").paper


@pytest.mark.parametrize("name", ["pcmc", "pcmr"])
def test_absent_items_do_not_affect_the_loss(name):
    g = torch.Generator().manual_seed(1)
    embs = [torch.randn(6, 4, generator=g, requires_grad=True) for _ in range(3)]
    present = torch.ones(6, 3, dtype=torch.bool)
    present[0, 2] = present[3, 0] = present[4, 1] = False
    loss = get_loss(name, **({"threshold": 0.5} if name == "pcmr" else {}))
    value = loss.forward_multi(embs, present=present)
    grads = torch.autograd.grad(value, embs)
    for m in range(3):
        absent = ~present[:, m]
        assert torch.all(grads[m][absent] == 0), (name, m)
        assert grads[m][~absent].abs().sum() > 0
    moved = [e.detach().clone() for e in embs]
    for m in range(3):
        moved[m][~present[:, m]] = torch.randn(int((~present[:, m]).sum()), 4, generator=g)
    torch.testing.assert_close(loss.forward_multi(moved, present=present), value.detach())


def test_family_masks_placeholders_and_pairs_hold_both(run):
    bench = run["bench"]
    model = _model(bench)
    inputs = model_inputs(model, bench, "cpu")
    fam = build_family("align", bench, inputs, loss_module=get_loss("pcmc"), batch_size=6, seed=0, model=model)
    assert fam.joint and fam.modalities == ("text", "audio", "image")
    batch = {k: v[0] for k, v in fam.sample([0, 1]).items()}
    present = batch["present"]
    assert not present.all() and present.sum(1).min() >= 2
    base = fam.loss(model, batch)
    noisy = dict(batch)
    for k, mod in enumerate(fam.modalities):
        x = batch[f"x_{mod}"].clone()
        absent = ~present[:, k]
        if x.is_floating_point():
            x[absent] = torch.randn_like(x[absent])
        else:
            x[absent] = torch.randint_like(x[absent], 1, 200)
        noisy[f"x_{mod}"] = x
    torch.testing.assert_close(fam.loss(model, noisy), base)
    pairwise = build_family("align", bench, inputs, loss_module=get_loss("clip"), batch_size=6, seed=0, model=model)
    assert not pairwise.joint
    for row in [pairwise.sampler.sample_pairs(i) for i in range(3)]:
        for rows in row:
            assert (rows >= 0).all()


@pytest.mark.parametrize("loss", ["pcmc", "clip", "cwcl"])
def test_vmap_over_tasks_equals_the_loop(run, loss):
    bench = run["bench"]
    model = _model(bench)
    inputs = model_inputs(model, bench, "cpu")
    fam = build_family("align", bench, inputs, loss_module=get_loss(loss), batch_size=4, seed=0, model=model)
    fm = FunctionalModel(model)
    theta = {k: v.detach() for k, v in model.named_parameters()}
    train, const = split_params(theta, fam.trainable)
    assert any(k.startswith("encoders.image.") for k in train)
    batch = fam.sample([0, 1, 2])
    cfg = InnerConfig(steps=2, lr=0.1, optimizer="sgd")

    def loss_fn(p, b):
        return fm(p, fam.loss, b)

    fast, fast_losses = run_inner("batched", loss_fn, train, const, batch, cfg)
    slow, slow_losses = run_inner("sequential", loss_fn, train, const, batch, cfg)
    torch.testing.assert_close(fast_losses, slow_losses, rtol=1e-5, atol=1e-6)
    for k in train:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-5, atol=1e-6)


def test_pairwise_objectives_with_context(run):
    """cmcr draws its noise from the family's generator; a memory bank is refused by name."""
    from croma.errors import CromaError

    bench = run["bench"]
    model = _model(bench)
    inputs = model_inputs(model, bench, "cpu")
    fam = build_family("align", bench, inputs, loss_module=get_loss("cmcr"), batch_size=4, seed=0, model=model)
    fam.begin(7)
    batch = {k: v[0] for k, v in fam.sample([0]).items()}
    first = fam.loss(model, batch)
    fam.begin(7)
    assert torch.isfinite(first) and torch.equal(fam.loss(model, batch), first)
    with pytest.raises(CromaError, match="memory"):
        build_family("align", bench, inputs, loss_module=get_loss("cmcr", memory=4), batch_size=4, seed=0,
                     model=model)


def test_no_extra_modalities_flag_keeps_source_and_target(run, tmp_path):
    from croma.checkpoint import load_checkpoint

    argv = ["train", "manifest", "--manifest", str(run["manifest"]), "--source", "text", "--target", "audio",
            "--checkpoint-dir", str(tmp_path / "r"), "--cache-dir", str(run["cache"]), "--iterations", "1",
            "--ways", "2", "--shots", "1", "--queries", "1", "--align-batch", "4", "--meta-batch", "2",
            "--inner-steps", "1", "--eval-every", "0", "--embed-dim", "8", "--hidden", "8", "--device", "cpu",
            "--quiet", "--seed", "3", "--no-extra-modalities"]
    assert main(argv) == 0
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["config"]["data"]["extra_modalities"] is False
    assert not any(k.startswith("encoders.image.") for k in ckpt["model"])


def test_extra_modalities_are_named_before_training(run, tmp_path, capsys):
    """``croma data inspect`` and ``croma train`` say that the manifest's image joins the alignment tasks
    (and how to leave it out); with ``--no-extra-modalities`` train says nothing of it."""
    base = ["manifest", "--manifest", str(run["manifest"]), "--source", "text", "--target", "audio",
            "--cache-dir", str(run["cache"])]
    assert main(["data", "inspect", *base]) == 0
    out = capsys.readouterr().out
    assert "extra modality image: joins the alignment tasks beside text -> audio (--no-extra-modalities" in out
    assert main(["data", "inspect", *base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["extra_modalities"] == ["image"]
    train = ["train", *base, "--iterations", "1", "--ways", "2", "--shots", "1", "--queries", "1", "--align-batch",
             "4", "--meta-batch", "2", "--inner-steps", "1", "--eval-every", "0", "--embed-dim", "8", "--hidden", "8",
             "--device", "cpu", "--seed", "3", "--no-compile-inner"]
    assert main([*train, "--checkpoint-dir", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err.count("extra modality image: joins the alignment tasks") == 1
    assert err.count("images go in as raw pixels") == 1 and "--backbone image=efficientnet-lite0" in err
    assert main([*train, "--checkpoint-dir", str(tmp_path / "s"), "--skip-bad"]) == 0  # croma train loads the data
    assert capsys.readouterr().err.count("extra modality image: joins the alignment tasks") == 1
    assert main([*train, "--checkpoint-dir", str(tmp_path / "b"), "--no-extra-modalities"]) == 0
    err = capsys.readouterr().err
    assert "extra modalit" not in err and "raw pixels" not in err  # text -> audio: no image at all
