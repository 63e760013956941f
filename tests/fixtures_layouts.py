"""Tiny copies of each published data-set layout, written into a temporary folder.

Each ``write_*`` helper writes the exact on-disk format the real download has (CIFAR python
pickles with ``bytes`` keys, ESC-50's ``meta/esc50.csv`` + wavs, Yummly JSON + JPEG pairs, a
festvox language folder, a JSONL manifest) with a handful of items, and returns what it wrote
so tests can compare counts against it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, labels_per_batch: list[list[int]] | None = None, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py/`` with 6 batch files; returns ``{"labels": [...], "images": uint8 [n,3072]}``."""
    rng = _rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    if labels_per_batch is None:
        labels_per_batch = [[0, 5], [3, 5], [2, 9], [4, 8], [1, 7], [6, 5]]
    _dump(folder / "batches.meta", {b"num_cases_per_batch": 2, b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                    b"num_vis": 3072})
    all_labels, all_data = [], []
    for fname, labels in zip(files, labels_per_batch):
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        _dump(folder / fname, {b"batch_label": f"{fname} of 6".encode(), b"labels": list(labels), b"data": data,
                               b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]})
        all_labels += list(labels)
        all_data.append(data)
    return {"labels": all_labels, "images": np.concatenate(all_data), "names": CIFAR10_NAMES}


def write_cifar100(root: Path, train_labels=(19, 11, 42, 98), test_labels=(9, 0), seed: int = 1) -> dict:
    """``root/cifar-100-python/{meta,train,test}``; labels index :data:`CIFAR100_NAMES`."""
    rng = _rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    _dump(folder / "meta", {b"fine_label_names": [n.encode() for n in CIFAR100_NAMES],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    all_labels, all_data = [], []
    for fname, labels in (("train", train_labels), ("test", test_labels)):
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        _dump(folder / fname, {b"filenames": [b"x.png"] * len(labels), b"batch_label": fname.encode(),
                               b"fine_labels": list(labels), b"coarse_labels": [0] * len(labels), b"data": data})
        all_labels += list(labels)
        all_data.append(data)
    return {"labels": all_labels, "images": np.concatenate(all_data), "names": CIFAR100_NAMES}


def write_wav(path: Path, seconds: float = 0.05, sample_rate: int = 44100, seed: int = 0, freq: float = 440.0) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    noise = _rng(seed).normal(0, 0.01, size=t.shape)
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32), sample_rate, subtype="PCM_16")


ESC_TARGETS = {"dog": 0, "rooster": 1, "pig": 2, "cow": 3, "frog": 4, "cat": 5, "hen": 6, "insects": 7, "sheep": 8,
               "crow": 9, "rain": 10, "sea_waves": 11, "crackling_fire": 12, "crickets": 13, "chirping_birds": 14,
               "water_drops": 15, "wind": 16, "pouring_water": 17, "toilet_flush": 18, "thunderstorm": 19,
               "crying_baby": 20, "sneezing": 21, "clapping": 22, "breathing": 23, "coughing": 24, "footsteps": 25,
               "laughing": 26, "brushing_teeth": 27, "snoring": 28, "drinking_sipping": 29, "door_wood_knock": 30,
               "mouse_click": 31, "keyboard_typing": 32, "door_wood_creaks": 33, "can_opening": 34,
               "washing_machine": 35, "vacuum_cleaner": 36, "clock_alarm": 37, "clock_tick": 38, "glass_breaking": 39,
               "helicopter": 40, "chainsaw": 41, "siren": 42, "car_horn": 43, "engine": 44, "train": 45,
               "church_bells": 46, "airplane": 47, "fireworks": 48, "hand_saw": 49}


def write_esc50(root: Path, categories=("dog", "cat", "rooster", "rain", "wind", "siren", "chainsaw"),
                clips_per_category: int = 2, seconds: float = 0.05, columns=None) -> dict:
    """``root/ESC-50-master/meta/esc50.csv`` + ``audio/*.wav`` (44.1 kHz, ``seconds`` long)."""
    base = Path(root) / "ESC-50-master"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    (base / "audio").mkdir(parents=True, exist_ok=True)
    cols = list(columns or ESC50_COLUMNS)
    rows = []
    for ci, cat in enumerate(categories):
        for k in range(clips_per_category):
            fold, target = 1 + k % 5, ESC_TARGETS[cat]
            fname = f"{fold}-{100000 + ci * 10 + k}-A-{target}.wav"
            write_wav(base / "audio" / fname, seconds=seconds, seed=ci * 10 + k, freq=200.0 + 50 * ci)
            row = {"filename": fname, "fold": fold, "target": target, "category": cat, "esc10": "False",
                   "src_file": str(100000 + ci * 10 + k), "take": "A"}
            rows.append([str(row[c]) for c in cols])
    (base / "meta" / "esc50.csv").write_text("\n".join([",".join(cols)] + [",".join(r) for r in rows]) + "\n")
    return {"files": [r[0] for r in rows] if cols[0] == "filename" else [], "categories": list(categories)}


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (40, 30)) -> None:
    from PIL import Image

    arr = _rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG")


