"""An API that explains itself: TrainConfig's every setting is a typed keyword of its constructor
(help(), IDEs, type checkers) with a docstring entry naming its flag and default; every public
callable of ``croma`` documents each parameter and what it returns; docstring examples run."""

import argparse
import dataclasses
import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch

import croma
from croma.config import FLAT, MODEL_FLAT, SECTIONS, TrainConfig
from croma.model import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
ALIASES = ["backbone", "encoder"]  # the flags' names of backbones / encoders, accepted as keywords too

SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Attributes|Other Parameters):\s*$")
ENTRY = re.compile(r"^([\w*][\w*, ]*?)\s*(\([^)]*\))?:(\s|$)")


def doc_entries(doc: str | None) -> dict[str, str]:
    """``{name: entry text}`` of the Args / Attributes sections of a Google-style docstring
    (``a, b: text`` names both; ``**hp`` is ``hp``)."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    i = 0
    while i < len(lines):
        m = SECTION.match(lines[i])
        i += 1
        if not m:
            continue
        head, indent, current = len(m.group(1)), None, []
        while i < len(lines):
            line = lines[i]
            if line.strip():
                ind = len(line) - len(line.lstrip())
                if ind <= head:
                    break
                indent = ind if indent is None else indent
                e = ENTRY.match(line.strip()) if ind == indent else None
                if e:
                    current = [n.strip().lstrip("*") for n in e.group(1).split(",")]
                    for n in current:
                        out[n] = line.strip()[e.end():]
                else:
                    for n in current:
                        out[n] += " " + line.strip()
            i += 1
    return out


def _returns(doc: str | None) -> bool:
    return bool(re.search(r"^\s*(Returns|Yields):", inspect.cleandoc(doc or ""), flags=re.M))


def _undocumented(obj) -> tuple[list[str], bool]:
    """(parameters of a public function or class without a docstring entry, whether its Returns is missing)."""
    sig = inspect.signature(obj)
    if inspect.isclass(obj):
        have = {**doc_entries(obj.__doc__), **doc_entries(vars(obj)["__init__"].__doc__ if "__init__" in vars(obj) else None)}
        no_return = False
    else:
        have = doc_entries(obj.__doc__)
        no_return = sig.return_annotation not in (None, "None", inspect.Signature.empty) and not _returns(obj.__doc__)
    return [p.name for p in sig.parameters.values() if p.name not in have and p.name != "self"], no_return


def _default(cls, name):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _settings():
    """(flat name, its dataclass, field) for every TrainConfig setting."""
    return [(n, SECTIONS[s], f) for n, (s, f) in FLAT.items()] + [(n, ModelConfig, n) for n in MODEL_FLAT]


# ---------------------------------------------------------------- TrainConfig's keywords
def test_train_config_keywords_are_written_out_for_every_setting():
    """The constructor's keyword-only parameters, as written in the source (what type checkers and
    IDEs read), are exactly the flat settings (FLAT, MODEL_FLAT) plus the two flag aliases, each
    annotated with its field's type."""
    code = TrainConfig.__init__.__code__
    written = list(code.co_varnames[code.co_argcount:code.co_argcount + code.co_kwonlyargcount])
    assert written == [*FLAT, *MODEL_FLAT, *ALIASES]
    annotations = TrainConfig.__init__.__annotations__
    for name, cls, f in _settings():
        field_type = next(x.type for x in dataclasses.fields(cls) if x.name == f)
        assert annotations[name] == field_type, name
    assert annotations["backbone"] == annotations["backbones"] and annotations["encoder"] == annotations["encoders"]


