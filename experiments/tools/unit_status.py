"""Where a long `croma benchmark --out OUT` stands: each (method, seed) run finished, in training, or
evaluating, read from the files `--resume` continues from (nothing is run).

    python experiments/tools/unit_status.py OUT [--out status.json]

Per run it reports, from `OUT/units/`:
- finished (`<m>-seed<S>.json`): training, meta-val choice and meta-test seconds (wall and CPU),
  and the meta-test accuracy per k;
- ordinary training in progress (`<m>-seed<S>.partial.pt`): the step, its phase's budget, the seconds
  so far, the meta-val score of the start and the best step with its score;
- a Reptile phase in progress (`<m>-seed<S>.reptile-<families>.run/`): the outer iteration reached
  (metrics.csv), the start's meta-val score and the best so far (last.pt);
- evaluation in progress (`<m>-seed<S>.stages.pt`): how many meta-val candidates and meta-test k
  are kept, with their seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _torch_load(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _pct(v) -> float | None:
    return None if v is None else round(float(v), 2)


def status(out: Path) -> dict:
    units = out / "units"
    if not units.is_dir():
        raise SystemExit(f"error: {units}: no such folder (is {out} a croma benchmark --out folder?)")
    runs: dict[str, dict] = {}
    for f in sorted(units.glob("*.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        facts = doc.get("facts", {})
        runs[f.stem] = {"state": "finished", "finished": doc.get("finished"),
                        "train_seconds": round(float(facts.get("train_seconds", 0.0)), 1),
                        "train_and_choice_seconds": round(float(facts.get("seconds", 0.0)), 1),
                        "meta_test_seconds": round(float(facts.get("eval_seconds", 0.0)), 1),
                        "cpu_seconds": facts.get("cpu_seconds"), "eval_cpu_seconds": facts.get("eval_cpu_seconds"),
                        "accuracy": {str(k): round(float(r["accuracy_mean"]), 2)
                                     for k, r in sorted(facts.get("evals", {}).items(), key=lambda kv: int(kv[0]))}}
    for f in sorted(units.glob("*.partial.pt")):
        st = _torch_load(f)["state"]
        best = st.get("best", {})
        runs.setdefault(f.name.removesuffix(".partial.pt"), {"state": "training"})["ordinary"] = {
            "step": int(st["step"]), "budget": st["phase"][0], "seconds": round(float(st["seconds"]), 1),
            "start_val": _pct(best.get("start_val")), "best_step": best.get("step"), "best_val": _pct(best.get("val"))}
    for d in sorted(units.glob("*.run")):
        name, _, tag = d.name.removesuffix(".run").rpartition(".")
        entry = runs.setdefault(name, {"state": "training"})
        start = json.loads((d / "unit.json").read_text(encoding="utf-8")) if (d / "unit.json").is_file() else {}
        info: dict = {"start_val": _pct(start.get("start_val"))}
        if (d / "last.pt").is_file():
            ck = _torch_load(d / "last.pt")
            info.update(iteration=int(ck["iteration"]), best_iteration=ck.get("best_iteration"),
                        best_val=_pct(ck.get("best_val")))
        entry[tag] = info
    for f in sorted(units.glob("*.stages.pt")):
        stages = _torch_load(f).get("stages", {})
        entry = runs.setdefault(f.name.removesuffix(".stages.pt"), {})
        entry["state"] = "evaluating"
        entry["kept"] = {s: {"items": len(v), "seconds": round(sum(float(x["seconds"]) for x in v.values()), 1)}
                         for s, v in stages.items()}
    return {"out": str(out), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="also write the status as JSON here")
    args = ap.parse_args(argv)
    doc = status(args.folder)
    for name, r in doc["runs"].items():
        bits = [r.get("state", "?")]
        if "accuracy" in r:
            bits.append("accuracy " + ", ".join(f"{k}-shot {v}" for k, v in r["accuracy"].items()))
        if "ordinary" in r:
            o = r["ordinary"]
            bits.append(f"ordinary step {o['step']} of {o['budget']} (best step {o['best_step']}: {o['best_val']})")
        for tag, v in r.items():
            if tag.startswith("reptile-") and "iteration" in v:
                bits.append(f"{tag} iteration {v['iteration']} (best {v['best_iteration']}: {v['best_val']})")
        if "kept" in r:
            bits.append("kept " + ", ".join(f"{s} {v['items']}" for s, v in r["kept"].items()))
        print(f"{name}: " + "; ".join(bits))
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
