"""The LightningDataModule base: one training patch loader, one whole-image loader per eval set.

Subclasses implement `load_train_pairs()` and `load_eval_sets()`; loaders,
patch cropping, epoch length and exact distributed evaluation live here once.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from srlab.data.datasets import EvalDataset, ImagePair, PatchDataset, check_patch_size
from srlab.data.sampler import StepSampler


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
        pin_memory: bool = False,
    ):
        super().__init__()
        # Checked here, before any file is read, so a bad config fails at construction.
        check_patch_size(patch_size, scale)
        for name, value in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer of at least 1")
        self.scale = scale
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.num_workers = num_workers
        self.augment = augment
        self.pin_memory = pin_memory
        self.train_set: PatchDataset | None = None
        self.eval_sets: list[EvalDataset] = []

    # -- subclass hooks ------------------------------------------------------------------
    def load_train_pairs(self) -> Sequence[ImagePair]:
        raise NotImplementedError

    def load_eval_sets(self) -> dict[str, Sequence[ImagePair]]:
        raise NotImplementedError

    # -- Lightning -----------------------------------------------------------------------
    @property
    def eval_names(self) -> list[str]:
        return [d.name for d in self.eval_sets]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            pairs = self.load_train_pairs()
            # torch's seed is `seed` from the config (seed_everything), the same on every rank.
            self.train_set = PatchDataset(
                pairs, self.scale, self.patch_size, self.steps_per_epoch * self.batch_size, self.augment,
                seed=torch.initial_seed(),
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
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loaders(self) -> list[DataLoader]:
        loaders = []
        for dataset in self.eval_sets:
            sampler = None
            if self.trainer is not None and self.trainer.world_size > 1:
                # Lightning's default DistributedSampler pads ranks with repeated images, which would
                # count e.g. one Set5 image twice on 4 GPUs. This sampler never repeats.
                sampler = UnrepeatedDistributedSampler(
                    dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
                )
            loaders.append(DataLoader(dataset, batch_size=1, sampler=sampler, collate_fn=collate_eval))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders()