def test_signature_shows_each_settings_real_default():
    sig = inspect.signature(TrainConfig)
    assert list(sig.parameters)[:6] == ["data", "model", "inner", "outer", "eval", "run"]
    cfg = TrainConfig()
    for name, cls, f in _settings():
        p = sig.parameters[name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert p.default == _default(cls, f) == getattr(cfg, name), name
    assert "inner_lr: float = 0.001" in str(sig) and "**" not in str(sig)


def test_docstring_gives_each_setting_its_flag_meaning_and_default():
    entries = doc_entries(TrainConfig.__init__.__doc__)
    from croma.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {}
    for action in sub.choices["train"]._actions:
        for opt in action.option_strings:
            flags.setdefault(action.dest, opt)
    flags.update({"backbones": "--backbone", "encoders": "--encoder", "extra_modalities": "--no-extra-modalities",
                  "benchmark": "BENCH"})
    for name, cls, f in _settings():
        text = entries.get(name)
        assert text, f"TrainConfig.__init__ documents no {name!r}"
        flag = flags.get(name)
        assert text.startswith(f"(``{flag}``" if flag else "(no flag)"), (name, flag, text)
        assert f"Default ``{_default(cls, f)!r}``." in text, (name, text)
        assert len(text.split(")", 1)[1].split("Default")[0].strip()) > 10, f"{name}: say what it means"
    for name in ["data", "model", "inner", "outer", "eval", "run", *ALIASES]:
        assert entries.get(name), name


def test_flat_keywords_override_sections_and_unknown_names_are_named():
    cfg = TrainConfig(inner={"lr": 3e-3, "steps": 2}, inner_steps=7, outer="fomaml", backbone={"image": "pixels"},
                      hidden=16)
    assert (cfg.inner_lr, cfg.inner_steps, cfg.algorithm, cfg.backbones, cfg.model) == \
        (3e-3, 7, "fomaml", {"image": "pixels"}, {"hidden": 16})
    assert TrainConfig(inner={"lr": 3e-3}).inner_lr == 3e-3  # a keyword not given keeps the section's value
    assert dataclasses.replace(cfg, seed=4).run.seed == 4 and cfg.replace(ways=3).outer.ways == 3
    with pytest.raises(TypeError, match=r"unknown setting 'iteration' \(did you mean 'iterations'\?\)"):
        TrainConfig(iteration=3)


# ---------------------------------------------------------------- every public callable
def test_every_public_callable_documents_its_parameters_and_return():
    problems = []
    for name in croma.__all__:
        obj = getattr(croma, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue  # registries, the version
        missing, no_return = _undocumented(obj)
        if missing:
            problems.append(f"croma.{name}: no docstring entry for {', '.join(missing)}")
        if no_return:
            problems.append(f"croma.{name}: no Returns section")
    assert not problems, "\n".join(problems)


def test_doc_entries_reads_google_sections():
    def f(a, b, *, c=1, **hp):
        """Summary.

        Args:
            a, b: two things
                on two lines.
            c (int): a third.
            **hp: the rest.

        Returns:
            Nothing much.
        """

    assert doc_entries(f.__doc__) == {"a": "two things on two lines.", "b": "two things on two lines.",
                                      "c": "a third.", "hp": "the rest."}
    assert _undocumented(f) == ([], False)
    f.__doc__ = "Summary.\n\nArgs:\n    a: one.\n"
    assert _undocumented(f) == (["b", "c", "hp"], False)


# ---------------------------------------------------------------- docstring examples
def _modules_with_examples() -> list[str]:
    out = []
    for pkg in ("croma", "episodes"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if ">>> " in path.read_text(encoding="utf-8"):
                rel = path.relative_to(ROOT).with_suffix("")
                out.append(".".join(p for p in rel.parts if p != "__init__"))
    return out


@pytest.mark.parametrize("module", _modules_with_examples())
def test_docstring_examples_run(module):
    """The ``>>>`` examples of the package's docstrings run as written (doctest)."""
    torch.set_num_threads(1)
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, module
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed (output above)"


def test_the_package_overview_has_runnable_examples():
    modules = _modules_with_examples()
    assert {"croma", "croma.config", "episodes.registry"} <= set(modules), modules
