"""Loaders on tiny copies of the published layouts, preparation, splits and bad input."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_layouts as F  # noqa: E402

from episodes.data import PreparedBenchmark  # noqa: E402
from episodes.datasets import list_datasets, load_benchmark, load_dataset  # noqa: E402
from episodes.datasets.cifar_esc50 import CLUSTERS, ESC_CLUSTER, esc50_class_split  # noqa: E402
from episodes.datasets.roots import resolve_data_root  # noqa: E402
from episodes.datasets.wilderness import parse_txt_done_data  # noqa: E402
from episodes.errors import DataError  # noqa: E402
from episodes.prepare import prepare_benchmark  # noqa: E402


def _check_disjoint(b: PreparedBenchmark) -> None:
    b.validate()
    assert not set(b.align_source_rows.tolist()) & set(b.classify_source_rows.tolist())
    train = set(b.splits["meta_train"])
    assert set(b.data[b.target].labels[b.align_target_rows].tolist()) <= train
    held = set(b.splits["meta_val"]) | set(b.splits["meta_test"])
    assert not set(b.data[b.source].labels[b.classify_source_rows].tolist()) & held


# ---------------------------------------------------------------- CIFAR -> ESC-50
@pytest.fixture()
def cifar_root(tmp_path):
    c10 = F.write_cifar10(tmp_path)
    c100 = F.write_cifar100(tmp_path)
    esc = F.write_esc50(tmp_path)
    return tmp_path, c10, c100, esc


def test_clusters_table_is_the_spec():
    assert len(CLUSTERS) == 17
    assert sum(len(e) for _, e in CLUSTERS.values()) == 35
    assert CLUSTERS["human"][1][-1] == "drinking_sipping" and CLUSTERS["automobile"][0][-1] == "pickup_truck"


def test_cifar_esc50_items_labels_clusters(cifar_root):
    root, c10, c100, esc = cifar_root
    ds = load_dataset("cifar-esc50", data_root=root)
    imgs = ds.items_with("image")
    clips = ds.items_with("audio")
    assert len(imgs) == 12 + 6 and len(clips) == 14
    # image content and order: the published row layout [3, 32, 32] -> HWC
    first = imgs[0].modalities["image"]
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, c10["images"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert [it.label for it in imgs[:12]] == [f"cifar/{F.CIFAR10_NAMES[i]}" for i in c10["labels"]]
    assert [it.label for it in imgs[12:]] == [f"cifar/{F.CIFAR100_NAMES[i]}" for i in c100["labels"]]
    cl = {it.label: it.cluster for it in imgs}
    assert cl["cifar/dog"] == "dog" and cl["cifar/deer"] is None and cl["cifar/cattle"] == "cattle"
    assert cl["cifar/boy"] == "human" and cl["cifar/woman"] == "human" and cl["cifar/bottle"] == "containers_glass"
    assert cl["cifar/automobile"] == "automobile" and cl["cifar/truck"] == "automobile" and cl["cifar/apple"] is None
    ecl = {it.label: it.cluster for it in clips}
    assert ecl == {"esc50/dog": "dog", "esc50/cat": "cat", "esc50/rooster": "bird", "esc50/rain": None,
                   "esc50/wind": None, "esc50/siren": None, "esc50/chainsaw": None}
    assert ds.strong_pair_items() == []


def test_esc50_split_rule():
    all50 = list(F.ESC_TARGETS)
    s = esc50_class_split(all50, seed=0)
    assert len(s["meta_train"]) == 35 and len(s["meta_val"]) == 5 and len(s["meta_test"]) == 10
    assert set(s["meta_train"]) == set(ESC_CLUSTER)
    assert esc50_class_split(all50, seed=0) == s
    assert esc50_class_split(reversed(all50), seed=0) == s
    assert any(esc50_class_split(all50, seed=k)["meta_test"] != s["meta_test"] for k in range(1, 5))


def test_cifar_esc50_prepared_weak(cifar_root):
    root = cifar_root[0]
    b = load_benchmark("cifar-esc50", data_root=root, cache_dir=root / "cache")
    assert b.align_mode == "weak" and b.pairs.shape == (0, 2)
    assert b.data["image"].features.shape == (18, 3, 32, 32)
    assert b.data["audio"].features.shape == (14, 40, 500)
    names = b.class_names
    assert {names[c] for c in b.splits["meta_train"]} == {"esc50/dog", "esc50/cat", "esc50/rooster"}
    held = {names[c] for c in b.splits["meta_val"] + b.splits["meta_test"]}
    assert held == {"esc50/rain", "esc50/wind", "esc50/siren", "esc50/chainsaw"}
    assert {names[c] for c in b.splits["source_train"]} == {it for it in names if it.startswith("cifar/")}
    # dog cluster: 3 CIFAR dog images -> 1 alignment row, 2 classification rows
    dog = names.index("cifar/dog")
    dog_rows = set(torch.nonzero(b.data["image"].labels == dog).flatten().tolist())
    assert len(dog_rows & set(b.align_source_rows.tolist())) == 1
    assert len(dog_rows & set(b.classify_source_rows.tolist())) == 2
    # alignment rows all carry a cluster; target alignment rows are the 6 clips of the 3 cluster classes
    assert (b.data["image"].clusters[b.align_source_rows] >= 0).all()
    assert b.align_target_rows.numel() == 6
    _check_disjoint(b)
    # normalised image equals the naive transform of the raw row
    raw = cifar_root[1]["images"][0].reshape(3, 32, 32).astype(np.float64) / 255.0
    mean = np.array((0.485, 0.456, 0.406)).reshape(3, 1, 1)
    std = np.array((0.229, 0.224, 0.225)).reshape(3, 1, 1)
    np.testing.assert_allclose(b.data["image"].features[0].numpy(), (raw - mean) / std, atol=1e-5)


def test_cifar_only_cifar10_and_missing_parts(tmp_path):
    F.write_esc50(tmp_path)
    with pytest.raises(DataError, match="cifar-10-batches-py.*cifar-100-python.*cs.toronto.edu"):
        load_dataset("cifar-esc50", data_root=tmp_path)
    F.write_cifar10(tmp_path)
    ds = load_dataset("cifar-esc50", data_root=tmp_path)
    assert len(ds.items_with("image")) == 12
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: file not found"):
        load_dataset("cifar-esc50", data_root=tmp_path)


def test_cifar_crafted_batch_is_refused(tmp_path):
    F.write_cifar10(tmp_path)
    F.write_esc50(tmp_path)
    marker = tmp_path / "pwned"
    bad = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(bad)
    with pytest.raises(DataError, match="test_batch.*refused.*os.system"):
        load_dataset("cifar-esc50", data_root=tmp_path)
    assert not marker.exists()


def test_cifar_malformed_batch(tmp_path):
    F.write_cifar10(tmp_path)
    F.write_esc50(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_2: malformed"):
        load_dataset("cifar-esc50", data_root=tmp_path)


def test_esc50_bad_inputs(tmp_path):
    F.write_cifar10(tmp_path)
    F.write_esc50(tmp_path, columns=["filename", "fold", "category"])
    with pytest.raises(DataError, match=r"esc50.csv: missing column\(s\) target"):
        load_dataset("cifar-esc50", data_root=tmp_path)
    F.write_esc50(tmp_path)
    audio = tmp_path / "ESC-50-master" / "audio"
    files = sorted(audio.iterdir())
    files[0].unlink()
    with pytest.raises(DataError, match=files[0].name + ".*not found"):
        load_dataset("cifar-esc50", data_root=tmp_path)
    ds = load_dataset("cifar-esc50", data_root=tmp_path, skip_bad=True)
    assert ds.meta["skipped"] == 1 and len(ds.items_with("audio")) == 13
    files[0].write_bytes(files[2].read_bytes())  # restore the missing one
    files[1].write_bytes(files[1].read_bytes()[:20])  # truncated wav
    with pytest.raises(DataError, match=files[1].name):
        load_benchmark("cifar-esc50", data_root=tmp_path, cache_dir=tmp_path / "c")
    b = load_benchmark("cifar-esc50", data_root=tmp_path, skip_bad=True, cache_dir=tmp_path / "c")
    assert b.info["skipped_bad"] == 1 and len(b.data["audio"]) == 13
    assert files[1].name not in " ".join(b.data["audio"].ids)
    # the skip_bad cache entry does not hide the bad file from a later strict run
    with pytest.raises(DataError, match=files[1].name):
        load_benchmark("cifar-esc50", data_root=tmp_path, cache_dir=tmp_path / "c")
    files[0].unlink()
    b = load_benchmark("cifar-esc50", data_root=tmp_path, skip_bad=True, cache_dir=tmp_path / "c")
    assert b.info["skipped_bad"] == 1 and b.info["skipped_total"] == 2 and len(b.data["audio"]) == 12


# ---------------------------------------------------------------- Yummly
def test_yummly_two_pairs(tmp_path):
    F.write_yummly(tmp_path)
    ds = load_dataset("yummly", data_root=tmp_path, min_count=1)
    assert [it.label for it in ds.items] == ["American_Mexican_Main Dishes", "French_Desserts"]
    assert ds.items[1].modalities["text"] == "3 lemons, 1 cup sugar, 1 pie crust"
    assert ds.items[0].modalities["image"].endswith("images27638/img00000.jpg")
    b = load_benchmark("yummly", data_root=tmp_path, min_count=1, cache_dir=tmp_path / "c")
    assert b.pairs.tolist() == [[0, 0], [1, 1]] and b.data["image"].features.shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match="no label has >= 100 recipes"):
        load_dataset("yummly", data_root=tmp_path)


def test_yummly_min_count_and_cap(tmp_path):
    def rec(cuisine, course, k):
        return {"ingredientLines": [f"x{k}"], "attributes": {"cuisine": cuisine, "course": course}}

    recipes = ([rec(["Italian"], ["Main Dishes"], k) for k in range(6)]
               + [rec(["Thai", "Asian"], ["Soups"], k) for k in range(2)]
               + [rec([], ["Desserts"], k) for k in range(2)]
               + [rec(["Greek"], ["Salads"], 0)])
    F.write_yummly(tmp_path, recipes)
    ds = load_dataset("yummly", data_root=tmp_path, min_count=2, seed=0)
    counts = {}
    for it in ds.items:
        counts[it.label] = counts.get(it.label, 0) + 1
    # kept counts 6, 2, 2: mean 3.33, std 1.89 -> cap floor(5.22) = 5
    assert ds.meta["cap"] == 5
    assert counts == {"Italian_Main Dishes": 5, "Asian_Thai_Soups": 2, "_Desserts": 2}
    again = load_dataset("yummly", data_root=tmp_path, min_count=2, seed=0)
    assert [it.id for it in again.items] == [it.id for it in ds.items]
    kept = {frozenset(it.id for it in load_dataset("yummly", data_root=tmp_path, min_count=2, seed=s).items)
            for s in range(6)}
    assert len(kept) > 1  # the capped subset depends on the seed


def test_yummly_bad_inputs(tmp_path):
    F.write_yummly(tmp_path)
    base = tmp_path / "Yummly28K"
    (base / "images27638" / "img00001.jpg").unlink()
    with pytest.raises(DataError, match="img00001.jpg"):
        load_dataset("yummly", data_root=tmp_path, min_count=1)
    ds = load_dataset("yummly", data_root=tmp_path, min_count=1, skip_bad=True)
    assert ds.meta["skipped"] == 1 and len(ds.items) == 1
    (base / "metadata27638" / "meta00000.json").write_text("{broken")
    with pytest.raises(DataError, match="meta00000.json"):
        load_dataset("yummly", data_root=tmp_path, min_count=1)
    F.write_yummly(tmp_path)
    img = base / "images27638" / "img00000.jpg"
    img.write_bytes(img.read_bytes()[:30])
    with pytest.raises(DataError, match="img00000.jpg"):
        load_benchmark("yummly", data_root=tmp_path, min_count=1, cache_dir=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/Yummly28K: directory not found.*meta<ID>\.json.*published at"):
        load_dataset("yummly", data_root=tmp_path / "empty")


# ---------------------------------------------------------------- Wilderness
def test_wilderness_layout(tmp_path):
    written = F.write_wilderness(tmp_path)
    assert parse_txt_done_data(tmp_path / "wilderness" / "FRNTLS" / "etc" / "txt.done.data") == written["FRNTLS"]
    ds = load_dataset("wilderness", data_root=tmp_path)
    assert len(ds.items) == 9 and ds.source == "text" and ds.target == "audio"
    assert {it.label for it in ds.items} == {"ENGWBT", "FRNTLS", "SPNBDA"}
    assert ds.items[0].modalities["text"] == 'ENGWBT sentence 0 "quoted"'
    b = load_benchmark("wilderness", data_root=tmp_path, cache_dir=tmp_path / "c")
    assert b.pairs.shape == (9, 2)
    for s, t in b.pairs.tolist():
        assert b.data["text"].ids[s] == b.data["audio"].ids[t]
    assert len(b.splits["meta_train"]) == 1 and len(b.splits["meta_val"]) == 1 and len(b.splits["meta_test"]) == 1
    _check_disjoint(b)


def test_wilderness_bad_inputs(tmp_path):
    F.write_wilderness(tmp_path)
    d = tmp_path / "wilderness" / "ENGWBT"
    (d / "wav" / "ENGWBT_B01___001.wav").unlink()
    with pytest.raises(DataError, match="ENGWBT_B01___001.wav"):
        load_dataset("wilderness", data_root=tmp_path)
    assert load_dataset("wilderness", data_root=tmp_path, skip_bad=True).meta["skipped"] == 1
    (d / "etc" / "txt.done.data").write_text('( ok "fine" )\nnot festvox\n')
    with pytest.raises(DataError, match="txt.done.data: line 2"):
        load_dataset("wilderness", data_root=tmp_path)
    with pytest.raises(DataError, match=r"wilderness: directory not found.*festvox"):
        load_dataset("wilderness", data_root=tmp_path / "wilderness" / "ENGWBT")


# ---------------------------------------------------------------- Manifest
def test_manifest(tmp_path):
    path = F.write_manifest(tmp_path)
    ds = load_dataset("manifest", manifest=path, source="text", target="speech")
    assert ds.target == "audio" and len(ds.items) == 7 and len(ds.strong_pair_items()) == 6
    assert ds.items[0].modalities["audio"] == str(tmp_path / "wav" / "a0.wav")
    b = load_benchmark("manifest", manifest=path, source="text", target="audio", cache_dir=tmp_path / "c")
    assert b.align_mode == "strong" and b.pairs.shape == (6, 2) and len(b.data["text"]) == 7
    assert b.cluster_names == ["k0", "k1", "k2"]
    _check_disjoint(b)


def test_manifest_bad_inputs(tmp_path):
    path = F.write_manifest(tmp_path)
    with pytest.raises(DataError, match="--source MOD and --target MOD"):
        load_dataset("manifest", manifest=path)
    with pytest.raises(DataError, match="--manifest PATH"):
        load_dataset("manifest", source="text", target="audio")
    with pytest.raises(DataError, match="unknown modality 'video'"):
        load_dataset("manifest", manifest=path, source="text", target="video")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ["{oops"] + lines[2:]) + "\n")
    with pytest.raises(DataError, match="manifest.jsonl: line 3: not JSON"):
        load_dataset("manifest", manifest=path, source="text", target="audio")
    path.write_text("\n".join(lines + [json.dumps({"id": "z", "label": "L0", "audio": "wav/none.wav"})]) + "\n")
    with pytest.raises(DataError, match="none.wav.*not found"):
        load_dataset("manifest", manifest=path, source="text", target="audio")
    assert load_dataset("manifest", manifest=path, source="text", target="audio", skip_bad=True).meta["skipped"] == 1
    with pytest.raises(DataError, match="missing 'label'"):
        path.write_text(json.dumps({"id": "q", "text": "t"}) + "\n")
        load_dataset("manifest", manifest=path, source="text", target="audio")
    with pytest.raises(DataError, match="line 1: empty 'label': label must be a non-empty string"):
        path.write_text(json.dumps({"id": "q", "label": "", "text": "t"}) + "\n")
        load_dataset("manifest", manifest=path, source="text", target="audio")


# ---------------------------------------------------------------- registry, roots, splits
def test_registry_and_roots(tmp_path, monkeypatch):
    assert list_datasets() == ["udhr-speech", "cifar-esc50", "yummly", "wilderness", "manifest", "synthetic"]
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        load_dataset("nope")
    monkeypatch.delenv("CROMA_DATA", raising=False)
    with pytest.raises(DataError, match="--data-root DIR or set the environment variable CROMA_DATA"):
        load_dataset("wilderness")
    with pytest.raises(DataError, match="not a directory"):
        resolve_data_root(tmp_path / "missing")
    F.write_wilderness(tmp_path)
    monkeypatch.setenv("CROMA_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    assert len(load_dataset("wilderness").items) == 9
    with pytest.raises(DataError, match="--target image does not match"):
        load_dataset("wilderness", target="image")
    synth = load_benchmark("synthetic", seed=3)
    assert synth.name == "synthetic"
    with pytest.raises(DataError, match="load_benchmark"):
        load_dataset("synthetic")


def test_udhr_dispatch_is_lazy(monkeypatch):
    import episodes.datasets as reg

    calls = {}

    def fake(**kw):
        calls.update(kw)
        from episodes.data import CrossModalDataset

        return CrossModalDataset("udhr-speech", "text", "audio", [])

    import episodes.datasets.udhr_speech as u

    monkeypatch.setattr(u, "load_udhr_speech", fake)
    reg.load_dataset("udhr-speech", cache_dir="/tmp/somewhere", seed=5, skip_bad=True)
    assert calls == {"cache_dir": "/tmp/somewhere", "seed": 5, "progress": False, "skip_bad": True}


def test_prepare_split_seeded_and_explicit(tmp_path):
    F.write_wilderness(tmp_path, languages=[f"L{i:02d}" for i in range(10)], utterances=4)
    ds = load_dataset("wilderness", data_root=tmp_path)
    a = prepare_benchmark(ds, seed=1, use_cache=False)
    b = prepare_benchmark(ds, seed=1, use_cache=False)
    assert a.splits == b.splits
    assert (len(a.splits["meta_train"]), len(a.splits["meta_val"]), len(a.splits["meta_test"])) == (6, 2, 2)
    assert torch.equal(a.align_source_rows, b.align_source_rows)
    # 4 utterances per meta-train language: 2 alignment, 2 classification
    for c in a.splits["meta_train"]:
        rows = set(torch.nonzero(a.data["text"].labels == c).flatten().tolist())
        assert len(rows & set(a.align_source_rows.tolist())) == 2
        assert len(rows & set(a.classify_source_rows.tolist())) == 2
    _check_disjoint(a)
    assert any(prepare_benchmark(ds, seed=s, use_cache=False).splits != a.splits for s in range(2, 6))
    explicit = {"meta_train": ["L00", "L01", "L02"], "meta_val": ["L03"], "meta_test": ["L04", "L05"]}
    e = prepare_benchmark(ds, seed=0, use_cache=False, class_split=explicit)
    assert [e.class_names[c] for c in e.splits["meta_test"]] == ["L04", "L05"]
    assert [e.class_names[c] for c in e.splits["source_train"]] == ["L00", "L01", "L02", "L06", "L07", "L08", "L09"]
    _check_disjoint(e)
    with pytest.raises(DataError, match="overlap"):
        prepare_benchmark(ds, use_cache=False, class_split={"meta_train": ["L00"], "meta_val": ["L00"]})
