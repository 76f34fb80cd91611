"""The built-in default data: photographs shipped inside scikit-image, no download.

Whole images are split into train and validation; LR is MATLAB-exact bicubic
degradation of the mod-cropped HR, so scores follow the paper's protocol.
"""

from __future__ import annotations

import functools
from pathlib import Path

import skimage

from srlab.data.base import SRDataModule
from srlab.data.datasets import ImagePair
from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import read_image

# File names inside skimage/data (read from the installed package, never fetched). Training: its
# photographs, grey ones included (the model gets them as three equal channels; PSNR is scored on luma),
# dark ones too (hubble_deep_field, moon, retina), since the held-out rocket is largely a dusk sky.
# Left out: page, text and logo (white pages and synthetic edges), brick, grass and gravel (noise-like
# textures), cell and microaneurysms (little detail), clock_motion (blurred: a wrong target),
# motorcycle_right (a near copy of motorcycle_left), coins (kept for validation in tests), horse,
# phantom and the chessboards (two grey levels).
SAMPLE_TRAIN = (
    "astronaut.png", "chelsea.png", "motorcycle_left.png", "ihc.png", "camera.png", "hubble_deep_field.jpg",
    "moon.png", "retina.jpg",
)
# Held out: the demo's scores and pictures are of photographs the model never saw.
SAMPLE_VAL = ("coffee.png", "rocket.jpg")


def skimage_data_dir() -> Path:
    return Path(skimage.__file__).resolve().parent / "data"


def make_pairs(paths: list[Path], scale: int) -> list[ImagePair]:
    return [sample_pair(path, scale) for path in paths]


@functools.lru_cache(maxsize=64)
def sample_pair(path: Path, scale: int) -> ImagePair:
    """One photo's pair, made once per process: every data module of a process (and of a test run) shares it,
    read-only, since decoding and MATLAB-exact downscaling of the larger photos take a large part of a second."""
    hr = modcrop(read_image(path), scale)
    lr = bicubic_downscale(hr, scale)
    for image in (hr, lr):
        image.setflags(write=False)
    return ImagePair(path.stem, lr, hr)


class SampleDataModule(SRDataModule):
    """Train on `train_images`, validate on `val_images` (whole images, disjoint), from scikit-image's data."""

    def __init__(
        self,
        scale: int = 2,
        patch_size: int = 64,
        batch_size: int = 16,
        steps_per_epoch: int = 100,
        train_images: tuple[str, ...] = SAMPLE_TRAIN,
        val_images: tuple[str, ...] = SAMPLE_VAL,
        val_name: str = "Sample",
        **kwargs,
    ):
        super().__init__(scale, patch_size, batch_size, steps_per_epoch, **kwargs)
        overlap = set(train_images) & set(val_images)
        if overlap:
            raise ValueError(f"sample images {sorted(overlap)} are in both train_images and val_images")
        self.train_images = tuple(train_images)
        self.val_images = tuple(val_images)
        self.val_name = val_name

    def _paths(self, names: tuple[str, ...]) -> list[Path]:
        root = skimage_data_dir()
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            available = sorted(p.name for p in root.iterdir() if p.suffix in (".png", ".jpg"))
            raise FileNotFoundError(f"sample images {missing} not found in {root}; available: {available}")
        return [root / n for n in names]

    def load_train_pairs(self) -> list[ImagePair]:
        return make_pairs(self._paths(self.train_images), self.scale)

    def load_eval_sets(self) -> dict[str, list[ImagePair]]:
        return {self.val_name: make_pairs(self._paths(self.val_images), self.scale)}
