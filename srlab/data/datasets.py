"""Datasets shared by every data module: random paired training patches and whole-image eval sets."""

from __future__ import annotations

import numbers
import random
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from srlab.data.color import rgb_to_y


@dataclass
class ImagePair:
    """One LR/HR pair as uint8 arrays (HxWx3, or HxW for a grey file).

    `upscaled`: the MATLAB-bicubic upscale of the whole LR image (HR's size), set for training
    pre-upsampling models (`SRDataModule`), which crop their input from it.
    """

    name: str
    lr: np.ndarray
    hr: np.ndarray
    upscaled: np.ndarray | None = None

    @property
    def grey(self) -> bool:
        return self.hr.ndim == 2


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxW(xC) -> float32 (3, H, W) in [0, 255]; a grey image is repeated on three channels."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def to_patch_tensor(img: np.ndarray) -> torch.Tensor:
    """A training patch HxW(xC) -> (3, H, W), uint8 kept as uint8 (other types become float32).

    A quarter of float32's bytes through worker queues, pinned memory and the host-to-device
    copy; `SRDataModule.on_after_batch_transfer` turns it into float32 0-255 on the device.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1) if img.ndim == 3 else img))
    if img.ndim == 2:
        tensor = tensor.expand(3, *img.shape).contiguous()
    return tensor if tensor.dtype == torch.uint8 else tensor.float()


def check_patch_size(patch_size: int, scale: int) -> int:
    """The LR patch size of the HR `patch_size`, which must be a positive multiple of the scale (a whole LR patch).

    The one check of `patch_size`, run by the data module and dataset constructors; its
    one-line ValueError names `patch_size`, its value and the scale.
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, numbers.Integral) or patch_size < scale:
        raise ValueError(f"patch_size={patch_size!r} (HR) must be a multiple of scale={scale}, at least {scale}")
    if patch_size % scale:
        lower = patch_size - patch_size % scale
        raise ValueError(
            f"patch_size={patch_size} (HR) is not divisible by scale={scale}; use {lower} or {lower + scale}"
        )
    return int(patch_size) // scale


def check_pair_sizes(pair: ImagePair, scale: int) -> None:
    lh, lw = pair.lr.shape[:2]
    hh, hw = pair.hr.shape[:2]
    if (hh, hw) != (lh * scale, lw * scale):
        raise ValueError(
            f"{pair.name}: LR {lw}x{lh} and HR {hw}x{hh} do not match at x{scale} "
            f"(HR must be exactly {lw * scale}x{lh * scale} after mod-crop)"
        )


# Flips and 90° rotations, applied with the same random parameters to LR and HR; optionally a random
# order of the colour channels (RGB permutation: Yoo et al., "Rethinking Data Augmentation for Image
# Super-resolution", CVPR 2020), which is exact for a pair because bicubic downscaling treats each
# channel alone. Shape checks are off because LR and HR differ in size by design; these transforms
# are size-independent.
def paired_augmentation(permute_channels: bool = False) -> A.Compose:
    return A.Compose(
        [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=1.0),
         *([A.ChannelShuffle(p=1.0)] if permute_channels else [])],
        additional_targets={"hr": "image"},
        is_check_shapes=False,
    )


def check_augmentation(augment: bool, permute_channels: bool) -> None:
    if permute_channels and not augment:
        raise ValueError("permute_channels=true is part of the augmentation; it needs augment=true")


