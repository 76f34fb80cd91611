"""Training and inference timing of srlab's HDSRNet against the authors' baseline, and the matmul peak.

Both models hold the same weights and their fp32 outputs are checked equal before
anything is timed. Repeats alternate srlab and baseline in one process (ABBA
order) and report medians, so the ratio holds on a busy machine; achieved
GFLOP/s are set against a matmul peak measured on the same device.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from srlab.bench.authors_hdsrnet import AuthorsHDSRNet, baseline_like
from srlab.bench.settings import BenchSettings
from srlab.eval.complexity import count_flops, measure_latency
from srlab.models.hdsrnet import HDSRNet
from srlab.utils.perf import apply_speed_options, autocast, channels_last_input

GRADIENT_CLIP = 10.0  # the paper's recipe clips gradients by value
ADAM = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8}
# max |srlab - baseline| / max |baseline|; "tf32" is CUDA fp32 timing with cuDNN's default TF32 convolutions.
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


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
