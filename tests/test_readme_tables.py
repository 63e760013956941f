"""experiments/tools/readme_tables.py: the README's result tables regenerated / checked from files."""

import json
from pathlib import Path

import pytest
from conftest import load_tool

from croma.report import (
    EPISODES_KEY,
    compare_all,
    episode_lines,
    format_table,
    markdown_comparisons,
    row_statistics,
    write_results,
)


def _tool():
    return load_tool("readme_tables")


def test_the_readme_tables_match_their_results_files(capsys):
    """The check CI runs: every marked README table equals what its results file renders."""
    assert _tool().main(["--check"]) == 0, capsys.readouterr().err


def _results_dir(path: Path) -> Path:
    """A benchmark folder (results.json + episodes.csv) made from hand-written per-episode numbers."""
    acc = {("pretrain", 1): [[40.0, 60.0, 80.0], [20.0, 60.0, 60.0]], ("croma", 1): [[60.0, 80.0, 100.0], [60.0, 80.0, 80.0]]}
    hashes = ["a" * 16, "b" * 16, "c" * 16]
    rows, lines = [], []
    for (m, k), per_seed in acc.items():
        rows.append({"method": m, "shots": k, "accuracy_std": 0.0, "repeats": 1, "target_samples": 0,
                     "target_labels": 0, **row_statistics(per_seed)})
        lines += episode_lines(m, k, [0, 1], per_seed, hashes)
    result = {"benchmark": "synthetic", "ways": 5, "loss": "cwcl", "label_noise": 0.0, "preset": "quick", "seed": 0,
              "train_seeds": 2, "interval": "two-level bootstrap", "rows": rows,
              "comparisons": compare_all(acc, ["pretrain", "croma"], [1]), EPISODES_KEY: lines}
    write_results(result, path)
    return path


def test_write_then_check_and_a_stale_table_fails(tmp_path, capsys):
    tool = _tool()
    d = _results_dir(tmp_path / "experiments" / "results" / "main")
    sweep = {"runs": [json.loads((d / "results.json").read_text()), {**json.loads((d / "results.json").read_text()),
                                                                    "label_noise": 0.2}]}
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    readme = tmp_path / "README.md"
    readme.write_text("# r\n\nbefore\n<!-- table: experiments/results/main/results.json table comparisons -->\nold\n"
                      "<!-- /table -->\nbetween\n<!-- table: sweep.json noise -->\n<!-- /table -->\nafter\n")
    args = ["--readme", str(readme), "--root", str(tmp_path)]
    assert tool.main(["--check", *args]) == 1
    assert "2 table(s) differ" in capsys.readouterr().err
    assert tool.main(["--write", *args]) == 0
    text = readme.read_text()
    saved = json.loads((d / "results.json").read_text())
    assert "```text\n" + format_table(saved) + "\n```\n\n" + markdown_comparisons(saved) + "\n<!-- /table -->" in text
    assert "| croma − | 1-shot |" in text and "| croma | 1 | 76.7 ± " in text and "| noise 0 | 0.2 |" in text
    assert text.startswith("# r\n\nbefore\n") and text.endswith("\nafter\n")
    assert tool.main(["--check", *args]) == 0
    # a README number edited by hand no longer matches its file
    readme.write_text(text.replace("76.7", "77.7", 1))
    assert tool.main(["--check", *args]) == 1
    # a results.json whose numbers differ from the episodes.csv beside it is an error
    (d / "results.json").write_text(json.dumps({**saved, "comparisons": []}))
    assert tool.main(["--check", *args]) == 2
    assert "differ from episodes.csv" in capsys.readouterr().err


def test_no_markers_missing_file_and_unknown_part(tmp_path, capsys):
    tool = _tool()
    readme = tmp_path / "README.md"
    readme.write_text("# nothing marked\n")
    assert tool.main(["--check", "--readme", str(readme), "--root", str(tmp_path)]) == 0
    assert "no <!-- table: FILE --> markers" in capsys.readouterr().out
    readme.write_text("<!-- table: nope.json -->\n<!-- /table -->\n")
    assert tool.main(["--check", "--readme", str(readme), "--root", str(tmp_path)]) == 2
    assert "nope.json: not found" in capsys.readouterr().err
    _results_dir(tmp_path / "r")
    readme.write_text("<!-- table: r/results.json tabel -->\n<!-- /table -->\n")
    assert tool.main(["--write", "--readme", str(readme), "--root", str(tmp_path)]) == 2
    assert "unknown part(s) tabel" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--check", "--write"]])
def test_one_mode_is_required(argv):
    with pytest.raises(SystemExit):
        _tool().main(argv)


def test_two_runs_of_one_command_compare_cell_by_cell(tmp_path):
    """compare_machines.py on two folders: shifts, marks that flip, and the 'machines' table part."""
    a = _results_dir(tmp_path / "a")
    b = _results_dir(tmp_path / "b")
    res = json.loads((b / "results.json").read_text())
    lines = (b / "episodes.csv").read_text().splitlines()
    cm = load_tool("compare_machines")
    same = cm.compare(a, b, "A", "B")
    assert same["summary"]["max_abs_row_diff"] == 0 and same["summary"]["marks_that_flip"] == []
    assert all(v["equal_fraction"] == 1.0 for v in same["episode_agreement"].values())
    # B: one row moved by 1 point and one comparison mark flipped (as on another CPU)
    res["rows"][0]["accuracy_mean"] += 1.0
    c = res["comparisons"][0]
    c["ci95_low"], c["ci95_high"] = (-1.0, -0.5) if c["ci95_low"] > 0 or c["ci95_high"] > 0 else (0.5, 1.0)
    (b / "results.json").write_text(json.dumps(res))
    (b / "episodes.csv").write_text("\n".join(lines) + "\n")
    moved = cm.compare(a, b, "A", "B")
    assert moved["summary"]["max_abs_row_diff"] == pytest.approx(1.0)
    assert len(moved["summary"]["marks_that_flip"]) == 1
    (tmp_path / "cmp.json").write_text(json.dumps(moved))
    text = _tool().render("cmp.json", ["machines"], root=tmp_path)
    assert "| method | k | A | B | difference |" in text and "| yes |" in text
