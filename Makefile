# One-command setup + run. `make demo` trains the built-in default; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

# torch is installed first and pinned: an unpinned torch drags in GBs of CUDA wheels.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python train.py

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m srlab.bench

clean:
	rm -rf $(VENV) *.egg-info
