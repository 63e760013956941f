"""`croma bench eval`: the main job's meta-val / meta-test fine-tuning, batched against the
per-episode sequential reference on the same episodes.

The workload is what ``croma benchmark udhr-speech --preset quick`` evaluates: 5-way episodes with
5 queries per class at 1/5/10 shots, every fine-tuning setting meta-val chooses between
(:func:`croma.baselines.common.eval_grid` with the preset's knobs: head init x {0, 25} Adam steps x
{all, head}), in chunks of :data:`croma.finetune.CHUNK` episodes. Features are the udhr-speech
quick preset's (``real=True``, from the feature cache; synthesised on first use) or random
vectors of the same shapes (speed does not depend on values); the model is a freshly initialised
quick-preset model (MLP 416 -> 256 -> 128, alignment layer, 5-way classifier).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Callable

import torch

from croma.perf.flops import count_flops, matmul_peak

__all__ = ["EvalWorkload", "run_eval_bench"]


@dataclass
class EvalWorkload:
    """Shapes of the evaluation benchmark (defaults: the quick preset on udhr-speech).

    ``episodes``: per (k, setting), batched; ``sequential_episodes``: the first that many of them
    also run one at a time (the reference is slow; both paths' rates are per episode).
    """

    shots: tuple[int, ...] = (1, 5, 10)
    ways: int = 5
    queries: int = 5
    episodes: int = 50
    sequential_episodes: int = 10
    steps: int = 25
    lr: float = 1e-3
    hidden: int = 256
    embed_dim: int = 128
    target_dim: int = 416
    source_dim: int = 64
    classes: int = 88
    per_class: int = 20
    real: bool = False
    cache_dir: str | None = None

    def bench(self):
        """The prepared benchmark (real udhr-speech quick features, or synthetic of the same shapes)."""
        if self.real:
            from croma.benchmark import load_for_benchmark
            from croma.benchmark_config import BenchmarkConfig

            return load_for_benchmark(BenchmarkConfig(benchmark="udhr-speech", preset="quick", ways=self.ways,
                                                      cache_dir=self.cache_dir, progress=False, device="cpu"))
        from episodes.data import ModalityData, PreparedBenchmark

        g = torch.Generator().manual_seed(0)
        n = self.classes * self.per_class
        labels = torch.arange(self.classes).repeat_interleave(self.per_class)
        rows = torch.arange(n)
        none = torch.full_like(labels, -1)
        ids = [str(i) for i in range(n)]
        data = {
            "text": ModalityData(torch.randn(n, self.source_dim, generator=g), labels.clone(), none, ids),
            "audio": ModalityData(torch.randn(n, self.target_dim, generator=g), labels.clone(), none, ids),
        }
        n_test, n_val = round(0.18 * self.classes), round(0.135 * self.classes)  # udhr_class_split's shares
        cls = list(range(self.classes))
        return PreparedBenchmark(
            name="bench-eval", source="text", target="audio", class_names=[str(c) for c in cls], cluster_names=[],
            data=data, pairs=torch.stack([rows, rows], 1),
            splits={"meta_test": cls[:n_test], "meta_val": cls[n_test : n_test + n_val],
                    "meta_train": cls[n_test + n_val :], "source_train": cls[n_test + n_val :]},
            align_source_rows=rows[:10], align_target_rows=rows[:10], classify_source_rows=rows[:10], align_mode="strong",
        )

    def model(self, bench):
        from croma.config import TrainConfig
        from croma.factory import build_from_config

        cfg = TrainConfig(benchmark="udhr-speech" if self.real else "synthetic", ways=self.ways, features="compact",
                          model=dict(embed_dim=self.embed_dim, hidden=self.hidden))
        return build_from_config(cfg, bench)

    def grid(self) -> list[dict[str, Any]]:
        """The settings meta-val chooses between (the quick preset's grid, with this workload's steps)."""
        from croma.baselines.common import eval_grid
        from croma.benchmark_config import PRESETS
        from croma.evaluate import EvalConfig

        knobs = dict(PRESETS["quick"]["knobs"])
        knobs["finetune_grid"] = sorted({0, int(self.steps)})
        ctx = SimpleNamespace(eval=EvalConfig(finetune_steps=self.steps, finetune_lr=self.lr), knobs=knobs)
        return eval_grid(ctx)

    def describe(self) -> str:
        data = "udhr-speech quick features" if self.real else f"synthetic {self.target_dim}-d target vectors"
        return (f"{self.ways}-way, {self.queries} queries/class, shots {'/'.join(map(str, self.shots))}, "
                f"{len(self.grid())} meta-val settings (head init x {{0, {self.steps}}} Adam steps x {{all, head}}), "
                f"{self.episodes} episodes per (k, setting), {data}, MLP {self.target_dim}->{self.hidden}->{self.embed_dim}")


def _name(g: dict[str, Any]) -> str:
    return f"{g['head_init']}/{g['finetune_steps']}/{g['finetune']}"


def _faults() -> int:
    """Minor page faults of this process so far (fresh pages the allocator had the kernel zero)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def adam_floor(shapes: list[tuple[int, ...]], tasks: int, steps: int, lr: float) -> tuple[float, int]:
    """Seconds of ``steps`` in-place fused Adam updates of ``tasks`` per-episode copies of tensors of
    ``shapes`` (the update alone: what a batched ``all`` fine-tuning cannot avoid as long as every
    episode owns float32 copies of the parameters and their moments), and the bytes each update
    moves (read parameter, gradient, two moments; write parameter and moments: 7 x 4 bytes per element).
    """
    from croma.meta.inner import InnerConfig, InnerOptimizer

    params = {str(i): torch.zeros(tasks, *s) for i, s in enumerate(shapes)}
    grads = {k: torch.full_like(v, 1e-3) for k, v in params.items()}
    opt = InnerOptimizer(params, InnerConfig(steps=steps, lr=lr))
    opt.step(grads)  # warm-up: first touch of every buffer
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(grads)
    return time.perf_counter() - t0, 28 * sum(v.numel() for v in params.values())


def run_eval_bench(
    wl: EvalWorkload, *, repeats: int = 1, threads: int = 1, compile: bool = False, chunk: int | None = None,
    halving: bool = True, allocator: str = "default", out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every (k, setting) of ``wl`` through the batched and the sequential path (alternating
    per repeat) and, opt-in, the compiled batched path (``compile``) and another chunk size
    (``chunk``); check the paths' per-episode accuracies agree; print the figures and, last,
    ``speedup: X`` (sequential seconds per episode summed over the workload / batched).

    Also measured in the same run: minor page faults per episode of every path (``allocator``
    names the malloc setting, see :func:`croma.perf.workload.tune_allocator`) and the memory
    floor of the ``all`` settings — the fused Adam update of the per-episode copies alone
    (:func:`adam_floor`) — with the speedup the workload would reach if every ``all`` fine-tuning
    cost only that.

    Returns the figures as a dict (``speedup``, ``max_abs_diff``, ``episodes_differ``, ...).
    """
    from croma.evaluate import EvalConfig, episode_accuracies, successive_halving

    torch.set_num_threads(threads)
    bench = wl.bench()
    model = wl.model(bench)
    from croma.meta.functional import meta_parameters
    from croma.meta.tasks import model_inputs

    theta = {k: v.detach() for k, v in meta_parameters(model).items()}
    inputs = model_inputs(model, bench, "cpu")
    base = EvalConfig(shots=list(wl.shots), ways=wl.ways, queries=wl.queries, repeats=1, split="meta_val",
                      tasks=wl.episodes, finetune_lr=wl.lr, nearest_centroid=False, retrieval=False)
    grid = wl.grid()
    z_cache: dict = {}
    n_seq = min(wl.sequential_episodes, wl.episodes)

    def unit(k: int, g: dict[str, Any], path: str, n: int, **kw) -> Callable[[], torch.Tensor]:
        cfg = replace(base, shots=[k], inner_loop="sequential" if path == "sequential" else "batched", **g)
        return lambda: episode_accuracies(model, bench, cfg, k, 0, n, params=theta, inputs=inputs,
                                          z_cache=z_cache, **kw)

    paths: dict[str, tuple[int, dict[str, Any]]] = {"batched": (wl.episodes, {}), "sequential": (n_seq, {})}
    if chunk:
        paths[f"chunk-{chunk}"] = (wl.episodes, {"chunk": int(chunk)})
    if compile:
        paths["compiled"] = (wl.episodes, {"compile": True})
    units = {(k, _name(g), p): unit(k, g, p, n, **kw) for k in wl.shots for g in grid for p, (n, kw) in paths.items()}

    # first call of every unit: warm-up (compile time for the compiled path) and the accuracies
    first: dict[str, float] = {p: 0.0 for p in paths}
    accs: dict[tuple, torch.Tensor] = {}
    for key, fn in units.items():
        t0 = time.perf_counter()
        accs[key] = fn()
        first[key[2]] += time.perf_counter() - t0
    diffs: dict[str, tuple[float, int, int]] = {}
    for p in paths:
        if p == "batched":
            continue
        d = [(accs[(k, n, p)][:n_seq] - accs[(k, n, "batched")][:n_seq]).abs() for k in wl.shots for n in map(_name, grid)]
        cat = torch.cat(d)
        diffs[p] = (float(cat.max()) if cat.numel() else 0.0, int((cat > 0).sum()), int(cat.numel()))

    flops_per_ep = {}
    for k in wl.shots:
        for g in grid:
            flops_per_ep[(k, _name(g))] = count_flops(unit(k, g, "batched", 2)) / 2

    times: dict[tuple, list[float]] = {key: [] for key in units}
    faults: dict[str, int] = {p: 0 for p in paths}
    peak = matmul_peak(reps=2)
    from croma.finetune import CHUNK, target_param_names

    names = list(theta)
    keep = target_param_names(model, bench.target, names) | {n for n in names if n.startswith(("align.", "classifier."))}
    shapes = [tuple(theta[n].shape) for n in names if n in keep]
    floor_tasks = min(wl.episodes, CHUNK)
    floor: list[float] = []
    order = list(paths)
    for r in range(repeats):
        for p in (order if r % 2 == 0 else order[::-1]):
            for key, fn in units.items():
                if key[2] == p:
                    f0, t0 = _faults(), time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
                    faults[p] += _faults() - f0
        peak += matmul_peak(reps=2)
        sec, adam_bytes = adam_floor(shapes, floor_tasks, wl.steps, wl.lr)
        floor.append(sec / floor_tasks)
    peak_gflops = 2 * 1024**3 / statistics.median(peak) / 1e9

    per_ep = {key: statistics.median(v) / paths[key[2]][0] for key, v in times.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out(f"bench eval: {wl.describe()}; {threads} thread(s), {repeats} alternating repeat(s), load average {load:.1f}; "
        f"malloc: {allocator}")
    out(f"matmul peak: {peak_gflops:.1f} GFLOP/s (1024x1024 float32, median of {len(peak)}; same run)")
    cols = list(paths)
    out(f"{'k':>3} {'setting':<18}" + "".join(f" {c + ' ms/ep':>17}" for c in cols) + f" {'seq/batched':>11}")
    for k in wl.shots:
        for g in grid:
            nm = _name(g)
            row = "".join(f" {1000 * per_ep[(k, nm, c)]:17.2f}" for c in cols)
            out(f"{k:>3} {nm:<18}{row} {per_ep[(k, nm, 'sequential')] / per_ep[(k, nm, 'batched')]:10.1f}x")
    total_flops = sum(flops_per_ep.values())  # per episode of every (k, setting)
    n_units = len(flops_per_ep)
    figures: dict[str, Any] = {"peak_gflops": peak_gflops}
    for p in paths:
        sec = sum(v for key, v in per_ep.items() if key[2] == p)  # seconds for one episode of every (k, setting)
        gf = total_flops / sec / 1e9
        figures[p] = {"seconds_per_grid_episode": sec, "gflops": gf}
        pf = faults[p] / (repeats * paths[p][0] * n_units)
        figures[p]["faults_per_episode"] = pf
        out(f"{p:<10}: {n_units / sec:8.1f} episodes/s  ({1000 * sec / n_units:.2f} ms per episode, averaged over "
            f"the {n_units} (k, setting) units; {gf:.1f} GFLOP/s = {100 * gf / peak_gflops:.1f}% of peak; "
            f"first calls {first[p]:.1f} s; {pf:.0f} page faults per episode)")
    fl = statistics.median(floor)
    tuned = [key for key in per_ep if key[2] == "batched" and key[1].endswith(f"/{wl.steps}/all")]
    if tuned:
        rest = sum(v for key, v in per_ep.items() if key[2] == "batched" and key not in tuned)
        all_ms = 1000 * statistics.median(per_ep[key] for key in tuned)
        bound = figures["sequential"]["seconds_per_grid_episode"] / (rest + len(tuned) * fl)
        figures["adam_floor"] = {"seconds_per_episode": fl, "bound_speedup": bound}
        out(f"memory floor of the {len(tuned)} '{wl.steps}/all' units: {wl.steps} fused Adam updates of one episode's "
            f"copies alone take {1000 * fl:.2f} ms ({wl.steps * adam_bytes / floor_tasks / 1e6:.0f} MB moved, "
            f"{wl.steps * adam_bytes / floor_tasks / fl / 1e9:.1f} GB/s; {floor_tasks} episodes at once, median of "
            f"{len(floor)}) against {all_ms:.2f} ms batched (median); speedup if they cost only that: {bound:.2f}")
    for p, (mx, nd, tot) in diffs.items():
        out(f"accuracies {p} vs batched: max |diff| {mx:.3g} over {tot} episodes, {nd} differ")
    figures["diffs"] = diffs

    if halving:
        full_s = sum(statistics.median(v) for key, v in times.items() if key[2] == "batched")
        t0 = time.perf_counter()
        same = []
        for k in wl.shots:
            names = [_name(g) for g in grid]
            bestfull = max(names, key=lambda n: (float(accs[(k, n, "batched")].mean()), -names.index(n)))
            best, _, _ = successive_halving(
                names, wl.episodes,
                lambda n, a, b, k=k: episode_accuracies(model, bench, replace(base, shots=[k], **grid[names.index(n)]),
                                                        k, a, b, params=theta, inputs=inputs, z_cache=z_cache))
            same.append(f"k={k}: {best}{'' if best == bestfull else f' (full grid: {bestfull})'}")
        half_s = time.perf_counter() - t0
        figures["halving"] = {"full_s": full_s, "halving_s": half_s}
        out(f"meta-val choice by successive halving: {half_s:.1f} s against {full_s:.1f} s for the full grid "
            f"(x{full_s / half_s:.2f}); chosen {', '.join(same)}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out(f"peak memory (process max RSS): {rss:.1f} MiB")
    b = figures["batched"]
    figures["peak_fraction"] = b["gflops"] / peak_gflops
    figures["speedup"] = figures["sequential"]["seconds_per_grid_episode"] / b["seconds_per_grid_episode"]
    out(f"peak_fraction: {figures['peak_fraction']:.3f}")
    out(f"speedup: {figures['speedup']:.2f}")
    return figures