class PatchDataset(Dataset):
    """Random aligned LR/HR crops; `samples_per_epoch` fixes the epoch length (EDSR's `repeat`).

    `pre_upsample`: the input patch is cropped from each pair's `upscaled` image at the HR patch's
    place (any pixel offset), so it has the HR patch's size. `luma`: batches made by `collate`
    hold the Y channel of input and target (MATLAB rgb2ycbcr, `srlab.data.color`), one channel
    each, for models that work on Y; converting whole batches costs a third of per-sample calls.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        scale: int,
        patch_size: int,
        samples_per_epoch: int,
        augment: bool = True,
        seed: int = 0,
        pre_upsample: bool = False,
        luma: bool = False,
        permute_channels: bool = False,
    ):
        if len(pairs) == 0:
            raise ValueError("PatchDataset needs at least one training image")
        self.lr_patch = check_patch_size(patch_size, scale)
        self.pairs = pairs
        self.scale = scale
        self.patch_size = patch_size
        self.samples_per_epoch = int(samples_per_epoch)
        check_augmentation(augment, permute_channels)
        self.augment = paired_augmentation(permute_channels) if augment else None
        self.seed = int(seed)
        self.pre_upsample = bool(pre_upsample)
        self.luma = bool(luma)
        self._pass_order: tuple[int, np.ndarray] | None = None
        for pair in pairs:
            check_pair_sizes(pair, scale)
            if self.pre_upsample and (pair.upscaled is None or pair.upscaled.shape != pair.hr.shape):
                found = "none" if pair.upscaled is None else f"shape {pair.upscaled.shape}"
                raise ValueError(
                    f"{pair.name}: pre_upsample needs the upscaled LR image of HR's shape {pair.hr.shape}, got {found}"
                )
            if min(pair.lr.shape[:2]) < self.lr_patch:
                raise ValueError(
                    f"{pair.name}: LR size {pair.lr.shape[1]}x{pair.lr.shape[0]} is smaller than the LR patch "
                    f"{self.lr_patch} (patch_size={patch_size} at x{scale}); lower patch_size or drop the image"
                )

    def __len__(self) -> int:
        return self.samples_per_epoch

    def crop(self, pair: ImagePair, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.pre_upsample:
            h, w, p = *pair.hr.shape[:2], self.patch_size
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            return pair.upscaled[y : y + p, x : x + p], pair.hr[y : y + p, x : x + p]
        h, w = pair.lr.shape[:2]
        y, x = int(rng.integers(0, h - self.lr_patch + 1)), int(rng.integers(0, w - self.lr_patch + 1))
        s, p = self.scale, self.lr_patch
        return pair.lr[y : y + p, x : x + p], pair.hr[y * s : (y + p) * s, x * s : (x + p) * s]

    def image_index(self, index: int) -> int:
        """Sample ids walk through the images in passes, each pass a fresh seeded permutation (EDSR's shuffle)."""
        n = len(self.pairs)
        pass_number = index // n
        if self._pass_order is None or self._pass_order[0] != pass_number:
            self._pass_order = (pass_number, np.random.default_rng((self.seed, pass_number, n)).permutation(n))
        return int(self._pass_order[1][index % n])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # `index` is a global sample id (srlab.data.sampler.StepSampler): image, crop and flips depend on
        # (seed, index) alone, so every worker, rank and resumed run draws the same patch for it.
        pair = self.pairs[self.image_index(index)]
        rng = np.random.default_rng((self.seed, index))
        lr, hr = self.crop(pair, rng)
        if self.augment is not None:
            # Albumentations keeps its own RNG, which forked workers would copy (same flips in every
            # worker) and seed_everything would not reach; drive it from this sample's generator.
            self.augment.set_random_state(rng, random.Random(int(rng.integers(2**63))))
            out = self.augment(image=np.ascontiguousarray(lr), hr=np.ascontiguousarray(hr))
            lr, hr = out["image"], out["hr"]
        as_tensor = to_tensor if self.luma else to_patch_tensor  # Y (made in collate) is fractional: float32
        return {"lr": as_tensor(lr), "hr": as_tensor(hr)}

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The training loader's batch: stacked samples, brought to Y when `luma`."""
        batch = default_collate(samples)
        return {key: rgb_to_y(images) for key, images in batch.items()} if self.luma else batch


class EvalDataset(Dataset):
    """Whole images of one benchmark set; `grey` marks files stored with one channel."""

    def __init__(self, name: str, pairs: Sequence[ImagePair], scale: int):
        if len(pairs) == 0:
            raise ValueError(f"evaluation set {name!r} has no images")
        for pair in pairs:
            check_pair_sizes(pair, scale)
        self.name = name
        self.pairs = pairs
        self.scale = scale

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        return {
            "lr": to_tensor(pair.lr),
            "hr": to_tensor(pair.hr),
            "grey": pair.grey,
            "name": pair.name,
            "index": index,
        }
