"""One flag surface: every command line written in the README and experiments/ parses with the real
parser, and `croma benchmark` accepts every data / backbone / encoder / weights flag `croma train`
accepts."""

import re
import shlex
from pathlib import Path

import pytest

from croma.cli import build_parser, check_numbers

ROOT = Path(__file__).resolve().parents[1]
# placeholders of synopsis lines -> a concrete value of the right kind
PLACEHOLDERS = {"NAME": "udhr-speech", "BENCH": "udhr-speech", "DIR": "runs/x", "PATH": "weights.pth", "R": "3",
                "T": "200", "N": "2", "S": "60", "RATE": "0.2", "M": "manifest.jsonl", "F": "manifest.jsonl",
                "MOD": "text", "MOD=NAME": "image=pixels", "TRAIN,VAL,TEST": "12,5,5", "a,b": "croma"}

FLAG_PLACEHOLDERS = {"--loss": "cwcl", "--seed": "0", "--train-seeds": "2"}
# subcommands whose first positional is required: an inline mention such as `croma train --tensorboard`
# in prose names a flag, it is not a command line
NEEDS_POSITIONAL = {"train", "benchmark", "evaluate"}


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError("no subcommands")


def _options(sub):
    return {s for a in sub._actions for s in a.option_strings}


def test_benchmark_accepts_every_frontend_flag_of_train():
    subs = _subcommands(build_parser())
    shared = {"--encoder", "--backbone", "--image-weights", "--text-model", "--audio-model", "--skip-bad",
              "--split-classes", "--embed-dim", "--hidden", "--data-root", "--cache-dir", "--manifest", "--source",
              "--target"}
    assert shared <= _options(subs["train"])
    assert shared <= _options(subs["benchmark"])
    for flag in shared:  # the same definition (type, default, nargs) in both
        a = next(x for x in subs["train"]._actions if flag in x.option_strings)
        b = next(x for x in subs["benchmark"]._actions if flag in x.option_strings)
        assert (a.type, a.default, a.nargs, a.const) == (b.type, b.default, b.nargs, b.const), flag


def _normalise(line: str) -> str:
    """A synopsis line -> one concrete command line (optional groups kept, first alternative)."""
    line = re.sub(r"\s{2,}(?:#.*|[a-z(].*)$", "", line.strip())  # trailing description / comment
    line = re.sub(r"\s+#.*$", "", line)
    line = re.sub(r"\[([^\[\]]*?)\s\|\s[^\[\]]*\]", r"[\1]", line)  # [A | B] -> [A]
    line = line.replace("[", "").replace("]", "")
    out: list[str] = []
    for tok in shlex.split(line):
        if out and out[-1] in FLAG_PLACEHOLDERS and tok.isupper():
            out.append(FLAG_PLACEHOLDERS[out[-1]])
            continue
        tok = PLACEHOLDERS.get(tok, tok)
        if "|" in tok:
            tok = tok.split("|")[0]
        out.append(PLACEHOLDERS.get(tok, tok))
    return shlex.join(out)


def _croma_argv(command: str) -> list[str] | None:
    """Tokens after ``croma`` / ``-m croma`` (env assignments and prompts dropped), or None."""
    command = re.sub(r"^\$\s+", "", command.strip())
    if "CROMA_PLUGINS=" in command:  # needs the user's own module (tests/test_config.py runs a plugin)
        return None
    command = re.sub(r"\b[A-Z_]+=<[^>]*>\s*", "", command)
    toks = shlex.split(command)
    for i, t in enumerate(toks):
        if t == "croma" and (i == 0 or toks[i - 1] == "-m" or re.fullmatch(r"[A-Z_]+=\S*", toks[i - 1] or "")):
            return toks[i + 1 :]
    return None


