"""`python -m srlab.bench`: how fast srlab trains and infers, against HDSRNet run the way its authors ran it.

Parts (``--parts``):

- ``train``: patches per second of a full training step (forward, L1, backward,
  gradient clipping by value at 10, Adam) on ``--batch`` LR patches of
  ``--patch`` pixels at x``--scale``.
- ``infer``: batch-1 latency at the paper's Table VI sizes (x4, 256x256 and
  512x512 outputs).
- ``loader``: training patches per second that one data-loading worker delivers
  (the built-in sample images, or DIV2K with ``--div2k ROOT``).
- ``peak``: peak memory of one training step and one largest-size inference,
  each in a fresh process (RSS growth on CPU, ``torch.cuda.max_memory_allocated``
  on GPU).

srlab runs with its speed levers (channels_last, GEMM to_rgb conv; optionally fused
Adam, ``--dtype bf16`` autocast, ``--compile``); the baseline is HDSRNet as its authors wrote it: fp32,
contiguous NCHW, eager, a dynamic convolution that folds the batch into channels
for one grouped convolution, the reference's module layout and 1x1-conv mean
shifts. Both hold the same weights (srlab's, mapped by `srlab.models.reference`)
and their fp32 outputs are checked equal before anything is timed. Repeats
alternate srlab and baseline in one process (ABBA order) and report medians, so
the ratio holds on a busy machine; achieved GFLOP/s are set against a matmul
peak measured on the same device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from srlab.eval.complexity import count_flops, device_name, measure_latency
from srlab.eval.report import atomic_write_text
from srlab.models.common import DIV2K_RGB_MEAN, SubPixelUpsampler
from srlab.models.hdsrnet import HDSRNet
from srlab.models.reference import to_reference_state_dict
from srlab.utils.perf import (
    DTYPES,
    apply_speed_options,
    autocast,
    bf16_supported,
    channels_last_input,
    resolve_dtype,
)

PARTS = ("train", "infer", "loader", "peak")
GRADIENT_CLIP = 10.0  # the paper's recipe clips gradients by value
ADAM = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8}
# max |srlab - baseline| / max |baseline|; "tf32" is CUDA fp32 timing with cuDNN's default TF32 convolutions.
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}
TARGETS = {"train": 1.5, "infer": 0.8}  # srlab/baseline throughput (>=), latency (<=) on CPU
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


# -- the baseline: HDSRNet the way its authors wrote it ---------------------------------------
class AuthorsAttention(nn.Module):
    """Kernel attention: average pool, 1x1 conv, ReLU, 1x1 conv, softmax(logits / T)."""

    def __init__(self, channels: int, num_kernels: int, temperature: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 4, num_kernels, 1, bias=False),
        )
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(F.adaptive_avg_pool2d(x, 1)).view(x.size(0), -1)
        return F.softmax(logits / self.temperature, dim=1)


class AuthorsDynamicConv(nn.Module):
    """Dynamic 3x3 convolution with the batch folded into channels: one grouped conv, groups = batch.

    It uses `view`, as the reference does, so it needs contiguous NCHW input.
    """

    def __init__(self, channels: int, num_kernels: int = 4, temperature: float = 40.0):
        super().__init__()
        self.attention = AuthorsAttention(channels, num_kernels, temperature)
        self.weight = nn.Parameter(torch.randn(num_kernels, channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.randn(num_kernels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.size()
        attention = self.attention(x)
        kernels = self.weight.size(0)
        weight = torch.mm(attention, self.weight.view(kernels, -1)).view(-1, channels, 3, 3)
        bias = torch.mm(attention, self.bias).view(-1)
        out = F.conv2d(x.view(1, -1, height, width), weight, bias, padding=1, groups=batch)
        return out.view(batch, -1, height, width)


def authors_conv_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False), nn.ReLU(inplace=True)
    )


class AuthorsMeanShift(nn.Conv2d):
    """EDSR's frozen 1x1 convolution adding `sign` x the DIV2K mean (identity weight)."""

    def __init__(self, sign: int, rgb_range: float = 255.0):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_RGB_MEAN)
        self.requires_grad_(False)


