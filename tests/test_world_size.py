"""World-size-invariant meta-training: fixed task chunks summed in a fixed order give bitwise the
same meta-parameters with 1, 2 and 4 processes (CPU, gloo)."""

import csv
import os
import subprocess
import sys

import pytest
import torch

from croma.checkpoint import load_checkpoint
from croma.cli import main
from croma.config import TrainConfig
from croma.distributed import shard_indices
from croma.fit import CromaTrainer
from croma.meta.functional import tree_equal
from croma.meta.outer import task_plan
from croma.meta.reptile import chunk_layout, pack_chunks, sum_chunks


def test_chunk_layout_partitions_each_family_in_fixed_pieces():
    plan = [("align", 4), ("source_cls", 3)]
    assert chunk_layout(plan, 2) == [[0, 1], [2, 3], [4, 5], [6]]
    assert chunk_layout(plan, 3) == [[0, 1, 2], [3], [4, 5, 6]]  # a chunk never mixes families
    assert chunk_layout(plan, 0) == [[0, 1, 2, 3], [4, 5, 6]]
    assert chunk_layout(plan, 100) == [[0, 1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="--task-chunk"):
        chunk_layout(plan, -1)
    cfg = TrainConfig(meta_batch=7, task_mix=0.5, task_chunk=2)
    assert task_plan(cfg) == plan


def test_sum_chunks_adds_rows_in_order_and_unpacks():
    theta = {"w": torch.zeros(2, 2), "b": torch.zeros(3)}
    parts = {
        0: ({"w": torch.full((2, 2), 1.0)}, 2, {"align": torch.tensor([[4.0, 1.0], [2.0, 1.0]])}),
        2: ({"w": torch.full((2, 2), 2.0), "b": torch.tensor([1.0, -0.0, 3.0])}, 1, {"source_cls": torch.tensor([[3.0, 2.0]])}),
    }
    buf = pack_chunks(theta, ["align", "source_cls"], 3, parts)
    assert buf.shape == (3, 4 + 3 + 1 + 6) and not buf[1].any()
    deltas, n, losses = sum_chunks(buf, theta, ["align", "source_cls"])
    assert n == 3 and torch.equal(deltas["w"], torch.full((2, 2), 3.0)) and torch.equal(deltas["b"], torch.tensor([1.0, 0.0, 3.0]))
    assert str(deltas["b"][1].item()) == "0.0"  # -0.0 is normalised, as a sum with another rank's zero would do
    assert torch.equal(losses["align"], torch.tensor([[3.0, 1.0]])) and torch.equal(losses["source_cls"], torch.tensor([[3.0, 2.0]]))


def _cfg(**kw):
    base = dict(
        iterations=4, meta_batch=7, task_mix=0.5, task_chunk=2, inner_steps=2, inner_lr=0.01, align_batch=8, ways=3,
        shots=2, queries=2, eval_every=0, checkpoint_every=0, seed=2, loss="cwcl", model={"embed_dim": 8, "hidden": 16},
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("world", [2, 3, 4, 5])
def test_simulated_world_sizes_are_bitwise_equal(bench, world):
    """Ranks' buffers (their chunks, zeros elsewhere) summed as all_reduce does equal one process bitwise;
    world 5 > 4 chunks leaves a rank without work."""
    ref = CromaTrainer(_cfg(), bench)
    while ref.iteration < ref.cfg.iterations:
        ref.outer_step()
    tr = CromaTrainer(_cfg(), bench)
    k = len(tr.chunks)
    assert k == 4
    while tr.iteration < tr.cfg.iterations:
        bufs = []  # every rank's buffer: its own chunks' rows, zeros elsewhere
        for r in range(world):
            ids = shard_indices(k, r, world)
            bufs.append(pack_chunks(tr.theta, [f for f, _ in tr.plan], k, tr.chunk_deltas(tr.theta, tr.iteration, ids)))

        def all_reduce(buf, bufs=bufs):
            total = bufs[0].clone()
            for b in bufs[1:]:
                total += b
            return total

        tr.outer_step(chunk_ids=shard_indices(k, 0, world), all_reduce=all_reduce)
    assert tree_equal(tr.theta, ref.theta)


def test_task_deltas_over_chunks_matches_the_chunk_path(bench):
    tr = CromaTrainer(_cfg(), bench)
    d, n, losses = tr.task_deltas(tr.theta, 0)
    c, m, _ = tr.chunked_deltas(tr.theta, 0)
    assert n == m == 7 and set(losses) == {"align", "source_cls"} and losses["align"].shape == (4, 2)
    for key in d:
        torch.testing.assert_close(c[key], d[key], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="task ids"):
        tr.task_deltas(tr.theta, 0, [7])


# ---------------------------------------------------------------------- real processes (gloo on CPU)
FLAGS = [
    "synthetic", "--loss", "cwcl", "--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2",
    "--meta-batch", "7", "--task-chunk", "2", "--inner-steps", "2", "--inner-lr", "0.01", "--embed-dim", "8",
    "--hidden", "16", "--align-batch", "8", "--seed", "1", "--iterations", "30", "--eval-every", "0",
    "--checkpoint-every", "30",
]


def _losses(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in row.items() if k.endswith("_loss") or k.endswith("_loss_last")} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_1_2_4_gloo_processes_give_bitwise_identical_meta_parameters_after_30_iterations(tmp_path):
    """7 tasks in chunks [0,1] [2,3] (align) [4,5] [6] (source): 2 processes take 2 chunks each,
    4 processes one each. Meta-parameters and the logged losses are bitwise equal."""
    assert main(["train", *FLAGS, "--checkpoint-dir", str(tmp_path / "p1")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    for n in (2, 4):
        res = subprocess.run(
            [sys.executable, "-m", "croma", "train", *FLAGS, "--checkpoint-dir", str(tmp_path / f"p{n}"), "--nproc", str(n),
             "--dist-timeout", "30"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"on {n} processes (gloo)" in res.stdout
    ref = load_checkpoint(tmp_path / "p1" / "last.pt")
    assert ref["iteration"] == 30
    for n in (2, 4):
        got = load_checkpoint(tmp_path / f"p{n}" / "last.pt")
        assert got["iteration"] == 30
        assert tree_equal(ref["model"], got["model"]), n
        assert _losses(tmp_path / f"p{n}" / "metrics.csv") == _losses(tmp_path / "p1" / "metrics.csv")


def test_chunk_buffers_carry_only_the_parameters_a_task_can_change():
    """Rows hold only ``MetaLearner.moving`` (names some family trains, minus frozen prefixes):
    a smaller all_reduce, the same sums (zeros for the rest), and a delta outside is refused."""
    from croma.learner import MetaLearner

    tr = MetaLearner(TrainConfig(benchmark="synthetic", iterations=2, eval_every=0, meta_batch=4, task_mix=0.0,
                                 frozen=["classifier.bias"], seed=2))
    theta = tr.theta
    assert tr.moving and all(k.startswith(f"encoders.{tr.bench.source}.") or k == "classifier.weight" for k in tr.moving)
    assert "classifier.bias" not in tr.moving and len(tr.moving) < len(theta)
    fams = [f for f, _ in tr.plan]
    parts = tr.chunk_deltas(theta, 0)
    full = sum_chunks(pack_chunks(theta, fams, len(tr.chunks), parts), theta, fams)
    small_buf = pack_chunks(theta, fams, len(tr.chunks), parts, names=tr.moving)
    small = sum_chunks(small_buf, theta, fams, names=tr.moving)
    assert small_buf.shape[1] < pack_chunks(theta, fams, len(tr.chunks), parts).shape[1]
    assert list(small[0]) == list(theta) and all(torch.equal(small[0][k], full[0][k]) for k in theta)
    assert small[1] == full[1] and all(torch.equal(small[2][f], full[2][f]) for f in full[2])
    with pytest.raises(ValueError, match="outside the packed names"):
        pack_chunks(theta, fams, len(tr.chunks), parts, names=tr.moving[:1])
