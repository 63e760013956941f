"""`croma data inspect` / `croma data prepare` on tiny published-layout copies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_layouts as F  # noqa: E402

from croma.cli import main  # noqa: E402

KEYS = {"name", "source", "target", "items", "classes", "strong_pairs", "clusters", "extra_modalities", "splits"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CROMA_DATA", raising=False)


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1  # exactly one JSON object
    return json.loads(lines[0])


def test_inspect_json_cifar_esc50(tmp_path, capsys):
    F.write_cifar10(tmp_path)
    F.write_cifar100(tmp_path)
    F.write_esc50(tmp_path)
    obj = _json(capsys, ["data", "inspect", "cifar-esc50", "--data-root", str(tmp_path), "--json"])
    assert set(obj) == KEYS
    # fixture: 12 CIFAR-10 images over 10 classes (0,5,3,5,2,9,4,8,1,7,6,5), 6 CIFAR-100 over 6 classes;
    # 7 ESC-50 categories x 2 clips; clusters with both sides: dog, cat, bird
    assert obj == {"name": "cifar-esc50", "source": "image", "target": "audio",
                   "items": {"image": 18, "audio": 14}, "classes": {"image": 16, "audio": 7},
                   "strong_pairs": 0, "clusters": 3, "extra_modalities": [],
                   "splits": {"meta_train": 3, "meta_val": 1, "meta_test": 3, "source_train": 16}}


def test_inspect_json_manifest_and_env_root(tmp_path, capsys, monkeypatch):
    path = F.write_manifest(tmp_path)
    obj = _json(capsys, ["data", "inspect", "manifest", "--manifest", str(path), "--source", "text",
                         "--target", "speech", "--json"])
    assert obj["items"] == {"text": 7, "audio": 6} and obj["strong_pairs"] == 6 and obj["clusters"] == 3
    assert obj["classes"] == {"text": 3, "audio": 3}
    F.write_wilderness(tmp_path)
    monkeypatch.setenv("CROMA_DATA", str(tmp_path))
    obj = _json(capsys, ["data", "inspect", "wilderness", "--json"])
    assert obj["items"] == {"text": 9, "audio": 9} and obj["strong_pairs"] == 9 and obj["clusters"] == 0
    assert sum(obj["splits"][k] for k in ("meta_train", "meta_val", "meta_test")) == 3


def test_inspect_readable(tmp_path, capsys):
    F.write_yummly(tmp_path)
    F.write_wilderness(tmp_path)
    assert main(["data", "inspect", "wilderness", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "wilderness: text -> audio" in out and "strong pairs: 9" in out and "meta_test" in out


def test_prepare_builds_then_hits_cache(tmp_path, capsys):
    F.write_wilderness(tmp_path)
    argv = ["data", "prepare", "wilderness", "--data-root", str(tmp_path), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "audio  features (9, 40, 300) float32  cache: built" in out
    assert main(argv) == 0
    assert "cache: hit" in capsys.readouterr().out
    assert list((tmp_path / "c" / "features" / "wilderness" / "audio").glob("*.pt"))


def test_prepare_skip_bad_reports(tmp_path, capsys):
    F.write_wilderness(tmp_path)
    wav = tmp_path / "wilderness" / "FRNTLS" / "wav" / "FRNTLS_B01___002.wav"
    wav.write_bytes(wav.read_bytes()[:16])
    argv = ["data", "prepare", "wilderness", "--data-root", str(tmp_path)]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the progress bar
    assert last.startswith("error: ") and "FRNTLS_B01___002.wav" in last
    assert main(argv + ["--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 missing or unreadable item(s)" in captured.err
    assert "audio  features (8, 40, 300)" in captured.out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "inspect", "yummly", "--json"]) == 2
    err = capsys.readouterr().err
    assert err == "error: yummly: no data root: pass --data-root DIR or set the environment variable CROMA_DATA\n"
    assert main(["data", "inspect", "cifar-esc50", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "ESC-50" in err and len(err.splitlines()) == 1
    assert main(["data", "inspect", "manifest", "--json"]) == 2
    assert "--manifest PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["data", "inspect", "mnist"])
    assert exc.value.code == 2


def test_inspect_udhr_speech_small(tmp_path, capsys, monkeypatch):
    """The udhr-speech dispatch end to end, on 3 languages x 2 utterances (real espeak-ng)."""
    tts = pytest.importorskip("episodes.tts")
    if not tts.backend_available():
        pytest.skip("no espeak-ng backend")
    import episodes.datasets.udhr_speech as u

    real = u.load_udhr_speech

    def small(**kw):
        return real(languages=["deu", "eng", "fra"], chunks_per_language=2, workers=0, **kw)

    monkeypatch.setattr(u, "load_udhr_speech", small)
    obj = _json(capsys, ["data", "inspect", "udhr-speech", "--json", "--cache-dir", str(tmp_path / "c")])
    assert obj == {"name": "udhr-speech", "source": "text", "target": "audio", "items": {"text": 6, "audio": 6},
                   "classes": {"text": 3, "audio": 3}, "strong_pairs": 6, "clusters": 0,
                   "extra_modalities": [], "splits": {"meta_train": 1, "meta_val": 1, "meta_test": 1, "source_train": 1}}
