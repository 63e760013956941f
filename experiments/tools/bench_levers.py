"""The speed levers of the batched inner loop, measured one by one on ``croma bench meta``'s
workload (16 tasks of 5-way 5-shot + 5 queries, 5 inner Adam steps, 2-layer MLP 256->128->64),
in one process, alternating, one thread; every variant computes the same Reptile deltas (checked).

    OMP_NUM_THREADS=1 python experiments/tools/bench_levers.py --repeats 11 [--compile]

Variants (each timed unit = one meta-batch: sampling, 5 inner steps per task, the summed deltas):

* ``batched``       the product path (``croma train``'s default): ``vmap`` of ``grad_and_value``
                    over ``functional_call``, fused in-place Adam.
* ``foreach-adam``  the same with ``torch._foreach_*`` Adam instead of the fused kernel.
* ``chunks-of-8``   the same tasks in two vmapped calls of 8 per step instead of one of 16: what one
                    more vmapped call per step costs, i.e. the most that running several task
                    families in one vmapped call could save per family merged.
* ``ce-gather``     cross-entropy written as ``log_softmax`` + ``gather`` (vmap's batching rule
                    for ``nll_loss`` is slow).
* ``hand-batched``  no ``vmap``, no ``functional_call``: the encoder and classifier written by hand
                    for ``[T, ...]`` parameters (batched matmuls with a hand-written backward
                    whose weight gradients come out contiguous) and plain autograd. Only valid
                    for this architecture; it bounds what removing the transforms' overhead buys.
* ``bf16-matmul``   float32 matrix products computed by oneDNN in bfloat16
                    (``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``; AMX / AVX512-BF16
                    CPUs): changes the numbers (see the printed delta difference), so not a default.
* ``compiled``      (``--compile``) the batched step through ``torch.compile`` (``--compile-inner``).

Also printed: the time of sampling the tasks (part of every unit) and each variant's counted GFLOP/s
against a 1024x1024 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from croma.meta.inner import InnerOptimizer
from croma.meta.tasks import derive_seed
from croma.perf.flops import count_flops, matmul_peak
from croma.perf.workload import Workload, tune_allocator

WORKLOAD = Workload()  # croma bench meta's defaults


@contextlib.contextmanager
def no_fused_adam():
    """``InnerOptimizer`` falls back to its ``torch._foreach_*`` Adam while this is active."""
    saved = torch._fused_adam_
    torch._fused_adam_ = None
    try:
        yield
    finally:
        torch._fused_adam_ = saved


@contextlib.contextmanager
def bf16_matmul():
    """float32 matrix products in bfloat16 (oneDNN) while this is active."""
    mm = torch.backends.mkldnn.matmul
    saved = mm.fp32_precision
    mm.fp32_precision = "bf16"
    try:
        yield
    finally:
        mm.fp32_precision = saved


def ce_gather(model, batch, fam):
    logits = model.classify(model.embed(fam.modality, batch["x"]))
    return -torch.log_softmax(logits, -1).gather(-1, batch["y"].unsqueeze(-1)).mean()


class BatchedLinear(torch.autograd.Function):
    """``x [T, B, i] @ W[T, o, i]^T + b[T, o]`` with a backward whose gradients are contiguous."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = torch.bmm(g, w) if ctx.needs_input_grad[0] else None
        return gx, torch.bmm(g.transpose(1, 2), x), g.sum(1)


def hand_batched_deltas(trainer, theta, iteration):
    """The meta-batch's summed deltas with the model written by hand for ``[T, ...]`` parameters."""
    (fam_name, indices), = trainer.locate(iteration, range(trainer.meta_batch))
    fam = trainer.families[fam_name]
    batch = fam.sample(indices)
    enc = f"encoders.{fam.modality}.net"
    names = [f"{enc}.0.weight", f"{enc}.0.bias", f"{enc}.1.weight", f"{enc}.1.bias", f"{enc}.3.weight",
             f"{enc}.3.bias", "classifier.weight", "classifier.bias"]
    width = theta[f"{enc}.1.weight"].shape[0]
    x, y = batch["x"], batch["y"]
    n, rows = y.shape
    params = {k: theta[k].unsqueeze(0).expand(n, *theta[k].shape).clone() for k in names}
    opt = InnerOptimizer(params, trainer.inner_cfg)
    leaves = [params[k] for k in names]
    for _ in range(trainer.inner_cfg.steps):
        for p in leaves:
            p.requires_grad_(True)
        w0, b0, g1, b1, w3, b3, wc, bc = leaves
        h = BatchedLinear.apply(x, w0, b0)
        h = torch.addcmul(b1.unsqueeze(1), F.layer_norm(h, (width,)), g1.unsqueeze(1))
        z = BatchedLinear.apply(F.gelu(h), w3, b3)
        logits = BatchedLinear.apply(z, wc, bc)
        loss = F.cross_entropy(logits.reshape(n * rows, -1), y.reshape(-1), reduction="sum") / rows
        grads = torch.autograd.grad(loss, leaves)
        for p in leaves:
            p.requires_grad_(False)
        with torch.no_grad():
            opt.step(dict(zip(names, grads)))
    deltas = {k: torch.zeros_like(v) for k, v in theta.items()}
    for k in names:
        deltas[k] = (params[k] - theta[k]).sum(0)
    return deltas


