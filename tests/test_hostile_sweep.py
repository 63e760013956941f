"""Hostile-input sweep: messy manifests and media files a real user brings.

Each input is generated in ``tmp_path`` (a few hundred bytes); each case asserts one line
``error: ...`` naming the file (or flag), exit code 2, and nothing written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_layouts as F  # noqa: E402

from episodes.datasets import load_dataset  # noqa: E402
from episodes.errors import DataError  # noqa: E402
from episodes.frontends import load_audio, load_image_uint8  # noqa: E402
from episodes.samplers import AlignmentTaskSampler  # noqa: E402


def _rows(folder: Path, classes: int = 3, per: int = 2) -> list[dict]:
    return F.image_text_rows(folder, classes, per)


def _body(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _load(path: Path, **kw):
    return load_dataset("manifest", manifest=str(path), source="text", target="image", **kw)


def _inspect(run_cli, path: Path, *extra: str):
    return run_cli(["data", "inspect", "manifest", "--manifest", str(path), "--source", "text", "--target", "image",
                    "--ways", "2", *extra])


def _one_line(rc, err, *needles):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# ---------------------------------------------------------------- encodings and line endings
def test_bom_crlf_and_blank_lines_read_like_the_plain_file(tmp_path):
    rows = _rows(tmp_path)
    plain = tmp_path / "plain.jsonl"
    plain.write_text(_body(rows))
    messy = tmp_path / "messy.jsonl"
    messy.write_bytes(b"\xef\xbb\xbf" + ("\r\n\r\n" + _body(rows).replace("\n", "\r\n\r\n")).encode())
    a, b = _load(plain), _load(messy)
    assert [(i.id, i.label, i.modalities) for i in a.items] == [(i.id, i.label, i.modalities) for i in b.items]


def test_line_separator_inside_a_json_string_stays_in_its_line(tmp_path):
    rows = _rows(tmp_path)
    rows[0]["text"] = "a\u2028b\x85c"
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ds = _load(man)
    assert ds.items[0].modalities["text"] == "a\u2028b\x85c" and len(ds.items) == len(rows)


@pytest.mark.parametrize("case, needles", [
    ("latin1", ["line 2", "not UTF-8", "0xe9"]),
    ("utf16", ["UTF-16", "save it as UTF-8"]),
])
def test_non_utf8_manifest_names_file_and_line(run_cli, tmp_path, case, needles):
    rows = _rows(tmp_path)
    rows[1]["text"] = "caf\u00e9"
    man = tmp_path / "m.jsonl"
    man.write_bytes(_body(rows).replace("\\u00e9", "\u00e9").encode("latin-1" if case == "latin1" else "utf-16"))
    rc, out, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.jsonl", *needles)
    assert out == ""


def test_duplicate_key_in_a_line_is_refused(run_cli, tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text(_body(_rows(tmp_path)).replace('"id": "c0_1"', '"id": "c0_1", "id": "other"', 1))
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.jsonl: line 2", "duplicate key 'id'")


def test_csv_manifest_gets_a_jsonl_hint(run_cli, tmp_path):
    rows = _rows(tmp_path)
    man = tmp_path / "m.csv"
    man.write_text("id,label,text,image\n" + "".join(f"{r['id']},{r['label']},{r['text']},{r['image']}\n" for r in rows))
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.csv: line 1", "JSONL", "CSV")


def test_empty_manifest_says_it_holds_no_items(run_cli, tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text("# only a comment\n\n")
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.jsonl", "holds no items")
    rows = _rows(tmp_path)
    rows = [{**r, "image": "gone/" + r["image"]} for r in rows]
    man.write_text(_body(rows))
    rc, _, err = _inspect(run_cli, man, "--skip-bad")
    _one_line(rc, err, "m.jsonl", "holds no items", "--skip-bad")


@pytest.mark.parametrize("where", ["text", "label", "id", "image"])
def test_lone_surrogate_escape_is_refused_naming_the_line(run_cli, tmp_path, where):
    rows = _rows(tmp_path)
    man = tmp_path / "m.jsonl"
    body = _body(rows)
    old = {"text": '"class 0 item 1"', "label": '"L0"', "id": '"c0_1"', "image": '"img/c0_1.jpg"'}[where]
    man.write_text(body.replace(old, old[:-1] + '\\ud800"'))
    rc, out, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.jsonl: line", "surrogate")
    assert out == ""


def test_unknown_modality_names_its_flag(run_cli, tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text(_body(_rows(tmp_path)))
    rc, _, err = run_cli(["data", "inspect", "manifest", "--manifest", str(man), "--source", "video", "--target",
                          "image"])
    _one_line(rc, err, "--source", "'video'")


# ---------------------------------------------------------------- paths that are not files
@pytest.mark.skipif(os.name != "posix", reason="symlinks and FIFOs")
@pytest.mark.parametrize("kind, reason", [("folder", "is a folder, not a file"),
                                          ("loop", "broken or looping symbolic link"),
                                          ("fifo", "named pipe (FIFO), not a regular file"),
                                          ("missing", "not found")])
def test_media_path_that_is_not_a_file_says_why(run_cli, tmp_path, kind, reason):
    rows = _rows(tmp_path)
    target = tmp_path / "odd.jpg"
    if kind == "folder":
        target.mkdir()
    elif kind == "loop":
        os.symlink(target, target)
    elif kind == "fifo":
        os.mkfifo(target)
    rows[0]["image"] = "odd.jpg"
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "odd.jpg", "line 1", reason)
    assert len(_load(man, skip_bad=True).items) == len(rows) - 1  # --skip-bad still leaves it out


def test_unicode_and_space_file_names_resolve_against_the_manifest_folder(tmp_path):
    folder = tmp_path / "my data é"
    rows = _rows(folder)
    (folder / "img ü").mkdir()
    for r in rows:
        new = "img ü/ф " + Path(r["image"]).name
        (folder / r["image"]).rename(folder / new)
        r["image"] = new
    man = folder / "m.jsonl"
    man.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    ds = _load(man)
    assert all(Path(it.modalities["image"]).is_file() for it in ds.items)


# ---------------------------------------------------------------- media files
def test_zero_byte_media_files_say_empty(tmp_path):
    for name, fn in (("a.wav", lambda p: load_audio(p, 16000)), ("a.png", lambda p: load_image_uint8(p, 4))):
        p = tmp_path / name
        p.write_bytes(b"")
        with pytest.raises(DataError, match=rf"{name}: (audio|image) file is empty \(0 bytes\)"):
            fn(p)


def test_16_bit_greyscale_png_is_scaled_not_saturated(tmp_path):
    from PIL import Image

    p = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)).save(p)
    assert Image.open(p).mode.startswith("I")
    row = load_image_uint8(p, 4)[0, 0].tolist()
    assert row == [0, 4, 117, 255]  # round(v * 255 / 65535); was [0, 255, 255, 255]
    p8 = tmp_path / "g8.png"
    Image.fromarray(np.array([[0, 10, 200, 255]], dtype=np.uint8)).save(p8)
    assert load_image_uint8(p8, 4)[0, 0].tolist() == [0, 10, 200, 255]  # 8-bit unchanged


# ---------------------------------------------------------------- samplers name the flag
def test_too_few_pairs_for_align_batch_names_the_flag():
    pairs = torch.tensor([[0, 0], [1, 1], [2, 2]])
    with pytest.raises(DataError, match=r"3 available \(lower --align-batch to at most 3"):
        AlignmentTaskSampler("strong", pairs=pairs, batch_size=32, seed=0)
    with pytest.raises(DataError, match="cluster"):
        AlignmentTaskSampler("weak", batch_size=4, seed=0, source_clusters=torch.tensor([0, 1]),
                             target_clusters=torch.tensor([2, 3]))


# ---------------------------------------------------------------- nothing left behind
def test_train_refused_on_its_data_leaves_no_empty_checkpoint_folder(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    man = tmp_path / "m.jsonl"
    man.write_text(_body(_rows(tmp_path)))
    out = tmp_path / "new" / "run"
    kept = tmp_path / "kept"
    kept.mkdir()
    for folder in (out, kept):
        rc, _, err = run_cli(["train", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
                              "--split-classes", "5,5,5", "--checkpoint-dir", str(folder), "--quiet", "--device", "cpu"])
        _one_line(rc, err, "--split-classes")
    assert not (tmp_path / "new").exists()  # made by the run, empty: removed
    assert kept.is_dir()  # the user's own folder stays


# ---------------------------------------------------------------- weights files never unpickled
def test_weights_file_problems_are_short_and_never_suggest_unpickling(tmp_path):
    import io
    import pickle

    from croma.backbones.efficientnet_lite import load_efficientnet_lite0
    from croma.errors import CromaError

    buf, obj = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    torch.save({"f": os.getcwd}, obj)  # a reference to a function: unpickling it would import and bind it
    cases = {"text": (b"hello world", "not a PyTorch file"),
             "garbage": (b"garbage", "not a PyTorch file"),
             "pickle": (pickle.dumps([1, 2], protocol=4), "not a PyTorch file"),
             "empty": (b"", "empty or truncated"),
             "object": (obj.getvalue(), "other than tensors (" + os.getcwd.__module__ + ".getcwd), which croma never unpickles"),
             "cut": (buf.getvalue()[:100], "truncated / corrupt")}
    for name, (raw, needle) in cases.items():
        p = tmp_path / f"{name}.pt"
        p.write_bytes(raw)
        with pytest.raises(CromaError) as info:
            load_efficientnet_lite0(p)
        msg = str(info.value)
        assert needle in msg and f"{name}.pt" in msg and "weights_only" not in msg and "\n" not in msg, msg


# ---------------------------------------------------------------- in-memory records (Python API)
def _records(value, mod="image"):
    return [{"id": f"{c}-{i}", "label": f"c{c}", "text": f"t {c} {i}", mod: value} for c in range(2) for i in range(2)]


@pytest.mark.parametrize("value, needle", [
    (np.full((4, 4, 3), np.nan), "NaN"),
    (np.random.default_rng(0).random((4, 4, 3)), "floats in [0, 1]"),
    (np.full((4, 4, 3), 1000, np.int64), "span [1000, 1000]"),
    (np.zeros((4, 4), np.uint8), "shape (4, 4)"),
    (np.zeros((4, 4, 4), np.uint8), "shape (4, 4, 4)"),
    (np.array([{"a": 1}], dtype=object), "dtype object"),
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "got list"),
    (None, "got NoneType"),
])
def test_bad_image_arrays_are_refused_naming_the_record(value, needle):
    from episodes.datasets.manifest import records_to_dataset

    with pytest.raises(DataError, match="record 0: image") as info:
        records_to_dataset(_records(value), source="text", target="image")
    assert needle in str(info.value)


def test_good_arrays_pass_unchanged_and_waveforms_work():
    import croma
    from episodes.datasets.manifest import records_to_dataset

    img = np.full((4, 4, 3), 7, np.uint8)
    ds = records_to_dataset(_records(img), source="text", target="image")
    assert all(it.modalities["image"] is img for it in ds.items)  # the caller's array, not a copy
    ds = records_to_dataset(_records(torch.full((4, 4, 3), 7, dtype=torch.uint8)), source="text", target="image")
    assert np.array_equal(ds.items[0].modalities["image"], img)
    wave = np.sin(np.arange(800, dtype=np.float32) / 5.0)
    recs = [{"id": f"{c}-{i}", "label": f"c{c}", "text": f"t {c} {i}", "audio": wave * (c + 1)}
            for c in range(6) for i in range(4)]
    bench = croma.prepare_benchmark(records_to_dataset(recs, source="text", target="audio"), seed=0, ways=2,
                                    use_cache=False)
    assert bench.data["audio"].features.isfinite().all()  # was: TypeError from os.fspath(ndarray)
    for bad, needle in ((np.zeros(8, np.int16), "dtype int16"), (np.full(8, np.inf), "NaN or infinite")):
        with pytest.raises(DataError, match="record 0: audio"):
            records_to_dataset(_records(bad, "audio"), source="text", target="audio")
        with pytest.raises(DataError):
            load_audio(bad, 16000)


def test_array_and_pickle_files_named_as_media_are_refused_unopened(run_cli, tmp_path, monkeypatch):
    import builtins

    evil = tmp_path / "x.npy"
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    for fn, what in ((lambda p: load_image_uint8(p, 4), "image"), (lambda p: load_audio(p, 16000), "audio")):
        with pytest.raises(DataError, match=rf"x\.npy: a \.npy file is not an {what} file"):
            fn(evil)
    assert str(evil) not in opened
    monkeypatch.setattr(builtins, "open", real_open)
    rows = _rows(tmp_path)
    rows[0]["image"] = "x.npy"
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    rc, _, err = run_cli(["data", "prepare", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
                          "--cache-dir", str(tmp_path / "c")])
    assert rc == 2 and err.strip().splitlines()[-1].startswith("error: ") and "x.npy" in err and "Traceback" not in err


def test_manifest_path_that_is_a_folder_says_so(run_cli, tmp_path):
    rc, _, err = _inspect(run_cli, tmp_path)
    _one_line(rc, err, str(tmp_path), "is a folder, not a file")


def test_huge_pixel_claim_is_one_error_without_warning_lines(tmp_path, monkeypatch):
    import struct
    import warnings
    import zlib

    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the same path as a ~100 MP claim, cheaply

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    p = tmp_path / "claims.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0))
                  + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping load_image_uint8 fails the test
        with pytest.raises(DataError, match="claims.png: unreadable or truncated image file"):
            load_image_uint8(p, 4)
    ok = tmp_path / "ok.png"
    Image.fromarray(np.full((30, 40, 3), 9, np.uint8)).save(ok)  # 1200 px: decodes, no warning line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image_uint8(ok, 4).unique().tolist() == [9]


def test_too_few_items_per_class_says_how_many_the_largest_has():
    from episodes.samplers import ClassificationTaskSampler

    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    with pytest.raises(DataError, match=r"only 0 of 3 classes qualify \(the largest has 3 items\)"):
        ClassificationTaskSampler(labels, [0, 1, 2], ways=2, shots=5, queries=5, seed=0)


# ---------------------------------------------------------------- statistics of a single row
def test_single_training_row_does_not_turn_features_into_nan():
    import croma
    from episodes.datasets.manifest import records_to_dataset
    from episodes.features import audio_bow_features, compact_benchmark, standardize

    a, b = standardize(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 5.0]]))
    assert a.tolist() == [[0.0, 0.0]] and b.tolist() == [[2.0, 3.0]]  # centred, not divided by a NaN std
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert torch.equal(standardize(x)[0], (x - x.mean(0)) / x.std(0))  # two rows: as before
    rng = np.random.default_rng(0)
    recs = [{"id": f"{c}-{i}", "label": f"c{c}", "text": f"t {c} {i}",
             "image": rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)} for c in range(6) for i in range(4)]
    recs[0]["audio"] = np.sin(np.arange(4000, dtype=np.float32) / 7)  # one clip of an extra modality
    bench = croma.prepare_benchmark(records_to_dataset(recs, source="text", target="image"), seed=0, ways=2,
                                    use_cache=False)
    assert bench.data["audio"].labels.tolist() == [0]
    out = compact_benchmark(bench, audio_words=4)
    assert out.data["audio"].features.isfinite().all()
    with pytest.raises(ValueError, match="too few or too short"):
        audio_bow_features(bench.data["audio"].features, torch.tensor([0]), words=1000)


def test_two_keys_for_one_modality_are_refused(run_cli, tmp_path):
    rows = _rows(tmp_path)
    rows[1]["img"] = rows[0]["image"]  # "img" is an alias of "image": which file is meant?
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.jsonl: line 2", "'image' and 'img' both give the image modality")


def test_train_skip_bad_reports_how_many_it_left_out(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    rows = _rows(tmp_path, classes=6, per=8)
    rows.append({"id": "gone", "label": "L0", "text": "x", "image": "img/gone.jpg"})
    cut = tmp_path / rows[3]["image"]
    cut.write_bytes(cut.read_bytes()[:40])  # a truncated JPEG
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    rc, out, err = run_cli(["train", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
                            "--skip-bad", "--quiet", "--device", "cpu", "--shots", "1", "--ways", "2", "--queries", "1",
                            "--eval-tasks", "2", "--iterations", "1", "--meta-batch", "2", "--align-batch", "4",
                            "--eval-shots", "1", "--embed-dim", "8", "--hidden", "8",
                            "--checkpoint-dir", str(tmp_path / "run")])
    assert rc == 0, err
    assert "skipped 2 missing or unreadable item(s) (--skip-bad)" in err and "trained 1/1" in out


@pytest.mark.parametrize("sweep", [False, True], ids=["one-run", "noise-sweep"])
def test_benchmark_skip_bad_says_and_keeps_how_many_it_left_out(run_cli, tmp_path, monkeypatch, sweep):
    """croma benchmark --skip-bad prints croma train's line once (the data loads once, a noise sweep
    included) and every results.json keeps the count; without the flag the same manifest is refused."""
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    rows = _rows(tmp_path, classes=6, per=8)
    rows.append({"id": "gone", "label": "L0", "text": "x", "image": "img/gone.jpg"})  # a missing file
    cut = tmp_path / rows[3]["image"]
    cut.write_bytes(cut.read_bytes()[:40])  # a truncated JPEG
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    out = tmp_path / "out"
    argv = ["benchmark", "manifest", "--manifest", str(man), "--source", "text", "--target", "image", "--quiet",
            "--device", "cpu", "--methods", "pretrain", "--budget-steps", "1", "--train-seeds", "1", "--repeats", "1",
            "--eval-tasks", "1", "--shots", "1", "--ways", "2", "--val-episodes", "1", "--out", str(out),
            *(["--noise-sweep", "0,0.2"] if sweep else [])]
    rc, _, err = run_cli(argv)
    assert rc == 2 and err.startswith("error: ") and "gone.jpg" in err, err  # strict without --skip-bad
    rc, _, err = run_cli([*argv, "--skip-bad"])
    assert rc == 0, err
    assert err.count("skipped 2 missing or unreadable item(s) (--skip-bad)\n") == 1, err
    files = [out / "noise_0" / "results.json", out / "noise_0.2" / "results.json"] if sweep else [out / "results.json"]
    assert [json.loads(f.read_text())["skipped_items"] for f in files] == [2] * len(files)


@pytest.mark.skipif(os.sep == "\\", reason="backslash is the separator there")
def test_windows_separators_and_tilde_get_a_hint(run_cli, tmp_path):
    rows = _rows(tmp_path)
    rows[0]["image"] = rows[0]["image"].replace("/", "\\")
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "line 1", "not found", "write paths with /")
    rows[0]["image"] = "~/img/c0_0.jpg"
    man.write_text(_body(rows))
    rc, _, err = _inspect(run_cli, man)
    _one_line(rc, err, "line 1", "~ is not expanded")


# ---------------------------------------------------------------- an empty --cache-dir is not "."
def test_empty_cache_dir_is_refused_and_never_clears_the_current_folder(run_cli, tmp_path, monkeypatch):
    mine = tmp_path / "features" / "mine" / "x.pt"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    monkeypatch.chdir(tmp_path)
    for argv in (["cache", "clear", "--all", "--cache-dir", ""], ["cache", "info", "--cache-dir", ""]):
        rc, _, err = run_cli(argv)
        _one_line(rc, err, "--cache-dir is empty")
    from episodes.cache import FeatureCache
    from episodes.cache_admin import clear_cache

    for fn in (lambda: clear_cache(""), lambda: FeatureCache("")):  # the library refuses it too
        with pytest.raises(DataError, match="--cache-dir is empty"):
            fn()
    assert mine.read_bytes() == b"the user's own file"
    man = tmp_path / "m.jsonl"
    man.write_text(_body(_rows(tmp_path)))
    rc, _, err = run_cli(["data", "prepare", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
                          "--cache-dir", ""])
    _one_line(rc, err, "--cache-dir is empty")
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == ["mine"]
    rc, _, err = run_cli(["data", "inspect", "manifest", "--manifest", "", "--source", "text", "--target", "image"])
    _one_line(rc, err, "--manifest is empty")  # was: ".: manifest file is a folder"
    from episodes.datasets.manifest import load_manifest

    with pytest.raises(DataError, match="--manifest PATH is required"):
        load_manifest("", source="text", target="image")
    for argv in (["benchmark", "synthetic", "--out", " "], ["train", "synthetic", "--config", ""],
                 ["data", "inspect", "cifar-esc50", "--data-root", ""]):
        rc, _, err = run_cli(argv)
        _one_line(rc, err, f"{argv[-2]} is empty")


@pytest.mark.parametrize("key", ["id", "label", "cluster"])
def test_control_characters_in_names_are_refused(run_cli, tmp_path, key):
    rows = _rows(tmp_path)
    rows[2][key] = "two\nlines"
    man = tmp_path / "m.jsonl"
    man.write_text(_body(rows))
    rc, out, err = _inspect(run_cli, man)
    _one_line(rc, err, "m.jsonl: line 3", f"{key} holds a control character ('\\n')")
    assert out == ""


def test_unusable_media_paths_name_the_line(run_cli, tmp_path):
    rows = _rows(tmp_path)
    man = tmp_path / "m.jsonl"
    for value, needle in (("img/c0\u0000.jpg", "control character ('\\x00')"), ("x" * 300 + ".jpg", "cannot be used")):
        rows[0]["image"] = value
        man.write_text(_body(rows))
        rc, _, err = _inspect(run_cli, man)
        _one_line(rc, err, "m.jsonl: line 1", needle)
        assert "\0" not in err and len(err) < 400
        assert len(_load(man, skip_bad=True).items) == len(rows) - 1  # --skip-bad leaves it out, as a missing file


def test_float_tiff_in_unit_range_is_scaled_and_nan_refused(tmp_path):
    from PIL import Image

    p = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)).save(p)
    assert Image.open(p).mode == "F"
    assert load_image_uint8(p, 4)[0, 0].tolist() == [0, 128, 255, 64]  # was [0, 0, 1, 0]: black
    wide = tmp_path / "w.tif"
    Image.fromarray(np.array([[0.0, 10.0, 200.0, 255.0]], dtype=np.float32)).save(wide)
    assert load_image_uint8(wide, 4)[0, 0].tolist() == [0, 10, 200, 255]  # 0-255 floats: as before
    bad = tmp_path / "n.tif"
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(bad)
    with pytest.raises(DataError, match="n.tif: unreadable or truncated image file.*NaN"):
        load_image_uint8(bad, 4)


def test_an_svg_image_says_to_convert_it(tmp_path):
    """An SVG (a vector format PIL does not read) is named as such with what to do, not called corrupt."""
    from episodes.errors import DataError
    from episodes.images import load_image_uint8

    p = tmp_path / "icon.svg"
    p.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>')
    with pytest.raises(DataError, match=r"icon.svg: SVG \(vector\) images are not read; convert them to PNG"):
        load_image_uint8(p, 4)
