"""Data in: a map-style torch Dataset and a Hugging Face save_to_disk folder -> CrossModalDataset;
the exported task samplers driving a plain PyTorch loop; prepare + train on such a data set."""

import io
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch

import croma
from episodes.errors import DataError

torch.set_num_threads(1)


class Pairs(torch.utils.data.Dataset):
    """Caption -> image dicts, 9 classes x 6 items, random uint8 images as CHW float tensors in [0, 1]."""

    def __init__(self, classes=9, per_class=6, size=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (classes * per_class, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(classes).repeat_interleave(per_class)
        self.calls: list[int] = []

    def __len__(self):
        return self.labels.numel()

    def __getitem__(self, i):
        self.calls.append(i)
        c = int(self.labels[i])
        return {"caption": f"a thing of kind {c}, number {i}", "img": self.images[i].float() / 255.0,
                "label": self.labels[i]}


NAMES = [f"class{c}" for c in range(9)]


def test_dict_items_become_a_dataset_in_one_pass():
    data = Pairs()
    ds = croma.from_torch_dataset(data, source="text", target="image", name="mydata", classes=NAMES,
                                  fields={"text": "caption", "image": "img", "label": "label", "id": None,
                                          "cluster": None})
    assert isinstance(ds, croma.CrossModalDataset) and ds.name == "mydata"
    assert (ds.source, ds.target, ds.extra) == ("text", "image", ()) and ds.meta["align_mode"] == "strong"
    assert data.calls == list(range(54))  # every item read once, in order
    assert [it.id for it in ds.items] == [str(i) for i in range(54)]  # ids default to the index
    assert [it.label for it in ds.items] == [NAMES[i // 6] for i in range(54)]
    img = ds.items[7].modalities["image"]
    # CHW float in [0, 1] -> HWC uint8, exactly the original bytes (x / 255 * 255 rounds back)
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert np.array_equal(img, data.images[7].permute(1, 2, 0).numpy())
    assert ds.items[7].modalities["text"] == "a thing of kind 1, number 7"
    assert ds.meta["origin"] == {"format": "torch", "type": "Pairs", "length": 54}


def test_tuple_items_by_index_with_every_image_kind(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
    Image.fromarray(hwc).save(tmp_path / "a.png")
    grey = hwc[:, :, 0]
    rgba = np.concatenate([hwc, np.full((5, 4, 1), 9, np.uint8)], axis=-1)
    values = [hwc, torch.from_numpy(hwc).permute(2, 0, 1), Image.fromarray(hwc), "a.png", grey, rgba,
              torch.from_numpy(hwc.astype(np.int64)), hwc.astype(np.float64) / 255.0]
    items = [(v, 1, f"text {k}", k * 10) for k, v in enumerate(values)] + [(None, 0, "text only", 99)]
    ds = croma.from_torch_dataset(items, source="text", target="image", root=tmp_path,
                                  fields={"image": 0, "label": 1, "text": 2, "id": 3})
    got = [it.modalities.get("image") for it in ds.items]
    for k in (0, 1, 2, 5, 6, 7):
        assert got[k].dtype == np.uint8 and np.array_equal(got[k], hwc), k
    assert got[3] == str((tmp_path / "a.png").resolve())  # a path stays a path (the front-end reads it)
    assert np.array_equal(got[4], np.repeat(grey[:, :, None], 3, axis=-1))
    assert got[8] is None and "image" not in ds.items[8].modalities  # None: the item lacks the modality
    assert [it.id for it in ds.items] == [str(k * 10) for k in range(8)] + ["99"]
    assert {it.label for it in ds.items} == {"0", "1"}  # integer labels without classes= -> their digits


def test_namedtuples_by_name_and_a_third_modality_is_extra():
    Row = namedtuple("Row", "wave text label")
    wave = np.sin(np.arange(1600, dtype=np.float32) / 7)
    items = [Row(wave, f"t{i}", f"c{i % 2}") for i in range(4)]
    ds = croma.from_torch_dataset(items, source="audio", target="text", fields={"audio": "wave"})
    assert ds.items[0].modalities["audio"].dtype == np.float32
    assert np.array_equal(ds.items[0].modalities["audio"], wave)  # no rate given: taken as the front-end's
    img = np.zeros((2, 2, 3), np.uint8)
    three = [{"text": "x", "image": img, "audio": wave, "label": "a"}, {"text": "y", "image": img, "audio": None, "label": "b"}]
    ds = croma.from_torch_dataset(three, source="text", target="image", fields={"audio": "audio"})
    assert ds.extra == ("audio",) and "audio" not in ds.items[1].modalities


def test_waveforms_are_resampled_to_the_front_end_rate_and_mixed_to_mono():
    import torchaudio.functional as AF

    g = torch.Generator().manual_seed(0)
    stereo = torch.rand(2, 800, generator=g) * 2 - 1
    items = [{"text": "a", "audio": stereo, "sr": 8000, "label": "x"},
             {"text": "b", "audio": {"array": stereo[0].numpy(), "sampling_rate": 8000}, "sr": None, "label": "y"},
             {"text": "c", "audio": stereo[0].numpy().astype(np.float64), "sr": None, "label": "y"}]
    ds = croma.from_torch_dataset(items, source="text", target="audio", fields={"sample_rate": "sr"}, sample_rate=16000)
    want = AF.resample(stereo.mean(0), 1, 2).numpy()
    got = ds.items[0].modalities["audio"]
    assert got.shape == (1600,) and np.allclose(got, want, atol=1e-6)
    assert np.allclose(ds.items[1].modalities["audio"], AF.resample(stereo[0], 1, 2).numpy(), atol=1e-6)
    assert np.array_equal(ds.items[2].modalities["audio"], stereo[0].numpy())  # already at 16 kHz
    ds = croma.from_torch_dataset(items[2:], source="text", target="audio", sample_rate=16000, audio_rate=8000)
    assert ds.items[0].modalities["audio"].shape == (400,) and ds.meta["frontend"] == {"sample_rate": 8000}


def _bad(**over):
    good = {"caption": "a", "img": np.zeros((4, 4, 3), np.uint8), "label": 1}
    return [good, {**good, **over}]  # item 0 fine, item 1 bad


F = {"text": "caption", "image": "img"}


@pytest.mark.parametrize("items, fields, kw, needle", [
    ([{"caption": "a", "img": np.zeros((4, 4, 3), np.uint8), "label": 0}, {"img": np.zeros((4, 4, 3)), "label": 0}],
     F, {}, "item 1: no entry 'caption' for text"),
    (_bad(caption=3), F, {}, "item 1: text must be a string (got int)"),
    (_bad(img=np.full((4, 4, 3), np.nan, np.float32)), F, {}, "item 1: image holds NaN or infinite values"),
    (_bad(img=torch.randn(3, 4, 4)), F, {}, "item 1: float image values span"),
    (_bad(img=np.zeros((7, 7, 5), np.uint8)), F, {}, "item 1: image has shape (7, 7, 5)"),
    (_bad(img=np.full((4, 4, 3), 300)), F, {}, "item 1: image values span [300, 300]"),
    (_bad(img=12), F, {}, "item 1: image must be a file path, an array or a tensor (got int)"),
    (_bad(img="missing.png"), F, {}, "item 1: image file not found"),
    (_bad(label=2.5), F, {}, "item 1: label is a float (2.5)"),
    (_bad(label=float("nan")), F, {}, "item 1: label is a non-finite value"),
    (_bad(label=torch.tensor(True)), F, {}, "item 1: label is a boolean"),
    (_bad(label=7), F, {"classes": ["a", "b"]}, "item 1: label 7 is outside classes (ids 0..1)"),
    (_bad(), {**F, "colour": "img"}, {}, "unknown fields key 'colour'"),
    (_bad(), {**F, "label": None}, {}, "fields['label'] is None"),
    ([("a", np.zeros((4, 4, 3), np.uint8), 0)] * 2, {"text": 0, "image": "img", "label": 2}, {},
     "item 0: the item is a tuple: fields['image'] must be an integer index"),
    ([("a", np.zeros((4, 4, 3), np.uint8), 0)] * 2, {"text": 0, "image": 5, "label": 2}, {},
     "item 0: fields['image'] = 5 is out of range (the item has 3 entries)"),
    (_bad(), F, {"classes": ["a", "a"]}, "classes names 'a' twice"),
])
def test_bad_items_are_one_line_naming_item_and_field(items, fields, kw, needle):
    with pytest.raises(DataError) as info:
        croma.from_torch_dataset(items, source="text", target="image", fields=fields, name="mine", **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("mine: ") and needle in msg, msg


def test_bad_audio_and_non_map_style_datasets_are_refused():
    wave = np.zeros(100, np.float32)
    cases = [(np.zeros(100, np.int16), "item 0: audio has dtype int16"),
             (np.full(100, np.inf, np.float32), "item 0: audio holds NaN or infinite samples"),
             (np.zeros((2, 3, 4), np.float32), "item 0: audio has shape (2, 3, 4)"),
             ({"array": wave, "sampling_rate": 50}, "item 0: sample rate 50 Hz is outside")]
    for value, needle in cases:
        with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            croma.from_torch_dataset([{"text": "a", "audio": value, "label": "x"}], source="text", target="audio")

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield {"text": "a", "image": np.zeros((2, 2, 3), np.uint8), "label": "x"}

    with pytest.raises(DataError, match="needs a map-style data set"):
        croma.from_torch_dataset(Stream(), source="text", target="image")
    with pytest.raises(DataError, match="the data set is empty"):
        croma.from_torch_dataset([], source="text", target="image")
    with pytest.raises(DataError, match="duplicate id"):
        croma.from_torch_dataset([{"text": "a", "image": np.zeros((2, 2, 3), np.uint8), "label": "x", "k": 1}] * 2,
                                 source="text", target="image", fields={"id": "k"})


@pytest.fixture(scope="module")
def prepared():
    ds = croma.from_torch_dataset(Pairs(), source="text", target="image", classes=NAMES,
                                  fields={"text": "caption", "image": "img"})
    return croma.prepare_benchmark(ds, seed=0, ways=3, use_cache=False)


def test_prepare_and_train_end_to_end(prepared):
    bench = prepared
    assert sorted(len(bench.splits[s]) for s in ("meta_train", "meta_val", "meta_test")) == [3, 3, 3]
    assert bench.data["image"].features.shape == (54, 3, 32, 32) and bench.pairs.shape == (54, 2)
    assert bench.class_names == NAMES
    cfg = croma.TrainConfig(ways=3, shots=2, queries=2, iterations=2, meta_batch=2, align_batch=8, eval_every=0,
                            inner_steps=1, eval_shots=[1], model={"embed_dim": 8, "hidden": 8})
    result = croma.train(cfg, bench)
    assert all(torch.isfinite(v).all() for v in result.best_theta.values())
    model = croma.build_model(cfg, bench)
    table = croma.evaluate(model, bench, croma.EvalConfig(shots=[1], ways=3, tasks=2, repeats=1,
                                                          finetune_steps=1), params=result.best_theta)
    assert "1" in croma.format_results(table)


def test_exported_samplers_drive_a_plain_pytorch_loop(prepared):
    """N-way K-shot episodes over a prepared benchmark's target features, the way learn2learn /
    torchmeta users write their loops: rows into the features, labels 0..N-1, a fresh head per task."""
    bench = prepared
    feats, labels = bench.data["image"].features, bench.data["image"].labels
    ways, shots, queries = 3, 2, 3
    sampler = croma.ClassificationTaskSampler(labels, bench.splits["meta_train"], ways=ways, shots=shots,
                                              queries=queries, seed=7)
    x_all = feats.flatten(1)
    losses = []
    for i in range(3):
        task = sampler.sample(i)
        assert isinstance(task, croma.ClassificationTask)
        assert task.support_rows.shape == (ways * shots,) and task.query_rows.shape == (ways * queries,)
        assert task.support_labels.tolist() == [c for c in range(ways) for _ in range(shots)]
        assert task.query_labels.tolist() == [c for c in range(ways) for _ in range(queries)]
        assert len(set(task.classes.tolist())) == ways and set(task.classes.tolist()) <= set(bench.splits["meta_train"])
        # task label c means global class classes[c]; support and query rows never overlap
        assert torch.equal(labels[task.support_rows], task.classes[task.support_labels])
        assert torch.equal(labels[task.query_rows], task.classes[task.query_labels])
        assert not set(task.support_rows.tolist()) & set(task.query_rows.tolist())
        head = torch.nn.Linear(x_all.shape[1], ways)
        opt = torch.optim.SGD(head.parameters(), lr=0.05)
        xs, ys = x_all[task.support_rows], task.support_labels
        first = None
        for _ in range(10):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(xs), ys)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        losses.append((first, loss.item()))
        assert head(x_all[task.query_rows]).shape == (ways * queries, ways)
    assert all(last < first for first, last in losses)  # the head fits its support set
    # deterministic per (seed, i): a new sampler with the same seed gives the same episode
    again = croma.ClassificationTaskSampler(labels, bench.splits["meta_train"], ways=ways, shots=shots,
                                            queries=queries, seed=7)
    a, b = sampler.sample(5), again.sample(5)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("support_rows", "query_rows", "classes"))
    other = croma.ClassificationTaskSampler(labels, bench.splits["meta_train"], ways=ways, shots=shots,
                                            queries=queries, seed=8)
    assert any(not torch.equal(other.sample(k).support_rows, sampler.sample(k).support_rows) for k in range(5))
    stacked = sampler.sample_many(0, 4)
    assert stacked.support_rows.shape == (4, ways * shots) and torch.equal(stacked.support_rows[2], sampler.sample(2).support_rows)
    # alignment batches: pairs of one item seen in both modalities
    align = croma.AlignmentTaskSampler("strong", batch_size=4, seed=0, pairs=bench.pairs,
                                       source_rows=bench.align_source_rows, target_rows=bench.align_target_rows)
    t = align.sample(0)
    assert isinstance(t, croma.AlignmentTask) and t.source_rows.shape == t.target_rows.shape == (4,)
    assert [bench.data["text"].ids[s] for s in t.source_rows] == [bench.data["image"].ids[r] for r in t.target_rows]


# ---------------------------------------------------------------- Hugging Face save_to_disk folders
def _wav(rate, n, seed):
    import soundfile as sf

    wave = np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue(), wave


def _png(a):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    hf = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 5, 3)).astype(np.uint8) for _ in range(6)]
    waves = [_wav(8000, 400, k) for k in range(6)]
    features = hf.Features({"img": hf.Image(), "caption": hf.Value("string"), "y": hf.ClassLabel(names=["cat", "dog"]),
                            "group": hf.ClassLabel(names=["pets", "wild"]),
                            "wav": {"bytes": hf.Value("binary"), "path": hf.Value("string")}})
    ds = hf.Dataset.from_dict({"img": [{"bytes": _png(a), "path": None} for a in images],
                               "caption": [f"caption {k}" for k in range(6)], "y": [k % 2 for k in range(6)],
                               "group": [0, 0, 1, 1, 0, 1], "wav": [{"bytes": b, "path": None} for b, _ in waves]},
                               features=features)
    # an Audio column, built without torchcodec (datasets 4+ needs it only to decode / encode arrays)
    ds = ds.cast_column("wav", hf.Audio(decode=False)).cast_column("wav", hf.Audio())
    root = tmp_path_factory.mktemp("hf")
    ds.save_to_disk(str(root / "one"))
    hf.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(root / "dict"))
    return root, images, [w for _, w in waves]