class AuthorsUpsampler(nn.Module):
    """The reference's `upsample.up.body` nesting around the sub-pixel stages."""

    def __init__(self, scale: int, channels: int):
        super().__init__()
        self.up = nn.Module()
        self.up.body = SubPixelUpsampler(scale, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up.body(x)


class AuthorsHDSRNet(nn.Module):
    """HDSRNet in the reference layout: `Block.conv1..16` (upper), `conv1..16` (lower), `conv17` (to RGB).

    Upper block b holds `Block.conv{3b+2}` (dilated), `Block.conv{3b+3}` (dynamic) and
    `Block.conv{3b+4}` (plain); forward follows the paper's Eqs. 1, 3 and 4 step by step.
    """

    def __init__(self, scale: int, channels: int = 64, num_blocks: int = 5, depth: int = 16):
        super().__init__()
        self.num_blocks, self.depth = num_blocks, depth
        self.sub_mean = AuthorsMeanShift(-1)
        self.add_mean = AuthorsMeanShift(+1)
        self.Block = nn.Module()
        self.Block.add_module("conv1", authors_conv_relu(3, channels))
        for b in range(num_blocks):
            self.Block.add_module(f"conv{3 * b + 2}", authors_conv_relu(channels, channels, dilation=2))
            dynamic = nn.Sequential(AuthorsDynamicConv(channels), nn.ReLU(inplace=True))
            self.Block.add_module(f"conv{3 * b + 3}", dynamic)
            self.Block.add_module(f"conv{3 * b + 4}", authors_conv_relu(channels, channels))
        for j in range(1, depth + 1):
            self.add_module(f"conv{j}", authors_conv_relu(3 if j == 1 else channels, channels))
        self.upsample = AuthorsUpsampler(scale, channels)
        self.add_module(f"conv{depth + 1}", nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        upper = self.Block.conv1(x)
        for b in range(self.num_blocks):
            dilated, dynamic, plain = (getattr(self.Block, f"conv{3 * b + i}") for i in (2, 3, 4))
            upper = plain(dynamic(dilated(upper))) + upper
        outputs = []
        lower = x
        for j in range(1, self.depth + 1):
            lower = getattr(self, f"conv{j}")(lower)
            outputs.append(lower)
            if j > self.depth // 2:  # Eq. 4: layer j + 1 also takes O_{depth + 1 - j}
                lower = lower + outputs[self.depth - j]
        out = getattr(self, f"conv{self.depth + 1}")(self.upsample(upper * lower))
        return self.add_mean(out)


def baseline_like(model: HDSRNet) -> AuthorsHDSRNet:
    """The authors' HDSRNet holding `model`'s weights and temperatures, on `model`'s device."""
    if model.variant != "full":
        raise ValueError(f"the baseline is the published HDSRNet; got variant {model.variant!r}")
    device = next(model.parameters()).device
    baseline = AuthorsHDSRNet(model.scale, model.construct.to_rgb.in_channels,
                              len(model.upper.blocks), len(model.lower.layers)).to(device)
    baseline.load_state_dict(to_reference_state_dict(model), strict=True)
    theirs = [m for m in baseline.modules() if isinstance(m, AuthorsDynamicConv)]
    for ours, their in zip(model.dynamic_convs(), theirs, strict=True):
        their.attention.temperature = ours.temperature
    return baseline


# -- settings ---------------------------------------------------------------------------------
@dataclass
class BenchSettings:
    """What one benchmark run measures; every field is a command-line option."""

    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: str = "fp32"
    compile: bool = False
    compile_mode: str | None = None
    channels_last: bool = True
    narrow_convs: bool = True
    fused_adam: bool = False  # configs/module/default.yaml's choice (see there)
    batch: int = 16
    patch: int = 48  # LR patch
    scale: int = 2
    infer_scale: int = 4
    infer_sizes: tuple[int, ...] = (256, 512)  # SR output sizes of Table VI
    repeats: int = 5
    warmup: int = 1
    threads: int | None = None
    loader_seconds: float = 5.0
    div2k: str | None = None
    seed: int = 0
    parts: tuple[str, ...] = PARTS

    def __post_init__(self):
        resolve_dtype(self.dtype)
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"unknown device {self.device!r} (use cpu, cuda or cuda:N)") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU")
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown parts {unknown}; valid: {', '.join(PARTS)} or all")
        bad = [s for s in self.infer_sizes if s % self.infer_scale]
        if bad:
            raise ValueError(f"inference output sizes {bad} are not divisible by infer_scale={self.infer_scale}")
        if self.repeats < 1 or self.warmup < 0 or self.batch < 1 or self.patch < 1:
            raise ValueError("need repeats >= 1, warmup >= 0, batch >= 1 and patch >= 1")


@dataclass
class Pair:
    """srlab's model and the baseline with the same weights, plus how srlab wants its input laid out."""

    srlab: nn.Module
    baseline: nn.Module
    settings: BenchSettings = field(repr=False)

    def srlab_input(self, x: torch.Tensor) -> torch.Tensor:
        return channels_last_input(x) if self.settings.channels_last else x


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """max |output - reference| / max |reference|, in float32."""
    output, reference = output.detach().float(), reference.detach().float()
    return float((output - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


def exact_fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Full-precision fp32 convolutions for equality checks (cuDNN uses TF32 by default on recent GPUs)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=torch.backends.cudnn.benchmark, allow_tf32=False)


def timing_tolerance(settings: BenchSettings) -> float:
    """How close srlab's timed outputs must be: fp32, TF32 (CUDA's default for convolutions) or bf16."""
    if settings.dtype == "fp32" and settings.device.startswith("cuda") and torch.backends.cudnn.allow_tf32:
        return TOLERANCE["tf32"]
    return TOLERANCE[settings.dtype]


def compile_options(settings: BenchSettings, inference: bool) -> dict:
    """torch.compile arguments; an inference-only model is frozen (weights folded in as constants).

    torch.compile takes a mode or inductor options, not both, so `--compile-mode` turns freezing off.
    """
    if settings.compile_mode is not None:
        return {"mode": settings.compile_mode}
    return {"options": {"freezing": True}} if inference else {}


def build_pair(scale: int, settings: BenchSettings, check_input: torch.Tensor,
               inference: bool = False) -> tuple[Pair, float]:
    """srlab's HDSRNet with its speed options and the authors' copy; checks their fp32 outputs agree.

    The check runs before compilation (compiled numerics are checked after timing and by
    the tests), on `check_input`; returns the pair and the relative error found.
    """
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    model = HDSRNet(scale).to(device)
    baseline = baseline_like(model)
    apply_speed_options(model, channels_last=settings.channels_last, narrow_convs=settings.narrow_convs)
    pair = Pair(model, baseline, settings)
    with torch.no_grad(), exact_fp32(device):
        error = relative_error(model(pair.srlab_input(check_input)), baseline(check_input))
    if error > TOLERANCE["fp32"]:
        raise AssertionError(
            f"srlab and the baseline disagree at x{scale}, input {tuple(check_input.shape)}: "
            f"relative error {error:.2e} > {TOLERANCE['fp32']:.0e}"
        )
    if settings.compile:
        apply_speed_options(model, compile=True, compile_options=compile_options(settings, inference))
    return pair, error


# -- timing -----------------------------------------------------------------------------------
def alternate(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, interleaved ABBA so load drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(measure_latency(fns[name], (), warmup=0, repeats=1, device=device)["median_ms"])
    return times


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best GFLOP/s of a square matmul big enough to reach the device's peak."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best_ms = measure_latency(torch.mm, (a, b), warmup=2, repeats=repeats, device=device)["min_ms"]
    return 2 * n**3 / (best_ms / 1e3) / 1e9


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Grad input and grad weight each cost one forward convolution.

    FlopCounterMode's own formula ignores `groups`, so it counts the backward of the
    batch-folded dynamic conv (groups = batch) about `batch` times too high.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def training_flops(scale: int, batch: int, patch: int) -> int:
    """FLOPs of one forward + backward (FlopCounterMode, shapes only on the meta device)."""
    with torch.device("meta"):
        model = AuthorsHDSRNet(scale)
        lr, hr = torch.zeros(batch, 3, patch, patch), torch.zeros(batch, 3, patch * scale, patch * scale)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    with counter:
        F.l1_loss(model(lr), hr).backward()
    return counter.get_total_flops()


def inference_flops(scale: int, lr_size: int) -> int:
    with torch.device("meta"):
        model = AuthorsHDSRNet(scale)
    return count_flops(model, (1, 3, lr_size, lr_size)).total


def make_optimizer(model: nn.Module, fused: bool) -> torch.optim.Optimizer:
    """The paper's Adam; `fused` runs its update as one kernel (the authors' is the default for-loop/foreach)."""
    return torch.optim.Adam(model.parameters(), **ADAM, **({"fused": True} if fused else {}))


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, lr: torch.Tensor, hr: torch.Tensor,
                  dtype: str, device: torch.device, compiled: bool = False) -> Callable[[], torch.Tensor]:
    """One step as SRModule + Lightning run it: zero grads, L1 under autocast, backward, clip, Adam."""

    def step() -> torch.Tensor:
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()  # CUDA-graph modes: a new step may reuse output memory
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = F.l1_loss(model(lr), hr)
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), GRADIENT_CLIP)
        optimizer.step()
        return loss

    return step


