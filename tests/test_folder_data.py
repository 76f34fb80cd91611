"""data=folder (srlab.data.folder) on generated images: MATLAB-exact LR, the cache reused, paired folders matched by
name (and the mismatch error), grey images, the too-small-image error, held-out folders, and train.py end to end."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from srlab.data import cache as cache_module
from srlab.data.folder import FolderDataModule
from srlab.data.imresize import bicubic_downscale, bicubic_upscale, modcrop
from srlab.data.io import write_image

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_thread")


def photo(height: int, width: int, seed: int, grey: bool = False) -> np.ndarray:
    """A smooth random uint8 image (upscaled noise), so patches hold structure, not white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(-(-height // 8), 2), max(-(-width // 8), 2), 1 if grey else 3), dtype=np.uint8)
    big = bicubic_upscale(coarse if not grey else coarse[..., 0], 8)
    return np.ascontiguousarray(big[:height, :width])


def make_folder(folder: Path, sizes: list[tuple[int, int]], grey: tuple[int, ...] = (), start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        write_image(folder / f"img{start + i}.png", photo(h, w, seed=start + i, grey=i in grey))
    return folder


def module(roots, tmp_path: Path, **kwargs) -> FolderDataModule:
    options = {"scale": 3, "patch_size": 24, "batch_size": 4, "steps_per_epoch": 2, "val_sets": [],
               "cache_dir": tmp_path / "cache", **kwargs}
    return FolderDataModule(roots=roots, **options)


def test_lr_is_matlab_bicubic_of_the_mod_cropped_hr_across_roots(tmp_path):
    a = make_folder(tmp_path / "a", [(50, 61), (48, 48)])
    b = make_folder(tmp_path / "b" / "HR", [(40, 70)], start=2).parent  # EDSR layout: images in <root>/HR
    pairs = module([str(a), str(b)], tmp_path).load_train_pairs()
    assert [p.name for p in pairs] == ["img0", "img1", "img2"]
    for pair, seed, size in zip(pairs, range(3), [(50, 61), (48, 48), (40, 70)]):
        hr = modcrop(photo(*size, seed=seed), 3)
        assert np.array_equal(np.asarray(pair.hr), hr)
        assert np.array_equal(np.asarray(pair.lr), bicubic_downscale(hr, 3))


def test_the_cache_is_built_once_and_reused(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "a", [(48, 51), (60, 45)])
    first = module([root], tmp_path).load_train_pairs()
    entries = sorted((tmp_path / "cache").iterdir())
    assert len(entries) == 4  # decoded HR + generated LR per image
    mtimes = [e.stat().st_mtime_ns for e in entries]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(cache_module, "save_npy_atomic", no_rebuild)
    second = module([root], tmp_path).load_train_pairs()
    assert [e.stat().st_mtime_ns for e in sorted((tmp_path / "cache").iterdir())] == mtimes
    for x, y in zip(first, second):
        assert x.lr.path == y.lr.path and np.array_equal(np.asarray(x.lr), np.asarray(y.lr))


def test_paired_folders_are_matched_by_name(tmp_path):
    hr_dir = make_folder(tmp_path / "hr", [(48, 48), (51, 54)])
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    own_lr = [photo(16, 16, seed=10), photo(17, 18, seed=11)]
    write_image(lr_dir / "img0x3.png", own_lr[0])  # EDSR naming
    write_image(lr_dir / "img1.png", own_lr[1])  # same name as the HR file
    pairs = module([hr_dir], tmp_path, lr_roots=[lr_dir]).load_train_pairs()
    for pair, lr in zip(pairs, own_lr):
        assert np.array_equal(np.asarray(pair.lr), lr)  # the user's LR, not a generated one


def test_unmatched_paired_files_are_named(tmp_path):
    hr_dir = make_folder(tmp_path / "hr", [(48, 48), (48, 48), (48, 48)])
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    write_image(lr_dir / "img0x3.png", photo(16, 16, seed=1))
    write_image(lr_dir / "other.png", photo(16, 16, seed=2))
    with pytest.raises(FileNotFoundError) as err:
        module([hr_dir], tmp_path, lr_roots=[lr_dir]).load_train_pairs()
    message = str(err.value)
    assert str(lr_dir) in message
    assert "no LR in" in message and "img1.png, img2.png" in message
    assert "no HR for LR other.png" in message
    with pytest.raises(ValueError, match="one LR folder per root"):
        module([hr_dir, hr_dir], tmp_path, lr_roots=[lr_dir])


def test_grey_images_train_beside_rgb_ones(tmp_path):
    root = make_folder(tmp_path / "mixed", [(48, 48), (45, 48)], grey=(1,))
    data = module([root], tmp_path)
    data.setup("fit")
    grey_pair = data.train_set.pairs[1]
    assert grey_pair.grey and np.asarray(grey_pair.hr).ndim == 2
    assert np.array_equal(np.asarray(grey_pair.lr), bicubic_downscale(modcrop(photo(45, 48, seed=1, grey=True), 3), 3))
    samples = [data.train_set[i] for i in range(8)]
    assert all(s["lr"].shape == (3, 8, 8) and s["hr"].shape == (3, 24, 24) for s in samples)
    # Pinned to a luminance model's input: pre-upsampled Y crops, one channel.
    luma = module([root], tmp_path, pre_upsample=True, luma=True)
    luma.setup("fit")
    batch = next(iter(luma.train_dataloader()))
    assert batch["lr"].shape == batch["hr"].shape == (4, 1, 24, 24)


def test_an_image_smaller_than_the_patch_is_named(tmp_path):
    root = make_folder(tmp_path / "a", [(48, 48), (30, 60)])
    with pytest.raises(ValueError, match=r"img1\.png: image 60x30 is smaller than the HR patch 33"):
        module([root], tmp_path, patch_size=33).load_train_pairs()


def test_held_out_folder_validates_as_a_set_named_after_it(tmp_path):
    train = make_folder(tmp_path / "train", [(48, 48)])
    held_out = make_folder(tmp_path / "holdout", [(40, 44)], start=5)
    data = module([train], tmp_path, val_roots=[held_out])
    data.setup("validate")
    assert data.eval_names == ["holdout"]
    (pair,) = data.eval_sets[0].pairs
    hr = modcrop(photo(40, 44, seed=5), 3)
    assert np.array_equal(pair.hr, hr) and np.array_equal(pair.lr, bicubic_downscale(hr, 3))
    with pytest.raises(ValueError, match="each name must be unique"):
        module([train], tmp_path, val_roots=[held_out, tmp_path / "x" / "holdout"])


def test_benchmark_sets_validate_beside_held_out_folders(tmp_path, benchmark_root):
    train = make_folder(tmp_path / "train", [(48, 48)])
    held_out = make_folder(tmp_path / "holdout", [(40, 44)], start=5)
    data = module([train], tmp_path, val_sets=["set5"], benchmark_root=benchmark_root, val_roots=[held_out])
    data.setup("validate")
    assert data.eval_names == ["Set5", "holdout"] and len(data.eval_sets[0]) == 5


@pytest.mark.slow
def test_train_py_trains_on_folders(tmp_path):
    a = make_folder(tmp_path / "a", [(60, 60), (54, 66)])
    b = make_folder(tmp_path / "b", [(57, 63)], grey=(0,), start=2)
    held_out = make_folder(tmp_path / "holdout", [(45, 48)], start=3)
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "train.py", "model=srcnn", "model.scale=3", "data=folder", f"data.roots=[{a},{b}]",
        "data.val_sets=[]", f"data.val_roots=[{held_out}]", f"data.cache_dir={tmp_path / 'cache'}",
        "data.patch_size=24", "data.batch_size=4", "data.steps_per_epoch=3", "data.num_workers=0",
        "trainer.max_epochs=1", "callbacks.progress_bar=null", "callbacks.comparison_images=null",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert max(int(r["step"]) for r in rows) >= 2
    psnr = [float(r["val/holdout/psnr"]) for r in rows if r.get("val/holdout/psnr")]
    assert psnr and np.isfinite(psnr[-1]) and psnr[-1] > 10
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
