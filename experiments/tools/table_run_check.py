"""Does a table's croma row, trained as a run folder, give the table's numbers?

Trains ``croma train BENCH --config RESULTS.json`` (the table's croma settings, its meta-val
selection of ``best.pt`` and of the fine-tuning per k), then ``croma evaluate`` on the table's
meta-test episodes (its ``config.eval`` seed, tasks and repeats), and writes per k the run's
accuracy beside the table's croma accuracy for the first training seed::

    python experiments/tools/table_run_check.py --bench udhr-speech \\
        --results experiments/results/main_quick/results.json --out experiments/results/table_run_udhr_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    table = json.loads(Path(a.results).read_text())
    ev = table["config"]["eval"]
    seed0 = table["config"]["methods"]["croma"]["seeds"][0]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    croma = [sys.executable, "-m", "croma"]
    with tempfile.TemporaryDirectory(prefix="table-run-") as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        train = subprocess.run([*croma, "train", a.bench, "--config", a.results, "--checkpoint-dir", str(run)],
                               env=env, capture_output=True, text=True, check=True)
        t1 = time.perf_counter()
        out = subprocess.run([*croma, "evaluate", str(run), "--seed", str(ev["seed"]), "--repeats", str(ev["repeats"]),
                              "--eval-tasks", str(ev["tasks"]), "--queries", str(ev["queries"]), "--shots",
                              *map(str, ev["shots"]), "--json"], env=env, capture_output=True, text=True, check=True)
        t2 = time.perf_counter()
    res = json.loads(out.stdout[out.stdout.index("{"):])
    rows = []
    for r in res["rows"]:
        cell = next(x for x in table["rows"] if x["method"] == "croma" and x["shots"] == r["shots"])
        rows.append({"shots": r["shots"], "run": r["accuracy_mean"], "run_ci95": r["accuracy_ci95"],
                     "run_setting": r.get("setting"), "table_seed0": cell["accuracy_per_seed"][0],
                     "table_seed0_setting": seed0["eval_choice_meta_val"][str(r["shots"])],
                     "difference": r["accuracy_mean"] - cell["accuracy_per_seed"][0]})
    doc = {"command": " ".join(["python", "experiments/tools/table_run_check.py", "--bench", a.bench, "--results",
                                a.results, "--out", a.out]),
           "results": a.results, "train_seconds": round(t1 - t0, 1), "evaluate_seconds": round(t2 - t1, 1),
           "train_stdout": train.stdout.replace(str(run), "RUN").strip().splitlines(),
           "best_iteration_table_seed0": seed0["notes"].get("best_iteration"),
           "rows": rows, "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        print(f"k={r['shots']}: run {r['run']:.2f} ({r['run_setting']}), table seed 0 {r['table_seed0']:.2f}, "
              f"difference {r['difference']:+.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
