"""`python train.py` end to end through Hydra, as a user runs it."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_train_py_smoke_run_writes_its_files(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "train.py", "debug=smoke", "summary=true", f"hydra.run.dir={run_dir}",
         "callbacks.progress_bar=null"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-step*.ckpt"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    assert any(r.get("val/Sample/psnr") for r in rows)
    images = list((run_dir / "images").rglob("*.png"))
    assert images, "no comparison images written"
    summary = list(csv.DictReader(open(run_dir / "summary.csv")))
    assert summary[0]["dataset"] == "Sample" and float(summary[0]["bicubic_psnr"]) > 25
    assert "bicubic" in result.stdout
