"""`croma cache info|clear`: location, size and entries per data set and modality / backbone;
clearing one data set leaves the others (and foreign files) alone."""

import json
import os

import pytest
import torch

from croma.cli import main
from episodes.cache import FeatureCache
from episodes.cache_admin import cache_groups, clear_cache
from episodes.errors import DataError


def _files_size(folder):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    fc = FeatureCache(root)
    g = torch.Generator().manual_seed(0)
    fc.save("cifar-esc50/audio", "a" * 64, {"features": torch.randn(4, 8, generator=g)})
    fc.save("cifar-esc50/image", "b" * 64, {"features": torch.randn(4, 3, 2, 2, generator=g)})
    fc.save("cifar-esc50/image", "c" * 64, {"features": torch.randn(2, 3, 2, 2, generator=g)})
    fc.save("udhr-speech/text/bert", "d" * 64, {"features": torch.randn(3, 16, generator=g)})
    speech = root / "udhr-speech" / "v1"
    (speech / "deu").mkdir(parents=True)
    (speech / "deu" / "0.wav").write_bytes(b"RIFF" + bytes(100))
    (speech / "deu" / "1.wav").write_bytes(b"RIFF" + bytes(60))
    (speech / "index.json").write_text("{}")
    (root / "notes.txt").write_text("not the cache's")  # a foreign file under the root
    return root


def test_groups_count_entries_and_sizes(cache):
    groups = {(g.dataset, g.kind, g.part): g for g in cache_groups(cache)}
    assert sorted(groups) == [
        ("cifar-esc50", "features", "audio"), ("cifar-esc50", "features", "image"),
        ("udhr-speech", "features", "text/bert"), ("udhr-speech", "generated", "v1"),
    ]
    assert groups[("cifar-esc50", "features", "image")].entries == 2
    assert groups[("udhr-speech", "generated", "v1")].entries == 2
    assert groups[("cifar-esc50", "features", "image")].bytes == _files_size(cache / "features" / "cifar-esc50" / "image")
    assert groups[("udhr-speech", "generated", "v1")].bytes == 104 + 64 + 2
    assert sum(g.bytes for g in groups.values()) == _files_size(cache) - len("not the cache's")
    assert cache_groups(cache / "missing") == []


def test_info_table_and_json(cache, capsys):
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"cache: {cache} (") and "in 6 entries" in out[0]
    assert out[1].split() == ["data", "set", "kind", "modality/backbone", "entries", "size"]
    assert [line.split()[:4] for line in out[2:]] == [
        ["cifar-esc50", "features", "audio", "1"], ["cifar-esc50", "features", "image", "2"],
        ["udhr-speech", "features", "text/bert", "1"], ["udhr-speech", "generated", "v1", "2"],
    ]
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["root"] == str(cache) and js["bytes"] == sum(g["bytes"] for g in js["groups"])
    assert {g["dataset"] for g in js["groups"]} == {"cifar-esc50", "udhr-speech"}


def test_default_root_is_croma_cache(cache, capsys, monkeypatch):
    monkeypatch.setenv("CROMA_CACHE", str(cache))
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out.startswith(f"cache: {cache} (")


def test_clear_one_data_set_only(cache, capsys):
    before = {(g.dataset, g.part): g for g in cache_groups(cache)}
    assert main(["cache", "clear", "--dataset", "udhr-speech", "--cache-dir", str(cache)]) == 0
    freed = sum(g.bytes for k, g in before.items() if k[0] == "udhr-speech")
    out = capsys.readouterr().out
    assert "removed 4 file(s)" in out and "data set udhr-speech" in out
    assert [g.dataset for g in cache_groups(cache)] == ["cifar-esc50", "cifar-esc50"]
    assert not (cache / "udhr-speech").exists() and not (cache / "features" / "udhr-speech").exists()
    assert FeatureCache(cache).load("cifar-esc50/image", "b" * 64) is not None  # the others still load
    assert (cache / "notes.txt").read_text() == "not the cache's"
    assert freed > 0


def test_clear_all_keeps_foreign_files(cache, capsys):
    files, freed = clear_cache(cache)
    assert files == 7 and freed > 0
    assert cache_groups(cache) == []
    assert sorted(os.listdir(cache)) == ["notes.txt"]
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert "(empty)" in capsys.readouterr().out


def test_bad_input_is_one_line(cache, tmp_path, capsys):
    assert main(["cache", "clear", "--dataset", "esc-50", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'esc-50'" in err and "cifar-esc50, udhr-speech" in err
    with pytest.raises(DataError):
        clear_cache(cache, "nope")
    with pytest.raises(SystemExit) as exc:  # neither --dataset nor --all
        main(["cache", "clear", "--cache-dir", str(cache)])
    assert exc.value.code == 2
    assert "--dataset" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["cache", "info", "--cache-dir", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --cache-dir") and err.count("\n") == 1
    assert main(["cache"]) == 2