def _run_sh_commands() -> dict[str, list[str]]:
    """experiments/run.sh: NAME -> the croma command lines it runs (extra flags appended at "$@")."""
    text = (ROOT / "experiments" / "run.sh").read_text()
    out: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        m = re.match(r"\s*([a-z0-9-]+)\)\s*(.*)$", raw)
        if m:
            current, rest = m.group(1), m.group(2)
        else:
            rest = raw
        if current and '"$croma"' in rest:
            cmd = rest.split('"$croma"', 1)[1].split(";;")[0]
            cmd = (cmd.replace('"$out/$loss"', f"runs/experiments/{current}/cwcl").replace('"$out"', f"runs/experiments/{current}")
                   .replace('"$bench"', "udhr-speech").replace('"$loss"', "cwcl"))
            out.setdefault(current, []).append(cmd)
        if ";;" in raw:
            current = None
    return out


def _documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every croma command line in README.md, experiments/README.md and run.sh."""
    found: list[tuple[str, list[str]]] = []
    runsh = _run_sh_commands()
    assert set(runsh) >= {"yummly", "cifar-esc50", "wilderness", "objectives", "noise", "demo"}
    for name, cmds in runsh.items():
        for cmd in cmds:
            found.append((f"run.sh {name}", shlex.split(cmd.replace('"$@"', ""))))
    for doc in (ROOT / "README.md", ROOT / "experiments" / "README.md"):
        text = doc.read_text()
        lines = text.splitlines()
        in_block = False
        joined: list[tuple[int, str, bool]] = []  # (line number, text, inline span in prose)
        for n, line in enumerate(lines, start=1):
            if line.strip().startswith("```"):
                in_block = not in_block
                continue
            if in_block:
                if joined and (joined[-1][1].endswith("\\") or (line.startswith(" ") and line.strip().startswith("["))):
                    joined[-1] = (joined[-1][0], joined[-1][1].rstrip("\\") + " " + line.strip(), False)
                else:
                    joined.append((n, line, False))
            else:
                for span in re.findall(r"`([^`]+)`", line):
                    joined.append((n, span, True))
        for n, line, prose in joined:
            for part in re.split(r"\s\|\s(?=croma\b)", line):
                m = re.search(r"bash experiments/run\.sh ([a-z0-9-]+)(.*)$", part)
                if m:
                    extra = shlex.split(m.group(2))
                    for cmd in runsh[m.group(1)]:
                        found.append((f"{doc.name}:{n}", shlex.split(cmd.replace('"$@"', "")) + extra))
                    continue
                if not re.search(r"(^|\s|-m\s)croma\s+[a-z]", part):
                    continue
                argv = _croma_argv(_normalise(part))
                if not argv:
                    continue
                if prose and argv[0] in NEEDS_POSITIONAL and (len(argv) < 2 or argv[1].startswith("-")):
                    continue
                if prose and not any(a.startswith("-") for a in argv):  # `croma data inspect` in a sentence: a name
                    continue
                found.append((f"{doc.name}:{n}", argv))
    return found


def test_every_documented_command_parses():
    parser = build_parser()
    commands = _documented_commands()
    assert len(commands) >= 25
    subs = {argv[0] for _, argv in commands if argv}
    assert {"train", "benchmark", "evaluate", "data"} <= subs  # the others: docs/, tests/test_commands_parse.py
    for where, argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # pragma: no cover - the message is on stderr
            pytest.fail(f"{where}: `croma {shlex.join(argv)}` does not parse (exit {exc.code})")
        check_numbers(parser, args)


def test_issue_commands_parse():
    """The commands users were told to run (experiments/README, the backbone issue) parse."""
    parser = build_parser()
    for line in (
        "benchmark yummly --preset paper --image-weights resnet18-f37072fd.pth --device cuda",
        "benchmark manifest --manifest m.jsonl --source text --target image --backbone image=efficientnet-lite0",
        "benchmark wilderness --encoder audio=lstm --encoder text=cnn1d --skip-bad --text-model bert-dir",
        "train manifest --manifest m.jsonl --source image --target audio --backbone image=resnet18 "
        "--image-weights r.pth --backbone audio=hf --audio-model w2v --split-classes 12,5,5 --checkpoint-dir runs/x",
    ):
        parser.parse_args(shlex.split(line))
