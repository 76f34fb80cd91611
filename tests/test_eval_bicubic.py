"""`python eval.py model=bicubic` reproduces the paper's Bicubic rows (Tables II and III) on Set5 and Set14."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from srlab.eval.paper import paper_value

REPO = Path(__file__).resolve().parents[1]
PSNR_TOL, SSIM_TOL = 0.03, 0.0015  # docs/protocol.md


@pytest.mark.slow
def test_bicubic_matrix_matches_the_paper(benchmark_root, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "eval.py", "model=bicubic", f"benchmark_root={benchmark_root}", "datasets=[Set5,Set14]",
         "scales=[2,3,4]", "figures.enabled=false", "device=cpu", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    with open(run_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["model", "dataset", "scale", "psnr", "ssim", "paper_psnr", "paper_ssim"]
    assert sorted((r["dataset"], int(r["scale"])) for r in rows) == sorted(
        (d, s) for d in ("Set5", "Set14") for s in (2, 3, 4))
    for row in rows:
        assert row["model"] == "Bicubic"
        paper_psnr, paper_ssim = paper_value(row["dataset"], int(row["scale"]), "Bicubic")
        assert (float(row["paper_psnr"]), float(row["paper_ssim"])) == (paper_psnr, paper_ssim)
        where = f"{row['dataset']} x{row['scale']}"
        assert abs(float(row["psnr"]) - paper_psnr) <= PSNR_TOL, where
        assert abs(float(row["ssim"]) - paper_ssim) <= SSIM_TOL, where

    with open(run_dir / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert len(per_image) == 3 * (5 + 14)
    set5_x2 = [float(r["psnr"]) for r in per_image if r["dataset"] == "Set5" and r["scale"] == "2"]
    mean = next(float(r["psnr"]) for r in rows if r["dataset"] == "Set5" and r["scale"] == "2")
    assert sum(set5_x2) / 5 == pytest.approx(mean, abs=1e-3)  # results.csv is the mean of the per-image rows
