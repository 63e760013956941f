# The two README commands. Both create .venv when it is missing and install into it.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# Known-good pins on Python 3.11 (CUDA build that also runs on CPU).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0

.PHONY: demo test install clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	OMP_NUM_THREADS=2 $(VENV)/bin/croma benchmark udhr-speech --preset quick --out runs/demo

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs build *.egg-info
