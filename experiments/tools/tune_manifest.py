"""Meta-val design checks on a JSONL manifest (``tune_methods.py --space`` for ``croma benchmark manifest``).

    python experiments/tools/tune_manifest.py --manifest /tmp/emoji/manifest.jsonl --source image \\
        --target text --backbone image=efficientnet-lite0 --cache-dir /tmp/emoji_cache --shots 1 5 \\
        --space '{"croma": {"loss_hp": [{"weights": "frozen_source"}, {"weights": "encoder"}]}}'

Same scoring as ``tune_methods.py``: each trial trains the method under the preset's step budget
(``--budget-steps`` overrides it, for every trial alike) with the preset's tuned ``method_hp``
updated by the trial's values, and scores it as ``croma benchmark`` selects: per k the best
meta-val accuracy over the preset's meta-test fine-tuning grid (prototype head / nearest centroid
with 0 steps, or fine-tuning), averaged over k. Meta-test classes are never evaluated.
``--task-weights`` / ``--loss`` / ``--loss-hp`` set the run-wide training config as the benchmark's
flags do (a trial's ``loss`` / ``loss_hp`` still override them). Give each compared method the
same number of trials.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def _kv(items: list[str], flag: str) -> dict:
    from croma.config import parse_key_values  # the benchmark's own parsing of --loss-hp / --task-weights

    return parse_key_values(items, flag) if items else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--backbone", action="append", default=[], help="MOD=NAME (repeatable)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--ways", type=int, default=5)
    ap.add_argument("--budget-steps", type=int, default=None)
    ap.add_argument("--loss", default=None)
    ap.add_argument("--loss-hp", action="append", default=[])
    ap.add_argument("--task-weights", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", required=True, help='JSON {method: {hp: [values]}}, e.g. \'{"croma": {"task_mix": [0.5, 0.75]}}\'')
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from croma.baselines import get_method
    from croma.baselines.common import MethodContext
    from croma.benchmark import PRESETS, BenchmarkConfig, _contexts, load_for_benchmark
    from croma.factory import bench_to

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tune_methods import trials

    backbones = dict(b.split("=", 1) for b in args.backbone)
    cfg = BenchmarkConfig(benchmark="manifest", manifest=args.manifest, source=args.source, target=args.target,
                          backbones=backbones, cache_dir=args.cache_dir, preset=args.preset, seed=args.seed,
                          shots=args.shots, ways=args.ways, loss=args.loss, loss_hp=_kv(args.loss_hp, "--loss-hp"),
                          task_weights={k: float(v) for k, v in _kv(args.task_weights, "--task-weights").items()} or None,
                          progress=False, device="cpu", out=None)
    cfg.validate()
    bench = bench_to(load_for_benchmark(cfg), "cpu")
    preset = PRESETS[args.preset]
    steps = int(args.budget_steps or preset["budget_steps"])
    train, ev, _ = _contexts(cfg, bench, preset)
    train = replace(train, device="cpu")
    spaces = json.loads(args.space)
    # every meta-val selection score a trial computes (start, then each check), in order
    import croma.baselines.common as common
    import croma.baselines.ordinary as ordinary
    import croma.baselines.reptile_runs as reptile_runs

    trace: list[float] = []

    def traced(*a, **k):
        score = common.meta_val_score(*a, **k)
        trace.append(round(score, 2))
        return score

    for mod in (reptile_runs, ordinary):
        if hasattr(mod, "meta_val_score"):
            mod.meta_val_score = traced
    report: dict = {"command": "python experiments/tools/tune_manifest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "budget_steps": steps, "split": "meta_val",
                    "score": "mean over k of the best meta-val accuracy over the fine-tuning grid",
                    "methods": {}, "chosen": {}}
    for name, space in spaces.items():
        rows = []
        for hp in trials(space, check=False):
            base_hp = dict(preset.get("method_hp", {}).get(name, {}))
            ctx = MethodContext(bench=bench, train=train, eval=ev, budget_steps=steps,
                                knobs=dict(preset["knobs"]), hp={**base_hp, **hp})
            t0 = time.perf_counter()
            trace.clear()
            out = get_method(name).fn(ctx)
            val = {int(k): c["meta_val"] for k, c in out.eval_choice.items()}
            chosen = {int(k): f"{c['head_init']}/{c['finetune_steps']}/{c['finetune']}" for k, c in out.eval_choice.items()}
            rows.append({"hp": hp, "meta_val": val, "score": sum(val.values()) / len(val), "eval_choice": chosen, "val_trace": list(trace),
                         "notes": {k: v for k, v in out.notes.items() if isinstance(v, (int, float, str))},
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps({"method": name, **rows[-1]}), flush=True)
        best = max(rows, key=lambda r: r["score"])
        report["methods"][name] = rows
        report["chosen"][name] = best["hp"]
    print(json.dumps({"chosen": report["chosen"]}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
