"""Equal tuning: every trained method's own hyper-parameters, chosen on **meta-val**, same effort.

    python experiments/tools/tune_methods.py --preset quick --out experiments/results/tuning_quick.json

Each method gets the same number of trials (``TRIALS``: a 2 x 2 grid, or 4 values of its one
knob) over the settings that matter for it: learning rates, the task mix, the meta step size,
the alignment weight, the confusion weight. A trial trains the method under the preset's budget
of optimiser steps and scores it as ``croma benchmark`` selects: for each k the best meta-val
accuracy over the preset's meta-test fine-tuning grid (prototype head / nearest centroid with 0
steps, or fine-tuning), averaged over k. Meta-test classes are never evaluated. The output JSON
holds every trial (with the meta-val choice per k, the selection score before training and at
each check, ``val_trace``, and the method's notes), the chosen values and this command; the chosen
values go into ``PRESETS[preset]["method_hp"]`` in ``croma/benchmark_config.py``. Runs are a
function of the seed (step budgets), so rerunning prints the same scores.

Design checks (``--space``) replace the grid, need not have ``TRIALS`` points, and start each trial
from the preset's tuned ``method_hp`` (then ``--method-hp``) updated by the trial's values, e.g.
the objective: ``--methods croma --space '{"croma": {"loss": ["nce", "clip", "cwcl"]}}'``.

A JSONL manifest (``croma benchmark manifest``) and the run-wide settings take ``croma
benchmark``'s flags: ``--manifest M --source MOD --target MOD`` (``--benchmark`` defaults to
``manifest`` then), ``--backbone MOD=NAME`` (repeatable), ``--cache-dir``, ``--data-root``,
``--ways``, ``--budget-steps`` (every trial alike), ``--loss``, ``--loss-hp``, ``--task-weights``
(a trial's ``loss`` / ``loss_hp`` still override them) and ``--method-hp``:

    python experiments/tools/tune_methods.py --manifest /tmp/emoji/manifest.jsonl --source image \\
        --target text --backbone image=efficientnet-lite0 --cache-dir /tmp/emoji_cache --shots 1 5 \\
        --space '{"croma": {"loss_hp": [{"weights": "frozen_source"}, {"weights": "encoder"}]}}'

(This replaces ``tune_manifest.py``: its command lines run unchanged here, with ``--shots 1 5``
added where they gave no ``--shots``, its default.) Give each compared method the same number of
trials.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

TRIALS = 4

# {method: {hyper-parameter: [values]}}; each grid has exactly TRIALS points.
SPACES: dict[str, dict[str, list]] = {
    "croma": {"inner_lr": [1e-3, 3e-3], "task_mix": [0.5, 0.75]},
    "oracle": {"inner_lr": [1e-3, 3e-3], "meta_lr": [0.5, 1.0]},
    "unsup-meta": {"inner_lr": [1e-3, 3e-3], "meta_lr": [0.5, 1.0]},
    "align-classify": {"ordinary_lr": [1e-3, 3e-3], "align_weight": [0.5, 1.0]},
    "align-meta-classify": {"ordinary_lr": [1e-3, 3e-3], "inner_lr": [1e-3, 3e-3]},
    "shared": {"ordinary_lr": [3e-4, 1e-3, 3e-3, 1e-2]},
    "shared-align": {"ordinary_lr": [1e-3, 3e-3], "align_weight": [0.5, 1.0]},
    "shared-confusion": {"ordinary_lr": [1e-3, 3e-3], "confusion_weight": [0.01, 0.1]},
    "shared-target-labels": {"ordinary_lr": [3e-4, 1e-3, 3e-3, 1e-2]},
}


def trials(space: dict[str, list], check: bool = True) -> list[dict]:
    keys = sorted(space)
    out = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if check and len(out) != TRIALS:
        raise SystemExit(f"every method must get {TRIALS} trials (got {len(out)} for {space})")
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default=None, help="data set (default: manifest with --manifest, else udhr-speech)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method in the space that applies)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the trials and choices to this JSON file")
    ap.add_argument("--space", default=None,
                    help='JSON {method: {hp: [values]}} replacing SPACES for a design check (e.g. the objective: '
                    '\'{"croma": {"loss": ["nce", "clip", "cwcl"]}}\'); not the equal-effort tuning')
    # croma benchmark's flags (a manifest, front-ends, the run-wide training settings)
    ap.add_argument("--manifest", default=None, help="JSONL manifest (croma benchmark manifest)")
    ap.add_argument("--source", default=None)
    ap.add_argument("--target", default=None)
    ap.add_argument("--backbone", action="append", default=[], help="MOD=NAME (repeatable)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--budget-steps", type=int, default=None, help="optimiser steps per trial (default: the preset's)")
    ap.add_argument("--loss", default=None)
    ap.add_argument("--loss-hp", action="append", default=[])
    ap.add_argument("--task-weights", action="append", default=[])
    ap.add_argument("--method-hp", action="append", default=[],
                    help="as croma benchmark --method-hp: the starting settings of a --space trial (trial values win)")
    return ap


def _kv(items: list[str], flag: str) -> dict:
    from croma.config import parse_key_values  # the benchmark's own parsing of --loss-hp / --task-weights

    return parse_key_values(items, flag) if items else {}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)

    from croma.baselines import get_method, methods_for
    from croma.baselines.common import MethodContext
    from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, _method_hp, load_for_benchmark
    from croma.cli.config_flags import parse_method_hp
    from croma.factory import bench_to

    benchmark = args.benchmark or ("manifest" if args.manifest else "udhr-speech")
    try:
        cfg = BenchmarkConfig(
            benchmark=benchmark, preset=args.preset, seed=args.seed, shots=args.shots, ways=args.ways,
            manifest=args.manifest, source=args.source, target=args.target,
            backbones=dict(b.split("=", 1) for b in args.backbone), cache_dir=args.cache_dir, data_root=args.data_root,
            loss=args.loss, loss_hp=_kv(args.loss_hp, "--loss-hp"),
            task_weights={k: float(v) for k, v in _kv(args.task_weights, "--task-weights").items()} or None,
            method_hp=parse_method_hp(args.method_hp) or None, progress=False, device="cpu", out=None,
        )
        cfg.validate()
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    bench = bench_to(load_for_benchmark(cfg), "cpu")
    preset = PRESETS[args.preset]
    steps = int(args.budget_steps or preset["budget_steps"])
    train, ev, _ = _contexts(cfg, bench, preset)
    train = replace(train, device="cpu")
    applicable = methods_for(bench)
    spaces = json.loads(args.space) if args.space else SPACES
    names = args.methods.split(",") if args.methods else [m for m in spaces if m in applicable]
    missing = [m for m in names if m not in spaces]
    if missing:
        raise SystemExit(f"error: no search space for {', '.join(missing)} (spaces: {', '.join(spaces)})")
    report: dict = {"command": "python experiments/tools/tune_methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "benchmark": benchmark, "preset": args.preset, "seed": args.seed,
                    "budget_steps": steps, "trials_per_method": TRIALS, "split": "meta_val",
                    "score": "mean over k of the best meta-val accuracy over the fine-tuning grid",
                    "methods": {}, "chosen": {}}
    # every meta-val selection score a trial computes (start, then each check), in order
    import croma.baselines.common as common
    import croma.baselines.ordinary as ordinary
    import croma.baselines.reptile_runs as reptile_runs

    trace: list[float] = []

    def traced(*a, **k):
        score = common.meta_val_score(*a, **k)
        trace.append(round(score, 2))
        return score

    patched = [mod for mod in (reptile_runs, ordinary) if hasattr(mod, "meta_val_score")]
    originals = {mod: mod.meta_val_score for mod in patched}
    for mod in patched:
        mod.meta_val_score = traced
    try:
        for name in names:
            rows = []
            # the equal-effort grid is the whole tuned set; a design check starts from the tuned values
            base_hp = _method_hp(cfg, preset, name) if args.space else {}
            for hp in trials(spaces[name], check=args.space is None):
                ctx = MethodContext(bench=bench, train=train, eval=ev, budget_steps=steps,
                                    knobs=dict(preset["knobs"]), hp={**base_hp, **hp})
                t0 = time.perf_counter()
                trace.clear()
                out = get_method(name).fn(ctx)
                val = {int(k): c["meta_val"] for k, c in out.eval_choice.items()}
                chosen = {int(k): f"{c['head_init']}/{c['finetune_steps']}/{c['finetune']}" for k, c in out.eval_choice.items()}
                rows.append({"hp": hp, "meta_val": val, "score": sum(val.values()) / len(val), "eval_choice": chosen,
                             "val_trace": list(trace),
                             "notes": {k: v for k, v in out.notes.items() if isinstance(v, (int, float, str))},
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps({"method": name, **rows[-1]}), flush=True)
            best = max(rows, key=lambda r: r["score"])  # ties: the first trial
            report["methods"][name] = rows
            report["chosen"][name] = best["hp"]
    finally:
        for mod, fn in originals.items():
            mod.meta_val_score = fn
    print(json.dumps({"chosen": report["chosen"]}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
