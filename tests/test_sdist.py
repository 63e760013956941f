"""The source distribution holds what its tests need and passes them when unpacked: built from a
clean copy of this checkout (offline, no build isolation), unpacked, every test module collects
there and a sample of tests that read the repository's files (README, docs, experiments, setup.cfg)
pass against the unpacked copy of the package. Also: the metadata's classifiers match
python_requires and the licence."""

import configparser
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "runs", "build", "dist", "site", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".ruff_cache", ".croma_cache", "*.pt")
# tests that read files outside the packages: README.md, docs/, experiments/, setup.cfg, CHANGELOG.md, LICENSE
SAMPLE = ["test_sections_flat_names_and_replace", "test_train_config_keywords_are_written_out_for_every_setting",
          "test_every_command_in_readme_and_docs_parses_and_checks", "test_every_documented_command_parses",
          "test_license_changelog_and_version", "test_readme_install_commands_name_the_distribution",
          "test_unpacked_tree_is_the_one_imported"]
PROBE = '''
from pathlib import Path
import croma, episodes

def test_unpacked_tree_is_the_one_imported():
    here = Path(__file__).resolve().parents[1]
    assert Path(croma.__file__).resolve().is_relative_to(here) and Path(episodes.__file__).resolve().is_relative_to(here)
'''


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


@pytest.mark.slow
def test_unpacked_sdist_collects_and_passes_its_tests(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sdist = tmp_path / "dist" / proc.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    tree = next((tmp_path / "unpacked").iterdir())
    for need in ("tests/conftest.py", "tests/fixtures_layouts.py", "Makefile", "CHANGELOG.md", "LICENSE", "mkdocs.yml",
                 "docs/index.md", "docs/hooks.py", "experiments/run.sh", "experiments/README.md", ".ci/run",
                 "episodes/datasets/udhr/udhr_texts.json.gz"):
        assert (tree / need).is_file(), f"the sdist lacks {need}"
    assert not list(tree.rglob("__pycache__")) and not list(tree.rglob("*.pt"))
    (tree / "tests" / "test_zz_sdist_probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    env.pop("CROMA_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k", " or ".join(SAMPLE)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "error" not in proc.stdout.splitlines()[-1], tail  # no collection errors
    assert re.search(rf"\b{len(SAMPLE)} passed\b", proc.stdout), tail


def test_classifiers_match_python_requires_and_the_licence():
    meta = _setup_cfg()["metadata"]
    classifiers = [c.strip() for c in meta["classifiers"].splitlines() if c.strip()]
    lowest = tuple(int(x) for x in re.fullmatch(r">=\s*(\d+)\.(\d+)", _setup_cfg()["options"]["python_requires"]).groups())
    versions = sorted(tuple(int(x) for x in m.groups()) for c in classifiers
                      if (m := re.fullmatch(r"Programming Language :: Python :: (\d+)\.(\d+)", c)))
    assert versions and versions[0] == lowest, versions
    assert versions == [(3, n) for n in range(lowest[1], lowest[1] + len(versions))], "no gaps between versions"
    assert meta["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert len([k for k in meta["keywords"].split(",") if k.strip()]) >= 5
