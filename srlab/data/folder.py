"""Folders of HR images (T91, BSD200, DF2K, a user's photos; RGB or grey) as a LightningDataModule.

Training images are the files directly in each of `roots` (or in its ``HR/`` subfolder).
Without `lr_roots`, LR is MATLAB-exact ``bicubic_downscale`` of the mod-cropped HR,
computed once and cached exactly as DIV2K's (the same loader, ``srlab.data.div2k.load_div2k_pair``,
and ``srlab.data.cache``). With `lr_roots` (one per root), LR files are matched to HR files by
name: ``<stem>.<ext>`` or EDSR's ``<stem>x<scale>.<ext>``; an unmatched file on either side
is an error listing them. An image smaller than the HR patch is an error naming the file
(remove it or lower `patch_size`): skipping it silently would change the training set unseen.

Validation runs on benchmark sets (`val_sets` under `benchmark_root`, ``srlab.data.benchmark``)
and/or held-out folders of HR images (`val_roots`, LR generated and cached the same way),
each logged under its own name (a folder's name).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightning.pytorch.trainer.states import TrainerFn

from srlab.data import benchmark
from srlab.data.base import SRDataModule
from srlab.data.cache import CACHE_DIRNAME
from srlab.data.datasets import ImagePair
from srlab.data.div2k import DIV2KFile, load_div2k_pair
from srlab.data.download import BENCHMARK_DIR
from srlab.data.io import list_images

__all__ = ["FolderDataModule", "image_folder", "index_folders", "match_lr_files"]


def image_folder(root: Path) -> Path:
    """The folder holding a root's images: ``<root>/HR`` when it exists (EDSR's layout), else the root itself."""
    return root / "HR" if (root / "HR").is_dir() else root


def _as_paths(value: str | os.PathLike | Sequence[str | os.PathLike] | None, key: str) -> list[Path]:
    if value is None:
        return []
    values = [value] if isinstance(value, str | os.PathLike) else list(value)
    if any(not isinstance(v, str | os.PathLike) or not str(v) for v in values):
        raise ValueError(f"{key}={values!r} must be a folder path or a list of folder paths")
    return [Path(v).expanduser() for v in values]


def match_lr_files(hr_files: Sequence[Path], lr_folder: Path, scale: int) -> list[Path]:
    """The LR file of each HR file, matched by name (`<stem>` or `<stem>x<scale>`); any unmatched file is an error."""
    lr_files = list_images(lr_folder)
    by_stem: dict[str, Path] = {}
    for path in lr_files:
        stem = path.stem[: -len(f"x{scale}")] if path.stem.endswith(f"x{scale}") else path.stem
        if stem in by_stem:
            raise ValueError(f"{path}: LR files {by_stem[stem].name} and {path.name} both match HR name {stem!r}")
        by_stem[stem] = path
    hr_stems = {p.stem for p in hr_files}
    no_lr = [p.name for p in hr_files if p.stem not in by_stem]
    no_hr = [p.name for stem, p in by_stem.items() if stem not in hr_stems]
    if no_lr or no_hr:
        def shown(names: list[str]) -> str:
            return ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10 else "")

        problems = ([f"no LR in {lr_folder} for HR {shown(no_lr)}"] if no_lr else []) + (
            [f"no HR for LR {shown(no_hr)}"] if no_hr else []
        )
        raise FileNotFoundError(
            f"{lr_folder}: LR and HR folders do not match by file name (<stem> or <stem>x{scale}): "
            + "; ".join(problems)
        )
    return [by_stem[p.stem] for p in hr_files]


def index_folders(roots: Sequence[Path], lr_roots: Sequence[Path], scale: int) -> list[tuple[Path, DIV2KFile]]:
    """(root, file) for every training image of `roots`, in root order then name order."""
    files = []
    for i, root in enumerate(roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: training image folder does not exist (data.roots)")
        hr_files = list_images(image_folder(root))
        lr_files = match_lr_files(hr_files, lr_roots[i], scale) if lr_roots else [None] * len(hr_files)
        files += [(root, DIV2KFile(len(files) + j + 1, hr, lr)) for j, (hr, lr) in enumerate(zip(hr_files, lr_files))]
    return files


class FolderDataModule(SRDataModule):
    """Random aligned patches of every image in `roots`; whole-image validation on `val_sets` and `val_roots`.

    `cache_dir` defaults to each folder's own ``<folder>/.srlab_cache``; `cache=False` keeps
    generated LR images in memory and decodes each patch's file (the slow reference mode).
    """

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        scale: int = 2,
        patch_size: int = 96,
        batch_size: int = 16,
        steps_per_epoch: int = 1000,
        lr_roots: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        benchmark_root: str | os.PathLike | None = None,
        val_sets: Sequence[str] = ("Set5",),
        val_roots: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        **kwargs,
    ):
        super().__init__(scale, patch_size, batch_size, steps_per_epoch, **kwargs)
        self.roots = _as_paths(roots, "roots")
        if not self.roots:
            raise ValueError("roots=[] must name at least one folder of training images")
        self.lr_roots = _as_paths(lr_roots, "lr_roots")
        if self.lr_roots and len(self.lr_roots) != len(self.roots):
            raise ValueError(f"lr_roots={[str(p) for p in self.lr_roots]} must give one LR folder per root "
                             f"({len(self.roots)} roots)")
        self.val_sets = [benchmark.canonical_benchmark(n) for n in ([val_sets] if isinstance(val_sets, str)
                                                                    else val_sets or [])]
        self.val_roots = _as_paths(val_roots, "val_roots")
        if self.val_sets and not benchmark_root:
            raise ValueError(f"benchmark_root=null but val_sets={self.val_sets} needs the benchmark folder")
        names = [*self.val_sets, *(p.name for p in self.val_roots)]
        if len(set(names)) != len(names):
            raise ValueError(f"val_sets and val_roots give the validation sets {names}; each name must be unique")
        self.benchmark_root = Path(benchmark_root).expanduser() if benchmark_root else None
        self.cache = cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None

    def folder_cache_dir(self, folder: Path) -> Path | None:
        if not self.cache:
            return None
        return self.cache_dir or folder / CACHE_DIRNAME

    @property
    def train_cache_dir(self) -> Path | None:
        # The bicubic-upscaled inputs of pre-upsampling models sit next to the first root's LR cache.
        return self.folder_cache_dir(self.roots[0])

    def prepare_data(self) -> None:
        """Builds the decoded-image cache once, on rank 0 (every file is checked here, before the first step)."""
        fitting = self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING
        if self.cache and fitting:
            self.load_train_pairs()

    def load_train_pairs(self) -> list[ImagePair]:
        files = index_folders(self.roots, self.lr_roots, self.scale)

        def load(item: tuple[Path, DIV2KFile]) -> ImagePair:
            root, file = item
            return load_div2k_pair(file, self.scale, self.patch_size, self.folder_cache_dir(root))

        # PNG decoding and cache writes release the GIL: threads build a cold cache several times faster.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(load, files))

    def load_eval_sets(self) -> dict[str, list[ImagePair]]:
        sets: dict[str, list[ImagePair]] = {}
        if self.val_sets:
            cache_dir = self.cache_dir / BENCHMARK_DIR if self.cache_dir else None
            sets.update(benchmark.benchmark_eval_sets(self.benchmark_root, self.val_sets, self.scale, cache_dir))
        for folder in self.val_roots:
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: validation image folder does not exist (data.val_roots)")
            cache_dir = self.folder_cache_dir(folder) or folder / CACHE_DIRNAME
            # The benchmark loader's own code path for HR-only sets: mod-crop, MATLAB-bicubic LR, cached.
            sets[folder.name] = [
                benchmark._pair_generated(path, self.scale, cache_dir) for path in list_images(image_folder(folder))
            ]
        return sets
