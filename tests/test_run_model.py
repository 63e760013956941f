"""A trained run as a self-contained model (croma.runmodel): embed / adapt / predict without the
training data, ``croma predict`` / ``croma embed``, and ``croma evaluate``'s guard against other data.

One tiny text -> audio manifest (9 classes x 6 clips, compact features: hashed n-grams for text,
log-mel statistics + a bag of audio words fitted on meta-train clips for audio) is trained once per
module for a few iterations; every test reads that run.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_layouts import write_wav

CLASSES, PER = 9, 6


def _write_manifest(folder: Path, *, rename: dict | None = None, drop: int = 0) -> Path:
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(CLASSES):
        for i in range(PER):
            wav = folder / "wav" / f"c{c}_{i}.wav"
            if not wav.is_file():
                write_wav(wav, seconds=0.3, sample_rate=16000, seed=c * 100 + i, freq=180.0 + 60.0 * c + 7.0 * i)
            label = f"L{c}"
            rows.append({"id": f"c{c}_{i}", "label": (rename or {}).get(label, label),
                         "text": f"word{c} {'ab' * (c + 1)} item {i}", "audio": f"wav/c{c}_{i}.wav"})
    path = folder / ("manifest.jsonl" if rename is None and not drop else f"other{len(rename or {})}_{drop}.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[drop:]), encoding="utf-8")
    return path


TRAIN_FLAGS = ["--source", "text", "--target", "audio", "--no-extra-modalities", "--features", "compact",
               "--iterations", "4", "--eval-every", "2", "--quiet", "--ways", "3", "--shots", "1", "--queries", "1",
               "--eval-shots", "1", "2", "--eval-tasks", "2", "--align-batch", "8", "--hidden", "16", "--embed-dim", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(data folder, manifest, run folder, cache folder)`` of one trained run."""
    from croma.cli import main

    root = tmp_path_factory.mktemp("runmodel")
    manifest = _write_manifest(root / "data")
    run, cache = root / "run", root / "cache"
    rc = main(["train", "manifest", "--manifest", str(manifest), "--checkpoint-dir", str(run), "--cache-dir", str(cache),
               *TRAIN_FLAGS])
    assert rc == 0
    return root / "data", manifest, run, cache


def _rows(data: Path, classes, ids, *, labels=True):
    out = []
    for c in classes:
        for i in ids:
            row = {"id": f"c{c}_{i}", "audio": str(data / "wav" / f"c{c}_{i}.wav")}
            if labels:
                row["label"] = f"L{c}"
            out.append(row)
    return out


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_checkpoint_holds_serving_section(trained):
    from croma.checkpoint import load_checkpoint

    _, _, run, _ = trained
    card = load_checkpoint(run / "best.pt")["serving"]
    assert card["source"] == "text" and card["target"] == "audio"
    assert sorted(sum((card["split"][k] for k in ("meta_train", "meta_val", "meta_test")), [])) == \
        sorted(f"L{c}" for c in range(CLASSES))
    ops = {m: [s["op"] for s in st["steps"]] for m, st in card["transform"].items()}
    assert ops == {"text": ["frontend", "ngrams"], "audio": ["frontend", "audio-compact", "standardize"]}
    assert card["data"]["items"] == {"audio": CLASSES * PER, "text": CLASSES * PER}
    assert set(card["finetune"]["per_k"]) == {"1", "2"}


def test_replayed_front_end_equals_the_benchmark_rows(trained):
    """The stored front-end (n-grams; log-mel stats + the fitted codebook + standardisation) applied
    to the training items gives the benchmark's feature rows."""
    from croma.runmodel import load_model
    from croma.runs import load_run

    data, manifest, run, cache = trained
    model = load_model(run)
    _, bench, _, _, _ = load_run(run, manifest=str(manifest), cache_dir=str(cache), device="cpu")
    rows = {json.loads(line)["id"]: json.loads(line) for line in manifest.read_text().splitlines()}
    for mod in ("text", "audio"):
        d = bench.data[mod]
        values = [rows[i][mod] if mod == "text" else str(data / rows[i][mod]) for i in d.ids]
        x = model.features(mod, values)
        # float32 codebook distances over 80-d frames (relative error ~80 eps ~ 1e-5) divided by
        # column standard deviations of order 0.1: 1e-4 of the features' scale
        scale = float(d.features.abs().max())
        torch.testing.assert_close(x, d.features, rtol=0, atol=1e-4 * scale)


