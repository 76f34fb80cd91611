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
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from srlab.bench.loader import bench_loader
from srlab.bench.memory import bench_peak
from srlab.bench.settings import PARTS, BenchSettings
from srlab.bench.timing import bench_infer, bench_train, matmul_peak_gflops
from srlab.eval.complexity import device_name
from srlab.utils.files import atomic_write_text
from srlab.utils.perf import DTYPES, bf16_supported

TARGETS = {"train": 1.5, "infer": 0.8}  # srlab/baseline throughput (>=), latency (<=) on CPU
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


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
