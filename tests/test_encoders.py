"""Encoders: shapes, vmap over batched parameters == loop, grad, padding invariance,
local-weights loading for resnet18 / bert."""

import pytest
import torch
from torch.func import functional_call, grad, vmap

from croma.encoders import encoder_hyperparameters, get_encoder, list_encoders
from croma.errors import CromaError


def _bytes(gen, b, length, valid):
    x = torch.randint(1, 257, (b, length), generator=gen)
    for i, n in enumerate(valid):
        x[i, n:] = 0
    return x


def _cases():
    gen = torch.Generator().manual_seed(0)
    return [
        ("mlp", (12,), torch.randn(4, 12, generator=gen), {}),
        ("mlp", (12,), torch.randn(4, 12, generator=gen), {"layers": 3, "norm": False, "activation": "relu"}),
        ("cnn1d", (24,), _bytes(gen, 4, 24, [24, 10, 3, 1]), {"channels": 8}),
        ("cnn1d", (5, 20), torch.randn(4, 5, 20, generator=gen), {"channels": 8, "norm": False}),
        ("lstm", (12,), _bytes(gen, 4, 12, [12, 5, 2, 1]), {"hidden": 8}),
        ("lstm", (5, 12), torch.randn(4, 5, 12, generator=gen), {"hidden": 8, "stride": 2, "pooling": "last"}),
        ("cnn2d", (3, 16, 16), torch.randn(4, 3, 16, 16, generator=gen), {"channels": 4}),
        ("cnn2d", (1, 8, 12), torch.randn(4, 1, 8, 12, generator=gen), {"channels": 4, "layers": 2}),
    ]


CASES = _cases()
IDS = [f"{c[0]}-{'x'.join(map(str, c[1]))}-{i}" for i, c in enumerate(CASES)]


def _build(name, shape, hp, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_encoder(name, shape, 6, **hp)


def _stacked(enc, copies=3, scale=0.05):
    gen = torch.Generator().manual_seed(1)
    out = {}
    for k, v in enc.named_parameters():
        noise = [torch.randn(v.shape, generator=gen) * scale * i for i in range(copies)]
        out[k] = torch.stack([v.detach() + n for n in noise])
    return out


def test_registry_names_and_errors():
    assert {"mlp", "lstm", "cnn1d", "cnn2d", "resnet18", "bert"} <= set(list_encoders())
    with pytest.raises(ValueError, match="nope"):
        get_encoder("nope", (3,), 4)
    with pytest.raises(ValueError, match="bogus"):
        get_encoder("mlp", (3,), 4, bogus=1)
    assert "hidden" in encoder_hyperparameters("mlp")
    with pytest.raises(ValueError, match="input_shape"):
        get_encoder("cnn1d", (2, 3, 4), 4)


@pytest.mark.parametrize("name,shape,x,hp", CASES, ids=IDS)
def test_output_shape_and_no_batchnorm(name, shape, x, hp):
    enc = _build(name, shape, hp)
    out = enc(x)
    assert out.shape == (4, 6) and enc.out_dim == 6
    assert torch.isfinite(out).all()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in enc.modules())


@pytest.mark.parametrize("name,shape,x,hp", CASES, ids=IDS)
def test_vmap_batched_params_equals_loop_and_grad(name, shape, x, hp):
    enc = _build(name, shape, hp)
    ps = _stacked(enc)
    out = vmap(lambda p, xx: functional_call(enc, p, (xx,)), in_dims=(0, None))(ps, x)
    ref = torch.stack([functional_call(enc, {k: v[i] for k, v in ps.items()}, (x,)) for i in range(3)])
    assert out.shape == (3, 4, 6)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the copies differ, so this is not comparing identical computations
    assert (ref[0] - ref[2]).abs().max() > 1e-4

    def loss(p, xx):
        return functional_call(enc, p, (xx,)).pow(2).mean()

    g = vmap(grad(loss), in_dims=(0, None))(ps, x)
    for i in range(3):
        gi = grad(loss)({k: v[i] for k, v in ps.items()}, x)
        for k in gi:
            torch.testing.assert_close(g[k][i], gi[k], atol=1e-5, rtol=1e-4)
    assert any(v.abs().sum() > 0 for v in g.values())


