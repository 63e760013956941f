"""Distributed meta-training: sharding, world-size independence, 2 gloo processes, dead ranks, resume."""

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import clean_env
from torch import nn

from croma.checkpoint import load_checkpoint
from croma.cli import main
from croma.config import TrainConfig
from croma.distributed import TEST_EXIT_ENV, DistEnv, Distributed, env_world, shard_indices
from croma.errors import CromaError
from croma.fit import CromaTrainer, train
from croma.meta.functional import tree_equal

TIMEOUT = 50  # seconds any one subprocess may take before the test fails


# ---------------------------------------------------------------------- sharding and environment
@pytest.mark.parametrize("mode", ["round_robin", "contiguous"])
def test_shards_partition_the_meta_batch(mode):
    for n in range(0, 10):
        for world in range(1, 7):
            shares = [shard_indices(n, r, world, mode) for r in range(world)]
            flat = sorted(i for s in shares for i in s)
            assert flat == list(range(n))  # every task exactly once, also when world > n
            sizes = [len(s) for s in shares]
            assert max(sizes) - min(sizes) <= 1
    assert shard_indices(5, 1, 2, "round_robin") == [1, 3]
    assert shard_indices(5, 0, 2, "contiguous") == [0, 1, 2] and shard_indices(5, 1, 2, "contiguous") == [3, 4]
    assert shard_indices(3, 3, 4, mode) == []
    with pytest.raises(ValueError):
        shard_indices(4, 2, 2, mode)
    with pytest.raises(ValueError):
        shard_indices(4, 0, 2, "striped")


