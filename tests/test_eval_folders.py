"""Evaluation on any folder: `eval.py datasets=[Set5,/path/to/my_set]` scores a folder as a set named after it.

A folder holds HR images (LR generated MATLAB-exactly and cached) or the EDSR layout (HR/ and
LR_bicubic/X{s}/); results.csv names it; the paper report gives it no table.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from srlab.data.imresize import bicubic_downscale, bicubic_upscale, modcrop
from srlab.data.io import read_image, write_image
from srlab.metrics.sr_metrics import psnr_ssim_per_image
from srlab.tasks import EvalError, evaluate
from tests.train_runs import REPO

pytestmark = pytest.mark.usefixtures("single_thread")


def random_photo(rng: np.random.Generator, height: int, width: int, grey: bool = False) -> np.ndarray:
    """A smooth random image (bicubic of noise), so that PSNR values are in a realistic range."""
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    image = bicubic_upscale(small, 4)[:height, :width]
    return image[..., 0].copy() if grey else image


@pytest.fixture
def my_set(tmp_path) -> Path:
    """HR images alone: two RGB (sizes not multiples of 3 or 2) and one stored grey."""
    folder = tmp_path / "photos" / "my_set"
    rng = np.random.default_rng(0)
    write_image(folder / "a.png", random_photo(rng, 31, 40))
    write_image(folder / "b.png", random_photo(rng, 36, 29))
    write_image(folder / "c.png", random_photo(rng, 27, 27, grey=True))
    return folder


def compose_eval(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=[f"benchmark_root={output_dir.parent / 'benchmark'}", *overrides,
                                          f"paths.output_dir={output_dir}", "device=cpu", "figures.enabled=false"])


def read_results(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def as_batch(image: np.ndarray) -> torch.Tensor:
    """HxW or HxWx3 uint8 -> (1, C, H, W) float64."""
    tensor = torch.from_numpy(image).double()
    return tensor[None, None] if image.ndim == 2 else tensor.permute(2, 0, 1)[None]


def expected_bicubic_psnr(folder: Path, scale: int, lr_folder: Path | None = None) -> float:
    """Mean PSNR of MATLAB bicubic on the folder, computed here from the files (numpy imresize, per image)."""
    scores = []
    for path in sorted(folder.glob("*.png")):
        hr = modcrop(read_image(path), scale)
        lr = bicubic_downscale(hr, scale) if lr_folder is None else read_image(lr_folder / f"{path.stem}x{scale}.png")
        sr = bicubic_upscale(lr, scale)
        psnr, _ = psnr_ssim_per_image(as_batch(sr), as_batch(hr), scale, grey=hr.ndim == 2)
        scores.append(float(psnr[0]))
    return float(np.mean(scores))


def test_hr_only_folder_is_scored_as_a_set_named_after_it(my_set, tmp_path):
    run_dir = tmp_path / "run"
    assert evaluate(compose_eval(["model=bicubic", f"datasets=[{my_set}]", "scales=[2,3]"], run_dir)) == 0
    results = read_results(run_dir)
    assert [(r["model"], r["dataset"], r["scale"]) for r in results] == [("Bicubic", "my_set", "2"),
                                                                        ("Bicubic", "my_set", "3")]
    for row in results:
        assert float(row["psnr"]) == pytest.approx(expected_bicubic_psnr(my_set, int(row["scale"])), abs=1e-3)
        assert row["paper_psnr"] == "" and row["paper_ssim"] == ""  # no paper number for your own set
    # The generated LR images are cached in the folder (where data=folder's validation caches them too).
    assert len(list((my_set / ".srlab_cache").rglob("*.npy"))) == 3 * 2
    with open(run_dir / "per_image.csv", newline="") as f:
        assert sorted({r["image"] for r in csv.DictReader(f)}) == ["a", "b", "c"]


def test_edsr_layout_folder_uses_its_own_lr_images(tmp_path):
    folder = tmp_path / "edsr_set"
    rng = np.random.default_rng(1)
    for name in ("x", "y"):
        hr = random_photo(rng, 24, 32)
        write_image(folder / "HR" / f"{name}.png", hr)
        # Not the bicubic downscale: scoring from these files must differ from the generated path.
        write_image(folder / "LR_bicubic" / "X2" / f"{name}x2.png", np.clip(bicubic_downscale(hr, 2) + 9, 0, 255))
    run_dir = tmp_path / "run"
    evaluate(compose_eval(["model=bicubic", f"datasets=[{folder}]", "scales=[2]"], run_dir))
    (row,) = read_results(run_dir)
    given = expected_bicubic_psnr(folder / "HR", 2, lr_folder=folder / "LR_bicubic" / "X2")
    assert row["dataset"] == "edsr_set" and float(row["psnr"]) == pytest.approx(given, abs=1e-3)
    assert abs(given - expected_bicubic_psnr(folder / "HR", 2)) > 1  # the LR files made a difference


def test_folder_entries_are_checked_before_scoring(my_set, tmp_path):
    for entries, message in (
        (f"[{tmp_path / 'nowhere'}]", "is not a folder"),
        ("[Set6]", "unknown benchmark set 'Set6'.*or a folder of images"),
        (f"[{my_set},{my_set}]", "two entries are named my_set"),
    ):
        with pytest.raises(EvalError, match=message):
            evaluate(compose_eval(["model=bicubic", f"datasets={entries}", "scales=[2]"], tmp_path / "run"))
    assert not (tmp_path / "run" / "results.csv").exists()


@pytest.mark.slow
def test_eval_py_scores_a_benchmark_and_a_folder_and_the_paper_report_skips_the_folder(my_set, tmp_path):
    # A benchmark root with an HR-only Set5 (stand-in images): the known name is looked up there.
    benchmark_root = tmp_path / "benchmark"
    rng = np.random.default_rng(2)
    for name in ("baby", "bird"):
        write_image(benchmark_root / "Set5" / "HR" / f"{name}.png", random_photo(rng, 24, 24))
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "eval.py", "model=bicubic", f"datasets=[Set5,{my_set}]", "scales=[2]",
         f"benchmark_root={benchmark_root}", "report=paper_quick", "report.runtime.enabled=false",
         "report.complexity.enabled=false", "device=cpu", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["dataset"], r["scale"]) for r in read_results(run_dir)] == [("Set5", "2"), ("my_set", "2")]
    tables = sorted(p.name for p in (run_dir / "tables").glob("*.md"))
    assert tables == ["paper_tables.md", "table2.md"]  # Set5's table (II); none for my_set
    assert "no paper table for my_set" in result.stdout + result.stderr
