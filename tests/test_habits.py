"""Ecosystem habits (issue 24, item 6): XDG_CACHE_HOME; Hugging Face ids read from the local hub
cache and torchvision weights from $TORCH_HOME, never downloaded; `croma data prepare --backbone`;
the `croma` logger; `--quiet` quiets transformers too; progress bars that do not spam log files;
`croma data inspect` counts udhr-speech without synthesising it; a warning before a slow run;
hyper-parameters in TensorBoard."""

import logging
import shutil
from pathlib import Path

import pytest
import torch

from croma.errors import CromaError

# ---- cache roots ------------------------------------------------------------------------------


def test_cache_root_is_croma_cache_else_xdg_else_home(monkeypatch, tmp_path):
    from episodes.cache import FeatureCache, default_cache_dir
    from episodes.datasets import udhr_speech

    monkeypatch.delenv("CROMA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "croma"
    assert udhr_speech._default_cache_dir() == tmp_path / "xdg" / "croma"  # one function decides
    assert FeatureCache().root == tmp_path / "xdg" / "croma"
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CROMA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: relative values are ignored
    assert default_cache_dir() == Path.home() / ".cache" / "croma"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert default_cache_dir() == Path.home() / ".cache" / "croma"


# ---- pretrained weights from the ecosystem's caches --------------------------------------------


def _hub_layout(hub: Path, model_id: str, folder: Path, commit: str = "0123abcd") -> Path:
    """huggingface_hub's cache layout: blobs/<hash>, snapshots/<commit>/<file> -> blob, refs/main."""
    repo = hub / ("models--" + model_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(p for p in folder.iterdir() if p.is_file())):
        blob = repo / "blobs" / f"blob{i:03d}"
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    # an older snapshot that refs/main no longer names
    (repo / "snapshots" / "old").mkdir()
    return snap


@pytest.fixture
def offline_hf(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_hf_text_id_resolves_through_the_local_hub_cache(tmp_path, offline_hf):
    from test_backbones import _tiny_bert

    from croma.backbones import build_embedders
    from croma.backbones.embedders import hf_cached_model

    _tiny_bert(tmp_path / "bert")
    snap = _hub_layout(offline_hf, "bert-base-uncased", tmp_path / "bert")
    assert hf_cached_model("bert-base-uncased")[0] == snap
    (by_id,) = build_embedders({"text": "hf"}, text_model="bert-base-uncased").values()
    (by_dir,) = build_embedders({"text": "hf"}, text_model=str(tmp_path / "bert")).values()
    texts = ["a b c", "hello world 42"]
    torch.testing.assert_close(by_id.embed(texts)["features"], by_dir.embed(texts)["features"])
    assert by_id.cache_key() == by_dir.cache_key()  # the same files: the same cache entry
    with pytest.raises(CromaError) as exc:
        build_embedders({"text": "hf"}, text_model="prajjwal1/bert-tiny")
    msg = str(exc.value)
    assert "not found" in msg and str(offline_hf / "models--prajjwal1--bert-tiny") in msg and "\n" not in msg


def test_hf_audio_org_id_resolves_through_hf_hub_cache(tmp_path, monkeypatch, offline_hf):
    from test_backbones import _tiny_wav2vec2

    from croma.backbones import build_embedders

    _tiny_wav2vec2(tmp_path / "w2v")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))  # wins over $HF_HOME/hub
    _hub_layout(tmp_path / "elsewhere", "facebook/wav2vec2-base", tmp_path / "w2v")
    (emb,) = build_embedders({"audio": "hf"}, audio_model="facebook/wav2vec2-base").values()
    assert emb.dim == 16
    monkeypatch.delenv("HF_HUB_CACHE")
    with pytest.raises(CromaError, match=r"--audio-model facebook/wav2vec2-base: not found.*models--facebook--wav2vec2-base"):
        build_embedders({"audio": "hf"}, audio_model="facebook/wav2vec2-base")


