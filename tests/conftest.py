"""Shared fixtures: the test data folder (skip locally, fail under CI), a small thread budget, the Table I sweep.

Every test that reads SHARED_DATA (benchmark and training images kept beside the checkout) goes
through `require_shared_data` or the fixtures built on it: on a developer machine without that
folder such a test is skipped; with CI=true in the environment a missing file fails the test, so
CI can never pass by skipping the data checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
BENCHMARK_ROOT = SHARED_DATA / "benchmark"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_shared_data(relative: str | os.PathLike) -> Path:
    """`SHARED_DATA/<relative>` when it exists; otherwise skips the test, or fails it when CI=true."""
    path = SHARED_DATA / relative
    if path.exists():
        return path
    message = f"{path} not found (the test data folder beside the checkout: benchmark and training images)"
    if running_in_ci():
        pytest.fail(f"{message}; CI=true: data tests must run in CI, not skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def benchmark_root() -> Path:
    """EDSR-layout benchmark folder with Set5 and Set14 (HR and LR_bicubic) from SHARED_DATA."""
    for name in ("Set5", "Set14"):
        require_shared_data(f"benchmark/{name}/HR")
    return BENCHMARK_ROOT


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _one_thread():
    # Small tensors: a second OpenMP thread gains little, and when other processes hold the CPUs
    # its spinning slows a file down tenfold or more (measured on a shared 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Module-wide (`pytestmark = pytest.mark.usefixtures("single_thread")`) or per test.
single_thread = pytest.fixture(scope="module")(_one_thread)
one_torch_thread = pytest.fixture(_one_thread)


@pytest.fixture(scope="session")
def table1_sweep(tmp_path_factory) -> Path:
    """`train.py -m experiment=table1 debug=smoke`, once per session, with a tiny model: all nine variants.

    Two steps per variant, validated after each (so Table I's "best validation" has two to choose
    from). Shared by the sweep, experiment and report tests, which check its folders, summary and tables.
    """
    from tests.train_runs import TINY_MODEL, run_train

    folder = tmp_path_factory.mktemp("table1")
    sweep = folder / "sweep"
    run_train(
        ["-m", "experiment=table1", "debug=smoke", *TINY_MODEL, f"hydra.sweep.dir={sweep}",
         "+trainer.val_check_interval=1", "callbacks.comparison_images=null", "callbacks.progress_bar=null"],
        folder, timeout=600, extra_env={"OMP_NUM_THREADS": "1"},
    )
    return sweep