def test_adapt_matches_the_evaluation_of_the_same_episode(trained):
    """adapt + predict on one meta-test episode gives the accuracy the sequential meta-test
    reference gives for that episode (same head, same fine-tuning, same queries)."""
    from croma.evaluate import EvalConfig, _episode_batch
    from croma.finetune import _Episodes
    from croma.runmodel import load_model
    from croma.runs import load_run

    data, manifest, run, cache = trained
    model = load_model(run)
    net, bench, theta, ckpt, tcfg = load_run(run, manifest=str(manifest), cache_dir=str(cache), device="cpu")
    st = model.setting_for(2)
    cfg = EvalConfig(shots=[2], ways=3, tasks=3, queries=2, split="meta_test", head_init=st["head_init"],
                     finetune=st["finetune"], finetune_steps=st["finetune_steps"], finetune_lr=st["finetune_lr"],
                     finetune_optimizer=st["finetune_optimizer"], inner_loop="sequential")
    x = bench.data["audio"].features
    b = _episode_batch(bench, x, cfg, 2, 0)
    eps = _Episodes(net, "audio", cfg, names=list(theta))
    paths = [str(data / "wav" / f"{i}.wav") for i in bench.data["audio"].ids]
    for t in range(3):
        ref = float(eps.finetune_accuracy(theta, {k: b[k][t] for k in ("xs", "ys", "xq", "yq")}))
        sup = [paths[r] for r in b["rs"][t].tolist()]
        qry = [paths[r] for r in b["rq"][t].tolist()]
        adapted = model.adapt(sup, b["ys"][t].tolist())  # labels 0..2: sorted as the episode orders them
        pred = adapted.predict(qry)
        acc = float(np.mean([p == y for p, y in zip(pred.labels, b["yq"][t].tolist())]))
        assert acc == pytest.approx(ref)
        assert pred.scores.shape == (6, 3)
        assert pred[0] is pred.labels and pred[1] is pred.scores and len(pred) == 2  # indexes as it unpacks
        torch.testing.assert_close(pred.scores.sum(1), torch.ones(6), rtol=0, atol=1e-5)
    # a decoded waveform with its rate gives the file's prediction; model.sample_rate names the rate
    import soundfile as sf

    assert model.sample_rate == model.transforms["audio"].frontend.sample_rate
    assert torch.equal(adapted.logits([sf.read(p) for p in qry]), adapted.logits(qry))  # mono 16-bit: same samples
    # an unbalanced support set (2, 2, 1 examples): meta-val's 1-shot setting, and it says so
    unbal = model.adapt(sup[:-1], b["ys"][2].tolist()[:-1])
    assert unbal.setting["shots"] == 1 and unbal.setting["shots_max"] == 2 and "shots_max" not in adapted.setting
    # in a notebook both print a one-line summary, not every tensor of the checkpoint
    split = "/".join(str(len(model.split[s])) for s in ("meta_train", "meta_val", "meta_test"))
    assert repr(model).startswith("RunModel(") and f"classes {split}" in repr(model) and len(repr(model)) < 400
    assert "tensor" not in repr(model) and "tensor" not in repr(adapted) and len(repr(adapted)) < 400


def test_prediction_indexes_as_it_unpacks():
    """``clf.predict(x)[0]`` is the labels and ``[1]`` the scores, as ``labels, scores = clf.predict(x)``
    unpacks; the attributes stay."""
    from croma.adapted import Prediction

    scores = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    pred = Prediction(labels=["cat", "dog"], scores=scores, classes=["cat", "dog"])
    labels, sc = pred
    assert pred[0] is labels is pred.labels and pred[1] is sc is pred.scores and pred.classes == ["cat", "dog"]
    assert len(pred) == 2 and pred[-1] is scores and pred[:] == (pred.labels, scores) and list(pred) == list(pred[:])
    with pytest.raises(IndexError):
        pred[2]


