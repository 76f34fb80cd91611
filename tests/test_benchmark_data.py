"""Tests for the benchmark sets (srlab.data.benchmark): EDSR layout, HR-only folders, exact distributed eval."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import srlab.data.benchmark as benchmark
from srlab.data.base import SRDataModule
from srlab.data.benchmark import (
    BENCHMARK_SETS,
    DOWNLOADABLE_SETS,
    benchmark_eval_sets,
    canonical_benchmark,
    load_benchmark,
)
from srlab.data.datasets import EvalDataset
from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import read_image, write_image
from tests.conftest import require_shared_data

SHARED_BENCHMARK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark"


def shared_set(name: str) -> Path:
    path = SHARED_BENCHMARK / name
    require_shared_data(f"benchmark/{name}/HR")
    return path


def test_set_names_are_the_papers_four() -> None:
    assert BENCHMARK_SETS == ("Set5", "Set14", "B100", "Urban100")


def test_every_user_of_set_names_reads_the_one_list() -> None:
    from srlab.data.download import ARCHIVES, BENCHMARK_DIR
    from srlab.eval.paper import TABLES, dataset_table, load_paper_tables

    assert DOWNLOADABLE_SETS == BENCHMARK_SETS  # EDSR's benchmark.tar holds all four
    assert ARCHIVES["benchmark"].provides == tuple(f"{BENCHMARK_DIR}/{name}" for name in DOWNLOADABLE_SETS)
    assert {load_paper_tables()[t].get("dataset") for t in TABLES} - {None} <= set(BENCHMARK_SETS)
    assert [dataset_table(alias) for alias in ("set5", "SET14", "BSDS100", "u100")] == [
        "table2", "table3", "table4", "table5"
    ]
    assert [canonical_benchmark(n) for n in ("urban-100", "BSD100", "b100", "set_5")] == [
        "Urban100", "B100", "B100", "Set5"
    ]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_layout_reads_modcropped_hr_and_its_lr_files(scale: int) -> None:
    set_dir = shared_set("Set14")
    pairs = load_benchmark(SHARED_BENCHMARK, "Set14", scale)
    assert len(pairs) == 14
    assert [p.name for p in pairs] == sorted(p.stem for p in (set_dir / "HR").glob("*.png"))
    for pair in pairs:
        hr_full = read_image(set_dir / "HR" / f"{pair.name}.png")
        assert np.array_equal(pair.hr, modcrop(hr_full, scale))
        assert pair.lr.shape[0] * scale == pair.hr.shape[0] and pair.lr.shape[1] * scale == pair.hr.shape[1]
        assert np.array_equal(pair.lr, read_image(set_dir / "LR_bicubic" / f"X{scale}" / f"{pair.name}x{scale}.png"))
    grey = [p for p in pairs if p.grey]
    assert [p.name for p in grey] == ["bridge"]
    assert grey[0].hr.ndim == 2 and grey[0].lr.ndim == 2


def test_eval_sets_keep_order_and_accept_aliases() -> None:
    shared_set("Set5")
    shared_set("Set14")
    sets = benchmark_eval_sets(SHARED_BENCHMARK, ["set14", "Set5"], 2)
    assert list(sets) == ["Set14", "Set5"]
    assert [len(v) for v in sets.values()] == [14, 5]
    with pytest.raises(ValueError, match="Set5 is listed twice"):
        benchmark_eval_sets(SHARED_BENCHMARK, ["Set5", "set5"], 2)


def copy_hr_only(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "benchmark"
    shutil.copytree(shared_set(name) / "HR", root / name / "HR")
    return root


def test_hr_only_folder_generates_lr_once_and_caches_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_hr_only(tmp_path, "Set5")
    calls = []

    def counting_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
        calls.append(scale)
        return bicubic_downscale(hr, scale)

    monkeypatch.setattr(benchmark, "bicubic_downscale", counting_downscale)
    first = load_benchmark(root, "Set5", 3)
    assert len(calls) == 5
    for pair in first:
        assert np.array_equal(pair.lr, bicubic_downscale(pair.hr, 3))
        # Bit-exact with MATLAB, so equal to the distributed LR file.
        lr_file = SHARED_BENCHMARK / "Set5" / "LR_bicubic" / "X3" / f"{pair.name}x3.png"
        assert np.array_equal(pair.lr, read_image(lr_file))
    entries = sorted((root / ".srlab_cache" / "Set5").glob("*.npy"))
    assert len(entries) == 5 and all(".lr_bicubic_x3." in e.name for e in entries)
    mtimes = [e.stat().st_mtime_ns for e in entries]

    second = load_benchmark(root, "Set5", 3)
    assert len(calls) == 5, "second load must read the cache, not recompute"
    assert [e.stat().st_mtime_ns for e in entries] == mtimes
    assert all(np.array_equal(a.lr, b.lr) for a, b in zip(first, second))


def test_hr_only_cache_dir_argument_and_flat_folder(tmp_path: Path) -> None:
    hr_dir = shared_set("Set5") / "HR"
    root = tmp_path / "bench"
    (root / "Set5").mkdir(parents=True)
    shutil.copy(hr_dir / "baby.png", root / "Set5" / "baby.png")  # images directly in <root>/<set>
    pairs = benchmark_eval_sets(root, ["Set5"], 4, cache_dir=tmp_path / "cache")["Set5"]
    assert [p.name for p in pairs] == ["baby"]
    assert len(list((tmp_path / "cache" / "Set5").glob("baby.*.lr_bicubic_x4.*.npy"))) == 1
    assert not (root / ".srlab_cache").exists()


@pytest.mark.parametrize("world_size", [2, 4])
def test_distributed_eval_covers_each_image_exactly_once(world_size: int) -> None:
    shared_set("Set5")
    pairs = load_benchmark(SHARED_BENCHMARK, "Set5", 4)

    class Set5Module(SRDataModule):
        def load_eval_sets(self):
            return {"Set5": pairs}

    seen = []
    for rank in range(world_size):
        dm = Set5Module(scale=4, patch_size=24, batch_size=2, steps_per_epoch=1)
        dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        dm.setup("validate")
        (loader,) = dm.val_dataloader()
        seen += [index for batch in loader for index in batch["index"]]
    assert sorted(seen) == [0, 1, 2, 3, 4], f"{world_size} ranks saw {sorted(seen)} (padding duplicates?)"


def test_unknown_set_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown benchmark set 'Set6'; valid: Set5, Set14, B100, Urban100"):
        load_benchmark(SHARED_BENCHMARK, "Set6", 2)


def test_missing_set_gives_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Urban100: benchmark set Urban100 not found; download it with "
                       r"`python -m srlab.data.download benchmarks --root .* --names Urban100`"):
        load_benchmark(tmp_path / "benchmark", "U100", 2)


def test_empty_set_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "Set5" / "HR").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"Set5/HR: no image files"):
        load_benchmark(tmp_path, "Set5", 2)


def make_edsr_set(tmp_path: Path, scale: int = 2) -> Path:
    root = tmp_path / "benchmark"
    hr = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    write_image(root / "Set5" / "HR" / "a.png", hr)
    write_image(root / "Set5" / "LR_bicubic" / f"X{scale}" / f"ax{scale}.png", bicubic_downscale(hr, scale))
    return root


def test_lr_hr_size_mismatch_names_the_file(tmp_path: Path) -> None:
    root = make_edsr_set(tmp_path)
    lr_path = root / "Set5" / "LR_bicubic" / "X2" / "ax2.png"
    write_image(lr_path, np.zeros((11, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=rf"{lr_path}: LR 10x11 does not match HR .*a\.png \(20x24 after mod-crop\)"):
        load_benchmark(root, "Set5", 2)


def test_missing_lr_file_names_it(tmp_path: Path) -> None:
    root = make_edsr_set(tmp_path)
    write_image(root / "Set5" / "HR" / "b.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"LR_bicubic/X2/bx2\.png: LR image of .*b\.png is missing"):
        load_benchmark(root, "Set5", 2)


def test_truncated_hr_png_names_the_file(tmp_path: Path) -> None:
    root = make_edsr_set(tmp_path)
    hr_path = root / "Set5" / "HR" / "a.png"
    hr_path.write_bytes(hr_path.read_bytes()[:40])
    with pytest.raises(ValueError, match=rf"{hr_path}: not a readable image"):
        load_benchmark(root, "Set5", 2)


def test_grey_lr_of_rgb_hr_names_the_file(tmp_path: Path) -> None:
    root = make_edsr_set(tmp_path)
    lr_path = root / "Set5" / "LR_bicubic" / "X2" / "ax2.png"
    write_image(lr_path, np.zeros((12, 10), np.uint8))
    with pytest.raises(ValueError, match=rf"{lr_path}: LR is grey but its HR .*a\.png is RGB"):
        load_benchmark(root, "Set5", 2)


def test_eval_dataset_of_benchmark_pairs_gives_three_channel_tensors() -> None:
    shared_set("Set14")
    dataset = EvalDataset("Set14", load_benchmark(SHARED_BENCHMARK, "Set14", 2), 2)
    item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["name"] == "bridge")
    assert item["grey"] is True
    assert item["hr"].shape == (3, 512, 512) and item["lr"].shape == (3, 256, 256)
