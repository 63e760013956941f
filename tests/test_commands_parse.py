"""Every `croma ...` command line in README.md and the docs site (docs/**/*.md) parses with the real
parser and its settings pass the library's checks; the commands whose meaning a parse cannot check
run: the README's task-family mix (a reconstruction head, --reconstruction) for 2 iterations, and
the plugin example of docs/guide/extending.md end to end from a folder holding its module.

(tests/test_flag_surface.py covers README.md, experiments/README.md and experiments/run.sh.)"""

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_flag_surface import NEEDS_POSITIONAL, _croma_argv, _normalise

from croma.cli import build_parser, check_numbers

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, text, inline span in prose) of every code-block line (``\\`` continuations
    joined) and every inline code span of a Markdown text."""
    out: list[tuple[int, str, bool]] = []
    fence = None
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip()
            continue
        if fence is not None:
            if fence not in ("", "bash", "sh", "shell", "console", "text"):  # python, toml, json: not commands
                continue
            if out and not out[-1][2] and out[-1][1].endswith("\\"):
                out[-1] = (out[-1][0], out[-1][1].rstrip("\\") + " " + stripped, False)
            else:
                out.append((n, stripped, False))
        else:
            out.extend((n, span, True) for span in re.findall(r"`([^`]+)`", line))
    return out


def documented_commands(docs=DOCS, root=ROOT) -> list[tuple[str, str, list[str], bool]]:
    """(where, the line as written, argv after ``croma``, in prose) for every croma command line in ``docs``."""
    found = []
    for doc in docs:
        where_doc = doc.relative_to(root).as_posix()
        for n, line, prose in _blocks(doc.read_text(encoding="utf-8")):
            for part in re.split(r"\s(?:\||&&|;)\s(?=(?:[A-Z_]+=\S*\s+)*croma\b)", line):
                if not re.search(r"(^|\s|-m\s)croma\s+[a-z-]", part):
                    continue
                if "CROMA_PLUGINS=" in part:  # needs the user's module: test_plugin_example_runs_as_documented
                    continue
                if re.search(r"\.\.\.|…", part):  # an elision in prose ("croma train ... --flag")
                    continue
                try:
                    argv = _croma_argv(_normalise(part))
                except ValueError:  # unbalanced quotes: prose, not a command
                    continue
                if not argv:
                    continue
                if prose and argv[0] in NEEDS_POSITIONAL and (len(argv) < 2 or argv[1].startswith("-")):
                    continue
                found.append((f"{where_doc}:{n}", part, argv, prose))
    return found


def test_every_command_in_readme_and_docs_parses_and_checks(tmp_path, monkeypatch):
    from croma.cli.train import config_from_args

    monkeypatch.chdir(tmp_path)  # --config FILE and relative paths: nothing of the checkout is read or written
    parser = build_parser()
    commands = documented_commands()
    docs_commands = [c for c in commands if c[0].startswith("docs/")]
    assert len(docs_commands) >= 30, len(docs_commands)
    subs = {argv[0] for _, _, argv, _ in docs_commands}
    assert {"train", "benchmark", "evaluate", "data", "cache", "bench", "losses", "predict", "embed"} <= subs, subs
    failures = []
    for where, line, argv, prose in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = parser.parse_args(argv)
        except SystemExit as exc:
            if prose and "required" in err.getvalue():  # a mention in a sentence ("`croma predict`")
                continue
            failures.append(f"{where}: `{line}` does not parse (exit {exc.code}): {err.getvalue().strip()}")
            continue
        try:
            check_numbers(parser, args)
            if argv[0] == "train" and not prose and not getattr(args, "config", None):  # settings as the run builds them
                cfg = config_from_args(args)
                weights = cfg.task_weights or {}
                if weights.get("target_recon", 0) > 0 and not cfg.reconstruction:
                    raise ValueError("target_recon needs a reconstruction head: add --reconstruction")
        except ValueError as exc:
            failures.append(f"{where}: `{line}`: {exc}")
    assert not failures, "\n".join(failures)


def test_extraction_finds_blocks_continuations_and_prose(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("Run `croma losses` or `croma train --tensorboard`.\n\n```bash\ncroma train synthetic \\\n"
                   "    --iterations 2 --checkpoint-dir runs/x  # a comment\n```\n\n```python\ncroma.train(cfg)\n```\n")
    got = [(w, argv) for w, _, argv, _ in documented_commands([doc], tmp_path)]
    assert got == [("x.md:1", ["losses"]), ("x.md:4", ["train", "synthetic", "--iterations", "2", "--checkpoint-dir",
                                                        "runs/x"])]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_readme_task_weights_command_runs_with_reconstruction(tmp_path, capsys):
    """The documented --task-weights example (target_recon needs a reconstruction head: --reconstruction)
    trains 2 iterations; without the flag, one line names it."""
    import torch

    from croma.cli import main

    text = (ROOT / "README.md").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md"))
    assert "target_recon=0.25" in text
    torch.set_num_threads(1)
    tiny = ["--quiet", "--device", "cpu", "--ways", "3", "--shots", "2", "--queries", "2", "--meta-batch", "4",
            "--inner-steps", "1", "--embed-dim", "8", "--hidden", "8", "--align-batch", "8", "--iterations", "2",
            "--eval-every", "0", "--task-weights", "align=0.5,source_cls=0.25,target_recon=0.25"]
    assert main(["train", "synthetic", *tiny, "--checkpoint-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reconstruction" in err, err
    assert main(["train", "synthetic", *tiny, "--reconstruction", "--checkpoint-dir", str(tmp_path / "b")]) == 0
    cfg = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["config"]
    assert cfg["model"]["reconstruction"] is True and cfg["outer"]["task_weights"]["target_recon"] == 0.25


def test_documented_target_recon_weights_come_with_reconstruction():
    """Every `--task-weights ...target_recon=W` written in README.md or the docs carries --reconstruction."""
    for doc in DOCS:
        for n, line, _ in _blocks(doc.read_text(encoding="utf-8")):
            if re.search(r"--task-weights\s+\S*target_recon=", line):
                assert "--reconstruction" in line, f"{doc.relative_to(ROOT)}:{n}: `{line}` needs --reconstruction"


def _plugin_example() -> tuple[dict[str, str], list[str]]:
    """docs/guide/extending.md's plugin: {relative path: text} of its Python files, and its shell lines."""
    text = (ROOT / "docs" / "guide" / "extending.md").read_text(encoding="utf-8")
    files, lines = {}, []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S):
        first = body.splitlines()[0]
        if lang == "python" and first.startswith("# mylab/"):
            files[first[2:].strip()] = body
        elif lang == "bash":
            lines += [ln for ln in body.splitlines() if "CROMA_PLUGINS=" in ln]
    return files, lines


