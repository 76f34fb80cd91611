"""Shared fixtures: where ../shared lives, and a small thread budget so tests behave on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCHMARK_ROOT = SHARED / "data" / "benchmark"


@pytest.fixture
def benchmark_root() -> Path:
    if not (BENCHMARK_ROOT / "Set5" / "HR").is_dir():
        pytest.skip(f"benchmark images not found at {BENCHMARK_ROOT} (../shared is absent)")
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
