"""Tests for DIV2KDataModule and the decoded-image cache on small DIV2K-layout folders built in tmp_path."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn

import srlab.data.cache as cache
import srlab.data.div2k as div2k
from srlab.bench.loader import patches_per_second
from srlab.data.cache import DiskImage, save_npy_atomic
from srlab.data.div2k import DIV2KDataModule
from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import list_images, read_image, write_image
from srlab.data.sample import SampleDataModule
from srlab.module import SRModule
from tests.conftest import require_shared_data
from tests.train_runs import write_div2k

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_BENCHMARK = SHARED_DATA / "benchmark"


@pytest.fixture(scope="module")
def t91() -> list[np.ndarray]:
    folder = require_shared_data("train/T91/HR")
    return [read_image(p) for p in list_images(folder)[:6]]


def module(root: Path, **kwargs) -> DIV2KDataModule:
    args = dict(scale=2, patch_size=24, batch_size=2, steps_per_epoch=3, data_range=[1, 3], val_sets=[])
    args.update(kwargs)
    return DIV2KDataModule(root, **args)


def train_pairs(dm: DIV2KDataModule):
    dm.setup("fit")
    return dm.train_set.pairs


# -- layout, LR source and selection -----------------------------------------------------------


def test_lr_folder_is_read_and_hr_modcropped(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1], 3: t91[2]}, scale=3)
    pairs = train_pairs(module(root, scale=3, patch_size=48))
    assert [p.name for p in pairs] == ["0001", "0002", "0003"]
    for pair, hr in zip(pairs, t91):
        assert isinstance(pair.hr, DiskImage) and isinstance(pair.lr, DiskImage)
        assert np.array_equal(np.asarray(pair.hr), modcrop(hr, 3))
        lr_file = root / "DIV2K_train_LR_bicubic/X3" / f"{pair.name}x3.png"
        assert np.array_equal(np.asarray(pair.lr), read_image(lr_file))


def test_missing_lr_folder_generates_matlab_lr_and_caches_it(tmp_path: Path, t91, monkeypatch) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1], 3: t91[2]}, scale=None)
    pairs = train_pairs(module(root, scale=4))
    for pair, hr in zip(pairs, t91):
        assert np.array_equal(np.asarray(pair.lr), bicubic_downscale(modcrop(hr, 4), 4))
    entries = sorted(p.name for p in (root / ".srlab_cache").glob("*.npy"))
    assert len(entries) == 6 and sum(".lr_bicubic_x4." in e for e in entries) == 3

    decodes = []
    monkeypatch.setattr(cache, "read_image", lambda path: decodes.append(path) or read_image(path))
    monkeypatch.setattr(div2k, "bicubic_downscale", lambda *a: pytest.fail("LR recomputed despite the cache"))
    again = train_pairs(module(root, scale=4))
    assert decodes == [], "a warm cache must not decode any PNG"
    assert all(np.array_equal(np.asarray(a.hr), np.asarray(b.hr)) for a, b in zip(pairs, again))


def test_data_range_merges_train_and_valid_by_number(tmp_path: Path, t91) -> None:
    images = {799: t91[0], 800: t91[1], 801: t91[2], 802: t91[3]}
    root = write_div2k(tmp_path / "DIV2K", images, scale=2)
    pairs = train_pairs(module(root, data_range=[800, 802]))
    assert [p.name for p in pairs] == ["0800", "0801", "0802"]
    files = div2k.index_div2k(root, 2, [799, 802])
    assert [f.hr.parent.name for f in files] == ["DIV2K_train_HR"] * 2 + ["DIV2K_valid_HR"] * 2
    assert [f.lr.parent.parent.name for f in files] == ["DIV2K_train_LR_bicubic"] * 2 + ["DIV2K_valid_LR_bicubic"] * 2


def test_data_range_beyond_the_files_says_what_is_missing(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1]}, scale=2)
    with pytest.raises(FileNotFoundError, match=r"data_range \[1, 900\] selects 898 image\(s\) not found .*"
                       r"0003, 0004, 0005, 0006, 0007 \.\.\..*--splits train valid"):
        train_pairs(module(root, data_range=[1, 900]))
    with pytest.raises(ValueError, match=r"data_range must be two image numbers"):
        module(root, data_range=[1])
    with pytest.raises(ValueError, match=r"1 <= first <= last"):
        module(root, data_range=[5, 2])


# -- patches: alignment, identical augmentation, range, epoch length ------------------------------


def kron_pair_root(tmp_path: Path, scale: int, lr_size: tuple[int, int]) -> tuple[Path, np.ndarray]:
    """LR random, HR = LR with each pixel repeated scale x scale: any aligned crop keeps HR == kron(LR)."""
    lr = np.random.default_rng(7).integers(0, 256, (*lr_size, 3), dtype=np.uint8)
    hr = np.kron(lr, np.ones((scale, scale, 1), np.uint8))
    root = tmp_path / "DIV2K"
    write_image(root / "DIV2K_train_HR" / "0001.png", hr)
    write_image(root / "DIV2K_train_LR_bicubic" / f"X{scale}" / f"0001x{scale}.png", lr)
    return root, lr


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return t.numpy().transpose(1, 2, 0).astype(np.uint8)


@pytest.mark.parametrize(("augment", "permute_channels"), [(False, False), (True, False), (True, True)])
def test_patches_are_aligned_and_augmented_identically(tmp_path: Path, augment: bool, permute_channels: bool) -> None:
    scale = 3
    root, _ = kron_pair_root(tmp_path, scale, (40, 50))
    dm = module(root, scale=scale, patch_size=24, batch_size=4, steps_per_epoch=10, data_range=[1, 1], augment=augment,
                permute_channels=permute_channels)
    dm.setup("fit")
    torch.manual_seed(0)
    positions = set()
    for batch in dm.train_dataloader():
        assert batch["lr"].shape == (4, 3, 8, 8) and batch["hr"].shape == (4, 3, 24, 24)
        for lr_t, hr_t in zip(batch["lr"], batch["hr"]):
            assert lr_t.dtype == hr_t.dtype == torch.uint8  # converted to float on the device
            assert torch.equal(hr_t, hr_t.round())
            lr, hr = as_uint8(lr_t), as_uint8(hr_t)
            assert np.array_equal(hr, np.kron(lr, np.ones((scale, scale, 1), np.uint8)))
            positions.add(lr.tobytes())
    assert len(positions) > 30, "crops should come from random positions"


def dihedral(img: np.ndarray) -> list[bytes]:
    rotations = [np.rot90(img, k) for k in range(4)]
    return [np.ascontiguousarray(r).tobytes() for r in rotations + [np.fliplr(r) for r in rotations]]


def test_augmentation_reaches_all_eight_orientations(tmp_path: Path) -> None:
    # The patch is the whole image, so the only randomness left is the flip/rotation.
    root, lr = kron_pair_root(tmp_path, 2, (12, 12))
    dm = module(root, scale=2, patch_size=24, batch_size=8, steps_per_epoch=10, data_range=[1, 1])
    dm.setup("fit")
    torch.manual_seed(0)
    seen = {as_uint8(item["lr"]).tobytes() for item in (dm.train_set[i] for i in range(80))}
    assert seen == set(dihedral(lr))


def test_channel_permutation_reaches_all_six_orders_alike_on_lr_and_hr(tmp_path: Path) -> None:
    # Each channel a constant of its own: an item's channel values say which order it got.
    lr = np.broadcast_to(np.array([10, 120, 230], np.uint8), (12, 12, 3)).copy()
    root = tmp_path / "DIV2K"
    write_image(root / "DIV2K_train_HR" / "0001.png", np.kron(lr, np.ones((2, 2, 1), np.uint8)))
    write_image(root / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", lr)
    orders = []
    for permute_channels in (False, True):
        dm = module(root, scale=2, patch_size=24, batch_size=8, steps_per_epoch=10, data_range=[1, 1],
                    permute_channels=permute_channels)
        dm.setup("fit")
        items = [dm.train_set[i] for i in range(120)]
        for item in items:
            assert torch.equal(item["hr"][:, ::2, ::2], item["lr"])  # the same order on both images
        orders.append({tuple(item["lr"][:, 0, 0].tolist()) for item in items})
    assert orders[0] == {(10, 120, 230)}
    assert len(orders[1]) == 6 and all(sorted(order) == [10, 120, 230] for order in orders[1])


def test_channel_permutation_needs_the_augmentation(tmp_path: Path) -> None:
    root, _ = kron_pair_root(tmp_path, 2, (12, 12))
    with pytest.raises(ValueError, match=r"^permute_channels=true is part of the augmentation; it needs augment=true$"):
        module(root, scale=2, patch_size=24, batch_size=8, steps_per_epoch=10, data_range=[1, 1], augment=False,
               permute_channels=True)


def test_epoch_is_steps_times_batch(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1], 3: t91[2]}, scale=2)
    dm = module(root, batch_size=5, steps_per_epoch=7)
    dm.setup("fit")
    assert len(dm.train_set) == 35
    assert len(dm.train_dataloader()) == 7


def test_uncached_mode_decodes_per_patch_and_gives_the_same_patches(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1], 3: t91[2]}, scale=None)
    cached = module(root, scale=2)
    uncached = module(root, scale=2, cache=False)
    uncached_pairs = train_pairs(uncached)
    assert not (root / ".srlab_cache").exists()
    assert uncached_pairs[0].hr.path == root / "DIV2K_train_HR" / "0001.png"
    assert isinstance(uncached_pairs[0].lr, np.ndarray)  # generated LR kept in memory
    train_pairs(cached)
    for index in range(6):
        torch.manual_seed(index)
        a = cached.train_set[index]
        torch.manual_seed(index)
        b = uncached.train_set[index]
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])


def test_patches_per_second_counts_patches(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1]}, scale=2)
    dm = module(root, data_range=[1, 2], batch_size=4, steps_per_epoch=5)
    dm.setup("fit")
    assert patches_per_second(dm.train_set, seconds=0.05, batch_size=4) > 0
    with pytest.raises(ValueError, match=r"needs at least 48 samples per epoch .* the dataset has 20"):
        patches_per_second(dm.train_set, batch_size=16)


def test_disk_images_pickle_as_paths(tmp_path: Path, t91) -> None:
    # Spawn-started workers receive the dataset pickled: the pixels must not travel with it.
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0]}, scale=2)
    (pair,) = train_pairs(module(root, data_range=[1, 1]))
    before = np.asarray(pair.hr).copy()  # opens the memory map
    payload = pickle.dumps(pair.hr)
    assert len(payload) < 1000
    restored = pickle.loads(payload)
    assert restored.shape == pair.hr.shape and np.array_equal(np.asarray(restored), before)


# -- cache: invalidation and atomic writes -------------------------------------------------------------


def test_cache_entry_follows_source_changes(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1]}, scale=None)
    train_pairs(module(root, data_range=[1, 2]))
    cache_dir = root / ".srlab_cache"
    before = {p.name for p in cache_dir.glob("0001.*.npy")}
    source = root / "DIV2K_train_HR" / "0001.png"
    write_image(source, t91[3])
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse clocks: force a new mtime
    pairs = train_pairs(module(root, data_range=[1, 2]))
    assert np.array_equal(np.asarray(pairs[0].hr), modcrop(t91[3], 2))
    assert np.array_equal(np.asarray(pairs[0].lr), bicubic_downscale(modcrop(t91[3], 2), 2))
    after = {p.name for p in cache_dir.glob("0001.*.npy")}
    assert len(after) == 2 and not after & before, "stale entries of the old file must be replaced"
    assert len(list(cache_dir.glob("0002.*.npy"))) == 2


def test_interrupted_cache_write_leaves_no_file(tmp_path: Path, t91, monkeypatch) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0]}, scale=2)

    def interrupted_save(fh, array, **kwargs):
        fh.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        train_pairs(module(root, data_range=[1, 1]))
    assert list((root / ".srlab_cache").iterdir()) == []


def test_unwritable_cache_names_the_entry_and_the_way_out(tmp_path: Path, t91, monkeypatch) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0]}, scale=2)

    def full_disk(fh, array, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError, match=r"0001\.png: cannot write the decoded-image cache .*\.srlab_cache/0001\..*"
                       r"No space left.*set cache=false"):
        train_pairs(module(root, data_range=[1, 1]))


def test_save_npy_atomic_round_trip(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    save_npy_atomic(tmp_path / "a" / "x.npy", array)
    assert np.array_equal(np.load(tmp_path / "a" / "x.npy", mmap_mode="r"), array)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.npy"]


# -- bad input ---------------------------------------------------------------------------------------


def test_missing_root_gives_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/DIV2K: DIV2K root does not exist; download it with "
                       rf"`python -m srlab.data.download div2k --root {tmp_path} --scales 2"):
        train_pairs(module(tmp_path / "DIV2K"))


def test_root_without_hr_folders_and_empty_hr_folder(tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no DIV2K_train_HR or DIV2K_valid_HR folder"):
        train_pairs(module(root))
    (root / "DIV2K_train_HR").mkdir()
    with pytest.raises(FileNotFoundError, match=r"DIV2K_train_HR: no image files"):
        train_pairs(module(root))


@pytest.mark.parametrize("cached", [True, False])
def test_truncated_png_names_the_file(tmp_path: Path, t91, cached: bool) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1]}, scale=2)
    bad = root / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{bad}: not a readable image \(truncated"):
        train_pairs(module(root, data_range=[1, 2], cache=cached))


def test_lr_hr_size_mismatch_names_the_file(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0]}, scale=2)  # t1: 197x176
    bad = root / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png"
    write_image(bad, np.zeros((80, 98, 3), np.uint8))
    with pytest.raises(ValueError, match=rf"{bad}: LR 98x80 does not match HR .*0001\.png \(197x176\) at x2; "
                       r"expected LR 98x88"):
        train_pairs(module(root, data_range=[1, 1]))


def test_lr_one_pixel_longer_from_matlab_ceil_is_accepted(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0]}, scale=2)  # t1: 197 wide, MATLAB LR is 99 wide
    write_image(root / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", np.zeros((88, 99, 3), np.uint8))
    (pair,) = train_pairs(module(root, data_range=[1, 1]))
    assert pair.lr.shape == (88, 98, 3) and pair.hr.shape == (176, 196, 3)


def test_missing_lr_file_names_it(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[1]}, scale=2)
    (root / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"X2/0002x2\.png: LR image of .*0002\.png is missing"):
        train_pairs(module(root, data_range=[1, 2]))


def test_image_smaller_than_patch_names_the_file(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0], 2: t91[3]}, scale=2)  # t12: 114x119
    with pytest.raises(ValueError, match=r"DIV2K_train_HR/0002\.png: image 114x119 is smaller than the HR patch 120"):
        train_pairs(module(root, data_range=[1, 2], patch_size=120))


def test_patch_not_divisible_by_scale_suggests_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"patch_size=128 \(HR\) is not divisible by scale=3; use 126 or 129"):
        module(tmp_path, scale=3, patch_size=128)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch_size": 0}, r"^patch_size=0 \(HR\) must be a multiple of scale=2, at least 2$"),
        ({"patch_size": 64.0}, r"^patch_size=64\.0 \(HR\) must be a multiple of scale=2, at least 2$"),
        ({"batch_size": 0}, r"^batch_size=0 must be an integer of at least 1$"),
        ({"steps_per_epoch": -1}, r"^steps_per_epoch=-1 must be an integer of at least 1$"),
    ],
)
def test_constructors_check_their_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    # Both data modules, before any file is read: the one check of these values.
    with pytest.raises(ValueError, match=message):
        module(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message):
        SampleDataModule(scale=2, **kwargs)


def test_unnumbered_file_names_it(tmp_path: Path, t91) -> None:
    root = write_div2k(tmp_path / "DIV2K", {1: t91[0]}, scale=None)
    write_image(root / "DIV2K_train_HR" / "extra.png", t91[1])
    with pytest.raises(ValueError, match=r"DIV2K_train_HR/extra\.png: DIV2K HR files are named by number"):
        train_pairs(module(root, data_range=[1, 1]))


def test_16bit_and_rgba_pngs_are_converted_as_documented(tmp_path: Path, t91) -> None:
    root = tmp_path / "DIV2K"
    hr_dir = root / "DIV2K_train_HR"
    hr_dir.mkdir(parents=True)
    rgb = modcrop(t91[0], 2)
    deep = rgb.astype(np.uint16) * 257 + 100  # 16-bit: read as round(v / 257)
    cv2.imwrite(str(hr_dir / "0001.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])  # alpha is dropped
    cv2.imwrite(str(hr_dir / "0002.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    pairs = train_pairs(module(root, data_range=[1, 2]))
    expected_deep = np.round(deep / 257.0).astype(np.uint8)
    assert np.array_equal(np.asarray(pairs[0].hr), expected_deep)
    assert np.array_equal(np.asarray(pairs[1].hr), rgb)
    assert np.array_equal(np.asarray(pairs[1].lr), bicubic_downscale(rgb, 2))


# -- downloads and config ------------------------------------------------------------------------------


def test_download_fetches_only_missing_splits_and_sets(tmp_path: Path, t91, monkeypatch) -> None:
    root = write_div2k(tmp_path / "DIV2K", {800: t91[0]}, scale=2)
    calls = []

    def fake_div2k(parent, scales, splits):
        calls.append(("div2k", parent, list(scales), list(splits)))
        write_div2k(parent / "DIV2K", {801: t91[1]}, scale=2)

    def fake_benchmarks(parent, names):
        calls.append(("benchmarks", parent, list(names)))
        write_image(parent / "benchmark" / "Set14" / "HR" / "a.png", t91[2])

    monkeypatch.setattr(div2k, "ensure_div2k", fake_div2k)
    monkeypatch.setattr(div2k, "ensure_benchmarks", fake_benchmarks)
    dm = module(root, data_range=[800, 801], download=True, benchmark_root=tmp_path / "benchmark", val_sets=["set14"])
    dm.prepare_data()
    assert calls == [("div2k", tmp_path, [2], ["valid"]), ("benchmarks", tmp_path, ["Set14"])]
    dm.prepare_data()
    assert len(calls) == 2, "nothing is fetched once present"
    dm.setup("fit")
    assert [p.name for p in dm.train_set.pairs] == ["0800", "0801"]
    assert dm.eval_names == ["Set14"]

    odd = module(tmp_path / "mydata", download=True)
    with pytest.raises(ValueError, match=r"root must end in /DIV2K"):
        odd.prepare_data()


def test_validation_alone_needs_no_div2k(tmp_path: Path) -> None:
    require_shared_data("benchmark/Set5/HR")
    dm = module(tmp_path / "DIV2K", benchmark_root=SHARED_BENCHMARK, val_sets=["Set5"], download=True)
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.VALIDATING), world_size=1)
    dm.prepare_data()  # would raise (missing root) or download if it touched DIV2K
    dm.setup("validate")
    assert dm.eval_names == ["Set5"] and len(dm.val_dataloader()[0]) == 5
    assert not (tmp_path / "DIV2K").exists()


def test_data_config_builds_the_paper_setting(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["data=div2k", "model.scale=4", f"paths.root_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, DIV2KDataModule)
    assert (dm.scale, dm.patch_size, dm.batch_size, dm.steps_per_epoch) == (4, 128, 64, 1000)
    assert dm.data_range == (1, 900) and dm.val_sets == ["Set5"]
    assert dm.root == tmp_path / "data" / "DIV2K" and dm.benchmark_root == tmp_path / "data" / "benchmark"
    assert dm.cache is True and dm.download is False


# -- training ---------------------------------------------------------------------------------------




def tiny_hdsrnet(scale: int, **kwargs) -> SRModule:
    return SRModule(
        model={"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": scale, "channels": 8, **kwargs},
        optimizer={"_target_": "torch.optim.Adam", "lr": 3e-3},
    )


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=1, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **kwargs,
    )


def test_fit_on_div2k_layout_logs_set5_psnr(tmp_path: Path, t91, one_torch_thread) -> None:
    require_shared_data("benchmark/Set5/HR")
    root = write_div2k(tmp_path / "DIV2K", dict(enumerate(t91[:4], 1)), scale=None)
    L.seed_everything(0)
    dm = module(root, scale=4, data_range=[1, 4], benchmark_root=SHARED_BENCHMARK, val_sets=["Set5"])
    trainer = quiet_trainer(max_steps=3, log_every_n_steps=1, logger=CSVLogger(tmp_path, name="csv", version=""))
    trainer.fit(tiny_hdsrnet(4), datamodule=dm)
    psnr = float(trainer.callback_metrics["val/Set5/psnr"])
    assert 5 < psnr < 40
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/Set5/psnr" in header and "val/Set5/ssim" in header


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_training_on_div2k_patches_lowers_the_loss(tmp_path: Path, t91, one_torch_thread) -> None:
    root = write_div2k(tmp_path / "DIV2K", dict(enumerate(t91, 1)), scale=None)
    L.seed_everything(0)
    dm = module(root, batch_size=4, steps_per_epoch=15, data_range=[1, 6])
    recorder = LossRecorder()
    trainer = quiet_trainer(max_steps=15, logger=False, limit_val_batches=0, callbacks=[recorder])
    trainer.fit(tiny_hdsrnet(2, num_blocks=1, lower_depth=2), datamodule=dm)
    assert len(recorder.losses) == 15
    first, last = np.mean(recorder.losses[:5]), np.mean(recorder.losses[-5:])
    assert last < 0.8 * first, f"L1 went from {first:.1f} to {last:.1f} over 15 steps"
