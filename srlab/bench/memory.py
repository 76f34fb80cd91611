"""Peak memory of one training step and one largest-size inference, srlab against the baseline.

Each measurement runs in a fresh spawned process: RSS growth on CPU,
``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import resource

import torch

from srlab.bench.authors_hdsrnet import baseline_like
from srlab.bench.settings import BenchSettings
from srlab.bench.timing import compile_options, make_optimizer, training_step
from srlab.models.hdsrnet import HDSRNet
from srlab.utils.perf import apply_speed_options, autocast, channels_last_input


def current_rss_mb() -> float | None:
    """Resident set size now (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def reset_peak_rss() -> None:
    """Restarts the kernel's RSS high-water mark from the current RSS (Linux >= 4.0; a no-op elsewhere)."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_rss_mb() -> float:
    """This process's RSS high-water mark: VmHWM of its own address space on Linux.

    Not `ru_maxrss`, which Linux carries over from the parent the process was forked from.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**10
    except (OSError, StopIteration):
        scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def peak_worker(role: str, task: str, settings: BenchSettings) -> dict:
    """One training step or one largest-size inference of one model; its peak memory in MiB."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    train = task == "train"
    scale = settings.scale if train else settings.infer_scale
    torch.manual_seed(settings.seed)
    model = HDSRNet(scale).to(device)
    if role == "baseline":
        model = baseline_like(model)
    else:
        apply_speed_options(model, settings.channels_last, settings.compile, compile_options(settings, not train),
                            settings.narrow_convs)
    use_cl = role == "srlab" and settings.channels_last
    dtype = settings.dtype if role == "srlab" else "fp32"
    size = settings.patch if train else max(settings.infer_sizes) // scale
    batch = settings.batch if train else 1
    lr = torch.rand(batch, 3, size, size, device=device) * 255
    hr = torch.rand(batch, 3, size * scale, size * scale, device=device) * 255
    if use_cl:
        lr, hr = channels_last_input(lr), channels_last_input(hr)
    if train:
        optimizer = make_optimizer(model, settings.fused_adam and role == "srlab")
        run = training_step(model, optimizer, lr, hr, dtype, device, settings.compile and role == "srlab")
    else:
        def run():
            with torch.inference_mode(), autocast(device, dtype):
                return model(lr)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        run()
        torch.cuda.synchronize(device)
        return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "before_mb": before}
    before = current_rss_mb() or 0.0
    reset_peak_rss()
    run()
    return {"peak_mb": peak_rss_mb() - before, "before_mb": before}


def bench_peak(settings: BenchSettings) -> dict:
    context = multiprocessing.get_context("spawn")
    results: dict[str, dict] = {}
    with context.Pool(1, maxtasksperchild=1) as pool:
        for role in ("srlab", "baseline"):
            for task in ("train", "infer"):
                results.setdefault(role, {})[task] = pool.apply(peak_worker, (role, task, settings))
    return results
