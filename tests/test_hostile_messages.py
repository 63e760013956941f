"""Large images, early checks and flags that were ignored without a word (issue 21, items 9, 13, 14).

* images above 4 megapixels decode reduced (JPEG draft, RGB strip by strip, box-reduced), within a
  memory bound; above 100 megapixels they are refused from the header as "too large";
* croma benchmark checks --loss / --loss-hp, --methods and --split-classes before the data loads
  (speech synthesis, feature building);
* --split-classes on a generated data set, croma evaluate --manifest on a non-manifest run,
  duplicate --methods and noise-sweep rates sharing a folder are refused by name; a link to a
  device is called what it is; croma evaluate --queries' help states the range the check applies.
"""

import json
import re
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from conftest import clean_env
from fixtures_layouts import image_text_rows

from croma.cli import build_parser


def _one_line(rc, err, *needles):
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


# ---------------------------------------------------------------------- item 9: large images
def _png_header_only(path, width, height, bit_depth=8, colour=6):
    """A PNG whose header claims ``width x height`` and whose pixel data is a few bytes (truncated)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width, height, depth, colour", [(12000, 12000, 16, 0),  # 16-bit grey, 144 megapixels
                                                          (13000, 13000, 8, 6),  # RGBA, 169 megapixels
                                                          (20000, 20000, 8, 2)])  # beyond PIL's own bound
def test_an_image_over_the_pixel_bound_is_refused_as_too_large(tmp_path, width, height, depth, colour):
    from episodes.errors import DataError
    from episodes.frontends import load_image_uint8

    p = _png_header_only(tmp_path / "huge.png", width, height, depth, colour)
    with pytest.raises(DataError) as info:
        load_image_uint8(p, 32)
    msg = str(info.value)
    assert msg.startswith(f"{p}: image too large (") and "truncated" not in msg and "\n" not in msg, msg
    assert "100 megapixels" in msg and f"{width * height / 1e6:.0f} megapixels" in msg, msg


MEASURE = textwrap.dedent("""
    import json, resource, sys
    from episodes.frontends import load_image_uint8
    load_image_uint8(sys.argv[3], 32)  # imports and decoders warmed up on a small image
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB (Linux: KiB)
    out, base = {}, peak()
    for name in sys.argv[1:3]:  # the JPEG first: ru_maxrss only grows
        out[name] = load_image_uint8(name, 32).tolist()
        out[name + ":mib"] = round(peak() - base, 1)
        base = max(base, peak())
    print(json.dumps(out))
