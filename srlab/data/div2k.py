"""DIV2K as a LightningDataModule: the official layout, the paper's images 1-900, cached decoded images.

Layout (what ``python -m srlab.data.download div2k --root data`` makes; defined in
``srlab.data.download``)::

    <root>/DIV2K_train_HR/0001.png ... 0800.png
    <root>/DIV2K_valid_HR/0801.png ... 0900.png
    <root>/DIV2K_{train,valid}_LR_bicubic/X{s}/0001x{s}.png

Images are chosen by number with `data_range` (inclusive), whichever split folder
holds them, so the paper's ``[1, 900]`` merges train and valid. When a split has
no ``LR_bicubic/X{s}`` folder, LR is MATLAB-exact ``bicubic_downscale`` of the
mod-cropped HR. With ``cache=True`` every image is decoded once into
``<cache_dir>`` (``srlab.data.cache``) and training crops from memory maps, so
900 images never sit in each worker's RAM; with ``cache=False`` each patch
decodes its PNG (the slow reference mode) and generated LR images are kept in RAM.
Every file is checked when the data is set up, before the first step.

On a cluster the cache is built by `prepare_data`, once per node (local rank 0).
With the default ``cache_dir`` (beside the data, often a shared file system) one
node builds it under ``srlab.data.cache.build_lock`` while the others wait, then
reuse it; ``cache_dir`` on node-local disk (e.g. ``data.cache_dir=$TMPDIR/srlab_cache``)
gives each node its own copy, read without network traffic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightning.pytorch.trainer.states import TrainerFn

from srlab.data.base import SRDataModule
from srlab.data.benchmark import benchmark_eval_sets, canonical_benchmark
from srlab.data.cache import CACHE_DIRNAME, DiskImage, build_lock, ensure_cached, ensure_decoded, load_npy
from srlab.data.datasets import ImagePair
from srlab.data.download import (
    BENCHMARK_DIR,
    DIV2K_DIR,
    DIV2K_RANGES,
    DIV2K_SPLITS,
    div2k_hr_folder,
    div2k_lr_folder,
    ensure_benchmarks,
    ensure_div2k,
)
from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import list_images, read_image

__all__ = [
    "DIV2KDataModule",
    "DIV2KFile",
    "index_div2k",
    "load_div2k_pair",
]


def hr_dir(root: Path, split: str) -> Path:
    return root / div2k_hr_folder(split)


def lr_dir(root: Path, split: str, scale: int) -> Path:
    return root / div2k_lr_folder(split, scale)


def download_command(root: Path, scale: int, splits: Sequence[str] = DIV2K_SPLITS) -> str:
    return (
        f"python -m srlab.data.download div2k --root {root.parent} --scales {scale} --splits {' '.join(splits)}"
    )


def check_data_range(data_range: Sequence[int]) -> tuple[int, int]:
    if len(data_range) != 2 or any(isinstance(v, bool) or int(v) != v for v in data_range):
        raise ValueError(f"data_range must be two image numbers [first, last], got {list(data_range)}")
    first, last = (int(v) for v in data_range)
    if not 1 <= first <= last:
        raise ValueError(f"data_range [{first}, {last}] must satisfy 1 <= first <= last (DIV2K numbers from 1)")
    return first, last


def splits_for_range(first: int, last: int) -> list[str]:
    """The official splits holding any of images `first`..`last`: what to download for them."""
    return [s for s, (lo, hi) in DIV2K_RANGES.items() if first <= hi and last >= lo]


@dataclass(frozen=True)
class DIV2KFile:
    """One selected image: its number, HR file and LR file (None: LR is generated from HR)."""

    number: int
    hr: Path
    lr: Path | None


def index_div2k(root: Path, scale: int, data_range: Sequence[int]) -> list[DIV2KFile]:
    """The files of images `data_range` (inclusive) in both split folders; any missing file is an error."""
    root = Path(root)
    first, last = check_data_range(data_range)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: DIV2K root does not exist; download it with `{download_command(root, scale)}` "
            f"(or set data.download=true), or point data.root to a folder holding {div2k_hr_folder('train')}"
        )
    by_number: dict[int, tuple[str, Path]] = {}
    splits_found = [s for s in DIV2K_SPLITS if hr_dir(root, s).is_dir()]
    if not splits_found:
        raise FileNotFoundError(
            f"{root}: no {' or '.join(div2k_hr_folder(s) for s in DIV2K_SPLITS)} folder in the DIV2K root; "
            f"download with `{download_command(root, scale)}`"
        )
    for split in splits_found:
        for path in list_images(hr_dir(root, split)):
            if not path.stem.isdigit():
                raise ValueError(f"{path}: DIV2K HR files are named by number (0001.png); cannot number this one")
            number = int(path.stem)
            if number in by_number:
                raise ValueError(f"{path}: image number {number} also exists as {by_number[number][1]}")
            by_number[number] = (split, path)
    missing = [n for n in range(first, last + 1) if n not in by_number]
    if missing:
        shown = ", ".join(f"{n:04d}" for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        splits = sorted({s for n in missing for s, (lo, hi) in DIV2K_RANGES.items() if lo <= n <= hi})
        official = " and ".join(f"{lo:04d}-{hi:04d} in {div2k_hr_folder(s)}" for s, (lo, hi) in DIV2K_RANGES.items())
        raise FileNotFoundError(
            f"{root}: data_range [{first}, {last}] selects {len(missing)} image(s) not found in "
            f"{', '.join(str(hr_dir(root, s)) for s in splits_found)}: {shown}. Official DIV2K keeps {official}"
            + (f"; download with `{download_command(root, scale, splits)}`" if splits else "")
            + ", or narrow data_range"
        )
    files = []
    for number in range(first, last + 1):
        split, hr_path = by_number[number]
        lr_folder = lr_dir(root, split, scale)
        lr_path = None
        if lr_folder.is_dir():
            lr_path = lr_folder / f"{hr_path.stem}x{scale}{hr_path.suffix}"
            if not lr_path.is_file():
                raise FileNotFoundError(
                    f"{lr_path}: LR image of {hr_path} is missing (every HR image needs its LR in {lr_folder}, "
                    "or remove that folder to generate all LR images)"
                )
        files.append(DIV2KFile(number, hr_path, lr_path))
    return files


def _usable_shapes(
    file: DIV2KFile, lr_shape: tuple[int, ...], hr_shape: tuple[int, ...], scale: int, patch_size: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(LR, HR) shapes used for training: HR mod-cropped, LR the matching floor(HR / scale)."""
    hr_h, hr_w = hr_shape[0] // scale * scale, hr_shape[1] // scale * scale
    if min(hr_h, hr_w) < patch_size:
        raise ValueError(
            f"{file.hr}: image {hr_shape[1]}x{hr_shape[0]} is smaller than the HR patch {patch_size}; "
            "lower patch_size or remove the image"
        )
    if file.lr is None:
        return (hr_h // scale, hr_w // scale) + hr_shape[2:], (hr_h, hr_w) + hr_shape[2:]
    if len(lr_shape) != len(hr_shape):
        kinds = {2: "grey", 3: "RGB"}
        raise ValueError(f"{file.lr}: LR is {kinds[len(lr_shape)]} but its HR {file.hr} is {kinds[len(hr_shape)]}")
    # MATLAB's imresize gives ceil(H / s) rows; an official LR of an HR not divisible by s may be one longer.
    for axis in (0, 1):
        if lr_shape[axis] not in (hr_shape[axis] // scale, math.ceil(hr_shape[axis] / scale)):
            raise ValueError(
                f"{file.lr}: LR {lr_shape[1]}x{lr_shape[0]} does not match HR {file.hr} "
                f"({hr_shape[1]}x{hr_shape[0]}) at x{scale}; expected LR {hr_shape[1] // scale}x{hr_shape[0] // scale}"
            )
    return (hr_h // scale, hr_w // scale) + hr_shape[2:], (hr_h, hr_w) + hr_shape[2:]


def load_div2k_pair(file: DIV2KFile, scale: int, patch_size: int, cache_dir: Path | None) -> ImagePair:
    """A lazily read training pair, validated; with `cache_dir` both images become memory-mapped cache entries."""
    name = file.hr.stem
    if cache_dir is not None:
        hr_entry = ensure_decoded(file.hr, cache_dir)
        hr_shape = load_npy(hr_entry, mmap_mode="r").shape
        if file.lr is None:
            lr_entry = ensure_cached(
                file.hr,
                cache_dir,
                f"lr_bicubic_x{scale}",
                lambda: bicubic_downscale(modcrop(load_npy(hr_entry), scale), scale),
            )
        else:
            lr_entry = ensure_decoded(file.lr, cache_dir)
        lr_shape, hr_shape = _usable_shapes(
            file, load_npy(lr_entry, mmap_mode="r").shape, hr_shape, scale, patch_size
        )
        return ImagePair(name, DiskImage(lr_entry, lr_shape), DiskImage(hr_entry, hr_shape))
    # Uncached: decode once here so that every file is checked before training, then keep only paths.
    hr = read_image(file.hr)
    if file.lr is None:
        lr_shape, hr_shape = _usable_shapes(file, (), hr.shape, scale, patch_size)
        return ImagePair(name, bicubic_downscale(modcrop(hr, scale), scale), DiskImage(file.hr, hr_shape))
    lr_shape, hr_shape = _usable_shapes(file, read_image(file.lr).shape, hr.shape, scale, patch_size)
    return ImagePair(name, DiskImage(file.lr, lr_shape), DiskImage(file.hr, hr_shape))


class DIV2KDataModule(SRDataModule):
    """Random aligned patches of DIV2K images `data_range`; whole-image validation on benchmark sets `val_sets`.

    `cache_dir` defaults to ``<root>/.srlab_cache``; point it to node-local disk on a
    cluster to keep crops off the network. With `download`, missing DIV2K HR folders
    and benchmark sets are fetched by `prepare_data` (rank 0).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        scale: int = 2,
        patch_size: int = 128,
        batch_size: int = 64,
        steps_per_epoch: int = 1000,
        data_range: Sequence[int] = (1, 900),
        benchmark_root: str | os.PathLike | None = None,
        val_sets: Sequence[str] = ("Set5",),
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        download: bool = False,
        **kwargs,
    ):
        super().__init__(scale, patch_size, batch_size, steps_per_epoch, **kwargs)
        self.root = Path(root).expanduser()
        self.data_range = check_data_range(data_range)
        self.benchmark_root = Path(benchmark_root).expanduser() if benchmark_root else self.root.parent / BENCHMARK_DIR
        self.val_sets = [canonical_benchmark(n) for n in ([val_sets] if isinstance(val_sets, str) else val_sets)]
        self.cache = cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.download = download

    @property
    def train_cache_dir(self) -> Path | None:
        if not self.cache:
            return None
        return self.cache_dir or self.root / CACHE_DIRNAME

    def prepare_data(self) -> None:
        """Download what is missing (when allowed) and build the decoded-image cache once, on each node's rank 0."""
        # validate/test runs need the benchmark sets only, not DIV2K.
        fitting = self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING
        if self.download:
            self._download_missing(fitting)
        if self.cache and fitting:
            # Nodes sharing one cache_dir: the first builds, the others wait here and find it warm.
            with build_lock(self.train_cache_dir):
                self.load_train_pairs()

    def _download_missing(self, fitting: bool) -> None:
        splits = [
            s
            for s in splits_for_range(*self.data_range)
            if fitting and not (hr_dir(self.root, s).is_dir() and any(hr_dir(self.root, s).iterdir()))
        ]
        if splits:
            if self.root.name != DIV2K_DIR:
                raise ValueError(
                    f"data.root={self.root}: download=true writes <dir>/{DIV2K_DIR}, so root must end in /{DIV2K_DIR}"
                )
            ensure_div2k(self.root.parent, scales=[self.scale], splits=splits)
        missing_sets = [n for n in self.val_sets if not (self.benchmark_root / n).is_dir()]
        if missing_sets:
            if self.benchmark_root.name != BENCHMARK_DIR:
                raise ValueError(
                    f"data.benchmark_root={self.benchmark_root}: download=true writes <dir>/{BENCHMARK_DIR}, "
                    f"so benchmark_root must end in /{BENCHMARK_DIR}"
                )
            ensure_benchmarks(self.benchmark_root.parent, names=missing_sets)

    def load_train_pairs(self) -> list[ImagePair]:
        files = index_div2k(self.root, self.scale, self.data_range)
        cache_dir = self.train_cache_dir

        def load(file: DIV2KFile) -> ImagePair:
            return load_div2k_pair(file, self.scale, self.patch_size, cache_dir)

        # PNG decoding and the cache writes release the GIL: threads build a cold cache several times faster.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(load, files))

    def load_eval_sets(self) -> dict[str, list[ImagePair]]:
        if not self.val_sets:
            return {}
        cache_dir = self.cache_dir / BENCHMARK_DIR if self.cache_dir else None
        return benchmark_eval_sets(self.benchmark_root, self.val_sets, self.scale, cache_dir)