def test_vmap_over_tasks_batched_inputs_and_params():
    enc = _build("cnn1d", (16,), {"channels": 8})
    ps = _stacked(enc)
    gen = torch.Generator().manual_seed(3)
    xs = torch.randint(0, 257, (3, 5, 16), generator=gen)
    out = vmap(lambda p, xx: functional_call(enc, p, (xx,)))(ps, xs)
    ref = torch.stack([functional_call(enc, {k: v[i] for k, v in ps.items()}, (xs[i],)) for i in range(3)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,hp", [("cnn1d", {"channels": 8}), ("cnn1d", {"channels": 8, "stride": 1, "layers": 2}),
                                     ("lstm", {"hidden": 8}), ("lstm", {"hidden": 8, "pooling": "last"})])
def test_byte_encoders_padding_invariance(name, hp):
    gen = torch.Generator().manual_seed(4)
    x = _bytes(gen, 4, 20, [20, 9, 4, 0])  # includes an all-padding row
    enc = _build(name, (20,), hp)
    padded = torch.cat([x, torch.zeros(4, 13, dtype=torch.long)], dim=1)
    enc_long = _build(name, (33,), hp)  # same seed -> same parameters (shape independent)
    enc_long.load_state_dict(enc.state_dict())
    torch.testing.assert_close(enc(x), enc_long(padded), atol=1e-5, rtol=1e-5)
    # content matters: changing a valid byte changes the output
    y = x.clone()
    y[1, 2] = 1 + (y[1, 2] % 256)
    assert (enc(y)[1] - enc(x)[1]).abs().max() > 1e-6


def test_lstm_matches_torch_lstm():
    """The explicit-matmul LSTM equals nn.LSTM with the same weights (frames input)."""
    enc = _build("lstm", (3, 7), {"hidden": 5, "pooling": "last"})
    ref = torch.nn.LSTM(3, 5, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(enc.input_proj.weight)
        ref.bias_ih_l0.copy_(enc.input_proj.bias)
        ref.weight_hh_l0.copy_(enc.recurrent.weight)
        ref.bias_hh_l0.zero_()
    x = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(5))
    _, (h, _) = ref(x.transpose(1, 2))
    torch.testing.assert_close(enc(x), enc.proj(h[0]), atol=1e-6, rtol=1e-5)


