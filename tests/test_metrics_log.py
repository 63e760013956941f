"""Run logs: metrics.csv per iteration (append + flush, cut back on resume), the train() callback,
TensorBoard scalars, and the one-line error when the tensorboard extra is missing."""

import csv
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from croma.cli import main
from croma.config import TrainConfig
from croma.fit import train
from croma.runlog import METRICS_FILE, RunLog, metric_columns, read_metrics


class NCE(nn.Module):
    def forward(self, zs, zt):
        logits = F.normalize(zs, dim=-1) @ F.normalize(zt, dim=-1).T / 0.2
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def cfg(d, **kw):
    base = dict(
        iterations=6, meta_batch=4, task_mix=0.5, inner_steps=2, inner_lr=0.01, inner_optimizer="adam",
        align_batch=8, ways=5, shots=2, queries=2, eval_every=2, eval_tasks=3, checkpoint_every=2,
        checkpoint_dir=None if d is None else str(d), seed=3, model={"embed_dim": 8, "hidden": 16},
        finetune_steps=2, finetune_lr=0.05,
    )
    base.update(kw)
    return TrainConfig(**base)


def res_run_id(run):
    from croma.checkpoint import load_checkpoint

    return load_checkpoint(run / "last.pt")["run_id"]


LOSSES = ["align_loss", "align_loss_last", "source_cls_loss", "source_cls_loss_last", "epsilon"]


def test_metrics_csv_rows_match_the_history_and_the_callback(bench, tmp_path):
    seen = []
    res = train(cfg(tmp_path), bench, loss_module=NCE(), callback=seen.append)
    path = tmp_path / METRICS_FILE
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:-1] == metric_columns(["align", "source_cls"]) == ["iteration", *LOSSES[:4], "epsilon", "val_acc",
                                                                      "seconds", "optimizer_steps"]
    assert header[-1] == "run_id"  # the run that wrote the rows (croma.runlock)
    rows = read_metrics(path)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["optimizer_steps"] for r in rows] == [i * 4 * 2 for i in range(1, 7)]  # iterations x tasks x inner steps
    secs = [r["seconds"] for r in rows]
    assert all(s >= 0 for s in secs) and secs == sorted(secs)
    # meta-val accuracy exactly where it was measured, and equal to the checkpoint history's
    hist = {h["iteration"]: h for h in res.history}
    assert [r["iteration"] for r in rows if r["val_acc"] is not None] == [2, 4, 6]
    for r in rows:
        if r["val_acc"] is not None:
            assert r["val_acc"] == pytest.approx(hist[r["iteration"]]["val_acc"], abs=1e-9)
    # the history averages the per-iteration rows between two log points
    for it in (2, 4, 6):
        for k in LOSSES:
            mean = (rows[it - 2][k] + rows[it - 1][k]) / 2
            assert mean == pytest.approx(hist[it][k], rel=1e-12, abs=1e-12)
    # the callback received the same rows (a dict per iteration)
    assert [s["iteration"] for s in seen] == [1, 2, 3, 4, 5, 6]
    for s, r in zip(seen, rows):
        assert s["run_id"] == r["run_id"] == res_run_id(tmp_path)
        for k in header[:-1]:
            assert s[k] == pytest.approx(r[k], rel=1e-12) if r[k] is not None else s[k] is None


def test_callback_without_checkpoint_dir_writes_no_file(bench, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    train(cfg(None, iterations=3, eval_every=0, checkpoint_every=0), bench, loss_module=NCE(), callback=seen.append)
    assert [s["iteration"] for s in seen] == [1, 2, 3] and all(s["val_acc"] is None for s in seen)
    assert list(tmp_path.iterdir()) == []


def test_resume_cuts_rows_after_the_checkpoint_and_continues(bench, tmp_path):
    straight = tmp_path / "a"
    train(cfg(straight), bench, loss_module=NCE())
    run = tmp_path / "b"
    train(cfg(run, stop_after=3, checkpoint_every=2), bench, loss_module=NCE())
    # simulate rows written after the last checkpoint by a killed process, and a cut last line
    first = read_metrics(run / METRICS_FILE)
    assert [r["iteration"] for r in first] == [1, 2, 3]
    with open(run / METRICS_FILE, "a") as fh:
        fh.write("4,1,1,1,1,1,,9,32,\n5,1,1")
    assert [r["iteration"] for r in read_metrics(run / METRICS_FILE)] == [1, 2, 3, 4]  # the cut line is skipped
    # the checkpoint holds iteration 3: resuming drops row 4 and the partial line
    train(cfg(run), bench, loss_module=NCE(), resume=True)
    rows, ref = read_metrics(run / METRICS_FILE), read_metrics(straight / METRICS_FILE)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[:3] == first
    for r, q in zip(rows, ref):  # resume is exact: same losses, same meta-val, same step counts
        assert {k: r[k] for k in (*LOSSES, "val_acc", "optimizer_steps")} == {
            k: q[k] for k in (*LOSSES, "val_acc", "optimizer_steps")}
    assert rows[3]["seconds"] >= rows[2]["seconds"]  # the clock continues across the resume
    assert (run / METRICS_FILE).read_text().endswith("\n")


def test_runlog_cells_and_atomic_restart(tmp_path):
    log = RunLog(tmp_path, ["iteration", "a_loss", "val_acc", "seconds"])
    log.write({"iteration": 1, "a_loss": 0.5, "val_acc": None, "seconds": 0.25})
    log.write({"iteration": 2, "a_loss": float("nan"), "val_acc": 40.0, "seconds": 1.0})
    log.close()
    assert (tmp_path / METRICS_FILE).read_text() == "iteration,a_loss,val_acc,seconds\n1,0.5,,0.25\n2,nan,40.0,1.0\n"
    again = RunLog(tmp_path, ["iteration", "a_loss", "val_acc", "seconds"], start_iteration=1)
    assert again.seconds_offset == 0.25
    again.close()
    assert (tmp_path / METRICS_FILE).read_text() == "iteration,a_loss,val_acc,seconds\n1,0.5,,0.25\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_FILE]  # no temporary file left


TINY = [
    "--loss", "nce", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "4", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "2", "--finetune-steps", "2", "--seed", "1", "--iterations", "3",
    "--eval-every", "3",
]


def test_cli_tensorboard_logs_the_same_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "synthetic", *TINY, "--checkpoint-dir", str(run), "--tensorboard"]) == 0
    rows = read_metrics(run / METRICS_FILE)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/align_loss" in tags and "meta_val/accuracy" in tags and "train/seconds" in tags
    got = [(e.step, e.value) for e in acc.Scalars("train/align_loss")]
    assert got == [(r["iteration"], pytest.approx(r["align_loss"], rel=1e-6)) for r in rows]
    assert [(e.step, round(e.value, 3)) for e in acc.Scalars("meta_val/accuracy")] == [(3, round(rows[-1]["val_acc"], 3))]


def test_cli_tensorboard_missing_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the package were not installed
    run = tmp_path / "run"
    assert main(["train", "synthetic", *TINY, "--checkpoint-dir", str(run), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "croma-meta[tensorboard]" in err and "--tensorboard" in err
    assert not (run / "last.pt").exists()  # refused before any work