def synthetic_units(repeats: int, compile: bool) -> tuple[dict, Any, str]:
    """The variants on ``croma bench meta``'s workload (see the module docstring)."""
    wl = WORKLOAD
    base = wl.trainer(repeats=repeats)
    eight = replace(wl, task_chunk=8).trainer(repeats=repeats)
    theta = base.theta

    def plain(tr):
        return lambda it: tr.chunked_deltas(theta, it)[0]

    def foreach(it):
        with no_fused_adam():
            return base.chunked_deltas(theta, it)[0]

    def bf16(it):
        with bf16_matmul():
            return base.chunked_deltas(theta, it)[0]

    ce_fam = wl.trainer(repeats=repeats)
    gfam = next(iter(ce_fam.families.values()))
    gfam.loss = lambda model, batch, f=gfam: ce_gather(model, batch, f)
    units = {
        "batched": plain(base), "foreach-adam": foreach, "chunks-of-8": plain(eight), "ce-gather": plain(ce_fam),
        "hand-batched": lambda it: hand_batched_deltas(base, theta, it), "bf16-matmul": bf16,
    }
    if compile:
        units["compiled"] = plain(wl.trainer(repeats=repeats, compile_inner=True))
    return units, base, wl.describe()


@contextlib.contextmanager
def native_conv1d():
    """``cnn1d`` encoders run ``F.conv1d`` (vmap's grouped-convolution rule) instead of k strided matmuls."""
    from croma.encoders import sequence

    def conv(h, weight, bias, stride):
        return F.conv1d(h.transpose(1, 2), weight, bias, stride=stride, padding=weight.shape[-1] // 2).transpose(1, 2)

    saved = sequence.conv1d_taps
    sequence.conv1d_taps = conv
    try:
        yield
    finally:
        sequence.conv1d_taps = saved


def benchmark_units(name: str, repeats: int, compile: bool) -> tuple[dict, Any, str]:
    """``croma train NAME``'s default meta-batch (its data, encoders, task mix) through the inner-loop paths."""
    from croma.config import TrainConfig
    from croma.factory import load_bench
    from croma.learner import MetaLearner

    cfg = TrainConfig(benchmark=name, iterations=2 * repeats + 2, eval_every=0)
    bench = load_bench(cfg)
    trainers = {m: MetaLearner(replace(cfg, inner_loop=m), bench) for m in ("batched", "sequential")}
    base = trainers["batched"]
    theta = base.theta

    def native(it):
        with native_conv1d():
            return base.chunked_deltas(theta, it)[0]

    units = {m: (lambda it, tr=tr: tr.chunked_deltas(theta, it)[0]) for m, tr in trainers.items()}
    units["native-conv1d"] = native
    if compile:
        units["compiled"] = (lambda it, tr=MetaLearner(replace(cfg, compile_inner=True), bench):
                             tr.chunked_deltas(theta, it)[0])
    plan = ", ".join(f"{n} {f}" for f, n in base.plan)
    return units, base, (f"croma train {name} defaults: meta-batch {cfg.meta_batch} ({plan}), {cfg.inner_steps} inner "
                         f"steps ({cfg.inner_optimizer}), encoders "
                         f"{', '.join(f'{m} {type(e).__name__}' for m, e in base.model.encoders.items())}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--compile", action="store_true", help="also time the compiled batched step")
    ap.add_argument("--benchmark", default=None,
                    help="instead: croma train BENCHMARK's default meta-batch (e.g. udhr-speech) through the batched, "
                    "sequential, native-conv1d and (--compile) compiled paths")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tune_allocator()
    reps = args.repeats
    if args.benchmark:
        units, base, what = benchmark_units(args.benchmark, reps, args.compile)
    else:
        units, base, what = synthetic_units(reps, args.compile)
    first_s, ref = {}, None
    diffs = {}
    for name, unit in units.items():
        t0 = time.perf_counter()
        out = unit(0)
        first_s[name] = time.perf_counter() - t0
        if ref is None:
            ref = out
        diffs[name] = max(float((ref[k] - out[k]).abs().max()) for k in ref)
    flops = count_flops(lambda: units["batched"](0))
    times: dict[str, list[float]] = {m: [] for m in units}
    sample_s: list[float] = []
    peak = matmul_peak(reps=2)
    order = list(units)
    for r in range(reps):
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            units[name](r + 1)
            times[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for fname, idx in base.locate(r + 1, range(base.meta_batch)):
            base.families[fname].sample(idx)
            base.families[fname].begin(derive_seed(0, "noise", r + 1, fname, *idx))
        sample_s.append(time.perf_counter() - t0)
        peak += matmul_peak(reps=2)
    peak_gflops = 2 * 1024**3 / statistics.median(peak) / 1e9
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"bench_levers: {what}, 1 thread, {reps} alternating repeats; "
          f"{flops / 1e9:.3f} GFLOP per meta-batch (matrix products)")
    print(f"matmul peak: {peak_gflops:.1f} GFLOP/s (1024x1024 float32, median of {len(peak)})")
    print(f"sampling the tasks (in every unit): median {1000 * statistics.median(sample_s):.2f} ms")
    for name in units:
        lo, hi = min(times[name]), max(times[name])
        gf = flops / 1e9 / med[name]
        print(f"{name:<13}: median {1000 * med[name]:6.1f} ms (range {1000 * lo:.1f}-{1000 * hi:.1f}), "
              f"x{med['batched'] / med[name]:.2f} vs batched, {gf:5.1f} GFLOP/s = {100 * gf / peak_gflops:4.1f}% of peak, "
              f"max |delta - batched| {diffs[name]:.1e}, first call {first_s[name]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
