# The two README commands. Both create .venv when it is missing and install into it:
# `make demo` the core package (all the embedded benchmark needs), `make test` also the [test]
# extra (what the tests import, and the linter).
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# Known-good pins on Python 3.11 (CUDA build that also runs on CPU).
TORCH_PINS ?= torch==2.14.1 torchaudio==2.11.0
VISION_PINS ?= torchvision==0.29.1

.PHONY: demo test lint docs install install-test clean

$(VENV)/.core: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PY) -m pip install --quiet $(TORCH_PINS) $(VISION_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# the [docs] extra (mkdocs, mkdocstrings-python, mkdocs-material)
$(VENV)/.docs: $(VENV)/.core
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $@

install: $(VENV)/.core

install-test: $(VENV)/.installed

demo: install
	$(VENV)/bin/croma benchmark udhr-speech --preset quick --out runs/demo

lint: install-test
	$(VENV)/bin/ruff check .

# the suite in two pytest-xdist workers, one per core of a 2-core machine (every test runs torch
# on one thread): 8.5 min there against 13 in one process
test: install-test
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory docs
	$(PY) -m pytest -q -n 2 tests

# the docs site, strict: any warning (a broken link, a docstring that does not parse) fails
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) runs build dist site *.egg-info