def test_resnet18_weights_from_torch_home(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    from croma.backbones import build_embedders

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    where = tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(CromaError) as exc:
        build_embedders({"image": "resnet18"})
    assert "needs --image-weights PATH" in str(exc.value) and str(where) in str(exc.value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None)
    where.parent.mkdir(parents=True)
    torch.save(net.state_dict(), where)
    (emb,) = build_embedders({"image": "resnet18"}).values()
    (given,) = build_embedders({"image": "resnet18"}, image_weights=str(where)).values()
    assert emb.dim == 512 and emb.cache_key() == given.cache_key()


# ---- croma data prepare --backbone --------------------------------------------------------------


def test_data_prepare_builds_the_backbone_embeddings_train_reads(tmp_path, run_cli, offline_hf):
    from test_backbones import _image_manifest, _tiny_bert

    from croma.backbones import load_prepared

    _tiny_bert(tmp_path / "bert")
    _hub_layout(offline_hf, "bert-base-uncased", tmp_path / "bert")
    man = _image_manifest(tmp_path / "data", classes=6, per_class=2, image=False, audio=True)
    cache = tmp_path / "cache"
    rc, out, err = run_cli(["data", "prepare", "manifest", "--manifest", str(man), "--source", "text", "--target",
                            "audio", "--cache-dir", str(cache), "--backbone", "text=hf", "--text-model",
                            "bert-base-uncased", "--device", "cpu"])
    assert rc == 0, err
    assert "backbones: text=hf" in out
    assert len(list((cache / "features" / "manifest" / "text" / "hf-text").glob("*.pt"))) == 1
    bench = load_prepared("manifest", compact=False, backbones={"text": "hf"}, text_model="bert-base-uncased",
                          manifest=str(man), source="text", target="audio", cache_dir=str(cache), ways=2)
    assert bench.info["cache"]["text"] == "hit" and bench.data["text"].features.shape == (12, 16)
    rc, _, err = run_cli(["data", "prepare", "manifest", "--manifest", str(man), "--source", "text", "--target",
                          "audio", "--cache-dir", str(cache), "--backbone", "image=resnet18", "--backbone",
                          "image=pixels"])
    assert rc == 2 and "--backbone image: given twice" in err


# ---- the croma logger, --quiet, progress bars ------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelno, record.getMessage()))


@pytest.fixture
def croma_records():
    h = _Records()
    log = logging.getLogger("croma")
    old = log.level
    log.addHandler(h)
    yield h
    log.removeHandler(h)
    log.setLevel(old)


SIZES = ["--loss", "nce", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "40", "--meta-batch", "2",
         "--inner-steps", "1", "--embed-dim", "8", "--hidden", "8", "--align-batch", "8", "--iterations", "2",
         "--eval-every", "0"]


def test_library_messages_go_through_the_croma_logger(tmp_path, run_cli, croma_records):
    rc, out, err = run_cli(["train", "synthetic", *SIZES, "--checkpoint-dir", str(tmp_path / "a")])
    assert rc == 0, err
    notes = [m for lvl, m in croma_records.messages if lvl == logging.INFO]
    assert any(m.startswith("task sizes:") for m in notes), croma_records.messages  # too few items: lowered
    assert notes[0] in err  # the command line still prints it, as plain text
    assert "\r" not in err  # stderr is not a terminal: no carriage-return progress bar
    croma_records.messages.clear()
    rc, out, err = run_cli(["train", "synthetic", *SIZES, "--checkpoint-dir", str(tmp_path / "b"), "--quiet"])
    assert rc == 0 and err == "" and "trained 2/2 iterations" in out  # output stays; messages go
    assert not croma_records.messages
    # a notebook silences croma's notes with the standard logging calls
    logging.getLogger("croma").setLevel(logging.WARNING)
    rc, out, err = run_cli(["train", "synthetic", *SIZES, "--checkpoint-dir", str(tmp_path / "c")])
    assert rc == 0 and "task sizes" not in err


def test_use_logging_routes_to_the_root_logger(caplog):
    import croma.log as L

    log = logging.getLogger("croma")
    saved = (list(log.handlers), log.propagate, log.level, dict(L._state))
    try:
        L.use_logging(logging.INFO)
        with caplog.at_level(logging.INFO):
            L.info("hello from croma")
        assert ("croma", logging.INFO, "hello from croma") in caplog.record_tuples
    finally:
        log.handlers[:], log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])
        L._state.update(saved[3])


