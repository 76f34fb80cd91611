"""`srlab-train` / `srlab-eval` (the console entry points) compose the packaged configs and run outside the clone."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srlab.data.io import read_image, write_image
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = BIN / name
    if not script.is_file():
        pytest.fail(f"{script} is missing: install srlab (pip install -e .) to get its console scripts")
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_srlab_eval_upscales_from_a_folder_outside_the_clone(tmp_path):
    assert not tmp_path.resolve().is_relative_to(REPO)
    image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    write_image(tmp_path / "in.png", image)
    result = run_script("srlab-eval", "task=upscale", "model=bicubic", "model.scale=2", "input=in.png",
                        "output=up", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_image(tmp_path / "up" / "in_x2.png").shape == (24, 20, 3)
    assert list((tmp_path / "outputs").glob("*/*/.hydra/config.yaml")), "run folder not under ./outputs"


@pytest.mark.slow
def test_srlab_train_smoke_run_from_an_empty_folder(tmp_path):
    result = run_script("srlab-train", "debug=smoke", "callbacks.progress_bar=null", "hydra.run.dir=run",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader(open(tmp_path / "run" / "csv" / "metrics.csv")))
    assert any(r.get("val/Sample/psnr") for r in rows)
