"""Judge the meta-val choice rules of the meta-test setting (``val_rule``: best | simplest) on
meta-val only: held-out meta-val accuracy of the chosen setting and the seed spread of the choice.

For the udhr-speech quick preset, each method is trained with training seeds 0, 1, 2 exactly as
``croma benchmark`` trains it; where the method would choose its meta-test setting
(:func:`croma.baselines.common.select_eval`), every candidate (:func:`croma.val_choice.eval_grid`)
is scored on 200 meta-val episodes instead. Each rule CHOOSES on episodes 0-99 (the episodes
``val_episodes=100`` gives the benchmark) and the chosen setting is EVALUATED on episodes 100-199
(held-out meta-val episodes; meta-test is never touched). The swapped reading (choose on 100-199,
evaluate on 0-99) is reported too.

Per rule: mean held-out meta-val accuracy of the chosen setting, regret against the held-out best
candidate, and the seed spread of the choice (distinct settings chosen over the seeds, per
(method, k)). Output: experiments/results/val_choice_study.json and a short table.

    OMP_NUM_THREADS=1 python experiments/tools/val_choice_study.py \
        --methods croma,align-classify,pretrain --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import croma.baselines.common as common  # noqa: E402
from croma.val_choice import NOISE_Z, candidate_accuracies, candidate_grid, meta_val_config, simplest_within_noise  # noqa: E402

RULES = ("best", "simplest")


def choose(rule: str, acc: dict[str, torch.Tensor], grid: dict, z: float = NOISE_Z) -> str:
    res = simplest_within_noise(acc, grid, z=z)
    return res["best"] if rule == "best" else res["choice"]


def contexts(methods: list[str], seeds: list[int], budget_steps: int | None = None):
    """(bench, [(method, seed, MethodContext)]) built as ``croma benchmark --preset quick`` builds them."""
    from croma.baselines.common import MethodContext
    from croma.benchmark import _budget, _contexts, _knobs, _method_hp, load_for_benchmark
    from croma.benchmark_config import PRESETS, BenchmarkConfig
    from croma.factory import bench_to, resolve_device
    from croma.task_sizes import fit_run_sizes

    cfg = BenchmarkConfig(benchmark="udhr-speech", preset="quick", methods=methods, budget_steps=budget_steps)
    preset = PRESETS[cfg.preset]
    steps, seconds = _budget(cfg, preset)
    bench = bench_to(load_for_benchmark(cfg), resolve_device(cfg.device))
    train, ev, _ = _contexts(cfg, bench, preset)
    families = {"align", "source_cls", *(train.task_weights or {})}
    train, ev, _ = fit_run_sizes(train, bench, families=sorted(families), eval_cfg=ev)
    out = []
    for name in methods:
        for s in seeds:
            out.append((name, s, MethodContext(
                bench=bench, train=replace(train, seed=cfg.seed + s), eval=ev, budget_seconds=seconds,
                budget_steps=steps, label_noise=cfg.label_noise, knobs=_knobs(cfg, preset),
                hp=_method_hp(cfg, preset, name))))
    return bench, out


def analyse(runs: list[dict], half: int, z: float = NOISE_Z) -> dict:
    """Per rule and direction: held-out accuracy, regret, seed spread (accuracies in percent)."""
    table = {}
    for direction, (a, b) in {"choose_first_eval_second": ((0, half), (half, 2 * half)),
                              "choose_second_eval_first": ((half, 2 * half), (0, half))}.items():
        per = {}
        for rule in RULES:
            picks, held, regret = {}, [], []
            for r in runs:
                for k, acc in r["acc"].items():
                    grid = r["grid"]
                    name = choose(rule, {n: v[a[0]:a[1]] for n, v in acc.items()}, grid, z)
                    ho = {n: 100.0 * float(v[b[0]:b[1]].double().mean()) for n, v in acc.items()}
                    picks.setdefault(f"{r['method']} k={k}", []).append(name)
                    held.append(ho[name])
                    regret.append(max(ho.values()) - ho[name])
            spread = {key: len(set(v)) for key, v in picks.items()}
            per[rule] = {"held_out_meta_val": sum(held) / len(held), "regret": sum(regret) / len(regret),
                         "max_regret": max(regret), "distinct_choices": spread,
                         "mean_distinct": sum(spread.values()) / len(spread), "choices": picks}
        table[direction] = per
    return table


def _pct(x: float):
    v = round(100.0 * float(x), 2)
    return int(v) if v == int(v) else v


def report(result: dict, runs: list[dict], half: int, out: str) -> None:
    """Add the rules' tables (and the noise bound's z sensitivity) to ``result``, write it, print a table."""
    table = analyse(runs, half)
    result["rules"] = table
    result["z_sensitivity"] = {
        f"{z:g}": {d: {key: v["simplest"][key] for key in ("held_out_meta_val", "regret", "mean_distinct")}
                   for d, v in analyse(runs, half, z).items()}
        for z in (0.0, 0.5, 1.0, NOISE_Z, 2.326)}
    result["per_episode_unit"] = "percent"
    head = {k: v for k, v in result.items() if k != "runs"}
    text = json.dumps(head, indent=1)[:-2] + ',\n "runs": [\n'
    text += ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in result["runs"]) + "\n ]\n}\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(f"wall {result['wall_s']:.0f} s, 1 thread, load average {result['loadavg_start'][0]:.1f} -> "
          f"{result['loadavg_end'][0]:.1f} (2 cores)")
    print(f"{'direction':<26} {'rule':<9} {'held-out':>9} {'regret':>7} {'max reg':>8} {'distinct':>8}")
    for direction, per in table.items():
        for rule, v in per.items():
            print(f"{direction:<26} {rule:<9} {v['held_out_meta_val']:9.2f} {v['regret']:7.2f} "
                  f"{v['max_regret']:8.2f} {v['mean_distinct']:8.2f}")
    for z, v in result["z_sensitivity"].items():
        print(f"simplest z={z:<6} " + "  ".join(f"{d}: {x['held_out_meta_val']:.2f} / {x['regret']:.2f} / "
                                               f"{x['mean_distinct']:.2f}" for d, x in v.items()))
    for rule in RULES:
        picks = table["choose_first_eval_second"][rule]["choices"]
        print(f"{rule}: " + "; ".join(f"{key}: {', '.join(v)}" for key, v in picks.items()))


def reanalyse(path: str) -> int:
    """Recompute the tables from the per-episode accuracies a run of this script stored (no training)."""
    from croma.val_choice import grid_name

    result = json.loads(Path(path).read_text())
    scale = 100.0 if result.get("per_episode_unit") == "percent" else 1.0
    runs = []
    for r in result["runs"]:
        acc = {int(k): {n: torch.tensor(v, dtype=torch.float64) / scale for n, v in a.items()}
               for k, a in r["per_episode"].items()}
        names = next(iter(acc.values()))
        grid = {}
        for n in names:
            head, steps, lr, mode = n.split("/")
            grid[n] = {"head_init": head, "finetune_steps": int(steps), "finetune_lr": float(lr), "finetune": mode}
            assert grid_name(grid[n]) == n
        r["per_episode"] = {str(k): {n: [_pct(x) for x in v.tolist()] for n, v in a.items()} for k, a in acc.items()}
        runs.append({"method": r["method"], "seed": r["seed"], "grid": grid, "acc": acc})
    report(result, runs, int(result["episodes"]["choose"]), path)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="croma,align-classify,pretrain")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--episodes", type=int, default=200, help="meta-val episodes, split in two halves")
    ap.add_argument("--budget-steps", type=int, default=None, help="smoke tests only (default: the preset's)")
    ap.add_argument("--out", default=str(ROOT / "experiments/results/val_choice_study.json"))
    ap.add_argument("--reanalyse", metavar="JSON", help="recompute the tables of a stored output (no training)")
    args = ap.parse_args(argv)
    if args.reanalyse:
        return reanalyse(args.reanalyse)
    torch.set_num_threads(1)
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    half = args.episodes // 2
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    from croma.baselines import get_method

    bench, ctxs = contexts(methods, seeds, args.budget_steps)
    runs: list[dict] = []
    current: dict = {}

    def score_all(ctx, model, params, inputs=None):
        """Instead of select_eval: every candidate on 2 x half meta-val episodes, per k."""
        t = time.perf_counter()
        base = meta_val_config(replace(ctx, knobs={**ctx.knobs, "val_episodes": 2 * half}))
        grid = candidate_grid(ctx, params, base)
        z_cache: dict = {}
        acc = {int(k): candidate_accuracies(ctx, model, params, inputs, int(k), 0, 2 * half, base=base, z_cache=z_cache)
               for k in base.shots}
        runs.append({**current, "grid": grid, "acc": acc, "score_seconds": time.perf_counter() - t})
        choice = {}
        for k, a in acc.items():  # what the benchmark's "best" rule would keep (first half)
            name = choose("best", {n: v[:half] for n, v in a.items()}, grid)
            choice[k] = {**grid[name], "meta_val": 100.0 * float(a[name][:half].mean())}
        return choice, {}

    common.select_eval = score_all  # finish() looks select_eval up in common
    for name, seed, ctx in ctxs:
        current.clear()
        current.update(method=name, seed=seed)
        t = time.perf_counter()
        get_method(name).fn(ctx)
        print(f"[{name}] seed {seed}: {time.perf_counter() - t:.0f} s (training + scoring "
              f"{runs[-1]['score_seconds']:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    result = {
        "command": "OMP_NUM_THREADS=1 python experiments/tools/val_choice_study.py " + " ".join(argv or sys.argv[1:]),
        "benchmark": "udhr-speech", "preset": "quick", "methods": methods, "seeds": seeds,
        "episodes": {"choose": half, "evaluate": half, "split": "meta_val"},
        "wall_s": round(wall, 1), "threads": 1, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "meta_val_classes": len(bench.splits["meta_val"]),
        "runs": [{"method": r["method"], "seed": r["seed"], "score_seconds": round(r["score_seconds"], 1),
                  "per_episode": {str(k): {n: [_pct(x) for x in v.tolist()] for n, v in a.items()}
                                  for k, a in r["acc"].items()}} for r in runs],
    }
    report(result, runs, half, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