def test_cnn1d_mean_max_pool_reference():
    from croma.encoders.sequence import masked_mean_max

    h = torch.tensor([[[1.0, 5.0, -2.0, 7.0]]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(masked_mean_max(h, m), torch.tensor([[4.0 / 3.0, 5.0]]))
    torch.testing.assert_close(masked_mean_max(h, torch.zeros(1, 4)), torch.zeros(1, 2))


# ---- resnet18 from a local file -------------------------------------------------------------

def _resnet_file(tmp_path):
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_resnet18_local_weights_frozen(tmp_path):
    net, path = _resnet_file(tmp_path)
    enc = get_encoder("resnet18", (3, 32, 32), 6, weights_path=str(path))
    enc.train()
    assert not enc.backbone.training  # BatchNorm stays in eval mode
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable == ["proj.weight", "proj.bias"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    net.eval()
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        ref = enc.proj(net(x))
        out = enc(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # functional + vmap over batched projection params, frozen backbone shared
    ps = {k: torch.stack([v.detach(), v.detach() * 2]) for k, v in enc.named_parameters() if v.requires_grad}
    vout = vmap(lambda p, xx: functional_call(enc, p, (xx,)), in_dims=(0, None))(ps, x)
    torch.testing.assert_close(vout[0], out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vout[1], 2 * out, atol=1e-4, rtol=1e-4)


def test_resnet18_missing_and_bad_file(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(CromaError, match="resnet18-f37072fd.pth") as info:
        get_encoder("resnet18", (3, 32, 32), 6, weights_path=str(missing))
    assert "nowhere.pth" in str(info.value)
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(CromaError, match="bad.pth"):
        get_encoder("resnet18", (3, 32, 32), 6, weights_path=str(bad))


# ---- bert from a local directory ------------------------------------------------------------

def _bert_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    d = tmp_path / "tiny-bert"
    model.save_pretrained(d)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    tok = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    tok.save_pretrained(d)
    return model.eval(), d


def test_bert_local_dir(tmp_path):
    model, d = _bert_dir(tmp_path)
    enc = get_encoder("bert", (10,), 6, model_dir=str(d), pooling="mean")
    assert [n for n, p in enc.named_parameters() if p.requires_grad] == ["proj.weight", "proj.bias"]
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 31, (3, 10), generator=gen)
    ids[:, 0] = 2
    ids[1, 6:] = 0
    out = enc(ids)
    assert out.shape == (3, 6)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        m = (ids != 0).unsqueeze(-1).float()
        ref = enc.proj((h * m).sum(1) / m.sum(1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    # vmap over tasks (inputs and projection params batched)
    ps = {k: torch.stack([v.detach()] * 2) for k, v in enc.named_parameters() if v.requires_grad}
    xs = torch.stack([ids, ids.flip(0)])
    vout = vmap(lambda p, xx: functional_call(enc, p, (xx,)))(ps, xs)
    torch.testing.assert_close(vout[1], out.flip(0), atol=1e-5, rtol=1e-4)
    # byte ids -> token ids via the saved tokenizer
    byte_ids = torch.zeros(2, 16, dtype=torch.long)  # text_to_bytes layout: byte + 1, 0 = pad
    byte_ids[0, :5] = torch.tensor(list(b"a b c")) + 1
    byte_ids[1, :1] = torch.tensor(list(b"z")) + 1
    tok_ids = enc.preprocess(byte_ids)
    assert tok_ids.shape == (2, 64) and tok_ids.dtype == torch.long
    assert tok_ids[0, :5].tolist() == [2, 5, 6, 7, 3] and tok_ids[0, 5:].eq(0).all()
    assert tok_ids[1, :3].tolist() == [2, 30, 3] and tok_ids[1, 3:].eq(0).all()


def test_bert_missing_dir(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(CromaError, match="no-such-model"):
        get_encoder("bert", (10,), 6, model_dir=str(tmp_path / "no-such-model"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encoders_on_cuda():
    for name, shape, x, hp in CASES:
        enc = _build(name, shape, hp)
        cpu = enc(x)
        enc = enc.to("cuda")
        ps = {k: v.to("cuda") for k, v in _stacked(enc).items()}
        out = vmap(lambda p, xx: functional_call(enc, p, (xx,)), in_dims=(0, None))(ps, x.to("cuda"))
        assert out.device.type == "cuda" and out.shape == (3, 4, 6)
        torch.testing.assert_close(enc(x.to("cuda")).cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride,k,length", [(1, 3, 7), (2, 5, 9), (2, 5, 8), (3, 1, 10)])
def test_conv1d_taps_equals_conv1d(stride, k, length):
    from croma.encoders.sequence import conv1d_taps

    gen = torch.Generator().manual_seed(8)
    h = torch.randn(2, length, 4, generator=gen)
    w = torch.randn(6, 4, k, generator=gen)
    b = torch.randn(6, generator=gen)
    ref = torch.nn.functional.conv1d(h.transpose(1, 2), w, b, stride=stride, padding=k // 2).transpose(1, 2)
    torch.testing.assert_close(conv1d_taps(h, w, b, stride), ref, atol=1e-5, rtol=1e-5)