def test_hf_folder_with_image_classlabel_and_audio_columns(hf_folder):
    import torchaudio.functional as AF

    root, images, waves = hf_folder
    ds = croma.from_hf_dataset(root / "one", source="text", target="image",
                               fields={"text": "caption", "image": "img", "label": "y", "cluster": "group"})
    assert ds.name == "one" and [it.label for it in ds.items] == ["cat", "dog"] * 3  # ClassLabel -> names
    assert [it.cluster for it in ds.items] == ["pets", "pets", "wild", "wild", "pets", "wild"]
    assert all(np.array_equal(it.modalities["image"], a) for it, a in zip(ds.items, images))
    assert ds.meta["origin"]["format"] == "huggingface" and ds.meta["origin"]["length"] == 6
    ds = croma.from_hf_dataset(root / "one", source="text", target="audio", classes=["A", "B"],
                               fields={"text": "caption", "audio": "wav", "label": "y"})
    assert [it.label for it in ds.items[:2]] == ["A", "B"]
    got = ds.items[3].modalities["audio"]  # 8 kHz bytes -> decoded, resampled to 16 kHz
    assert got.shape == (800,) and np.allclose(got, AF.resample(torch.from_numpy(waves[3]), 1, 2).numpy(), atol=1e-6)


def test_hf_dataset_dict_needs_a_split_and_errors_are_one_line(hf_folder, monkeypatch):
    root, _, _ = hf_folder
    kw = dict(source="text", target="image", fields={"text": "caption", "image": "img", "label": "y"})
    with pytest.raises(DataError, match=r"a DatasetDict with splits train, test; pass split= one of them"):
        croma.from_hf_dataset(root / "dict", **kw)
    ds = croma.from_hf_dataset(root / "dict", split="test", **kw)
    assert ds.name == "dict/test" and len(ds.items) == 2
    with pytest.raises(DataError, match="no split 'val'; the splits are train, test"):
        croma.from_hf_dataset(root / "dict", split="val", **kw)
    with pytest.raises(DataError, match="holds one Dataset, not a DatasetDict"):
        croma.from_hf_dataset(root / "one", split="train", **kw)
    with pytest.raises(DataError, match=r"fields\['text'\] = 'txt' names no column; the columns are img, caption"):
        croma.from_hf_dataset(root / "one", **{**kw, "fields": {"text": "txt", "image": "img", "label": "y"}})
    with pytest.raises(DataError, match="not a folder"):
        croma.from_hf_dataset(root / "nothing", **kw)
    with pytest.raises(DataError, match="not a Hugging Face data set folder"):
        croma.from_hf_dataset(root, **kw)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'croma-meta\[hf\]'"):
        croma.from_hf_dataset(root / "one", **kw)


def test_missing_datasets_names_the_extra_without_the_package(monkeypatch, tmp_path):
    from episodes.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError) as info:
        croma.from_hf_dataset(tmp_path, source="text", target="image")
    assert str(info.value).endswith("pip install 'croma-meta[hf]'") and "\n" not in str(info.value)