def test_predict_and_embed_without_training_data(trained, tmp_path, run_cli):
    """Delete the training manifest and the feature cache: croma predict / embed still work, twice
    identically; query labels give an accuracy."""
    data, manifest, run, cache = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    heldout = tmp_path / "new"  # the clips of the held-out classes, copied away from the training data
    shutil.copytree(data / "wav", heldout / "wav")
    from croma.runmodel import load_model

    test_classes = [int(c[1:]) for c in load_model(copy).split["meta_test"]]
    assert len(test_classes) == 3
    support = _write(tmp_path / "support.jsonl", _rows(heldout, test_classes, range(3)))
    query = _write(tmp_path / "query.jsonl", _rows(heldout, test_classes, range(3, 6)))
    moved = tmp_path / "gone"
    moved.mkdir()
    shutil.move(str(data), str(moved / "data"))
    shutil.move(str(cache), str(moved / "cache"))
    try:
        outs = []
        for n in range(2):
            out = tmp_path / f"pred{n}.jsonl"
            rc, stdout, err = run_cli(["predict", str(copy), "--support", str(support), "--query", str(query),
                                       "--out", str(out)])
            assert rc == 0, err
            assert "accuracy" in stdout and "of 9 queries" in stdout
            correct = sum(json.loads(line)["predicted"] == json.loads(line)["label"] for line in out.read_text().splitlines())
            from croma.stats import wilson_interval

            low, high = wilson_interval(correct, 9)
            assert f"95% interval {low:.1f}-{high:.1f} over the queries" in stdout
            outs.append(out.read_bytes())
        assert outs[0] == outs[1]
        rows = [json.loads(line) for line in outs[0].decode().splitlines()]
        assert len(rows) == 9 and set(rows[0]) == {"id", "predicted", "scores", "label"}
        assert all(r["predicted"] in r["scores"] for r in rows)
        npz = []
        for n in range(2):
            out = tmp_path / f"emb{n}.npz"
            rc, _, err = run_cli(["embed", str(copy), "--modality", "speech", "--input", str(query), "--out", str(out)])
            assert rc == 0, err
            npz.append(out.read_bytes())
        assert npz[0] == npz[1]
        z = np.load(tmp_path / "emb0.npz")
        assert z["embeddings"].shape == (9, 16) and list(z["ids"][:2]) == ["c" + str(test_classes[0]) + "_3",
                                                                          "c" + str(test_classes[0]) + "_4"]
        assert np.isfinite(z["embeddings"]).all()
    finally:
        shutil.move(str(moved / "data"), str(data))
        shutil.move(str(moved / "cache"), str(cache))


def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, run_cli):
    data, _, run, _ = trained
    one_class = _write(tmp_path / "one.jsonl", _rows(data, [0], range(3)))
    query = _write(tmp_path / "q.jsonl", _rows(data, [0, 1], range(3, 4), labels=False))
    out = tmp_path / "out.jsonl"
    rc, _, err = run_cli(["predict", str(run), "--support", str(one_class), "--query", str(query), "--out", str(out)])
    assert rc == 2 and "at least 2 classes" in err and len(err.strip().splitlines()) == 1
    missing = _write(tmp_path / "missing.jsonl", _rows(data, [0, 1], range(2)) + [{"id": "x", "label": "L1",
                                                                                  "audio": "nowhere.wav"}])
    rc, _, err = run_cli(["predict", str(run), "--support", str(missing), "--query", str(query), "--out", str(out)])
    assert rc == 2 and "nowhere.wav" in err and len(err.strip().splitlines()) == 1
    assert "--skip-bad" not in err and "fix or remove that --support row" in err  # predict has no --skip-bad
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")  # found while decoding, not reading rows
    corrupt = _write(tmp_path / "corrupt.jsonl", _rows(data, [0, 1], range(2)) + [{"id": "x", "label": "L1",
                                                                                  "audio": str(tmp_path / "bad.wav")}])
    rc, _, err = run_cli(["predict", str(run), "--support", str(corrupt), "--query", str(query), "--out", str(out)])
    assert rc == 2 and err.count("\n") == 1 and "bad.wav: unreadable" in err
    assert "(item 'x', " in err and "corrupt.jsonl: line 5; fix or remove that --support row)" in err
    unlabelled = _write(tmp_path / "nolabel.jsonl", _rows(data, [0, 1], range(2), labels=False))
    rc, _, err = run_cli(["predict", str(run), "--support", str(unlabelled), "--query", str(query)])
    assert rc == 2 and "missing 'label'" in err
    rc, _, err = run_cli(["embed", str(run), "--modality", "image", "--input", str(query), "--out", str(tmp_path / "e.npz")])
    assert rc == 2 and "no image modality" in err
    text_rows = _write(tmp_path / "text.jsonl", [{"id": "a", "label": "L0", "text": "hello"}])
    rc, _, err = run_cli(["predict", str(run), "--support", str(text_rows), "--query", str(query)])
    assert rc == 2 and "no 'audio' value" in err
    assert not out.exists() and not (tmp_path / "e.npz").exists()
    # embed reads a whole manifest: rows without the asked modality are left out and counted
    mixed = _write(tmp_path / "mixed.jsonl", _rows(data, [0, 1], range(2)) + [{"id": "t1", "label": "L0", "text": "hi"}])
    rc, stdout, err = run_cli(["embed", str(run), "--modality", "audio", "--input", str(mixed), "--out",
                               str(tmp_path / "m.npz")])
    assert rc == 0, err
    assert "wrote 4 audio embeddings" in stdout and "left out 1 row(s) with no 'audio' value" in stdout
    assert list(np.load(tmp_path / "m.npz")["ids"]) == ["c0_0", "c0_1", "c1_0", "c1_1"]


