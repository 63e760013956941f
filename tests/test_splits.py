"""Class splits that fit the task: with >= 3 x ways classes, meta-val and meta-test get >= ways
classes; --split-classes TRAIN,VAL,TEST overrides; otherwise one line naming the numbers."""

import json

import numpy as np
import pytest

from croma.cli import build_parser, main
from episodes.errors import DataError
from episodes.prepare import split_counts
from episodes.samplers import ClassificationTaskSampler


def test_split_counts_by_hand():
    assert split_counts(22) == (14, 4, 4)  # fractions only (no ways): as before
    assert split_counts(22, ways=5) == (12, 5, 5)  # raised to 5 each, taken from meta-train
    assert split_counts(22, ways=4) == (14, 4, 4)  # already enough
    assert split_counts(15, ways=5) == (5, 5, 5)
    assert split_counts(40, ways=5) == (24, 8, 8)
    assert split_counts(88, ways=5) == (52, 18, 18)
    assert split_counts(2, ways=5) == (2, 0, 0)  # too few to split at all: all meta-train, as before
    assert split_counts(22, counts=[10, 6, 6]) == (10, 6, 6)


def test_split_counts_errors_name_the_numbers():
    with pytest.raises(DataError) as info:
        split_counts(12, ways=5, name="manifest")
    msg = str(info.value)
    for needle in ("12 target classes", "8/2/2", "5-way", "3 x 5 = 15", "--ways (at most 4)", "--split-classes"):
        assert needle in msg, msg
    with pytest.raises(DataError, match=r"--split-classes 10,6,5 sums to 21, but manifest has 22 target classes"):
        split_counts(22, counts=(10, 6, 5), name="manifest")
    with pytest.raises(DataError, match=r"--split-classes 14,4,4: meta-val has 4 classes; 5-way tasks need 5"):
        split_counts(22, ways=5, counts=(14, 4, 4))


