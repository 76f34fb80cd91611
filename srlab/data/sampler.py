"""Training samples indexed by optimiser step, so epochs, DDP sharding and resumption are exact.

Step `t` on rank `r` of `W` draws the global sample ids `(t * W + r) * B ... + B - 1`
(`B` the per-process batch). `PatchDataset` turns a sample id into a patch with
randomness seeded by `(seed, id)` only, so the batch of every step is fixed by the
seed: an epoch is `steps_per_epoch` optimiser steps whatever the number of processes
(effective batch `B x W`), no two ranks draw the same sample, and a run resumed
mid-epoch from a checkpoint at step `k` continues with step `k`'s batch, exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch.utils.data import Dataset, DistributedSampler


class StepSampler(DistributedSampler):
    """Yields this rank's sample ids from step `start_step()` to the end of that step's epoch.

    A `DistributedSampler` subclass so Lightning leaves it in place under DDP instead
    of wrapping it (which would split each rank's steps again). `start_step` is read
    when iteration starts: the trainer's global step, restored before the first batch
    of a resumed run. One batch per optimiser step (no gradient accumulation).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        steps_per_epoch: int,
        num_replicas: int = 1,
        rank: int = 0,
        start_step: Callable[[], int] = lambda: 0,
    ):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError(f"batch_size ({batch_size}) and steps_per_epoch ({steps_per_epoch}) must be >= 1")
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.start_step = start_step
        self.num_samples = steps_per_epoch * batch_size  # per rank and epoch: what len() reports

    def step_ids(self, step: int) -> range:
        first = (step * self.num_replicas + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __iter__(self) -> Iterator[int]:
        start = int(self.start_step())
        epoch_end = (start // self.steps_per_epoch + 1) * self.steps_per_epoch
        for step in range(start, epoch_end):
            yield from self.step_ids(step)

    def __len__(self) -> int:
        return self.num_samples
