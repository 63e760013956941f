"""Two modalities of one kind: ``<kind>:<name>`` keys (``image:photo`` beside ``image:sketch``,
``text:en`` beside ``text:de``) in a manifest, read and featurised as their kind, trained,
served and refused by name.

The manifest is written in the real on-disk format (PNG files of two colour modes, UTF-8 text).
"""

import json

import numpy as np
import pytest
import torch

from croma.backbones import backbone_for, check_backbones
from croma.cli import main
from episodes.data import canonical_modality, modality_kind, modality_order
from episodes.datasets import load_benchmark, load_dataset
from episodes.errors import DataError

CLASSES, PER = 8, 3
EN = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
DE = ["eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht"]


def _write(folder):
    """``images.jsonl`` (RGB photos and greyscale sketches) and ``texts.jsonl`` (English / German)."""
    from PIL import Image

    (folder / "photo").mkdir(parents=True)
    (folder / "sketch").mkdir()
    rng = np.random.default_rng(0)
    images, texts = [], []
    for c in range(CLASSES):
        for i in range(PER):
            k = f"c{c}_{i}"
            photo = np.full((10, 10, 3), 30 * c, np.uint8) + rng.integers(0, 20, (10, 10, 3)).astype(np.uint8)
            Image.fromarray(photo, "RGB").save(folder / "photo" / f"{k}.png")
            sketch = np.zeros((12, 12), np.uint8)
            sketch[:, c:c + 2] = 255
            Image.fromarray(sketch, "L").save(folder / "sketch" / f"{k}.png")
            images.append({"id": k, "label": EN[c], "image:photo": f"photo/{k}.png", "image:sketch": f"sketch/{k}.png"})
            texts.append({"id": k, "label": EN[c], "text:en": f"the number {EN[c]} ({i})",
                          "text:de": f"die Zahl {DE[c]} ({i})"})
    for name, rows in (("images.jsonl", images), ("texts.jsonl", texts)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder / "images.jsonl", folder / "texts.jsonl"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    images, texts = _write(root / "data")
    return {"root": root, "images": images, "texts": texts, "cache": root / "cache"}


def test_names_and_kinds():
    assert canonical_modality("image:ct") == "image:ct"
    assert canonical_modality("speech:sw") == "audio:sw"
    assert canonical_modality("img:x-1") == "image:x-1"
    assert modality_kind("text:en") == "text" and modality_kind("audio") == "audio"
    assert sorted(["audio", "image:b", "text:z", "image", "image:a"], key=modality_order) == [
        "text:z", "image", "image:a", "image:b", "audio"]
    for bad, needle in (("ct", "<kind>:<name>"), ("video:x", "unknown modality"), ("image:", "the name after image:"),
                        ("image:a b", "the name after image:"), ("image:a.b", "the name after image:")):
        with pytest.raises(DataError, match=needle):
            canonical_modality(bad)


def test_backbone_of_a_kind_covers_its_named_modalities():
    spec = check_backbones({"image": "pixels", "image:ct": "efficientnet-lite0", "speech:sw": "logmel-boaw"})
    assert spec == {"image": "pixels", "image:ct": "efficientnet-lite0", "audio:sw": "logmel-boaw"}
    assert backbone_for(spec, "image:mri") == "pixels" and backbone_for(spec, "image:ct") == "efficientnet-lite0"
    assert backbone_for(spec, "text:en") is None
    with pytest.raises(ValueError, match="unknown image backbone"):
        check_backbones({"image:ct": "ngrams"})


def test_manifest_loads_two_images_and_two_texts(data):
    bench = load_benchmark("manifest", manifest=data["images"], source="image:photo", target="image:sketch",
                           cache_dir=data["cache"], ways=2)
    assert set(bench.data) == {"image:photo", "image:sketch"}
    for mod in bench.data:  # both read as images: the pixel front-end's [3, S, S], greyscale made RGB
        assert bench.data[mod].features.shape == (CLASSES * PER, 3, 32, 32)
    assert bench.pairs.shape[0] > 0
    photo, sketch = bench.data["image:photo"].features, bench.data["image:sketch"].features
    assert not torch.equal(photo, sketch)
    text = load_benchmark("manifest", manifest=data["texts"], source="text:en", target="text:de",
                          cache_dir=data["cache"], ways=2)
    assert text.data["text:en"].features.dtype == torch.long  # byte ids, as the text kind
    ds = load_dataset("manifest", manifest=data["texts"], source="text:de", target="text:en")
    assert ds.items[0].modalities["text:de"].startswith("die Zahl")


def test_a_kind_backbone_embeds_every_named_modality(data):
    from episodes.embedding import Embedder
    from episodes.prepare import prepare_benchmark

    class Mean(Embedder):
        name, dim = "mean", 3

        def cache_key(self):
            return {"backbone": "mean"}

        def decode(self, value):
            from PIL import Image

            return np.asarray(Image.open(value).convert("RGB"), dtype=np.float32)

        def forward(self, batch):
            return torch.tensor(np.stack([b.mean(axis=(0, 1)) for b in batch]))

    ds = load_dataset("manifest", manifest=data["images"], source="image:photo", target="image:sketch")
    bench = prepare_benchmark(ds, embedders={"image": Mean()}, use_cache=False, ways=2)
    assert bench.data["image:photo"].features.shape == (CLASSES * PER, 3)
    assert bench.data["image:sketch"].features.shape == (CLASSES * PER, 3)
    assert set(bench.info["backbones"]) == {"image:photo", "image:sketch"}
    with pytest.raises(DataError, match="--backbone audio=...: the task has no audio modality"):
        prepare_benchmark(ds, embedders={"audio": Mean()}, use_cache=False, ways=2)


@pytest.mark.parametrize("row, needle", [
    ({"id": "a", "label": "x", "ct": "a.png"}, r"unknown key 'ct'.*<kind>:<name>"),
    ({"id": "a", "label": "x", "image:": "a.png"}, "the name after image:"),
    ({"id": "a", "label": "x", "speech:sw": "a.wav", "audio:sw": "b.wav"}, "both give the audio:sw modality"),
])
def test_bad_named_keys_are_refused_with_the_line(tmp_path, row, needle):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n")
    for name in ("a.png", "a.wav", "b.wav"):  # existing files: the key, not a missing file, is refused
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DataError, match=needle):
        load_dataset("manifest", manifest=path, source="image:ct", target="image:mri")


