"""What one benchmark run measures (`BenchSettings`, every field a command-line option) and its parts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from srlab.utils.perf import resolve_dtype

PARTS = ("train", "infer", "loader", "peak")


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