def test_plugin_example_runs_as_documented(tmp_path):
    """The plugin of docs/guide/extending.md, copied as written into a fresh folder, runs with the
    shell lines written beside it (the training line cut to 2 iterations on the synthetic data)."""
    files, lines = _plugin_example()
    assert "mylab/objectives.py" in files and len(lines) >= 2, (files, lines)
    for rel, body in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(body)
    (tmp_path / "mylab" / "__init__.py").touch()  # "with an empty __init__.py"
    croma_cmd = [str(Path(sys.executable).with_name("croma"))]
    if not Path(croma_cmd[0]).exists():
        croma_cmd = [sys.executable, "-m", "croma"]
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CROMA_PLUGINS")}
    base["OMP_NUM_THREADS"] = "1"
    for line in lines:
        toks = shlex.split(line)
        env = dict(base)
        while toks and re.fullmatch(r"[A-Z_]+=.*", toks[0]):
            k, v = toks.pop(0).split("=", 1)
            env[k] = v
        assert toks[0] == "croma", line
        argv = toks[1:]
        if argv[0] == "train":
            argv[1] = "synthetic"
            argv += ["--iterations", "2", "--eval-every", "0", "--quiet", "--ways", "3", "--shots", "2", "--queries", "2",
                     "--meta-batch", "2", "--inner-steps", "1", "--embed-dim", "8", "--hidden", "8", "--align-batch", "8"]
            argv[argv.index("--checkpoint-dir") + 1] = str(tmp_path / "run")
        proc = _run(croma_cmd + argv, tmp_path, env)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        if argv[0] == "losses":
            assert "my-cos" in proc.stdout
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.mark.parametrize("doc", ["README.md", "docs/guide/extending.md"])
def test_documented_plugin_lines_put_the_module_on_the_path(doc):
    """A `CROMA_PLUGINS=mylab...` line in the docs works only where `mylab` is importable: the line
    sets PYTHONPATH (or the text says how the module is installed, an entry point)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    for n, line, _ in _blocks(text):
        if re.search(r"CROMA_PLUGINS=mylab\S*\s+croma\b", line):
            assert "PYTHONPATH=" in line, f"{doc}:{n}: `{line}` needs PYTHONPATH=. (mylab is not installed)"
