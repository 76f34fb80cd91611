"""The LightningDataModule base: one training patch loader, one whole-image loader per eval set.

Subclasses implement `load_train_pairs()` and `load_eval_sets()`; loaders,
patch cropping, epoch length and exact distributed evaluation live here once.

The training input follows the model being trained (``trainer.lightning_module.model``): a
model with ``pre_upsample = True`` gets crops of the MATLAB-bicubic upscale of each whole LR
image, computed once (and cached next to the LR images when the module caches,
``train_cache_dir``); a model with ``luma = True`` gets the Y channel of input and target.
Evaluation sets stay RGB LR / HR: every model takes RGB LR at inference.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader

from srlab.data.cache import DiskImage, ensure_cached
from srlab.data.datasets import EvalDataset, ImagePair, PatchDataset, check_augmentation, check_patch_size
from srlab.data.imresize import bicubic_upscale
from srlab.data.sampler import EvalShardSampler, StepSampler


def collate_eval(batch: list[dict]) -> dict:
    """Whole images differ in size, so evaluation runs with batch size 1 and keeps metadata as lists."""
    return {
        "lr": torch.stack([b["lr"] for b in batch]),
        "hr": torch.stack([b["hr"] for b in batch]),
        "grey": [b["grey"] for b in batch],
        "name": [b["name"] for b in batch],
        "index": [b["index"] for b in batch],
    }


class SRDataModule(L.LightningDataModule):
    """Shared loader logic. `steps_per_epoch` x `batch_size` patches make one epoch (EDSR's repeat)."""

    def __init__(
        self,
        scale: int,
        patch_size: int,
        batch_size: int,
        steps_per_epoch: int,
        num_workers: int = 0,
        augment: bool = True,
        permute_channels: bool = False,
        pin_memory: bool | None = None,
        pre_upsample: bool | None = None,
        luma: bool | None = None,
    ):
        super().__init__()
        # Checked here, before any file is read, so a bad config fails at construction.
        check_patch_size(patch_size, scale)
        check_augmentation(augment, permute_channels)
        for name, value in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer of at least 1")
        self.scale = scale
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.num_workers = num_workers
        self.augment = augment
        self.permute_channels = permute_channels
        self.pin_memory = pin_memory  # None: pinned when training on CUDA (see train_dataloader)
        # None: as the trained model declares (`model_input`); a bool pins it (a data module used alone).
        self.pre_upsample = pre_upsample
        self.luma = luma
        self.train_set: PatchDataset | None = None
        self.eval_sets: list[EvalDataset] = []

    # -- subclass hooks ------------------------------------------------------------------
    def load_train_pairs(self) -> Sequence[ImagePair]:
        raise NotImplementedError

    def load_eval_sets(self) -> dict[str, Sequence[ImagePair]]:
        raise NotImplementedError

    @property
    def train_cache_dir(self) -> Path | None:
        """Where cached training images live (None: kept in memory); subclasses that cache override it."""
        return None

    # -- training input ----------------------------------------------------------------
    def model_input(self) -> tuple[bool, bool]:
        """(pre_upsample, luma) of the training batches: what the trained model declares, or the pinned values."""
        model = getattr(getattr(self.trainer, "lightning_module", None), "model", None)
        resolved = []
        for key in ("pre_upsample", "luma"):
            pinned = getattr(self, key)
            if model is None:
                resolved.append(bool(pinned))
                continue
            declared = bool(getattr(model, key, False))
            if pinned is not None and bool(pinned) != declared:
                raise ValueError(
                    f"{key}={pinned} but the model {type(model).__name__} declares {key}={declared}; "
                    f"remove data.{key} (it follows the model by default)"
                )
            resolved.append(declared)
        return resolved[0], resolved[1]

    def with_upscaled(self, pairs: Sequence[ImagePair]) -> list[ImagePair]:
        """`pairs` with `upscaled` set: bicubic_upscale of each whole LR image, cached when the LR is a file."""
        cache_dir = self.train_cache_dir

        def add(pair: ImagePair) -> ImagePair:
            def build() -> np.ndarray:
                return bicubic_upscale(np.ascontiguousarray(pair.lr), self.scale)

            lr_file = pair.lr.path if isinstance(pair.lr, DiskImage) else None
            if cache_dir is None or lr_file is None:
                upscaled = build()
            else:
                shape = (pair.lr.shape[0] * self.scale, pair.lr.shape[1] * self.scale, *pair.lr.shape[2:])
                # Keyed on the LR file (and the crop it is used at): a changed LR file makes a new entry.
                variant = f"bicubic_up_x{self.scale}_{pair.lr.shape[0]}x{pair.lr.shape[1]}"
                upscaled = DiskImage(ensure_cached(lr_file, cache_dir, variant, build), shape)
            return ImagePair(pair.name, pair.lr, pair.hr, upscaled)

        # The 1-D resize passes are matrix products that release the GIL: threads build a cold cache faster.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(add, pairs))

    # -- Lightning -----------------------------------------------------------------------
    @property
    def eval_names(self) -> list[str]:
        return [d.name for d in self.eval_sets]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            pre_upsample, luma = self.model_input()
            pairs = self.load_train_pairs()
            if pre_upsample:
                pairs = self.with_upscaled(pairs)
            # torch's seed is `seed` from the config (seed_everything), the same on every rank.
            self.train_set = PatchDataset(
                pairs, self.scale, self.patch_size, self.steps_per_epoch * self.batch_size, self.augment,
                seed=torch.initial_seed(), pre_upsample=pre_upsample, luma=luma, permute_channels=self.permute_channels,
            )
        if not self.eval_sets:
            self.eval_sets = [EvalDataset(name, pairs, self.scale) for name, pairs in self.load_eval_sets().items()]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # Batches are indexed by optimiser step (see srlab.data.sampler): an epoch is steps_per_epoch
        # steps on any number of ranks, and a resumed run continues at the restored global step.
        sampler = StepSampler(
            self.train_set,
            self.batch_size,
            self.steps_per_epoch,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            start_step=lambda: trainer.global_step if trainer is not None else 0,
        )
        # Pinned batches reach a CUDA device by an asynchronous copy: the step does not wait for it.
        pin_memory = self.pin_memory
        if pin_memory is None:
            pin_memory = isinstance(getattr(trainer, "accelerator", None), CUDAAccelerator)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.train_set.collate,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 training patches (a quarter of float32's bytes to copy) become float32 0-255 here, on the device."""
        for key in ("lr", "hr") if isinstance(batch, dict) else ():
            if torch.is_tensor(batch.get(key)) and batch[key].dtype == torch.uint8:
                batch[key] = batch[key].to(torch.float32)
        return batch

    def _eval_loaders(self) -> list[DataLoader]:
        loaders = []
        for dataset in self.eval_sets:
            sampler = None
            if self.trainer is not None and self.trainer.world_size > 1:
                # Each image scored once over all ranks, even with more ranks than images (srlab.data.sampler).
                sampler = EvalShardSampler(dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank)
                self._check_ranks_without_images(dataset)
            loaders.append(DataLoader(dataset, batch_size=1, sampler=sampler, collate_fn=collate_eval))
        return loaders

    def _check_ranks_without_images(self, dataset: EvalDataset) -> None:
        """Fails, instead of hanging, where a rank without an image would skip a collective the others make.

        Under fit the model runs in DistributedDataParallel, which by default broadcasts the model's
        buffers in each rank's first forward after a training step: a rank with no validation
        image makes no forward, and the others wait for it forever.
        """
        world_size = self.trainer.world_size
        wrapper = getattr(getattr(self.trainer, "strategy", None), "model", None)
        if len(dataset) >= world_size or not isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
            return
        if wrapper.broadcast_buffers and any(True for _ in wrapper.module.buffers()):
            raise ValueError(
                f"validation set {dataset.name} has {len(dataset)} image(s) for {world_size} processes, so ranks "
                f"{len(dataset)}-{world_size - 1} score none, and DDP's buffer broadcast in the other ranks' first "
                "validation forward would wait for them forever; set trainer.strategy.broadcast_buffers=false "
                f"(srlab models hold constant buffers only) or validate on at least {world_size} images"
            )

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()