YUMMLY_RECIPES = [
    {"id": "Spicy-Chili-123", "ingredientLines": ["1 lb beef", "2 tbsp chili powder"],
     "attributes": {"course": ["Main Dishes"], "cuisine": ["Mexican", "American"]}},
    {"id": "Lemon-Tart-456", "ingredientLines": ["3 lemons", "1 cup sugar", "1 pie crust"],
     "attributes": {"course": ["Desserts"], "cuisine": ["French"]}},
]


def write_yummly(root: Path, recipes=None) -> dict:
    """``root/Yummly28K/metadata27638/meta<ID>.json`` + ``images27638/img<ID>.jpg`` pairs."""
    recipes = recipes if recipes is not None else YUMMLY_RECIPES
    base = Path(root) / "Yummly28K"
    (base / "metadata27638").mkdir(parents=True, exist_ok=True)
    (base / "images27638").mkdir(parents=True, exist_ok=True)
    ids = []
    for i, rec in enumerate(recipes):
        rid = f"{i:05d}"
        (base / "metadata27638" / f"meta{rid}.json").write_text(json.dumps(rec))
        write_jpeg(base / "images27638" / f"img{rid}.jpg", seed=i)
        ids.append(rid)
    return {"ids": ids}


def write_wilderness(root: Path, languages=("ENGWBT", "FRNTLS", "SPNBDA"), utterances: int = 3) -> dict:
    """``root/wilderness/<LANG>/etc/txt.done.data`` + ``wav/<utt>.wav`` (16 kHz)."""
    out = {}
    for li, lang in enumerate(languages):
        d = Path(root) / "wilderness" / lang
        (d / "etc").mkdir(parents=True, exist_ok=True)
        (d / "wav").mkdir(parents=True, exist_ok=True)
        lines, texts = [], []
        for k in range(utterances):
            utt = f"{lang}_B01___{k:03d}"
            text = f'{lang} sentence {k} "quoted"'
            lines.append(f'( {utt} "{text.replace(chr(34), chr(92) + chr(34))}" )')
            texts.append((utt, text))
            write_wav(d / "wav" / f"{utt}.wav", seconds=0.05, sample_rate=16000, seed=li * 10 + k)
        (d / "etc" / "txt.done.data").write_text("\n".join(lines) + "\n")
        out[lang] = texts
    return out


def write_manifest(folder: Path) -> Path:
    """``folder/manifest.jsonl``: 6 text+audio pairs over 3 labels, plus one text-only item."""
    folder = Path(folder)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(6):
        write_wav(folder / "wav" / f"a{i}.wav", seconds=0.05, sample_rate=16000, seed=i)
        lines.append(json.dumps({"id": f"a{i}", "label": f"L{i % 3}", "cluster": f"k{i % 3}", "text": f"item {i}",
                                 "speech": f"wav/a{i}.wav"}))
    lines.append(json.dumps({"id": "t9", "label": "L0", "text": "text only"}))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- a text + image + audio manifest with gaps (tests/test_three_modalities.py, test_baselines_multimodal.py)
N_CLASSES, PER_CLASS = 6, 8


def _absent(k: int) -> dict[str, bool]:
    """Which modalities row k lacks (every combination of two present occurs)."""
    return {"text": k % 7 == 3, "image": k % 5 == 1, "audio": k % 8 == 2}


def write_three_modality_manifest(folder: Path) -> Path:
    import soundfile as sf
    from PIL import Image

    (folder / "img").mkdir(parents=True)
    (folder / "wav").mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for c in range(N_CLASSES):
        for i in range(PER_CLASS):
            k = c * PER_CLASS + i
            rec = {"id": f"it{k}", "label": f"class{c}"}
            gone = _absent(k)
            if not gone["text"]:
                rec["text"] = f"item of class {c} number {i}"
            if not gone["image"]:
                arr = (rng.random((8, 8, 3)) * 255 * (c + 1) / N_CLASSES).astype(np.uint8)
                Image.fromarray(arr, "RGB").save(folder / "img" / f"{k}.png")
                rec["image"] = f"img/{k}.png"
            if not gone["audio"]:
                t = np.arange(800) / 16000
                wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * c) * t) + rng.normal(0, 0.01, t.shape)
                sf.write(str(folder / "wav" / f"{k}.wav"), wave.astype(np.float32), 16000, subtype="PCM_16")
                rec["audio"] = f"wav/{k}.wav"
            lines.append(json.dumps(rec))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def image_text_rows(folder: Path, classes: int = 3, per: int = 2) -> list[dict]:
    """Manifest rows of ``classes`` x ``per`` items, each a caption and a tiny JPEG written under
    ``folder/img`` (tests of the manifest loader's hostile inputs)."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(classes):
        for i in range(per):
            write_jpeg(folder / "img" / f"c{c}_{i}.jpg", seed=c * 10 + i, size=(6, 5))
            rows.append({"id": f"c{c}_{i}", "label": f"L{c}", "text": f"class {c} item {i}",
                         "image": f"img/c{c}_{i}.jpg"})
    return rows