def test_cli_trains_serves_and_refuses_by_name(data, tmp_path, capsys):
    from croma.runmodel import load_model

    out = tmp_path / "run"
    common = ["--cache-dir", str(data["cache"]), "--quiet"]
    rc = main(["train", "manifest", "--manifest", str(data["images"]), "--source", "image:photo",
               "--target", "image:sketch", "--checkpoint-dir", str(out), "--iterations", "2", "--ways", "2",
               "--shots", "1", "--queries", "1", "--meta-batch", "2", "--inner-steps", "1", "--eval-tasks", "2",
               "--eval-shots", "1", "--finetune-steps", "1", "--embed-dim", "8", "--hidden", "8", "--seed", "1",
               *common])
    assert rc == 0
    model = load_model(out)
    assert model.source == "image:photo" and model.target == "image:sketch"
    folder = data["images"].parent
    rows = [json.loads(line) for line in data["images"].read_text().splitlines()]
    support = [r for r in rows if r["label"] in ("seven", "eight") and r["id"].endswith(("_0", "_1"))]
    query = [r for r in rows if r["label"] in ("seven", "eight") and r["id"].endswith("_2")]
    adapted = model.adapt([str(folder / r["image:sketch"]) for r in support], [r["label"] for r in support])
    pred = adapted.predict([str(folder / r["image:sketch"]) for r in query])
    assert len(pred.labels) == 2 and set(pred.labels) <= {"seven", "eight"}
    z = model.embed("image:photo", [str(folder / r["image:photo"]) for r in query])
    assert z.shape == (2, 8) and torch.isfinite(z).all()
    capsys.readouterr()
    rc = main(["embed", str(out), "--modality", "image:ct", "--input", str(data["images"]),
               "--out", str(tmp_path / "e.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "no image:ct modality (it has image:photo, image:sketch)" in err[0]
    assert not (tmp_path / "e.npz").exists()


def test_encoder_for_a_modality_the_data_lacks_is_refused(data, tmp_path, capsys):
    """``--encoder audio=...`` on an image-only run was silently ignored; now refused in one line (rc 2),
    while a kind's encoder (``image=``) covers its named modalities."""
    from croma.factory import _encoders_for

    assert _encoders_for({"image": "mlp", "speech": "lstm"}, ["image:ct", "audio"]) == {"image": "mlp", "audio": "lstm"}
    out = tmp_path / "run"
    rc = main(["train", "manifest", "--manifest", str(data["images"]), "--source", "image:photo", "--target",
               "image:sketch", "--checkpoint-dir", str(out), "--iterations", "1", "--encoder", "audio=mlp",
               "--cache-dir", str(data["cache"]), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --encoder audio=mlp: the data has no audio modality "
                               "(it has image:photo, image:sketch)"]
    assert not (out / "last.pt").exists()


def test_a_torch_dataset_with_two_image_fields():
    """``from_torch_dataset`` takes named modalities as fields keys (two image tensors per item)."""
    import croma

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"rgb": torch.rand(3, 6, 6, generator=g), "depth": torch.rand(3, 6, 6, generator=g),
                    "label": i % 4}

    ds = croma.from_torch_dataset(TwoViews(), source="image:rgb", target="image:depth",
                                  fields={"image:rgb": "rgb", "image:depth": "depth", "label": "label"})
    assert (ds.source, ds.target) == ("image:rgb", "image:depth")
    it = ds.items[3].modalities
    assert it["image:rgb"].dtype == np.uint8 and it["image:depth"].shape == (6, 6, 3)
    assert not np.array_equal(it["image:rgb"], it["image:depth"])


def test_mistyped_names_are_refused_naming_what_the_data_holds(data, tmp_path, capsys):
    """A named modality mistyped in ``--backbone`` was silently ignored; ``--source`` that no item holds
    lists what the items hold; a builder's missing-weights message names the modality as given."""
    base = ["--manifest", str(data["images"]), "--source", "image:photo", "--target", "image:sketch",
            "--cache-dir", str(data["cache"]), "--quiet"]
    out = tmp_path / "run"
    rc = main(["train", "manifest", *base, "--checkpoint-dir", str(out), "--iterations", "1",
               "--backbone", "image:phot=pixels"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --backbone image:phot=pixels: the data has no image:phot modality "
                               "(it has image:photo, image:sketch)"]
    assert not (out / "last.pt").exists()
    with pytest.raises(DataError, match=r"no item holds the --source modality 'image' \(its items hold image:photo, "
                                        r"image:sketch\)"):
        load_dataset("manifest", manifest=data["images"], source="image", target="image:sketch")
    from croma.backbones import build_embedders
    from croma.errors import CromaError

    with pytest.raises(CromaError, match=r"^--backbone image:ct=resnet18 needs --image-weights"):
        build_embedders({"image:ct": "resnet18"})


def test_evaluate_on_data_without_a_modality_the_run_had(data, tmp_path, capsys):
    """A run trained with an extra modality, evaluated on data without it: the refusal names that
    modality (it listed the unchanged counts of the others)."""
    import shutil

    folder = data["images"].parent
    third = folder / "third.jsonl"
    rows = [json.loads(line) for line in data["images"].read_text().splitlines()]
    third.write_text("".join(json.dumps({**r, "image": r["image:photo"]}) + "\n" for r in rows))
    out = tmp_path / "run"
    common = ["--source", "image:photo", "--target", "image:sketch", "--cache-dir", str(data["cache"]), "--quiet"]
    assert main(["train", "manifest", "--manifest", str(third), *common, "--checkpoint-dir", str(out),
                 "--iterations", "1", "--ways", "2", "--eval-tasks", "1", "--embed-dim", "8", "--hidden", "8"]) == 0
    capsys.readouterr()
    rc = main(["evaluate", str(out), "--manifest", str(data["images"]), "--cache-dir", str(data["cache"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "it holds no image items (the run had image 24)" in err[0], err
    shutil.rmtree(out)
