"""The README's "Your own data" section runs as written: its ``croma`` commands (with smaller
budgets appended) and its first Python block, on a tiny caption -> photo data set built here
(15 classes x 6 items: the smallest the default 5-way must run on) and 3 new classes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from fixtures_layouts import write_jpeg

ROOT = Path(__file__).resolve().parents[1]

FAST = {  # appended per subcommand: budgets, never settings the README's reader would change
    "benchmark": ["--methods", "croma", "--budget-steps", "2", "--eval-tasks", "2", "--repeats", "1",
                  "--finetune-modes", "head", "--device", "cpu"],
    "train": ["--iterations", "2", "--meta-batch", "2", "--inner-steps", "1", "--eval-every", "1", "--eval-tasks", "2",
              "--embed-dim", "8", "--hidden", "8", "--device", "cpu", "--quiet"],
    "evaluate": ["--repeats", "1", "--eval-tasks", "2", "--device", "cpu"],
}


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Your own data", 1)[1].split("\n## ", 1)[0]


def _build(folder: Path) -> None:
    (folder / "mydata" / "photos").mkdir(parents=True)
    rows = []
    for c in range(15):
        for i in range(6):
            write_jpeg(folder / "mydata" / "photos" / f"c{c}_{i}.jpg", seed=c * 10 + i, size=(8, 6))
            rows.append({"id": f"c{c}_{i}", "label": f"bird{c}", "text": f"bird number {c} seen at dawn, take {i}",
                         "image": f"photos/c{c}_{i}.jpg"})
    (folder / "mydata" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    new = folder / "new"
    new.mkdir()
    sup, qry = [], []
    for c, name in enumerate(("egret", "crane", "stork")):
        for i in range(4):
            write_jpeg(new / f"{name}{i}.jpg", seed=500 + 10 * c + i, size=(8, 6))
            (sup if i < 2 else qry).append({"id": f"{name}{i}", "label": name, "image": f"{name}{i}.jpg"})
    (new / "support.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sup), encoding="utf-8")
    (new / "query.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qry), encoding="utf-8")
    for name, seed in (("a1", 1), ("a2", 2), ("b1", 3), ("b2", 4), ("q1", 5), ("q2", 6)):  # the Python block's files
        write_jpeg(new / f"{name}.jpg", seed=900 + seed, size=(8, 6))


@pytest.mark.slow
def test_readme_own_data_commands_run(tmp_path, monkeypatch, run_cli):
    from croma.benchmark_config import PRESETS

    quick = PRESETS["quick"]  # a tiny meta-val budget for the benchmark command (sizes do not depend on it)
    monkeypatch.setitem(quick, "knobs", {**quick["knobs"], "val_episodes": 2, "val_checks": 1, "finetune_grid": [0, 1]})
    monkeypatch.setitem(quick, "train", {**quick["train"], "eval_tasks": 2, "meta_batch": 2, "inner_steps": 1,
                                         "model": {"embed_dim": 8, "hidden": 8}})
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _build(tmp_path)
    section = _section()
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [shlex.split(line) for line in block.splitlines() if line.strip().startswith("croma ")]
    assert [c[1] for c in commands] == ["data", "benchmark", "train", "train", "evaluate", "predict", "embed"]
    outputs = {}
    for argv in commands:
        rc, out, err = run_cli(argv[1:] + FAST.get(argv[1], []))
        assert rc == 0, f"{' '.join(argv)}: {err}"
        outputs[argv[1]] = out + err
    assert "task sizes: meta-train 5-way" in outputs["benchmark"]
    assert "accuracy" in outputs["predict"] and "of 6 queries" in outputs["predict"]
    rows = [json.loads(x) for x in (tmp_path / "new" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["predicted"] for r in rows} <= {"egret", "crane", "stork"}
    assert (tmp_path / "new" / "embeddings.npz").is_file()
    assert (tmp_path / "runs" / "mydata-table" / "results.json").is_file()
    assert (tmp_path / "runs" / "mydata-croma" / "best.pt").is_file()  # the table's croma settings, as a run

    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "croma.load_model" in code and ".adapt(" in code and ".predict(" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README own data", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["labels"] and len(scope["labels"]) == 2 and set(scope["labels"]) <= {"egret", "crane"}
    assert tuple(scope["scores"].shape) == (2, 2)


@pytest.mark.parametrize("flag", ["--support", "--query"])
def test_readme_rows_are_manifest_rows(flag):
    """The row format the section documents is the manifest's (id, label, a modality key)."""
    section = _section()
    assert '{"id": "p1", "label": "heron", "text":' in section and flag in section
