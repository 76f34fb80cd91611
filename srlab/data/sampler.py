"""Samplers: training samples indexed by optimiser step, and whole-image evaluation shards for any number of ranks.

Step `t` on rank `r` of `W` draws the global sample ids `(t * W + r) * B ... + B - 1`
(`B` the per-process batch). `PatchDataset` turns a sample id into a patch with
randomness seeded by `(seed, id)` only, so the batch of every step is fixed by the
seed: an epoch is `steps_per_epoch` optimiser steps whatever the number of processes
(effective batch `B x W`), no two ranks draw the same sample, and a run resumed
mid-epoch from a checkpoint at step `k` continues with step `k`'s batch, exactly as
the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

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


class EvalShardSampler(DistributedSampler):
    """Evaluation on `num_replicas` ranks: rank `r` scores images `r, r + W, r + 2W, ...`, each image once.

    Lightning's default sampler pads ranks with repeated images (one Set5 image counted twice
    on 4 GPUs), and its UnrepeatedDistributedSampler asserts every rank gets an image, which
    fails with more ranks than images (Set5 on 8 GPUs). Here a rank may get none. Such a rank
    still reports one batch: Lightning skips the evaluation loop of a rank whose loaders all
    have length 0, and that rank would then miss the collectives the others make at the epoch
    end (the metric reduction) and hang them. Its loop gets no batch and only runs the epoch-end
    hooks, adding nothing to the summed metric states. Under fit, DDP must not broadcast buffers
    (``broadcast_buffers=false``): that collective comes with a forward, which such a rank never
    makes (`SRDataModule` fails with this advice rather than hang).
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.indices = list(range(rank, len(dataset), num_replicas))
        self.num_samples = len(self.indices)
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        # An empty rank's loader must not be of length 0 (see the class docstring); with batch size 1
        # a loader's length is the sampler's, and iterating it yields nothing.
        return max(1, self.num_samples) if self.total_size else 0