def summary(times_ms: list[float]) -> dict:
    return {"median_ms": statistics.median(times_ms), "min_ms": min(times_ms), "times_ms": times_ms}


def bench_train(settings: BenchSettings, peaks: dict[str, float]) -> dict:
    device = torch.device(settings.device)
    s, b, p = settings.scale, settings.batch, settings.patch
    torch.manual_seed(settings.seed)
    lr = torch.rand(b, 3, p, p, device=device) * 255
    hr = torch.rand(b, 3, p * s, p * s, device=device) * 255
    pair, check_error = build_pair(s, settings, lr)
    steps = {
        "srlab": training_step(pair.srlab, make_optimizer(pair.srlab, settings.fused_adam),
                               pair.srlab_input(lr), pair.srlab_input(hr), settings.dtype, device, settings.compile),
        "baseline": training_step(pair.baseline, make_optimizer(pair.baseline, False), lr, hr, "fp32", device),
    }
    times = alternate(steps, settings.repeats, settings.warmup, device)
    flops = training_flops(s, b, p)
    result = {"scale": s, "batch": b, "lr_patch": p, "gflop_per_step": flops / 1e9,
              "check_rel_err_fp32": check_error}
    for name, t in times.items():
        seconds = statistics.median(t) / 1e3
        peak = peaks[settings.dtype if name == "srlab" else "fp32"]
        result[name] = {**summary(t), "patches_per_s": b / seconds, "gflops": flops / seconds / 1e9,
                        "peak_fraction": flops / seconds / 1e9 / peak}
    result["ratio"] = result["srlab"]["patches_per_s"] / result["baseline"]["patches_per_s"]
    return result