def test_progress_bars_write_lines_not_carriage_returns(capsys):
    from episodes.progress import bar_mode, bars, progress_bar

    assert bar_mode() == "lines"  # capsys: stderr is not a terminal
    bar = progress_bar(total=100, desc="work")
    for _ in range(100):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and 10 <= len(lines) <= 12 and lines[-1].startswith("work: 100% (100/100)")
    with bars(True):  # --progress: tqdm whatever the stream
        assert bar_mode() == "tqdm"
        for _ in progress_bar(range(3), desc="forced"):
            pass
    assert "\r" in capsys.readouterr().err
    with bars(False):
        for _ in progress_bar(range(3), desc="off"):
            pass
    assert capsys.readouterr().err == ""


def test_quiet_quiets_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_backbones import _tiny_bert

    import croma.log as L
    from croma.backbones import build_embedders

    _tiny_bert(tmp_path / "bert")
    tl = transformers.logging
    before = tl.get_verbosity()
    tl.set_verbosity_warning()
    tl.enable_progress_bar()
    try:
        build_embedders({"text": "hf"}, text_model=str(tmp_path / "bert"))
        assert tl.get_verbosity() == tl.WARNING and tl.is_progress_bar_enabled()  # not quiet: left alone
        with L.quiet():
            build_embedders({"text": "hf"}, text_model=str(tmp_path / "bert"))
        assert tl.get_verbosity() == tl.ERROR and not tl.is_progress_bar_enabled()
    finally:
        tl.set_verbosity(before)
        tl.enable_progress_bar()


# ---- data inspect counts; a warning before a slow run; TensorBoard hyper-parameters ----------------


def test_inspect_udhr_speech_counts_without_synthesising(tmp_path, run_cli, monkeypatch):
    from episodes.datasets import udhr_speech

    def no_synthesis(*a, **k):
        raise AssertionError("croma data inspect must not synthesise speech")

    monkeypatch.setattr(udhr_speech, "_run_jobs", no_synthesis)
    monkeypatch.setattr(udhr_speech, "_synthesize_one", no_synthesis)
    rc, out, err = run_cli(["data", "inspect", "udhr-speech", "--cache-dir", str(tmp_path / "c"), "--json"])
    assert rc == 0, err
    import json

    summary = json.loads(out)
    assert summary["items"] == {"text": 1760, "audio": 1760} and summary["classes"]["audio"] == 88
    assert "1760 of 1760" in err and "croma data prepare udhr-speech" in err and "MB" in err
    assert not (tmp_path / "c").exists()  # nothing written