def test_env_world_reads_torchrun_variables():
    assert env_world({}) is None
    assert env_world({"WORLD_SIZE": "1", "RANK": "0"}) is None
    e = env_world({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "node0", "MASTER_PORT": "1234"})
    assert e == DistEnv(rank=2, world_size=4, local_rank=0, master_addr="node0", master_port=1234)
    with pytest.raises(CromaError, match="RANK"):
        env_world({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(CromaError, match="malformed"):
        env_world({"WORLD_SIZE": "two"})


def test_collective_failure_is_one_line_naming_rank_iteration_and_checkpoint(tmp_path):
    d = object.__new__(Distributed)  # no process group needed for the message
    d.rank, d.iteration, d.timeout_s = 1, 7, 5.0
    d.checkpoint = tmp_path / "last.pt"
    d.checkpoint.write_bytes(b"x")
    err = d._fail("all_reduce", RuntimeError("[/x/gloo/transport/tcp/pair.cc:561] Connection closed by peer [1.2.3.4]:5"))
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(f"rank 1: peer process died or timed out during all_reduce at iteration 7; last checkpoint {d.checkpoint} is intact")
    assert "connection closed by peer" in msg
    assert "timed out" in str(d._fail("all_reduce", RuntimeError("Timed out waiting 5000ms for recv operation")))


# ---------------------------------------------------------------------- world-size independence (in-process)
class NCE(nn.Module):
    def forward(self, zs, zt):
        logits = F.normalize(zs, dim=-1) @ F.normalize(zt, dim=-1).T / 0.2
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _cfg(**kw):
    base = dict(
        iterations=3, meta_batch=3, task_mix=0.5, inner_steps=2, inner_lr=0.01, inner_optimizer="adam",
        align_batch=8, ways=5, shots=2, queries=2, eval_every=0, checkpoint_every=0, seed=2,
        model={"embed_dim": 8, "hidden": 16},
    )
    base.update(kw)
    return TrainConfig(**base)


def _simulated_world(tr: CromaTrainer, world: int, mode: str):
    """outer_step as rank 0 of ``world`` ranks, the other ranks' shares computed here and summed."""

    def reduce(deltas, n, losses):
        deltas, losses = dict(deltas), {k: [v] for k, v in losses.items()}
        for r in range(1, world):
            d, k, l = tr.task_deltas(tr.theta, tr.iteration, shard_indices(tr.meta_batch, r, world, mode))
            deltas = {name: deltas[name] + d[name] for name in deltas}
            n += k
            for fam, v in l.items():
                losses.setdefault(fam, []).append(v)
        return deltas, n, {k: torch.cat(v) for k, v in losses.items()}

    while tr.iteration < tr.cfg.iterations:
        tr.outer_step(shard_indices(tr.meta_batch, 0, world, mode), reduce)
    return tr.theta


@pytest.mark.parametrize("mode", ["round_robin", "contiguous"])
def test_world_sizes_1_2_3_4_give_the_same_meta_parameters(bench, mode):
    """meta_batch 3: not divisible by 2, and world 4 > meta_batch leaves a rank without tasks."""
    ref = train(_cfg(), bench, loss_module=NCE()).theta
    for world in (2, 3, 4):
        theta = _simulated_world(CromaTrainer(_cfg(), bench, loss_module=NCE()), world, mode)
        for k in ref:
            torch.testing.assert_close(theta[k], ref[k], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- real processes (gloo on CPU)
FLAGS = [
    "synthetic", "--loss", "cwcl", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "5", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8", "--hidden", "16",
    "--align-batch", "8", "--eval-tasks", "3", "--finetune-steps", "2", "--seed", "1", "--iterations", "6",
    "--eval-every", "2", "--checkpoint-every", "2",
]


def _env(**extra):
    return clean_env(TEST_EXIT_ENV, **extra)


def _croma(args, **env):
    return subprocess.run([sys.executable, "-m", "croma", "train", *args], env=_env(**env), capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run with 1 process (in-process) and with 2 gloo processes (``--nproc 2``)."""
    root = tmp_path_factory.mktemp("dist")
    assert main(["train", *FLAGS, "--checkpoint-dir", str(root / "one")]) == 0
    two = _croma([*FLAGS, "--checkpoint-dir", str(root / "two"), "--nproc", "2", "--dist-timeout", "20"])
    assert two.returncode == 0, two.stderr
    return root, two


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(runs):
    root, two = runs
    assert "trained 6/6 iterations on 2 processes (gloo)" in two.stdout
    assert two.stdout.count("trained") == 1  # only rank 0 prints
    assert sorted(os.listdir(root / "two")) == ["best.pt", "last.pt", "metrics.csv"]  # only rank 0 writes, no temp files
    a, b = load_checkpoint(root / "one" / "last.pt"), load_checkpoint(root / "two" / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], atol=1e-5, rtol=0)
    # meta-val episodes are split across the ranks and gathered: same accuracies, same selection
    va = [h.get("val_acc") for h in a["history"] if "val_acc" in h]
    vb = [h.get("val_acc") for h in b["history"] if "val_acc" in h]
    assert len(va) == len(vb) == 3 and va == pytest.approx(vb, abs=1e-4)
    ba, bb = load_checkpoint(root / "one" / "best.pt"), load_checkpoint(root / "two" / "best.pt")
    assert ba["best_iteration"] == bb["best_iteration"]


@pytest.mark.slow
def test_dead_rank_stops_the_run_cleanly_and_torchrun_resume_equals_uninterrupted(runs):
    root, _ = runs
    run = root / "killed"
    # rank 1 dies just before the all_reduce of iteration 5; last.pt (iteration 4) must survive
    dead = _croma([*FLAGS, "--checkpoint-dir", str(run), "--nproc", "2", "--dist-timeout", "10"], **{TEST_EXIT_ENV: "1:5"})
    assert dead.returncode != 0
    pattern = (r"^error: rank 0: peer process died or timed out during all_reduce at iteration 5; "
               r"last checkpoint \S*last\.pt is intact")
    lines = [l for l in dead.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and re.match(pattern, lines[0]), dead.stderr
    assert load_checkpoint(run / "last.pt")["iteration"] == 4
    assert sorted(os.listdir(run)) == ["best.pt", "last.pt", "metrics.csv"]
    # resume under torchrun (the documented launcher), 2 processes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "croma", "train", *FLAGS, "--checkpoint-dir", str(run), "--resume", "--dist-timeout", "20"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "trained 6/6 iterations on 2 processes" in res.stdout
    ref, got = load_checkpoint(root / "two" / "last.pt"), load_checkpoint(run / "last.pt")
    assert got["iteration"] == 6 and tree_equal(ref["model"], got["model"])  # bitwise
    rb, gb = load_checkpoint(root / "two" / "best.pt"), load_checkpoint(run / "best.pt")
    assert tree_equal(rb["model"], gb["model"]) and rb["best_iteration"] == gb["best_iteration"]


def test_nproc_under_torchrun_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rc = main(["train", *FLAGS, "--checkpoint-dir", str(tmp_path / "x"), "--nproc", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "--nproc" in err and "torchrun" in err and err.count("\n") == 1
    monkeypatch.delenv("WORLD_SIZE")
    rc = main(["train", *FLAGS, "--checkpoint-dir", str(tmp_path / "x"), "--nproc", "0"])
    assert rc == 2 and "--nproc" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bench_meta_nproc_2_prints_scaling_last(capsys):
    rc = main(["bench", "meta", "--nproc", "2", "--repeats", "1", "--meta-batch", "4", "--inner-steps", "1", "--hidden", "16"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("scaling: ") and float(lines[-1].split()[1]) > 0
    assert any(l.startswith("1 process") and "tasks/s" in l for l in lines)
    assert any(l.startswith("2 processes") and "tasks/s" in l for l in lines)
    assert any("load average" in l for l in lines)
    diff = next(l for l in lines if l.startswith("max |"))
    assert float(diff.split()[-1]) < 1e-5  # the shares summed by all_reduce equal the whole meta-batch