def bench_infer(settings: BenchSettings, peaks: dict[str, float]) -> dict:
    device = torch.device(settings.device)
    scale = settings.infer_scale
    lr_sizes = [size // scale for size in settings.infer_sizes]
    torch.manual_seed(settings.seed)
    inputs = {lr_size: torch.rand(1, 3, lr_size, lr_size, device=device) * 255 for lr_size in lr_sizes}
    pair, check_error = build_pair(scale, settings, inputs[lr_sizes[0]], inference=True)
    results = {"scale": scale, "check_rel_err_fp32": check_error}
    for size, lr_size in zip(settings.infer_sizes, lr_sizes):
        x = inputs[lr_size]
        x_srlab = pair.srlab_input(x)

        def srlab_fn(x_srlab=x_srlab):
            if settings.compile:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.inference_mode(), autocast(device, settings.dtype):
                return pair.srlab(x_srlab)

        def baseline_fn(x=x):
            with torch.no_grad():
                return pair.baseline(x)

        times = alternate({"srlab": srlab_fn, "baseline": baseline_fn}, settings.repeats, settings.warmup, device)
        error, tolerance = relative_error(srlab_fn(), baseline_fn()), timing_tolerance(settings)
        if error > tolerance:
            raise AssertionError(f"srlab ({settings.dtype}) and the baseline disagree at {size}x{size}: "
                                 f"relative error {error:.2e} > {tolerance:.0e}")
        flops = inference_flops(scale, lr_size)
        entry = {"output": size, "input": lr_size, "gflop": flops / 1e9, "rel_err": error}
        for name, t in times.items():
            seconds = statistics.median(t) / 1e3
            peak = peaks[settings.dtype if name == "srlab" else "fp32"]
            entry[name] = {**summary(t), "gflops": flops / seconds / 1e9, "peak_fraction": flops / seconds / 1e9 / peak}
        entry["ratio"] = entry["srlab"]["median_ms"] / entry["baseline"]["median_ms"]
        results[f"{size}x{size}"] = entry
    return results


def bench_loader(settings: BenchSettings) -> dict:
    """Patches per second from one worker (the main process), beside what one training step consumes."""
    from srlab.data.cache import patches_per_second

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


# -- peak memory, each measurement in a fresh process ---------------------------------------------
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


# -- report -----------------------------------------------------------------------------------
def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [flag for flag in CPU_FLAGS if flag in flags]


def device_details(device: torch.device) -> dict:
    details = {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "bf16_supported": bf16_supported(device),
    }
    if device.type == "cpu":
        details.update(cpu_capability=torch.backends.cpu.get_cpu_capability(),
                       mkldnn=torch.backends.mkldnn.is_available(), cpu_flags=cpu_flags(), logical_cpus=os.cpu_count())
    if device.type == "cuda":
        details.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                       cudnn_benchmark=torch.backends.cudnn.benchmark,
                       memory_gb=torch.cuda.get_device_properties(device).total_memory / 2**30)
    return details


