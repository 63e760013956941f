"""`croma report RESULTS_DIR` rebuilds a benchmark's table and comparisons from its files alone."""

import csv
import errno
import json
import os

import pytest
import torch

from croma.benchmark_config import PRESETS
from croma.report import EPISODES_KEY, format_table, rebuild, write_results
from croma.stats import paired_two_level, two_level_interval

# a tiny benchmark: 2 training seeds, 2 methods, 1 and 3 shots, 2 repeats x 3 episodes
ARGV = ["benchmark", "synthetic", "--methods", "pretrain,croma", "--budget-steps", "40",
        "--repeats", "2", "--eval-tasks", "3", "--shots", "1", "3", "--ways", "3", "--train-seeds", "2",
        "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One benchmark run shared by the tests below: (folder, what croma benchmark printed)."""
    import contextlib
    import io

    from croma.cli import main

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench") / "out"
    mp = pytest.MonkeyPatch()
    # cheap meta-val choices and checks: a few episodes, one setting (the run's shape is what is tested)
    mp.setitem(PRESETS["quick"], "knobs", {**PRESETS["quick"]["knobs"], "val_episodes": 4, "val_checks": 1,
                                           "finetune_grid": [0], "finetune_mode_grid": ["all"]})
    mp.setitem(PRESETS["quick"], "train", {**PRESETS["quick"]["train"], "eval_tasks": 4, "finetune_steps": 2})
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = main(ARGV + ["--out", str(out)])
    finally:
        mp.undo()
    assert rc == 0
    return out, buf.getvalue()


def _episodes(out):
    with open(out / "episodes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # shares one tiny benchmark run (~5 s)
def test_report_prints_the_table_the_benchmark_printed(run_dir, run_cli):
    out, printed = run_dir
    rc, text, err = run_cli(["report", str(out)])
    assert rc == 0, err
    table = format_table(json.loads((out / "results.json").read_text()))
    assert table in printed  # what croma benchmark printed ...
    assert text.startswith(table + "\n")  # ... is what croma report prints from the files
    assert "croma −" in text and "pretrain" in text.split("croma −")[1]
    assert "equals results.json" in text
    rebuilt, diffs = rebuild(out)
    saved = json.loads((out / "results.json").read_text())
    assert diffs == [] and rebuilt["comparisons"] == saved["comparisons"]


@pytest.mark.slow  # shares one tiny benchmark run (~5 s)
def test_episode_file_pairs_methods_and_seeds_and_recomputes_by_hand(run_dir):
    out, _ = run_dir
    lines = _episodes(out)
    assert len(lines) == 2 * 2 * 2 * 6  # methods x shots x seeds x (2 repeats x 3 episodes)
    hashes = {}
    for ln in lines:  # one hash per (k, episode) for every method and seed
        assert hashes.setdefault((ln["shots"], ln["episode"]), ln["hash"]) == ln["hash"]
    assert len(set(hashes.values())) == len(hashes)  # distinct episodes have distinct digests
    saved = json.loads((out / "results.json").read_text())
    acc = {}
    for ln in lines:
        acc.setdefault((ln["method"], int(ln["shots"])), {}).setdefault(int(ln["seed"]), []).append(float(ln["accuracy"]))
    mat = lambda m, k: [acc[(m, k)][s] for s in sorted(acc[(m, k)])]  # noqa: E731
    for r in saved["rows"]:
        want = two_level_interval(mat(r["method"], r["shots"]))
        assert (r["accuracy_ci95_low"], r["accuracy_ci95_high"]) == (want["ci95_low"], want["ci95_high"])
        assert len(r["accuracy_per_seed"]) == 2 and r["train_seeds"] == 2
    for c in saved["comparisons"]:
        want = paired_two_level(mat("croma", c["shots"]), mat(c["baseline"], c["shots"]))
        assert (c["mean_diff"], c["ci95_low"], c["ci95_high"]) == (want["mean_diff"], want["ci95_low"], want["ci95_high"])
        assert c["seeds"] == 2 and len(c["mean_diff_per_seed"]) == 2
    assert "two-level bootstrap over 2 training seeds and 6 episodes" in saved["interval"]
    m = saved["machine"]
    assert m["cpu"] and m["torch"] == torch.__version__ and m["python"] and m["platform"] and m["torch_threads"] >= 1
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and isinstance(m["kernel_env"], dict)
    assert EPISODES_KEY not in saved


@pytest.mark.slow  # shares one tiny benchmark run (~5 s)
def test_report_names_a_changed_number_and_unpaired_episodes(run_dir, tmp_path, run_cli):
    out, _ = run_dir
    for name in ("results.json", "episodes.csv"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    lines = (tmp_path / "episodes.csv").read_text().splitlines()
    f = lines[1].split(",")
    f[-1] = "0.0" if float(f[-1]) > 50 else "100.0"  # one episode's accuracy changed
    (tmp_path / "episodes.csv").write_text("\n".join([lines[0], ",".join(f), *lines[2:]]) + "\n")
    rc, text, _ = run_cli(["report", str(tmp_path)])
    assert rc == 1 and "differ from results.json" in text and f"{f[0]} {f[1]}-shot accuracy_mean" in text
    f[4] = "0" * 16  # ... and a hash that does not match the other methods' episode
    (tmp_path / "episodes.csv").write_text("\n".join([lines[0], ",".join(f), *lines[2:]]) + "\n")
    rc, _, err = run_cli(["report", str(tmp_path)])
    assert rc == 2 and "not the same episodes" in err and len(err.strip().splitlines()) == 1
    os.remove(tmp_path / "episodes.csv")
    rc, _, err = run_cli(["report", str(tmp_path)])
    assert rc == 2 and "episodes.csv: not found" in err


def test_episode_file_is_written_with_the_results_as_one_set(tmp_path, monkeypatch):
    import croma.report

    result = {"rows": [{"method": "croma", "shots": 1, "accuracy_mean": 50.0, "accuracy_std": 1.0, "repeats": 1,
                        "target_samples": 0, "target_labels": 0}],
              EPISODES_KEY: [("croma", 1, 0, 0, "ab" * 8, 50.0)]}
    paths = write_results(result, tmp_path / "a")
    assert (tmp_path / "a" / "episodes.csv").read_text() == "method,shots,seed,episode,hash,accuracy\ncroma,1,0,0,abababababababab,50.0\n"
    assert EPISODES_KEY not in json.loads(paths["json"].read_text())

    def no_plot(result):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(croma.report, "plot_accuracy_vs_shots", no_plot)
    with pytest.raises(OSError):
        write_results(result, tmp_path / "b")
    assert not (tmp_path / "b").exists() or os.listdir(tmp_path / "b") == []