def test_slow_run_warning_before_sequence_training_on_cpu(tmp_path, run_cli, monkeypatch):
    import croma.cli.train as T
    from croma.cli import build_parser

    def cfg(*flags):
        return T.config_from_args(build_parser().parse_args(["train", "udhr-speech", "--device", "cpu",
                                                             "--checkpoint-dir", str(tmp_path / "x"), *flags]))

    line = T.slow_run_warning(cfg("--iterations", "2000"))
    assert line.startswith("warning: ") and "--features compact" in line and "0.7 s per iteration" in line
    assert "~23 min for 2000 iterations" in line and "\n" not in line
    assert T.slow_run_warning(cfg("--iterations", "2000", "--features", "compact")) is None
    assert T.slow_run_warning(cfg("--iterations", "20")) is None  # short: no warning
    assert T.slow_run_warning(cfg("--iterations", "2000", "--encoder", "text=mlp", "--encoder", "audio=mlp")) is None
    # the warning comes once the data has loaded, before training (stand-ins for both)
    from types import SimpleNamespace

    import croma.factory
    import croma.fit

    monkeypatch.setattr(croma.factory, "load_bench", lambda cfg, progress=False: SimpleNamespace(
        info={}, source="text", target="audio"))
    monkeypatch.setattr(croma.fit, "train", lambda *a, **k: SimpleNamespace(
        iteration=0, best_val=None, best_iteration=None, head_init="meta", finished=True))
    rc, _, err = run_cli(["train", "udhr-speech", "--iterations", "2000", "--device", "cpu", "--checkpoint-dir",
                          str(tmp_path / "r1"), "--no-compile-inner"])
    assert rc == 0 and err.count("warning: sequence features") == 1
    rc, _, err = run_cli(["train", "udhr-speech", "--iterations", "2000", "--device", "cpu", "--checkpoint-dir",
                          str(tmp_path / "r2"), "--quiet", "--no-compile-inner"])
    assert rc == 0 and err == ""


def test_croma_train_compiles_the_inner_step_where_it_was_measured_to_pay(tmp_path, run_cli, monkeypatch):
    """Sequence features through cnn1d encoders on the CPU for >= AUTO_COMPILE_ITERATIONS iterations,
    with a C++ compiler: compiled unless a flag or a file chose; a resumed run keeps its mode."""
    import json
    import shutil

    import croma.cli.train as T
    import croma.cli.train_steps as S
    from croma.cli import build_parser

    def cfg(*flags):
        return T.config_from_args(build_parser().parse_args(["train", "udhr-speech", "--device", "cpu",
                                                             "--checkpoint-dir", str(tmp_path / "x"), *flags]))

    n = str(S.AUTO_COMPILE_ITERATIONS)
    real_cxx_found = S._cxx_found
    reason = S.auto_compile_reason(cfg("--iterations", n))
    assert reason is None if not S._cxx_found() else ("cnn1d" in reason and n in reason)
    monkeypatch.setattr(S, "_cxx_found", lambda: True)
    assert S.auto_compile_reason(cfg("--iterations", n)) is not None
    assert S.auto_compile_reason(cfg("--iterations", str(S.AUTO_COMPILE_ITERATIONS - 1))) is None  # short
    assert S.auto_compile_reason(cfg("--iterations", n, "--features", "compact")) is None  # MLP encoders
    assert S.auto_compile_reason(cfg("--iterations", n, "--inner-loop", "sequential")) is None
    assert S.auto_compile_reason(cfg("--iterations", n, "--encoder", "audio=lstm")) is None  # not measured
    images = T.config_from_args(build_parser().parse_args(["train", "cifar-esc50", "--device", "cpu", "--iterations", n,
                                                           "--checkpoint-dir", str(tmp_path / "y")]))
    assert S.auto_compile_reason(images) is None  # cnn2d on images: not measured
    rows = [{"id": "a", "label": "x", "text": "t", "audio": "a.wav"}, {"id": "b", "label": "y", "image": "b.png"}]
    for name, keep, extra, compiles in (("speech.jsonl", rows[:1], [], True), ("mixed.jsonl", rows, [], False),
                                        ("mixed.jsonl", rows, ["--no-extra-modalities"], True)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in keep))
        m = T.config_from_args(build_parser().parse_args(
            ["train", "manifest", "--manifest", str(tmp_path / name), "--source", "text", "--target", "audio",
             "--device", "cpu", "--iterations", n, "--checkpoint-dir", str(tmp_path / "z"), *extra]))
        assert (S.auto_compile_reason(m) is not None) == compiles, (name, extra)  # an extra image: cnn2d, eager
    with monkeypatch.context() as m:
        m.setattr(S, "_cxx_found", real_cxx_found)
        m.setattr(shutil, "which", lambda name: None)
        assert S.auto_compile_reason(cfg("--iterations", n)) is None  # no C++ compiler: eager

    payloads = []
    real_run_rank = T.run_rank
    monkeypatch.setattr(T, "run_rank", lambda payload: payloads.append(payload) or 0)
    base = ["train", "udhr-speech", "--iterations", n, "--device", "cpu"]
    assert run_cli(base + ["--checkpoint-dir", str(tmp_path / "a")])[0] == 0
    assert payloads[-1]["config"]["inner"]["compile"] is True and "cnn1d" in payloads[-1]["compile_reason"]
    assert run_cli(base + ["--checkpoint-dir", str(tmp_path / "b"), "--no-compile-inner"])[0] == 0
    assert payloads[-1]["config"]["inner"]["compile"] is False and payloads[-1]["compile_reason"] is None
    assert run_cli(base + ["--checkpoint-dir", str(tmp_path / "c"), "--compile-inner"])[0] == 0
    assert payloads[-1]["config"]["inner"]["compile"] is True and payloads[-1]["compile_reason"] is None
    conf = tmp_path / "eager.toml"
    conf.write_text("[inner]\ncompile = false\n")
    assert run_cli(base + ["--checkpoint-dir", str(tmp_path / "d"), "--config", str(conf)])[0] == 0
    assert payloads[-1]["config"]["inner"]["compile"] is False  # the file chose

    # --resume keeps the mode the run started with (a changed mode would be refused as another setting)
    import croma.meta.inner as inner

    monkeypatch.setattr(T, "run_rank", real_run_rank)
    monkeypatch.setattr(inner, "_COMPILE_BACKEND", "eager")  # graph capture without code generation
    run = tmp_path / "started-compiled"
    assert run_cli(["train", "synthetic", *SIZES, "--quiet", "--checkpoint-dir", str(run), "--compile-inner"])[0] == 0
    monkeypatch.setattr(T, "run_rank", lambda payload: payloads.append(payload) or 0)
    assert run_cli(["train", "synthetic", *SIZES, "--quiet", "--checkpoint-dir", str(run), "--resume"])[0] == 0
    assert payloads[-1]["config"]["inner"]["compile"] is True and "resumed" in payloads[-1]["compile_reason"]


