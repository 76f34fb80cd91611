# One-command setup + run. `make demo` trains the built-in default; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast lint bench gpu-check clean

# torch is installed first and pinned: an unpinned torch drags in GBs of CUDA wheels.
# Then srlab with the exact versions of constraints.txt (pyproject.toml holds only ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python train.py

# The suite runs in TEST_WORKERS pytest-xdist processes, one test file per process at a time (module
# fixtures are built once), each torch on one thread: the tests' tensors are small, and the DDP tests
# start ranks of their own, so more threads would only compete for the cores.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: lint
	$(PYTEST)

# The everyday loop: lint and every test not marked slow (the end-to-end runs; `make test` adds them).
test-fast: lint
	$(PYTEST) -m "not slow"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m srlab.bench

# On a GPU machine, in its own Python environment (not .venv): scripts/gpu_check.sh installs srlab
# there without touching torch and writes gpu_check/report.{json,md} (or to $(GPU_CHECK_OUT)).
GPU_CHECK_OUT ?= gpu_check
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) *.egg-info