def test_text_given_to_the_audio_modality_is_named_as_text(trained):
    """``adapt`` / ``predict`` of the audio target on sentences: the message says the items look like
    text and that the run's text modality takes strings; a missing file path keeps the plain message."""
    from croma.errors import CromaError
    from croma.runmodel import load_model

    model = load_model(trained[2])
    with pytest.raises(CromaError, match=r"'a dog barking' looks like text \(the run's text modality takes strings\)"):
        model.adapt(["a dog barking", "a dog", "rain", "heavy rain"], ["d", "d", "r", "r"])
    with pytest.raises(CromaError) as err:
        model.adapt(["nowhere.wav", "gone.wav"], ["d", "r"])
    assert "nowhere.wav" in str(err.value) and "looks like text" not in str(err.value)


def test_a_run_without_serving_section_says_what_is_missing(trained, tmp_path):
    from croma.checkpoint import load_checkpoint, save_checkpoint
    from croma.errors import CromaError
    from croma.runmodel import load_model

    _, _, run, _ = trained
    ckpt = load_checkpoint(run / "best.pt")
    del ckpt["serving"]
    save_checkpoint(tmp_path / "old.pt", ckpt)
    with pytest.raises(CromaError, match="no 'serving' section"):
        load_model(tmp_path / "old.pt")


def test_evaluate_refuses_other_data(trained, tmp_path, run_cli):
    """Renamed classes (a different split) and relabelled / removed items are refused, naming the
    manifest and the classes that moved; the run's own manifest is evaluated."""
    data, manifest, run, cache = trained
    common = ["--cache-dir", str(cache), "--shots", "1", "--repeats", "1", "--eval-tasks", "2", "--queries", "1"]
    rc, out, err = run_cli(["evaluate", str(run), "--manifest", str(manifest), *common])
    assert rc == 0, err
    renamed = _write_manifest(data, rename={f"L{c}": f"M{c}" for c in range(CLASSES)})
    rc, _, err = run_cli(["evaluate", str(run), "--manifest", str(renamed), *common])
    assert rc == 2 and str(renamed) in err and "class split differs" in err and "'M" in err
    # one class renamed (L4 -> ox): the rename itself is named first, before any class it moved
    ox = _write_manifest(data, rename={"L4": "ox"})
    rc, _, err = run_cli(["evaluate", str(run), "--manifest", str(ox), *common])
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    listed = err[err.index("differs (") + len("differs ("):err.index("), so meta-test")].split("; ")
    assert listed[0].startswith("'ox' new in ") and listed[1].startswith("'L4' gone from "), err
    assert all(" -> " in p for p in listed[2:]), err
    fewer = _write_manifest(data, drop=1)
    rc, _, err = run_cli(["evaluate", str(run), "--manifest", str(fewer), *common])
    assert rc == 2 and "items were added, removed or relabelled" in err and "53 now" in err