def test_tensorboard_gets_the_hyper_parameters(tmp_path, run_cli):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "synthetic", *SIZES, "--queries", "2", "--quiet", "--checkpoint-dir", str(run),
                          "--tensorboard", "--inner-lr", "0.03"])
    assert rc == 0, err
    subdirs = [p for p in (run / "tensorboard").iterdir() if p.is_dir()]
    assert subdirs == []  # one run in TensorBoard, not a timestamped sub-run
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    meta = acc.SummaryMetadata("_hparams_/session_start_info")
    data = HParamsPluginData.FromString(meta.plugin_data.content)
    hp = data.session_start_info.hparams
    assert hp["inner_lr"].number_value == pytest.approx(0.03) and hp["iterations"].number_value == 2
    assert hp["loss"].string_value == "nce" and hp["model.embed_dim"].number_value == 8
    exp = HParamsPluginData.FromString(acc.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    assert [m.name.tag for m in exp.metric_infos] == ["meta_val/accuracy"]
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_a_long_run_says_its_measured_pace_once(run_cli, tmp_path, monkeypatch):
    """After PACE_ITERATIONS timed iterations `croma train` says, once, how long the rest takes when
    that is over SLOW_WARN_S (measured in the run, whatever the encoders); silent when it is not,
    under --quiet, and after the up-front sequence-feature warning."""
    import io
    import types

    import croma.cli.train_steps as S

    now = {"t": 0.0}
    monkeypatch.setattr("time.perf_counter", lambda: now["t"])

    def run(iterations):
        out = io.StringIO()
        note = S.pace_note(types.SimpleNamespace(iterations=iterations, checkpoint_every=100), stream=out)
        for it in range(1, 30):
            now["t"] = 2.0 * it  # 2 s per iteration
            note({"iteration": it})
        return out.getvalue()

    said = run(1000)
    assert said.count("\n") == 1
    assert "2.00 s per iteration here: the other 989 of 1000 iterations take ~33 min more" in said
    assert "last.pt is written every 100 iterations (~3 min here; --checkpoint-every N) or 5 min" in said
    assert run(150) == ""  # 139 x 2 s left: under 300 s
    monkeypatch.undo()
    # wired into croma train: a threshold of 0 s makes any run long enough to say it
    monkeypatch.setattr(S, "SLOW_WARN_S", 0.0)
    monkeypatch.setattr(S, "PACE_ITERATIONS", 2)
    base = ["train", "synthetic", "--iterations", "6", "--eval-every", "0", "--ways", "3", "--embed-dim", "8",
            "--hidden", "8"]
    rc, _, err = run_cli([*base, "--checkpoint-dir", str(tmp_path / "a")])
    assert rc == 0 and err.count("s per iteration here") == 1 and "--iterations N trains fewer" in err
    rc, _, err = run_cli([*base, "--quiet", "--checkpoint-dir", str(tmp_path / "b")])
    assert rc == 0 and "per iteration here" not in err


def test_a_lone_best_pt_is_kept_and_resume_with_nothing_to_continue_says_so(run_cli, tmp_path):
    """A folder holding best.pt but no last.pt (a run stopped before its first last.pt, or a full disk)
    is refused, with or without --resume, and best.pt is left as it was; --resume where there is
    nothing at all says that a new run starts."""
    base = ["train", "synthetic", "--iterations", "2", "--eval-every", "0", "--ways", "3", "--embed-dim", "8",
            "--hidden", "8"]
    run = tmp_path / "r"
    rc, _, err = run_cli([*base, "--checkpoint-dir", str(run)])
    assert rc == 0, err
    (run / "last.pt").unlink()
    before = (run / "best.pt").read_bytes()
    for extra in ([], ["--resume"]):
        rc, _, err = run_cli([*base, "--checkpoint-dir", str(run), *extra])
        assert rc == 2 and err.count("\n") == 1 and "best.pt is there but no last.pt" in err
        assert (run / "best.pt").read_bytes() == before
    rc, _, err = run_cli([*base, "--checkpoint-dir", str(tmp_path / "new"), "--resume"])
    assert rc == 0 and "note: --resume: no last.pt in" in err and (tmp_path / "new" / "last.pt").is_file()


@pytest.mark.parametrize("case", ["corrupt", "no-manifest", "bad-target"])
def test_a_data_error_of_croma_train_is_one_line_even_with_notes_due(tmp_path, run_cli, case):
    """Notes croma train makes before training (the slow-run warning of sequence features, an empty
    --resume, the inner loop) wait until the data has loaded, so a data error stays the only line."""
    from fixtures_layouts import write_manifest

    manifest = write_manifest(tmp_path / "data")
    if case == "corrupt":
        (tmp_path / "data" / "wav" / "a1.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    argv = ["train", "manifest", "--manifest", str(manifest) if case != "no-manifest" else str(tmp_path / "nope.jsonl"),
            "--source", "text", "--target", "speech" if case != "bad-target" else "imag", "--iterations", "2000",
            "--device", "cpu", "--no-compile-inner", "--resume", "--cache-dir", str(tmp_path / "c"),
            "--checkpoint-dir", str(tmp_path / "run")]
    rc, _, err = run_cli(argv)
    import re

    said = [ln for ln in err.splitlines() if not re.search(r"\d+% \(\d+/\d+\) \|", ln)]  # not the load's progress
    assert rc == 2 and len(said) == 1 and said[0].startswith("error: "), err
    assert not (tmp_path / "run").exists()
