"""Data-loader throughput: training patches per second that one data-loading worker delivers."""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset

from srlab.bench.settings import BenchSettings


def patches_per_second(
    dataset: Dataset, seconds: float = 5.0, num_workers: int = 0, batch_size: int = 16, warmup_batches: int = 2
) -> float:
    """Training patches delivered per second by a DataLoader over `dataset` (after `warmup_batches`).

    With `num_workers` = 0 the main process does the work, which is the
    per-worker figure; with n workers divide by n for the same unit.
    """
    if len(dataset) < batch_size * (warmup_batches + 1):
        raise ValueError(
            f"patches_per_second needs at least {batch_size * (warmup_batches + 1)} samples per epoch "
            f"(batch_size={batch_size}, warmup_batches={warmup_batches}); the dataset has {len(dataset)}"
        )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True)
    patches, start = 0, None
    while True:
        for index, batch in enumerate(loader):
            if start is None and index + 1 >= warmup_batches:
                start = time.perf_counter()  # workers are up and the page cache is warm
                continue
            if start is not None:
                patches += int(torch.as_tensor(batch["hr"]).shape[0])
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    return patches / elapsed


def bench_loader(settings: BenchSettings) -> dict:
    """Patches per second from one worker (the main process), beside what one training step consumes."""
    hr_patch = settings.patch * settings.scale
    if settings.div2k:
        from srlab.data.div2k import DIV2KDataModule

        datamodule = DIV2KDataModule(settings.div2k, settings.scale, hr_patch, settings.batch, val_sets=())
        name = f"DIV2K ({settings.div2k}, cached)"
    else:
        from srlab.data.sample import SampleDataModule

        datamodule = SampleDataModule(settings.scale, hr_patch, settings.batch)
        name = "sample (scikit-image photographs)"
    datamodule.setup("fit")
    rate = patches_per_second(datamodule.train_set, settings.loader_seconds, num_workers=0, batch_size=settings.batch)
    return {"dataset": name, "hr_patch": hr_patch, "batch": settings.batch, "patches_per_s_per_worker": rate}