def efficiency(entry: dict) -> list[str]:
    return [f"{entry[n]['gflops']:.0f} ({entry[n]['peak_fraction']:.0%})" for n in ("srlab", "baseline")]


def render(report: dict, console: Console) -> None:
    s = report["settings"]
    options = [s["dtype"], *(name for name in ("channels_last", "narrow_convs", "compile", "fused_adam") if s[name])]
    table = Table(title=f"srlab ({', '.join(options)}) vs the authors' HDSRNet (fp32, NCHW, eager) — "
                        f"{report['device']['device']}, torch {report['device']['torch']}")
    for column in ("measure", "srlab", "baseline (authors)", "srlab / baseline", "CPU target"):
        table.add_column(column)
    if "train" in report:
        t = report["train"]
        table.add_row(f"train x{t['scale']}, batch {t['batch']}, LR patch {t['lr_patch']} (patches/s)",
                      f"{t['srlab']['patches_per_s']:.1f}", f"{t['baseline']['patches_per_s']:.1f}",
                      f"{t['ratio']:.2f}x", f">= {TARGETS['train']}x")
        table.add_row("  achieved GFLOP/s (fraction of matmul peak)", *efficiency(t), "", "")
    if "infer" in report:
        for key, e in report["infer"].items():
            if not isinstance(e, dict):
                continue
            table.add_row(f"infer x{report['infer']['scale']}, {e['input']}² -> {key} (ms)",
                          f"{e['srlab']['median_ms']:.1f}", f"{e['baseline']['median_ms']:.1f}",
                          f"{e['ratio']:.2f}", f"<= {TARGETS['infer']}")
            table.add_row("  achieved GFLOP/s (fraction of matmul peak)", *efficiency(e), "", "")
    if "loader" in report:
        rate = report["loader"]["patches_per_s_per_worker"]
        consumed = report.get("train", {}).get("srlab", {}).get("patches_per_s")
        need = f"one worker feeds {rate / consumed:.0f}x srlab's training" if consumed else ""
        table.add_row(f"loader, {report['loader']['dataset']} (patches/s per worker)", f"{rate:.0f}", "", need, "")
    if "peak" in report:
        unit = "MiB allocated" if s["device"].startswith("cuda") else "MiB RSS growth"
        for task in ("train", "infer"):
            ours, theirs = (report["peak"][n][task]["peak_mb"] for n in ("srlab", "baseline"))
            table.add_row(f"peak memory, {task} ({unit})", f"{ours:.0f}", f"{theirs:.0f}", f"{ours / theirs:.2f}", "")
    console.print(table)
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in report["matmul_peak_gflops"].items()) or "not measured"
    d = report["device"]
    flags = f"; CPU flags {' '.join(d['cpu_flags'])}" if "cpu_flags" in d else ""
    console.print(f"matmul peak GFLOP/s: {peaks}; threads {d['threads']}; load average {report['load_average']}; "
                  f"bf16 supported: {d['bf16_supported']}{flags}")


