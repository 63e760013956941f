"""Hostile command lines: every numeric flag of every subcommand is bounded (issue causes 4, 7, 8).

The property: given a bad value (non-finite, beyond the stated maximum, below the minimum, beyond
64 bits) for any ``int`` / ``float`` flag, ``croma`` exits 2 with exactly one line ``error: ...``
naming that flag, before doing any work. Output folders that are files or unwritable are refused
before any work too, with one line naming the flag and path.
"""

from __future__ import annotations

import argparse
import os

import pytest

from croma.cli import NUMERIC_BOUNDS, build_parser, main, numeric_actions

HUGE = 10**30  # beyond 64 bits and beyond every stated maximum


def _sub(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _base_argv(path: tuple[str, ...], tmp) -> list[str]:
    """The subcommand with its required positionals and options filled in (a cheap, valid-looking call)."""
    sub = _sub(build_parser(), path)
    argv = list(path)
    for a in sub._actions:
        if isinstance(a, argparse._SubParsersAction) or a.option_strings:
            continue
        if a.choices:
            choices = list(a.choices)
            argv.append(next((c for c in ("synthetic", "manifest") if c in choices), choices[0]))
        else:
            argv.append(str(tmp / "nothing-here"))
    for a in sub._actions:
        if a.option_strings and a.required:
            argv += [a.option_strings[-1], str(tmp / "req")]
    return argv


def _bad_values(action: argparse.Action) -> list[str]:
    bad = [str(HUGE), str(-HUGE)]
    if action.type is float:
        bad = ["nan", "inf", "-inf", "1e400"]
    if action.dest in NUMERIC_BOUNDS:
        lo, lo_in, hi, hi_in = NUMERIC_BOUNDS[action.dest]
        step = 1 if action.type is int else 0.0
        if action.type is int:
            bad += [str(int(lo) - 1), str(int(hi) + 1)]
        else:
            bad += [repr(lo - 1.0 if lo_in else lo - step), repr(hi * 2 + 1.0 if hi_in else hi)]
    return bad


CASES = sorted({(path, max(a.option_strings, key=len)) for path, a in numeric_actions(build_parser())})


def test_every_subcommand_has_numeric_flags_covered():
    paths = {p for p, _ in CASES}
    assert ("train",) in paths and ("evaluate",) in paths and ("benchmark",) in paths
    assert ("data", "prepare") in paths and ("bench", "meta") in paths
    assert len(CASES) >= 40


@pytest.mark.parametrize("path, flag", CASES, ids=[" ".join(p) + " " + f for p, f in CASES])
def test_bad_numeric_flag_exits_2_with_one_line_naming_it(run_cli, path, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CROMA_CACHE", str(tmp_path / "cache"))
    action = next(a for p, a in numeric_actions(build_parser()) if p == path and flag in a.option_strings)
    base = _base_argv(path, tmp_path)
    for bad in _bad_values(action):
        rc, out, err = run_cli(base + [flag, bad])
        assert rc == 2, (path, flag, bad, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and flag in lines[0], (flag, bad, err)
        assert "Traceback" not in err
    assert not (tmp_path / "req").exists()  # refused before any work: no output folder made


def test_help_states_ranges(capsys):
    parser = build_parser()
    for path, action in numeric_actions(parser):
        if action.dest in NUMERIC_BOUNDS:
            assert "range " in action.help and action.help.rstrip().endswith(("]", ")")), (path, action.dest, action.help)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "range [1, 16384]" in out  # --hidden's maximum is stated


def test_finetune_lr_inf_names_its_own_flag(run_cli, tmp_path, capsys):
    rc, _, err = run_cli(["evaluate", str(tmp_path), "--finetune-lr", "inf"])
    assert rc == 2 and "--finetune-lr" in err and "inner" not in err


def test_budget_seconds_nan_and_inf_refused(run_cli, tmp_path, capsys):
    for bad in ("nan", "inf"):
        rc, _, err = run_cli(["benchmark", "synthetic", "--out", str(tmp_path / "o"), "--budget-seconds", bad])
        assert rc == 2 and "--budget-seconds" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_output_paths_checked_before_any_work(run_cli, tmp_path, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    rc, _, err = run_cli(["train", "synthetic", "--checkpoint-dir", str(afile), "--quiet"])
    assert rc == 2 and "--checkpoint-dir" in err and str(afile) in err and err.count("\n") == 1
    rc, _, err = run_cli(["benchmark", "synthetic", "--out", str(afile), "--quiet"])
    assert rc == 2 and "--out" in err and str(afile) in err and err.count("\n") == 1
    assert afile.read_text() == "x"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_checkpoint_dir_is_one_line(run_cli, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = run_cli(["train", "synthetic", "--checkpoint-dir", str(ro / "run"), "--quiet"])
    finally:
        ro.chmod(0o700)
    assert rc == 2 and "--checkpoint-dir" in err and err.count("\n") == 1


def test_os_errors_become_one_line_naming_the_path(run_cli, tmp_path, capsys, monkeypatch):
    """Any OSError reaching the CLI (read-only, full disk, ...) is one line naming the path, exit 2."""
    import croma.cli.losses as losses_cli

    def boom(args):
        raise OSError(28, "No space left on device", str(tmp_path / "full" / "x.pt"))

    monkeypatch.setattr(losses_cli, "run", boom)
    rc, _, err = run_cli(["losses"])
    assert rc == 2 and err == f"error: cannot write {tmp_path / 'full' / 'x.pt'}: No space left on device\n"
    with pytest.raises(OSError):
        main(["--debug", "losses"])