def test_evaluate_new_classes_is_many_predicts(trained, tmp_path, run_cli, capsys):
    """`croma evaluate RUN --new-classes FILE`: each episode's accuracy is what adapt + predict on that
    episode's files gives (the pool featurised once, the same fine-tuning), with an interval over
    episodes; a k the classes cannot serve is dropped and said; a missing file is one line."""
    from croma.new_classes import evaluate_new_classes
    from croma.runmodel import load_model
    from croma.stats import mean_ci95
    from episodes.samplers import ClassificationTaskSampler

    data, _, run, _ = trained
    model = load_model(run)
    classes = [int(c[1:]) for c in model.split["meta_test"]]
    pool = _write(tmp_path / "pool.jsonl", _rows(data, classes, range(PER)))
    rc, out, err = run_cli(["evaluate", str(run), "--new-classes", str(pool), "--shots", "1", "2", "6",
                            "--repeats", "1", "--eval-tasks", "3", "--json"])
    assert rc == 0, err
    res = json.loads(out[out.index("{"):])
    assert res["ways"] == 3 and res["episodes"] == 3 and [r["shots"] for r in res["rows"]] == [1, 2]
    assert res["dropped"][0]["shots"] == 6 and "k=6 dropped" in out  # 6 items: 6-shot leaves no query
    assert "± is the 95% interval over 3 episodes" in out
    paths = [str(data / "wav" / f"c{c}_{i}.wav") for c in classes for i in range(PER)]
    labels = [f"L{c}" for c in classes for i in range(PER)]
    y = torch.tensor([sorted(set(labels)).index(lab) for lab in labels])
    for r in res["rows"]:
        k, q = r["shots"], r["queries"]
        sampler = ClassificationTaskSampler(y, [0, 1, 2], ways=3, shots=k, queries=q, seed=k)
        for i, acc in enumerate(r["accuracies"]):
            t = sampler.sample(i)
            adapted = model.adapt([paths[j] for j in t.support_rows.tolist()], t.support_labels.tolist())
            pred = adapted.predict([paths[j] for j in t.query_rows.tolist()])
            assert acc == pytest.approx(100.0 * float(np.mean([p == int(lab) for p, lab in zip(pred.labels,
                                                                  t.query_labels.tolist())])))
        assert r["accuracy_ci95"] == pytest.approx(mean_ci95(r["accuracies"])[1])
    with pytest.raises(Exception, match="2 classes"):
        evaluate_new_classes(model, paths[:PER], labels[:PER])
    # the Python call's progress bar (the CLI shows it on a terminal) counts the episodes, the same numbers
    again = evaluate_new_classes(model, paths, labels, shots=[1], episodes=3, progress=True)
    assert again["rows"][0]["accuracies"] == res["rows"][0]["accuracies"]
    assert "new classes: 100% (3/3)" in capsys.readouterr().err
    rc, _, err = run_cli(["evaluate", str(run), "--new-classes", str(tmp_path / "nope.jsonl")])
    assert rc == 2 and err.count("\n") == 1 and "nope.jsonl" in err


def test_evaluate_new_classes_takes_the_fine_tuning_flags(trained, tmp_path, run_cli):
    """`--head-init/--finetune/--finetune-steps/--finetune-lr` reach every episode's fine-tuning under
    `--new-classes` (the header and each row say which setting ran); flags that act on the run's own
    data are refused in one line rather than ignored."""
    data, _, run, _ = trained
    from croma.runmodel import load_model

    classes = [int(c[1:]) for c in load_model(run).split["meta_test"]]
    pool = _write(tmp_path / "pool.jsonl", _rows(data, classes, range(PER)))
    base = ["evaluate", str(run), "--new-classes", str(pool), "--shots", "1", "--repeats", "1", "--eval-tasks", "2",
            "--json"]
    rc, out, err = run_cli([*base, "--head-init", "zero", "--finetune", "head", "--finetune-steps", "3",
                            "--finetune-lr", "0.05"])
    assert rc == 0, err
    setting = json.loads(out[out.index("{"):])["rows"][0]["setting"]
    assert (setting["head_init"], setting["finetune"], setting["finetune_steps"]) == ("zero", "head", 3)
    assert setting["finetune_lr"] == pytest.approx(0.05)
    assert "--head-init zero" in out and "zero/3/0.05/head" in out
    rc, out, _ = run_cli(base)
    assert rc == 0 and "as the run's card says" in out
    for extra in (["--split", "meta_val"], ["--label-noise", "0.2"], ["--strict-sizes"], ["--head-init", "auto"]):
        rc, _, err = run_cli([*base, *extra])
        assert rc == 2 and err.count("\n") == 1 and extra[0] in err and str(pool) in err