def run(settings: BenchSettings, console: Console | None = None) -> dict:
    """Runs the requested parts; returns the report (what `--json` writes)."""
    console = console or Console(width=None if sys.stdout.isatty() else 140)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # both models: picks the fastest kernels per shape
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    peaks = {}
    if {"train", "infer"} & set(settings.parts):
        peaks["fp32"] = matmul_peak_gflops(device, torch.float32)
        if settings.dtype != "fp32":
            peaks[settings.dtype] = matmul_peak_gflops(device, DTYPES[settings.dtype])
    report: dict = {"settings": asdict(settings), "device": device_details(device), "matmul_peak_gflops": peaks}
    if "train" in settings.parts:
        report["train"] = bench_train(settings, peaks)
    if "infer" in settings.parts:
        report["infer"] = bench_infer(settings, peaks)
    if "loader" in settings.parts:
        report["loader"] = bench_loader(settings)
    if "peak" in settings.parts:
        report["peak"] = bench_peak(settings)
    report["load_average"] = [round(v, 2) for v in os.getloadavg()] if load_before else None
    report["load_average_before"] = [round(v, 2) for v in load_before] if load_before else None
    render(report, console)
    return report


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchSettings, Path | None]:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="python -m srlab.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=defaults.dtype,
                        help="srlab's precision: fp32, or bf16 autocast (the baseline stays fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile srlab's model (inductor)")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode, e.g. reduce-overhead (CUDA graphs) or max-autotune")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=defaults.channels_last)
    parser.add_argument("--narrow-convs", action=argparse.BooleanOptionalAction, default=defaults.narrow_convs,
                        help="run the 64 -> 3 to_rgb conv as a GEMM on CPU (srlab.utils.perf.NarrowConv2d)")
    parser.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, default=defaults.fused_adam)
    parser.add_argument("--batch", type=int, default=defaults.batch, help="training batch (default: %(default)s)")
    parser.add_argument("--patch", type=int, default=defaults.patch, help="training LR patch (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=defaults.scale, help="training scale (default: %(default)s)")
    parser.add_argument("--infer-scale", type=int, default=defaults.infer_scale)
    parser.add_argument("--infer-sizes", type=int, nargs="+", default=list(defaults.infer_sizes),
                        help="SR output sizes for inference (default: Table VI's %(default)s)")
    parser.add_argument("--parts", nargs="+", default=["all"], choices=[*PARTS, "all"])
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed repeats per model")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed calls per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--loader-seconds", type=float, default=defaults.loader_seconds)
    parser.add_argument("--div2k", default=None, help="DIV2K root for the loader part (default: sample images)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", type=Path, default=None, help="write the report here (atomically)")
    args = parser.parse_args(argv)
    parts = PARTS if "all" in args.parts else tuple(dict.fromkeys(args.parts))
    options = {f.name: getattr(args, f.name) for f in fields(BenchSettings) if f.name not in ("parts", "infer_sizes")}
    try:
        settings = BenchSettings(**options, infer_sizes=tuple(args.infer_sizes), parts=parts)
    except ValueError as err:
        parser.error(str(err))
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> dict:
    settings, json_path = parse_args(argv)
    report = run(settings)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