""")


def test_large_images_decode_reduced_within_a_memory_bound(tmp_path):
    from PIL import Image

    from episodes.frontends import load_image_uint8

    png, jpg, small = tmp_path / "big.png", tmp_path / "big.jpg", tmp_path / "small.png"
    colour = (10, 200, 30, 128)
    Image.new("RGBA", (3000, 3000), colour).save(png, compress_level=1)  # 9 MP: 34 MiB decoded
    grad = np.empty((2000, 3000, 3), np.uint8)  # 6 MP: 23 MiB decoded
    grad[..., 0] = np.linspace(0, 255, 3000, dtype=np.float32).astype(np.uint8)[None, :]
    grad[..., 1] = np.linspace(0, 255, 2000, dtype=np.float32).astype(np.uint8)[:, None]
    grad[..., 2] = 90
    Image.fromarray(grad).save(jpg, quality=95)
    Image.new("RGBA", (16, 16), colour).save(small)
    res = subprocess.run([sys.executable, "-c", MEASURE, str(jpg), str(png), str(small)], env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # full-size decoding took ~140 MiB for the PNG (RGBA copies for the composite over white) and
    # ~45 MiB for the JPEG; reduced: the PNG decoded once in its own mode, the JPEG at 1/8 scale
    assert out[str(png) + ":mib"] < 1.5 * 34, out
    assert out[str(jpg) + ":mib"] < 15, out
    # the same pixels as the plain path: a solid colour over white, a gradient within a few levels
    assert out[str(png)] == load_image_uint8(small, 32).tolist()
    ref = np.asarray(Image.fromarray(grad).resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1).astype(int)
    assert np.abs(np.array(out[str(jpg)]) - ref).max() <= 3


# ---------------------------------------------------------------------- item 13: checked before any work
@pytest.fixture
def no_loading(monkeypatch):
    """Loading the benchmark data fails the test: a refusal must come first."""
    import croma.benchmark as b
    import episodes.datasets.udhr_speech as u

    def loaded(*a, **k):
        raise AssertionError("the data was loaded before the settings were checked")

    monkeypatch.setattr(b, "load_for_benchmark", loaded)
    monkeypatch.setattr(u, "load_udhr_speech", loaded)


BENCH = ["--budget-steps", "2", "--repeats", "1", "--eval-tasks", "2", "--shots", "1", "--ways", "3", "--device", "cpu",
         "--quiet"]


@pytest.mark.parametrize("extra, needles", [
    (["--loss-hp", "bogus=1"], ["--loss-hp", "bogus"]),
    (["--loss", "pcmr", "--loss-hp", "threshold=5"], ["--loss-hp", "threshold"]),
    (["--methods", "pretrain,croma,pretrain"], ["--methods", "pretrain listed twice"]),
    (["--noise-sweep", "0.1,0.1000001"], ["--noise-sweep", "0.1 and 0.1000001", "noise_0.1"]),
    (["--noise-sweep", "0.2,0.2"], ["--noise-sweep", "0.2 is listed twice"]),
])
def test_benchmark_settings_are_refused_before_the_data_loads(run_cli, tmp_path, no_loading, extra, needles):
    rc, _, err = run_cli(["benchmark", "udhr-speech", *BENCH, "--out", str(tmp_path / "o"),
                          "--cache-dir", str(tmp_path / "c"), *extra])
    _one_line(rc, err, *needles)
    assert not (tmp_path / "o").exists()


def test_benchmark_api_checks_every_method_and_rate_before_loading(tmp_path, no_loading):
    from croma.benchmark import BenchmarkConfig, run_benchmark, run_noise_sweep
    from croma.errors import CromaError

    cfg = BenchmarkConfig(benchmark="udhr-speech", methods=["pretrain", "croma"], loss_hp={"bogus": 1},
                          budget_steps=2, cache_dir=str(tmp_path / "c"), out=None, progress=False)
    for call in (lambda: run_benchmark(cfg), lambda: run_noise_sweep(cfg, [0.0, 0.2])):
        with pytest.raises((ValueError, CromaError), match="bogus"):
            call()
    ok = BenchmarkConfig(benchmark="udhr-speech", methods=["pretrain", "pretrain"], budget_steps=2, out=None)
    with pytest.raises((ValueError, CromaError), match="listed twice"):
        run_benchmark(ok)
    with pytest.raises(ValueError, match="would both write noise_0.1"):
        run_noise_sweep(BenchmarkConfig(benchmark="udhr-speech", budget_steps=2, out=None), [0.1, 0.1000001])


@pytest.mark.parametrize("cmd", [["benchmark", "udhr-speech", *BENCH], ["train", "udhr-speech", "--quiet"],
                                 ["data", "inspect", "udhr-speech"]])
def test_split_classes_on_a_fixed_split_is_refused_before_speech_synthesis(run_cli, tmp_path, no_loading, cmd):
    out = ["--out", str(tmp_path / "o")] if cmd[0] == "benchmark" else (
        ["--checkpoint-dir", str(tmp_path / "o")] if cmd[0] == "train" else [])
    rc, _, err = run_cli([*cmd, *out, "--cache-dir", str(tmp_path / "c"), "--split-classes", "60,12,16"])
    _one_line(rc, err, "--split-classes", "udhr-speech has a fixed, documented class split")
    assert not (tmp_path / "o").exists()


def test_a_bad_split_is_refused_before_features_are_built(run_cli, tmp_path, monkeypatch):
    import episodes.prepare as prep

    def built(*a, **k):
        raise AssertionError("features were built before the split was checked")

    monkeypatch.setattr(prep, "compute_features", built)
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in image_text_rows(tmp_path, classes=6, per=2)))
    rc, _, err = run_cli(["train", "manifest", "--manifest", str(man), "--source", "text", "--target", "image",
                          "--cache-dir", str(tmp_path / "c"), "--checkpoint-dir", str(tmp_path / "o"), *TRAIN,
                          "--split-classes", "2,2,1"])
    _one_line(rc, err, "--split-classes 2,2,1 sums to 5, but manifest has 6 target classes")


# ---------------------------------------------------------------------- item 14: nothing ignored silently
TRAIN = ["--quiet", "--device", "cpu", "--ways", "3", "--shots", "1", "--queries", "1", "--meta-batch", "2",
         "--inner-steps", "1", "--embed-dim", "8", "--hidden", "8", "--align-batch", "4", "--eval-tasks", "2",
         "--finetune-steps", "1", "--iterations", "1", "--eval-every", "0"]


@pytest.mark.parametrize("cmd", ["train", "benchmark"])
def test_split_classes_on_synthetic_is_refused(run_cli, tmp_path, cmd):
    flags = TRAIN + ["--checkpoint-dir", str(tmp_path / "o")] if cmd == "train" else BENCH + ["--out", str(tmp_path / "o")]
    rc, _, err = run_cli([cmd, "synthetic", *flags, "--methods" if cmd == "benchmark" else "--seed",
                          "pretrain" if cmd == "benchmark" else "0", "--split-classes", "10,5,5"])
    _one_line(rc, err, "--split-classes", "synthetic is generated with its own class split")
    assert not (tmp_path / "o").exists()


def test_evaluate_manifest_on_a_run_not_trained_on_one_is_refused(run_cli, tmp_path):
    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "synthetic", *TRAIN, "--checkpoint-dir", str(run)])
    assert rc == 0, err
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in image_text_rows(tmp_path, classes=3, per=2)))
    rc, out, err = run_cli(["evaluate", str(run), "--manifest", str(man), "--shots", "1", "--repeats", "1",
                            "--eval-tasks", "2", "--device", "cpu"])
    _one_line(rc, err, f"--manifest {man}", "was trained on synthetic, not on a JSONL manifest")
    assert out == ""


def test_a_link_to_a_device_is_named_as_such_not_as_a_broken_link(tmp_path):
    from episodes.datasets.manifest import load_manifest
    from episodes.errors import DataError

    link = tmp_path / "m.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError) as info:
        load_manifest(link, source="text", target="image")
    msg = str(info.value)
    assert "is a symbolic link to /dev/zero, a character device, not a regular file" in msg and "broken" not in msg
    (tmp_path / "gone.jsonl").symlink_to(tmp_path / "nothing")
    with pytest.raises(DataError, match="broken or looping symbolic link"):
        load_manifest(tmp_path / "gone.jsonl", source="text", target="image")


def test_evaluate_queries_help_states_the_range_its_check_applies(run_cli, tmp_path):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["evaluate"]
    help_text = " ".join(sub.format_help().split())
    lo = int(re.search(r"--queries QUERIES .*?range \[(\d+), 1000\]", help_text).group(1))
    rc, _, err = run_cli(["evaluate", str(tmp_path / "none"), "--queries", str(lo - 1)])
    _one_line(rc, err, "--queries")
    rc, _, err = run_cli(["evaluate", str(tmp_path / "none"), "--queries", str(lo)])
    assert rc == 2 and "--queries" not in err  # the value passed; the missing run is what stops it