def _write_manifest(folder, name, rows_of, *, classes, per_class, seed):
    """``folder/name``: for each class ``c`` and item ``j`` an 8x8 random PNG ``c_j.png`` and the
    manifest rows ``rows_of(c, j)`` (dicts) that use it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for c in range(classes):
        for j in range(per_class):
            Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(folder / f"{c}_{j}.png")
            lines += [json.dumps(row) for row in rows_of(c, j)]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _manifest(folder, classes=22, per_class=2):
    return _write_manifest(folder, "m.jsonl", lambda c, j: [{"id": f"{c}_{j}", "label": f"c{c:02d}", "text": f"caption {c} {j}",
                                                           "image": f"{c}_{j}.png"}],
                           classes=classes, per_class=per_class, seed=0)


def test_22_class_manifest_runs_5_way_by_default(tmp_path):
    from croma.benchmark import load_for_benchmark
    from croma.cli.benchmark import config_from_args

    man = _manifest(tmp_path / "d", per_class=10)
    args = build_parser().parse_args(["benchmark", "manifest", "--manifest", str(man), "--source", "text", "--target",
                                      "image", "--cache-dir", str(tmp_path / "c"), "--quiet"])
    bench = load_for_benchmark(config_from_args(args))
    sizes = [len(bench.splits[k]) for k in ("meta_train", "meta_val", "meta_test")]
    assert sizes == [12, 5, 5]
    for split in ("meta_val", "meta_test"):  # 5-way episodes exist where they are used
        s = ClassificationTaskSampler(bench.data["image"].labels, bench.splits[split], ways=5, shots=1, queries=5,
                                      seed=0)
        assert s.sample(0).classes.numel() == 5
    args = build_parser().parse_args(["benchmark", "manifest", "--manifest", str(man), "--source", "text", "--target",
                                      "image", "--cache-dir", str(tmp_path / "c"), "--quiet", "--split-classes", "10,6,6"])
    bench = load_for_benchmark(config_from_args(args))
    assert [len(bench.splits[k]) for k in ("meta_train", "meta_val", "meta_test")] == [10, 6, 6]


def test_too_few_classes_for_the_ways_lower_the_ways_of_a_seeded_split():
    from episodes.class_split import fit_ways

    assert fit_ways(15, 5) == (5, None) and fit_ways(40, 5) == (5, None)
    used, why = fit_ways(10, 5)
    assert used == 3 and "10 target classes cannot give 5 classes to each of meta-train, meta-val and meta-test" in why
    assert fit_ways(22, 8)[0] == 7 and fit_ways(8, 5)[0] == 2 and split_counts(8, ways=2) == (4, 2, 2)
    assert fit_ways(5, 5) == (5, None)  # not even 2-way fits: unchanged, and the split's error says why
    with pytest.raises(DataError, match=r"5 target classes .*even 2-way tasks need 2 classes in each split, 6 in all"):
        split_counts(5, ways=5)


@pytest.mark.parametrize("extra,needle", [
    (["--split-classes", "10,6,5"], "--split-classes 10,6,5 sums to 21, but manifest has 22 target classes"),
    (["--split-classes", "10,6"], "expected three class counts TRAIN,VAL,TEST"),
    (["--split-classes", "0,11,11"], "class counts must all be in [1, 100000]"),
    (["--ways", "8", "--strict-sizes"], "22 target classes split 14/4/4 (meta-train/val/test) cannot give 8-way tasks"),
])
def test_split_errors_are_one_line_exit_2(tmp_path, capsys, extra, needle):
    man = _manifest(tmp_path / "d", per_class=1)
    for cmd in (["train", "manifest", "--checkpoint-dir", str(tmp_path / "run")], ["benchmark", "manifest", "--out", str(tmp_path / "o")]):
        try:
            rc = main([*cmd, "--manifest", str(man), "--source", "text", "--target", "image", "--cache-dir",
                       str(tmp_path / "c"), "--quiet", *extra])
        except SystemExit as exc:  # argparse's own usage errors
            rc = exc.code
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
        assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "o" / "results.json").exists()


def test_fixed_splits_refuse_split_classes(tmp_path):
    from episodes.data import CrossModalDataset, Item
    from episodes.prepare import make_class_split

    items = [Item(id=str(i), label=f"c{i % 6}", modalities={"text": "x", "audio": "y"}) for i in range(12)]
    ds = CrossModalDataset("fixed", "text", "audio", items,
                           meta={"class_split": {"meta_train": ["c0", "c1"], "meta_val": ["c2", "c3"], "meta_test": ["c4", "c5"]}})
    assert make_class_split(ds, ways=5)["meta_val"] == ["c2", "c3"]  # a documented split is kept as is
    with pytest.raises(DataError, match="fixed, documented class split"):
        make_class_split(ds, split_classes=(2, 2, 2))


def test_data_inspect_shows_the_split_train_and_benchmark_make(tmp_path, capsys):
    man = _manifest(tmp_path / "d", per_class=2)
    base = ["data", "inspect", "manifest", "--manifest", str(man), "--source", "text", "--target", "image", "--json"]
    for extra, sizes in (([], [12, 5, 5]), (["--ways", "3"], [14, 4, 4]), (["--split-classes", "10,6,6"], [10, 6, 6])):
        assert main([*base, *extra]) == 0
        s = json.loads(capsys.readouterr().out)["splits"]
        assert [s["meta_train"], s["meta_val"], s["meta_test"]] == sizes, extra
        assert s["source_train"] == sizes[0]  # the source classes that are not held out


def test_single_item_classes_stay_in_meta_train_and_inspect_says_so(tmp_path, capsys):
    """A class with one target item cannot serve a k-shot episode: a seeded split keeps it in
    meta-train whenever the other classes fill meta-val and meta-test; a data set without such
    classes splits exactly as before; `croma data inspect` names them."""
    from episodes.class_split import _seeded_split, make_class_split, single_item_classes
    from episodes.datasets import load_dataset

    man = _manifest(tmp_path / "d", classes=22, per_class=2)
    lines = man.read_text().splitlines()
    singles = {"c03", "c07", "c11", "c19"}
    man.write_text("\n".join(l for l in lines if not any(f'"label": "{c}"' in l and '_1"' in l.split(",")[0]
                                                          for c in singles)) + "\n")
    ds = load_dataset("manifest", manifest=str(man), source="text", target="image")
    assert single_item_classes(ds) == sorted(singles)
    for seed in range(6):
        split = make_class_split(ds, seed=seed, ways=5)
        assert singles <= set(split["meta_train"]) and [len(split[k]) for k in ("meta_val", "meta_test")] == [5, 5]
        # without single-item classes the seeded split is the one it always was: one permutation of all
        import torch

        from episodes.samplers import episode_generator

        full = load_dataset("manifest", manifest=str(_manifest(tmp_path / f"full{seed}", classes=22, per_class=2)),
                            source="text", target="image")
        names = sorted({it.label for it in full.items})
        perm = [names[i] for i in torch.randperm(22, generator=episode_generator(seed, 0, "class-split")).tolist()]
        assert make_class_split(full, seed=seed, ways=5) == {"meta_train": sorted(perm[10:]),
                                                             "meta_val": sorted(perm[:5]), "meta_test": sorted(perm[5:10])}
    # when the others cannot fill meta-val and meta-test, every class is drawn as before
    crowded = _seeded_split([f"k{i}" for i in range(15)], 0, (0.6, 0.2, 0.2), ways=5, single=[f"k{i}" for i in range(8)])
    assert crowded == _seeded_split([f"k{i}" for i in range(15)], 0, (0.6, 0.2, 0.2), ways=5)
    assert main(["data", "inspect", "manifest", "--manifest", str(man), "--source", "text", "--target", "image"]) == 0
    out = capsys.readouterr().out
    assert "4 target classes have a single item (c03, c07, c11, c19)" in out and "meta-train" in out


def _weak_manifest(folder, clusters=True, classes=16, per_class=4):
    """Text rows and image rows in separate lines, sharing only a `cluster` (weak pairs) or nothing."""
    def rows(c, j):
        extra = {"cluster": f"k{c}"} if clusters else {}
        return [{"id": f"t{c}_{j}", "label": f"c{c:02d}", "text": f"word {c} {j}", **extra},
                {"id": f"i{c}_{j}", "label": f"c{c:02d}", "image": f"{c}_{j}.png", **extra}]

    return _write_manifest(folder, "weak.jsonl", rows, classes=classes, per_class=per_class, seed=1)


def test_weak_alignment_is_named_and_a_manifest_without_it_is_refused_before_training(tmp_path, capsys, run_cli):
    """Weak pairs only: the task-sizes line says weak alignment and how many pairs a task really
    holds (one per cluster with both modalities); without usable clusters `data inspect` says no
    alignment is possible and `croma benchmark` refuses in one line before any unit runs."""
    weak = _weak_manifest(tmp_path / "w")
    flags = ["--source", "text", "--target", "image", "--cache-dir", str(tmp_path / "c")]
    rc, out, err = run_cli(["train", "manifest", "--manifest", str(weak), *flags, "--features", "compact",
                            "--iterations", "1", "--eval-every", "0", "--checkpoint-dir", str(tmp_path / "r")])
    assert rc == 0, err
    # 16 classes split 6 / 5 / 5 at 5-way: the 6 meta-train classes' clusters hold both modalities
    assert "weak alignment: 6 pairs per task, one per concept cluster (6 clusters have both modalities)" in err, err
    none = _weak_manifest(tmp_path / "n", clusters=False)
    assert main(["data", "inspect", "manifest", "--manifest", str(none), "--source", "text", "--target", "image"]) == 0
    assert "alignment: none possible" in capsys.readouterr().out
    out_dir = tmp_path / "table"
    rc, _, err = run_cli(["benchmark", "manifest", "--manifest", str(none), *flags, "--methods", "pretrain,croma",
                          "--train-seeds", "1", "--budget-steps", "40", "--quiet", "--out", str(out_dir)])
    assert rc == 2 and err.count("\n") == 1 and "weak alignment needs >= 2 concept clusters" in err
    assert not out_dir.exists()


def test_inspect_names_source_classes_that_share_a_cluster_with_held_out_targets(tmp_path, capsys):
    """Labels namespaced per modality (txt/c00 for text rows, c00 for image rows) in one cluster: the
    text class is not held out with its image class, so inspect says source training sees it."""
    from episodes.class_split import cluster_overlaps, make_class_split
    from episodes.datasets import load_dataset

    weak = _weak_manifest(tmp_path / "w")
    rows = [json.loads(line) for line in weak.read_text().splitlines()]
    for r in rows:
        if "text" in r:
            r["label"] = "txt/" + r["label"]
    ns = tmp_path / "w" / "ns.jsonl"
    ns.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset("manifest", manifest=str(ns), source="text", target="image")
    split = make_class_split(ds, seed=0, ways=5)
    held = split["meta_val"] + split["meta_test"]
    assert cluster_overlaps(ds, split) == sorted(("txt/" + c, c) for c in held)
    assert cluster_overlaps(load_dataset("manifest", manifest=str(weak), source="text", target="image"), split) == []
    assert main(["data", "inspect", "manifest", "--manifest", str(ns), "--source", "text", "--target", "image"]) == 0
    assert f"note: {len(held)} source-train classes share a concept cluster" in capsys.readouterr().out
    # different concepts labelled alike in both modalities that share clusters (icons: mail-send and
    # mail-unread in "mail") are no such pairs: no note
    same = [dict(json.loads(line), cluster="one") for line in weak.read_text().splitlines()]
    one = tmp_path / "w" / "one.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in same))
    assert cluster_overlaps(load_dataset("manifest", manifest=str(one), source="text", target="image"), split) == []
