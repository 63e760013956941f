"""The Reptile outer update and its step-size schedule.

``theta <- theta + eps_t * mean_i(phi_i - theta)``, where the mean runs over *all* tasks of the
meta-batch. The trainer computes ``sum_i(phi_i - theta)`` over any subset of the tasks
(:meth:`croma.learner.CromaTrainer.task_deltas`), so a meta-batch can be split across
processes and the sums all-reduced before :func:`reptile_update`.

World-size-invariant sums: the tasks of a meta-batch are cut into fixed chunks
(:func:`chunk_layout`, independent of the number of processes); every chunk's summed deltas,
task count and loss sums form one row of a ``[chunks, L]`` buffer (:func:`pack_chunks`), rows
of chunks computed elsewhere stay zero, and :func:`sum_chunks` adds the rows in chunk order. A
distributed run all-reduces the buffer first (each entry is one chunk's value plus zeros, which
is exact), so 1, 2 or N processes add the same numbers in the same order: bitwise equal results.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from croma.meta.functional import Params

__all__ = ["linear_epsilon", "reptile_update", "chunk_layout", "pack_chunks", "sum_chunks", "ChunkPart"]

#: one chunk's contribution: (summed deltas of the names its tasks train, task count, {family: losses [T, S]})
ChunkPart = tuple[Params, int, Mapping[str, torch.Tensor]]


def linear_epsilon(iteration: int, iterations: int, start: float, final: float) -> float:
    """Outer step size at 0-based ``iteration`` of ``iterations``: linear from ``start`` to ``final``.

    ``iteration = 0`` gives ``start``; the last iteration (``iterations - 1``) gives ``final``.
    """
    if iterations <= 1:
        return float(start)
    frac = min(max(iteration, 0), iterations - 1) / (iterations - 1)
    return float(start + (final - start) * frac)


def reptile_update(theta: Mapping[str, torch.Tensor], mean_delta: Mapping[str, torch.Tensor], epsilon: float) -> Params:
    """``theta + epsilon * mean_delta`` key-wise (a name missing from ``mean_delta`` is unchanged).

    Args:
        theta: meta-parameters ``{name: tensor}``.
        mean_delta: ``mean_i(phi_i - theta)`` per name, same shapes.
        epsilon: outer step size.

    Returns:
        New meta-parameters (``theta`` is not modified).
    """
    return {k: (v + epsilon * mean_delta[k]) if k in mean_delta else v.clone() for k, v in theta.items()}


def chunk_layout(plan: Sequence[tuple[str, int]], chunk: int) -> list[list[int]]:
    """Meta-batch task ids of every chunk, in chunk order.

    Args:
        plan: ``[(family, count), ...]`` of one meta-batch (task ids run family by family).
        chunk: tasks per chunk; each family's block of ids is cut into consecutive pieces of at
            most ``chunk`` ids (``0``: the whole block is one chunk).

    Returns:
        ``[[task id, ...], ...]``: a partition of ``range(sum(counts))``; a chunk never mixes families.
    """
    if chunk < 0:
        raise ValueError(f"--task-chunk must be >= 0 (got {chunk})")
    out: list[list[int]] = []
    offset = 0
    for _, count in plan:
        size = count if chunk == 0 else chunk
        for start in range(0, count, max(size, 1)):
            out.append(list(range(offset + start, offset + min(count, start + size))))
        offset += count
    return out


def _row_layout(theta: Mapping[str, torch.Tensor], families: Sequence[str],
                names: Sequence[str] | None = None) -> tuple[list[str], int, torch.dtype]:
    dtypes = {v.dtype for v in theta.values()}
    dt = dtypes.pop() if len(dtypes) == 1 else torch.float64
    keep = None if names is None else set(names)
    packed = [k for k in theta if keep is None or k in keep]
    return packed, sum(theta[k].numel() for k in packed) + 1 + 3 * len(families), dt


def pack_chunks(
    theta: Mapping[str, torch.Tensor],
    families: Sequence[str],
    num_chunks: int,
    parts: Mapping[int, ChunkPart],
    names: Sequence[str] | None = None,
) -> torch.Tensor:
    """The ``[num_chunks, L]`` buffer of :func:`sum_chunks`; rows of chunks not in ``parts`` are zero.

    Row layout: every name of ``names`` (default: all of ``theta``; e.g. only the names some task
    family can train, so that a distributed sum does not carry rows of zeros) flattened in
    ``theta``'s order (zeros for names the chunk does not train), the task count, then per family
    of ``families``: sum of first-step losses, sum of last-step losses, number of tasks.

    Raises:
        ValueError: a chunk has a delta for a name outside ``names``.
    """
    packed, width, dt = _row_layout(theta, families, names)
    ref = next(iter(theta.values()))
    buf = torch.zeros(num_chunks, width, dtype=dt, device=ref.device)
    known = set(packed)
    for c, (deltas, n, losses) in parts.items():
        stray = set(deltas) - known
        if stray:
            raise ValueError(f"chunk {c} changes parameters outside the packed names: {sorted(stray)[:3]}")
        row = buf[c]
        pos = 0
        for k in packed:
            v = theta[k]
            if k in deltas:
                row[pos: pos + v.numel()] = deltas[k].reshape(-1).to(dt)
            pos += v.numel()
        row[pos] = n
        for i, fam in enumerate(families):
            l = losses.get(fam)
            if l is not None and l.numel():
                row[pos + 1 + 3 * i] = l[:, 0].sum().to(dt)
                row[pos + 2 + 3 * i] = l[:, -1].sum().to(dt)
                row[pos + 3 + 3 * i] = l.shape[0]
    return buf


def sum_chunks(
    buf: torch.Tensor, theta: Mapping[str, torch.Tensor], families: Sequence[str], names: Sequence[str] | None = None,
) -> tuple[Params, int, dict[str, torch.Tensor]]:
    """Add the rows of a :func:`pack_chunks` buffer in chunk order and unpack the total.

    The same code runs with one process and after a distributed ``all_reduce`` of the buffer,
    so the result is bitwise the same (``x + 0.0`` first turns a ``-0.0`` entry into the
    ``+0.0`` a sum with another rank's zero gives).

    Returns:
        ``(deltas_sum, n_tasks, {family: [[mean first-step loss, mean last-step loss]]})``
        (families without tasks are left out); names of ``theta`` outside ``names`` (the
        :func:`pack_chunks` argument) get zeros.
    """
    packed, _, _ = _row_layout(theta, families, names)
    rows = buf + 0.0
    acc = rows[0].clone()
    for r in range(1, rows.shape[0]):
        acc.add_(rows[r])
    known = set(packed)
    out: Params = {}
    pos = 0
    for k, v in theta.items():  # packed names are in theta's order
        if k in known:
            out[k] = acc[pos: pos + v.numel()].view(v.shape).to(v.dtype)
            pos += v.numel()
        else:
            out[k] = torch.zeros_like(v)
    total = int(round(float(acc[pos])))
    losses: dict[str, torch.Tensor] = {}
    for i, fam in enumerate(families):
        cnt = float(acc[pos + 3 + 3 * i])
        if cnt > 0:
            losses[fam] = torch.stack([acc[pos + 1 + 3 * i] / cnt, acc[pos + 2 + 3 * i] / cnt]).view(1, 2)
    return out, total, losses
