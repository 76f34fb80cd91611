"""Runtime (paper Table VI) and parameters / FLOPs (Table VII) of srlab's models, beside the paper's figures.

- :func:`measure_latency`: median-of-N wall time of any callable with warm-up
  and device synchronisation (reusable for any timing, not only SR models).
- :func:`runtime_table`: each model at x4 for 256x256 and 512x512 *outputs*
  (LR inputs 64x64 and 128x128), next to the paper's RTX 3090 numbers.
- :func:`count_flops` / :func:`complexity_table`: PyTorch's own FlopCounterMode
  on a 1024x1024 x4 output, run on the meta device (shapes only: no memory, no
  compute). FlopCounterMode counts 2 FLOPs per multiply-accumulate and counts
  every convolution, including the dynamic conv's ``F.conv2d`` on aggregated
  kernels; the paper's 110.99G matches MACs without those functional convs.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from srlab.eval.paper import table_rows
from srlab.eval.report import Table

__all__ = [
    "FlopCount",
    "complexity_table",
    "count_flops",
    "count_parameters",
    "device_name",
    "measure_latency",
    "runtime_table",
    "synchronize",
]

_CONV = torch.ops.aten.convolution


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels (CUDA/MPS/XPU launch asynchronously; a CPU call has finished when it returns)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def device_name(device: torch.device | str) -> str:
    """Human-readable device: the GPU's name, or the CPU model and the threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
        except OSError:
            pass
        return f"CPU {model} ({torch.get_num_threads()} threads)"
    return device.type


def measure_latency(
    fn: Callable,
    inputs: torch.Tensor | Sequence = (),
    warmup: int = 10,
    repeats: int = 50,
    device: torch.device | str | None = None,
) -> dict:
    """Time `fn(*inputs)`: `warmup` untimed calls, then `repeats` timed ones, each ended by a device sync.

    `inputs` is one tensor or a sequence of arguments; `device` (default: the first
    tensor's device, else CPU) is the one synchronised. Returns milliseconds:
    median_ms (the figure to report), mean_ms, min_ms, max_ms, stdev_ms, plus
    repeats, warmup and the device's name. Gradient mode is the caller's choice.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if device is None:
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    for _ in range(warmup):
        fn(*args)
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "stdev_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "repeats": repeats,
        "warmup": warmup,
        "device": device_name(device),
    }


def runtime_table(
    models: Mapping[str, nn.Module],
    device: torch.device | str = "cpu",
    sizes: Sequence[int] = (256, 512),
    scale: int = 4,
    warmup: int = 5,
    repeats: int = 20,
) -> tuple[Table, list[dict]]:
    """Table VI: median ms per model for `size` x `size` outputs, beside the paper's figures.

    Returns the table and the raw measurements (one dict per model and size).
    """
    device = torch.device(device)
    paper = {r["method"]: r["time_ms"] for r in table_rows("VI")}
    measurements = []
    for label, model in models.items():
        model = model.to(device).eval()
        for size in sizes:
            if size % scale:
                raise ValueError(f"runtime size {size} is not divisible by scale {scale}")
            lr = torch.rand(1, 3, size // scale, size // scale, device=device) * 255
            with torch.inference_mode():
                timing = measure_latency(model, lr, warmup, repeats, device)
            measurements.append({"model": label, "size": size, **timing})
    name = device_name(device)
    header = ["Image sizes", *(f"{m} (paper)" for m in paper), *(f"{label} (srlab)" for label in models)]
    rows = []
    for size in sizes:
        key = f"{size}x{size}"
        row = [f"{size} × {size}", *(f"{times[key]:g}" if key in times else "-" for times in paper.values())]
        row += [f"{m['median_ms']:.2f}" for m in measurements if m["size"] == size]
        rows.append(row)
    inputs = ", ".join(f"{s // scale}x{s // scale}" for s in sizes)
    notes = [f"Milliseconds per image, x{scale}, sizes are the SR output (LR input {inputs}).",
             "Paper: Nvidia GeForce RTX 3090 (Section IV.C; batch, precision and timing method not stated).",
             f"srlab: {name}; batch 1, float32, median of {repeats} runs after {warmup} warm-up runs, "
             "each run ended by a device synchronisation; random weights (runtime does not depend on them)."]
    title = f"TABLE VI: RUNNING TIME (MS) FOR ×{scale}; srlab measured on {name}"
    return Table("table6", title, header, rows, notes), measurements


# -- Table VII ---------------------------------------------------------------------------------
def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (frozen buffers such as the mean shift are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class FlopCount:
    """FLOPs (2 per MAC, FlopCounterMode's convention) of one forward pass."""

    total: int
    functional_conv: int  # convolutions not issued by an nn.Conv2d module (the dynamic conv's F.conv2d)
    per_module: dict[str, dict[str, int]]

    @property
    def macs(self) -> float:
        return self.total / 2


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> FlopCount:
    """Count one forward on `input_shape`. Use a model built on the meta device to count without compute."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(*input_shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    module_convs = sum(
        counts.get(f"{root}.{name}", {}).get(_CONV, 0) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
    )
    total_convs = counts.get("Global", {}).get(_CONV, 0)
    per_module = {name: {str(op): n for op, n in ops.items()} for name, ops in counts.items()}
    return FlopCount(counter.get_total_flops(), total_convs - module_convs, per_module)


def complexity_table(model_factories: Mapping[str, Callable[[], nn.Module]], output_size: int = 1024,
                     scale: int = 4) -> tuple[Table, list[dict]]:
    """Table VII: parameters and FLOPs for an `output_size`^2 x`scale` output, beside the paper's rows.

    Each factory builds its model; it is called under the meta device, so even a
    1024x1024 count takes no memory. Returns the table and the raw counts.
    """
    if output_size % scale:
        raise ValueError(f"output_size {output_size} is not divisible by scale {scale}")
    lr = output_size // scale
    header = ["Methods", "Parameters", "FLOPs"]
    rows = []
    for r in table_rows("VII"):
        label = r["method"] if r.get("ours") else f"{r['method']} [{r['ref']}]"
        rows.append([f"{label} (paper)", r["params_printed"], r["flops_printed"]])
    counts = []
    for label, factory in model_factories.items():
        with torch.device("meta"):
            model = factory()
        params = count_parameters(model)
        flops = count_flops(model, (1, 3, lr, lr))
        counts.append({"model": label, "params": params, "flops": flops.total, "macs": flops.macs,
                       "functional_conv_flops": flops.functional_conv})
        rows.append([f"{label} (srlab)", f"{params:,} ({params / 1e3:,.0f}K)",
                     f"{flops.total / 1e9:.2f}G FLOPs = {flops.macs / 1e9:.2f}G MACs"])
        if flops.functional_conv:
            without = (flops.total - flops.functional_conv) / 2
            rows.append([f"{label} (srlab) without functional convs", "", f"{without / 1e9:.2f}G MACs"])
    notes = [
        f"Output {output_size}x{output_size} at x{scale} (LR input {lr}x{lr}); srlab counted with "
        "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-accumulate; every aten.convolution counted, "
        "including the dynamic convolution's F.conv2d on its aggregated kernels).",
        "The paper's 110.99G for HDSRNet matches MACs without the functional (dynamic) convolutions: "
        "its counter saw only nn.Conv2d modules. srlab's count includes all.",
        "The paper's 1,819K is the x2 model's parameter count (1,818,496); the x4 model has 1,966,208.",
    ]
    return Table("table7", f"TABLE VII: PARAMETERS AND FLOPS FOR ×{scale}, {output_size} × {output_size} OUTPUT",
                 header, rows, notes), counts
