"""`python eval.py task=upscale` writes good images and reports bad files; a model with weights needs ckpt_path."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from srlab.data.io import read_image, write_image
from srlab.tasks import EvalError, evaluate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """2 good images (one RGB, one grey), a text file, a truncated PNG and an empty PNG."""
    folder = tmp_path / "in"
    rng = np.random.default_rng(0)
    write_image(folder / "rgb.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    write_image(folder / "grey.png", rng.integers(0, 256, (17, 13), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    whole = (folder / "rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.png").write_bytes(b"")
    return folder


def compose_eval(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=[*overrides, f"paths.output_dir={output_dir}", "device=cpu"])


@pytest.mark.slow
def test_upscale_folder_writes_good_images_and_reports_bad_ones(mixed_folder, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "eval.py", "task=upscale", "model=bicubic", "model.scale=3", f"input={mixed_folder}",
         f"output={out}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["grey_x3.png", "rgb_x3.png"]
    assert read_image(out / "rgb_x3.png").shape == (60, 90, 3)
    assert read_image(out / "grey_x3.png").shape == (51, 39, 3)
    log = result.stdout + result.stderr
    assert "upscaled 2 image(s), skipped 3" in log
    for bad, reason in (("notes.txt", "not an image file type"), ("truncated.png", "not a readable image"),
                        ("empty.png", "empty (0 bytes)")):
        assert any(bad in line and reason in line for line in log.splitlines()), bad


@pytest.mark.slow
def test_missing_checkpoint_for_a_model_with_weights_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "eval.py", "model=hdsrnet", "datasets=[Set5]", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "eval.py: error: ckpt_path is required: HDSRNet has parameters (give a train.py checkpoint, "
        "e.g. ckpt_path=outputs/<run>/checkpoints/last.ckpt, or ckpt_path='{2: a.ckpt, 4: b.ckpt}')"
    ]
    assert not (tmp_path / "run" / "results.csv").exists()


def test_upscale_exit_code_is_1_only_when_every_file_failed(mixed_folder, tmp_path):
    for good in ("rgb.png", "grey.png"):
        (mixed_folder / good).unlink()
    cfg = compose_eval(["task=upscale", "model=bicubic", f"input={mixed_folder}", f"output={tmp_path / 'out'}"],
                       tmp_path)
    assert evaluate(cfg) == 1
    assert not (tmp_path / "out").exists()


def test_upscale_single_file_tiled_matches_whole(mixed_folder, tmp_path):
    image = mixed_folder / "rgb.png"
    for name, extra in (("whole", []), ("tiled", ["tile=8", "tile_overlap=4"])):
        cfg = compose_eval(["task=upscale", "model=bicubic", "model.scale=2", f"input={image}",
                            f"output={tmp_path / name}", *extra], tmp_path)
        assert evaluate(cfg) == 0
    assert np.array_equal(read_image(tmp_path / "whole" / "rgb_x2.png"), read_image(tmp_path / "tiled" / "rgb_x2.png"))


def test_upscale_input_errors_name_the_key(tmp_path):
    with pytest.raises(EvalError, match="task=upscale needs input="):
        evaluate(compose_eval(["task=upscale", "model=bicubic"], tmp_path))
    with pytest.raises(EvalError, match=f"input={tmp_path / 'nope'}: no such file or folder"):
        evaluate(compose_eval(["task=upscale", "model=bicubic", f"input={tmp_path / 'nope'}"], tmp_path))
