"""Scaling out: one meta-batch split across processes (and machines) with ``torch.distributed``.

Reptile is embarrassingly parallel over the tasks of a meta-batch. Every rank draws the same
meta-batch (tasks are pure functions of ``(seed, iteration, task id)``). The meta-batch is cut
into fixed chunks of tasks (``TrainConfig.task_chunk``; the same chunks for any number of
processes); a rank computes the summed Reptile deltas ``sum_i(phi_i - theta)`` of its chunks
(:func:`shard_indices` over chunk ids, one batched inner loop per chunk, as the single-process
trainer does), and one ``all_reduce`` (sum) of a ``[chunks, deltas..., n_tasks, per-family loss
sums]`` buffer (:meth:`Distributed.reduce_chunks`; other ranks' rows are zero, so the sum is
exact) gives every rank every chunk's row; the rows are added in chunk order. So all ranks hold
bitwise identical meta-parameters after every step, and so do runs with 1, 2 or N processes
(CPU). They also start from rank 0's parameters, broadcast once. (``task_chunk=0``: one chunk
per family; then ranks share task ids and :meth:`Distributed.reduce_deltas` sums per-rank
totals, equal across world sizes only up to rounding.)

Process groups come from the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): backend ``gloo`` on CPU, ``nccl`` on CUDA (one GPU per local
rank). Collectives time out after ``timeout_s``; a failed or timed-out collective (a peer
process died) becomes one :class:`croma.errors.CromaError` line naming the rank, the operation,
the iteration and the last checkpoint (written by rank 0 only, atomically, so it stays intact).

:func:`launch_local` is the ``--nproc N`` convenience: it starts N local processes with that
environment (like ``torchrun --standalone --nproc_per_node N``), watches them, and stops the
survivors when one fails and they do not exit by themselves.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from croma.errors import CromaError
from croma.launcher import _stop, free_port, launch_local, python_cmd  # noqa: F401 - the --nproc launcher (re-exported)

__all__ = [
    "DistEnv",
    "Distributed",
    "env_world",
    "shard_indices",
    "backend_for",
    "free_port",
    "launch_local",
    "DEFAULT_TIMEOUT_S",
    "TEST_EXIT_ENV",
]

DEFAULT_TIMEOUT_S = 120.0
# Test-only hook: "RANK:ITER" makes that rank os._exit(17) just before the all_reduce of 1-based
# outer iteration ITER (simulates a peer dying mid-run); "RANK:ITER:hang" makes it hang there.
TEST_EXIT_ENV = "CROMA_TEST_EXIT_AT"

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DistEnv:
    """The torchrun environment of this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, master)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def env_world(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The :class:`DistEnv` when launched by torchrun (or :func:`launch_local`) with ``WORLD_SIZE > 1``.

    Returns None when ``WORLD_SIZE`` is unset or 1 (a plain single-process run).

    Raises:
        CromaError: the variables are present but malformed or inconsistent.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
        port = int(env.get("MASTER_PORT", "29500"))
    except ValueError as exc:
        raise CromaError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_PORT): {exc}") from exc
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise CromaError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    return DistEnv(rank=rank, world_size=world, local_rank=local, master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=port)


def shard_indices(n: int, rank: int, world_size: int, mode: str = "round_robin") -> list[int]:
    """The task ids in ``range(n)`` that ``rank`` of ``world_size`` computes.

    ``round_robin``: ``rank, rank + W, rank + 2W, ...`` (each rank gets a share of every task
    family of the meta-batch, balancing their different costs); ``contiguous``: consecutive
    blocks, the first ``n % W`` ranks one larger. Shares differ by at most one; ranks beyond
    ``n`` get none (``world_size > n`` is allowed). The shares partition ``range(n)``.
    """
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"bad shard request: n={n}, rank={rank}, world_size={world_size}")
    if mode == "round_robin":
        return list(range(rank, n, world_size))
    if mode == "contiguous":
        base, extra = divmod(n, world_size)
        start = rank * base + min(rank, extra)
        return list(range(start, start + base + (1 if rank < extra else 0)))
    raise ValueError(f"shard mode must be round_robin or contiguous (got {mode!r})")


