"""CrossModalModel / ModelConfig / build_model: parameter names, init, determinism, defaults,
reconstruction hook, functional + vmap safety."""

import pytest
import torch
from torch.func import functional_call, grad, vmap

from croma.encoders.cnn2d import Conv2dEncoder
from croma.encoders.mlp import MLPEncoder
from croma.encoders.sequence import Conv1dEncoder
from croma.model import CrossModalModel, ModelConfig, build_model, input_summary
from episodes.data import ModalityData, PreparedBenchmark

SHAPES = {"text": ((24,), torch.long), "audio": ((6, 20), torch.float32)}


def _small_cfg(**kw):
    hp = {"text": {"channels": 8, "embed_dim": 8}, "audio": {"channels": 8}}
    base = dict(embed_dim=16, num_classes=5, encoder_hp=hp)
    base.update(kw)
    return ModelConfig(**base)


def _bench():
    gen = torch.Generator().manual_seed(0)
    n = 10
    text = torch.randint(0, 257, (n, 24), generator=gen)
    audio = torch.randn(n, 6, 20, generator=gen)
    labels = torch.arange(n) % 5
    mk = lambda f: ModalityData(f, labels, torch.full((n,), -1), [str(i) for i in range(n)])  # noqa: E731
    return PreparedBenchmark(
        name="tiny", source="text", target="audio", class_names=list("abcde"), cluster_names=[],
        data={"text": mk(text), "audio": mk(audio)}, pairs=torch.stack([torch.arange(n)] * 2, 1),
        splits={"meta_train": [0, 1], "meta_val": [2], "meta_test": [3, 4], "source_train": [0, 1]},
        align_source_rows=torch.arange(4), align_target_rows=torch.arange(4),
        classify_source_rows=torch.arange(4, 10),
    )


def test_parameter_names_and_shapes():
    model = build_model(_small_cfg(), _bench(), seed=0)
    names = dict(model.named_parameters())
    assert model.source == "text" and model.target == "audio"
    for n in names:
        assert n.startswith(("encoders.text.", "encoders.audio.", "align.", "classifier.")), n
    assert any(n.startswith("encoders.text.") for n in names)
    assert any(n.startswith("encoders.audio.") for n in names)
    assert names["align.weight"].shape == (16, 16) and names["align.bias"].shape == (16,)
    assert names["classifier.weight"].shape == (5, 16) and names["classifier.bias"].shape == (5,)
    assert model.recon is None
    assert isinstance(model.encoders["text"], Conv1dEncoder) and model.encoders["text"].is_bytes
    assert isinstance(model.encoders["audio"], Conv1dEncoder) and not model.encoders["audio"].is_bytes


def test_embed_classify_forward_semantics():
    model = build_model(_small_cfg(), SHAPES, seed=1)
    x_t = torch.randint(0, 257, (3, 24), generator=torch.Generator().manual_seed(1))
    x_a = torch.randn(3, 6, 20, generator=torch.Generator().manual_seed(2))
    # align starts as identity: target embedding == encoder output
    torch.testing.assert_close(model.embed("audio", x_a), model.encoders["audio"](x_a))
    torch.testing.assert_close(model.embed("text", x_t), model.encoders["text"](x_t))
    with torch.no_grad():
        model.align.weight.mul_(2.0)
        model.align.bias.fill_(0.5)
    torch.testing.assert_close(model.embed("audio", x_a), 2 * model.encoders["audio"](x_a) + 0.5)
    torch.testing.assert_close(model.embed("text", x_t), model.encoders["text"](x_t))  # source not aligned
    z = model.embed("audio", x_a)
    ref = z @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(model("audio", x_a), ref)
    torch.testing.assert_close(model("audio", x_a, output="embed"), z)
    with pytest.raises(ValueError, match="output"):
        model("audio", x_a, output="nope")
    with pytest.raises(ValueError, match="reconstruction"):
        model.reconstruction_loss(x_a)