def backend_for(device: torch.device | str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


class Distributed:
    """An initialised process group plus the collectives the trainer and evaluation need.

    Args:
        env: this process's :class:`DistEnv`.
        device: the training device (decides the backend; CUDA: ``cuda:LOCAL_RANK``).
        timeout_s: collective (and rendezvous) timeout in seconds.
        shard_mode: ``round_robin`` | ``contiguous`` (see :func:`shard_indices`).

    Attributes:
        rank, world_size, device, backend; iteration: 1-based outer iteration in progress
        (for error messages); checkpoint: the path of ``last.pt`` named in error messages.
    """

    def __init__(self, env: DistEnv, device: torch.device | str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 shard_mode: str = "round_robin") -> None:
        import torch.distributed as dist

        if timeout_s <= 0:
            raise ValueError(f"--dist-timeout must be > 0 seconds (got {timeout_s})")
        shard_indices(0, 0, 1, shard_mode)  # validates the mode
        self.rank, self.world_size = env.rank, env.world_size
        self.device = torch.device(device)
        self.backend = backend_for(self.device)
        self.timeout_s = float(timeout_s)
        self.shard_mode = shard_mode
        self.iteration: int | None = None
        self.checkpoint: Path | None = None
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
        try:
            dist.init_process_group(
                self.backend, init_method="env://", rank=env.rank, world_size=env.world_size,
                timeout=datetime.timedelta(seconds=self.timeout_s),
            )
        except Exception as exc:  # rendezvous timeout, refused connection, bad address
            raise CromaError(
                f"rank {env.rank}: could not join the process group at {env.master_addr}:{env.master_port} "
                f"({env.world_size} processes, {self.backend}) within {self.timeout_s:g} s: {_first_line(exc)}"
            ) from exc

    # ------------------------------------------------------------------ helpers
    def shard(self, n: int) -> list[int]:
        """This rank's ids of ``range(n)`` (:func:`shard_indices`)."""
        return shard_indices(n, self.rank, self.world_size, self.shard_mode)

    def _fail(self, op: str, exc: BaseException) -> CromaError:
        where = f" at iteration {self.iteration}" if self.iteration is not None else ""
        if self.checkpoint is not None and self.checkpoint.is_file():
            ckpt = f"last checkpoint {self.checkpoint} is intact"
        elif self.checkpoint is not None:
            ckpt = f"no checkpoint had been written yet to {self.checkpoint}"
        else:
            ckpt = "no checkpoint directory"
        return CromaError(
            f"rank {self.rank}: peer process died or timed out during {op}{where}; {ckpt} "
            f"({_first_line(exc)}; --dist-timeout {self.timeout_s:g} s)"
        )

    def _call(self, op: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError as exc:  # gloo: connection closed / timeout; nccl: DistBackendError
            raise self._fail(op, exc) from exc

    # ------------------------------------------------------------------ collectives
    def all_reduce_sum(self, tensor: torch.Tensor, op: str = "all_reduce") -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place (every rank gets the same bytes). Returns it."""
        import torch.distributed as dist

        self._call(op, lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))
        return tensor

    def any(self, flag: bool, op: str = "all_reduce") -> bool:
        """True on every rank when ``flag`` is True on any rank (e.g. a time-budget stop)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce_sum(t, op).item() > 0)

    def broadcast_params(self, params: Mapping[str, torch.Tensor], op: str = "broadcast") -> Params:
        """Rank 0's values of ``params`` on every rank (new tensors; names in the given order)."""
        import torch.distributed as dist

        out = {k: v.detach().clone().contiguous() for k, v in params.items()}
        for v in out.values():
            self._call(op, lambda v=v: dist.broadcast(v, src=0))
        return out

    def broadcast_object(self, obj: Any, op: str = "broadcast") -> Any:
        """Rank 0's ``obj`` (picklable plain data) on every rank."""
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        self._call(op, lambda: dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None))
        return box[0]

    def barrier(self, op: str = "barrier") -> None:
        """Wait for all ranks."""
        import torch.distributed as dist

        if self.backend == "nccl":
            self._call(op, lambda: dist.barrier(device_ids=[self.device.index or 0]))
        else:
            self._call(op, dist.barrier)

    def reduce_deltas(self, families: Sequence[str]) -> Callable[[Params, int, dict[str, torch.Tensor]], tuple[Params, int, dict[str, torch.Tensor]]]:
        """The ``reduce`` for :meth:`croma.learner.CromaTrainer.outer_step`.

        One ``all_reduce`` of ``[deltas (flattened, theta order), n_tasks, (sum of first-step
        losses, sum of last-step losses, tasks) per family]``. Returns the summed deltas, the total
        task count and ``{family: [[mean first-step loss, mean last-step loss]]}`` (a loss that is
        non-finite on any rank is non-finite in the sums, so every rank stops together).
        """

        def reduce(deltas: Params, n: int, losses: dict[str, torch.Tensor]):
            _maybe_exit(self.rank, self.iteration)
            keys = list(deltas)
            dtypes = {v.dtype for v in deltas.values()}
            dt = dtypes.pop() if len(dtypes) == 1 else torch.float64
            stats = torch.zeros(1 + 3 * len(families), dtype=dt, device=self.device)
            stats[0] = n
            for i, fam in enumerate(families):
                l = losses.get(fam)
                if l is not None and l.numel():
                    stats[1 + 3 * i] = l[:, 0].sum().to(dt)
                    stats[2 + 3 * i] = l[:, -1].sum().to(dt)
                    stats[3 + 3 * i] = l.shape[0]
            flat = torch.cat([deltas[k].reshape(-1).to(dt) for k in keys] + [stats])
            self.all_reduce_sum(flat, "all_reduce")
            out: Params = {}
            pos = 0
            for k in keys:
                v = deltas[k]
                out[k] = flat[pos: pos + v.numel()].view(v.shape).to(v.dtype)
                pos += v.numel()
            stats = flat[pos:]
            total = int(round(float(stats[0])))
            red: dict[str, torch.Tensor] = {}
            for i, fam in enumerate(families):
                cnt = float(stats[3 + 3 * i])
                if cnt > 0:
                    red[fam] = torch.stack([stats[1 + 3 * i] / cnt, stats[2 + 3 * i] / cnt]).view(1, 2)
            return out, total, red

        return reduce

    def reduce_chunks(self, buf: torch.Tensor) -> torch.Tensor:
        """The ``all_reduce`` for :meth:`croma.learner.CromaTrainer.outer_step`'s chunk path.

        ``buf`` is the ``[chunks, L]`` buffer of :func:`croma.meta.reptile.pack_chunks`, holding
        this rank's chunks (other rows zero); after the sum every row is exactly one chunk's
        value (``x + 0 = x``), the same on every rank and for any number of ranks.
        """
        _maybe_exit(self.rank, self.iteration)
        return self.all_reduce_sum(buf.contiguous(), "all_reduce")

    def close(self) -> None:
        """Wait for the others (rank 0 hosts the rendezvous store) and leave the group."""
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        try:
            self.barrier("final barrier")
        except CromaError:
            pass
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0])  # gloo's "[.../pair.cc:561] " prefix
    low = line.lower()
    if "connection closed by peer" in low or "connection reset" in low:
        return "connection closed by peer"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    return line[:160]


def _maybe_exit(rank: int, iteration: int | None) -> None:
    spec = os.environ.get(TEST_EXIT_ENV)
    if not spec or iteration is None:
        return
    parts = spec.split(":")
    if int(parts[0]) == rank and int(parts[1]) == iteration:
        if parts[2:] == ["hang"]:
            while True:  # a live but stuck peer: the others must time out
                time.sleep(3600)
        os._exit(17)