def test_same_seed_same_params_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = build_model(_small_cfg(), SHAPES, seed=3)
    b = build_model(_small_cfg(), SHAPES, seed=3)
    c = build_model(_small_cfg(), SHAPES, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_default_encoder_choice_and_overrides(tmp_path):
    shapes = {"text": ((9,), torch.float32), "image": ((3, 16, 16), torch.float32)}
    m = build_model(ModelConfig(embed_dim=8, hidden=12), shapes, seed=0)
    assert isinstance(m.encoders["text"], MLPEncoder) and m.encoders["text"].net[0].out_features == 12
    assert isinstance(m.encoders["image"], Conv2dEncoder)
    # explicit names + hp; source/target keywords
    cfg = ModelConfig(embed_dim=8, encoders={"image": "mlp"}, encoder_hp={"image": {"hidden": 7, "layers": 3}})
    m = build_model(cfg, shapes, seed=0, source="image", target="text")
    assert m.source == "image" and m.target == "text"
    assert isinstance(m.encoders["image"], MLPEncoder) and m.encoders["image"].net[0].out_features == 7
    with pytest.raises(ValueError, match="bogus"):
        build_model(ModelConfig(encoder_hp={"text": {"bogus": 1}}), shapes, seed=0)
    with pytest.raises(ValueError, match="nonexistent"):
        build_model(ModelConfig(encoders={"text": "nonexistent"}), shapes, seed=0)
    # image_weights -> resnet18 from the local file (frozen parts excluded from meta-parameters)
    import torchvision

    path = tmp_path / "resnet18-f37072fd.pth"
    with torch.random.fork_rng(devices=[]):
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    m = build_model(ModelConfig(embed_dim=8, image_weights=str(path)), shapes, seed=0)
    assert type(m.encoders["image"]).__name__ == "ResNet18Encoder"
    meta = m.meta_parameters()
    assert "encoders.image.proj.weight" in meta
    assert not any(k.startswith("encoders.image.backbone.") for k in meta)
    from croma.errors import CromaError

    with pytest.raises(CromaError, match="missing.pth"):
        build_model(ModelConfig(image_weights=str(tmp_path / "missing.pth")), shapes, seed=0)


def test_full_model_vmap_batched_params_equals_loop():
    model = build_model(_small_cfg(), SHAPES, seed=2)
    gen = torch.Generator().manual_seed(5)
    ps = {k: torch.stack([v.detach() + 0.05 * i * torch.randn(v.shape, generator=gen) for i in range(3)])
          for k, v in model.named_parameters()}
    x_t = torch.randint(0, 257, (3, 4, 24), generator=gen)  # per-task inputs
    x_a = torch.randn(3, 4, 6, 20, generator=gen)
    y = torch.tensor([0, 1, 2, 3])

    def loss(p, xt, xa):
        zt = functional_call(model, p, ("text", xt), {"output": "embed"})
        logits = functional_call(model, p, ("audio", xa))
        return torch.nn.functional.cross_entropy(logits, y) + (zt - zt.mean()).pow(2).mean()

    out = vmap(loss)(ps, x_t, x_a)
    ref = torch.stack([loss({k: v[i] for k, v in ps.items()}, x_t[i], x_a[i]) for i in range(3)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = vmap(grad(loss))(ps, x_t, x_a)
    g1 = grad(loss)({k: v[1] for k, v in ps.items()}, x_t[1], x_a[1])
    for k in g1:
        torch.testing.assert_close(g[k][1], g1[k], atol=1e-5, rtol=1e-4)
    assert g["classifier.weight"].abs().sum() > 0 and g["align.weight"].abs().sum() > 0


def test_input_summary_reference():
    ids = torch.tensor([[1, 1, 3, 0, 0]])  # bytes 0, 0, 2 (+1), then padding
    s = input_summary(ids, (5,), False)
    expected = torch.zeros(1, 257)
    expected[0, 1] = 2 / 3
    expected[0, 3] = 1 / 3
    torch.testing.assert_close(s, expected)
    x = torch.arange(12.0).reshape(1, 3, 4)
    torch.testing.assert_close(input_summary(x, (3, 4), True), torch.tensor([[1.5, 5.5, 9.5]]))
    img = torch.ones(1, 3, 8, 8)
    assert input_summary(img, (3, 8, 8), True).shape == (1, 48)


@pytest.mark.parametrize("target_shape,dtype,dim", [((24,), torch.long, 257), ((6, 20), torch.float32, 6)])
def test_reconstruction_head(target_shape, dtype, dim):
    shapes = {"audio": ((6, 20), torch.float32), "text": (target_shape, dtype)}
    hp = {"text": {"channels": 8}, "audio": {"channels": 8}}
    model = build_model(ModelConfig(embed_dim=16, encoder_hp=hp, reconstruction=True), shapes, seed=0,
                        source="audio", target="text")
    assert model.recon.decoder.weight.shape == (dim, 16)
    gen = torch.Generator().manual_seed(6)
    x = torch.randint(0, 257, (4, 24), generator=gen) if dtype == torch.long else torch.randn(4, 6, 20, generator=gen)
    z = model.embed("text", x)
    summary = input_summary(x, target_shape, dtype.is_floating_point)
    ref = ((z @ model.recon.decoder.weight.T + model.recon.decoder.bias) - summary).pow(2).mean()
    torch.testing.assert_close(model.reconstruction_loss(x), ref)
    with pytest.raises(ValueError, match="target"):
        model("audio", torch.randn(2, 6, 20), output="reconstruction_loss")
    ps = {k: torch.stack([v.detach(), v.detach() * 1.1]) for k, v in model.named_parameters()}
    f = lambda p: functional_call(model, p, ("text", x), {"output": "reconstruction_loss"})  # noqa: E731
    out = vmap(f)(ps)
    torch.testing.assert_close(out[0], ref.detach(), atol=1e-6, rtol=1e-5)
    g = vmap(grad(f))(ps)
    assert g["recon.decoder.weight"].abs().sum() > 0


def test_bad_construction():
    enc = {"text": MLPEncoder((4,), 8), "audio": MLPEncoder((4,), 6)}
    with pytest.raises(ValueError, match="embed_dim"):
        CrossModalModel(enc, source="text", target="audio", embed_dim=8, num_classes=3)
    with pytest.raises(ValueError, match="image"):
        CrossModalModel(enc, source="text", target="image", embed_dim=8, num_classes=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_on_cuda():
    model = build_model(_small_cfg(), SHAPES, seed=0)
    x = torch.randn(3, 6, 20)
    cpu = model("audio", x)
    model = model.to("cuda")
    out = model("audio", x.to("cuda"))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-4, rtol=1e-4)
