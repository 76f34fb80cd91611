"""Bicubic upscaling as a model (MATLAB imresize, no parameters), so every table computes its Bicubic row."""

from __future__ import annotations

import torch
from torch import nn

from srlab.data.imresize import imresize_torch
from srlab.scales import check_scale


class Bicubic(nn.Module):
    """MATLAB-compatible bicubic x`scale`; on integer-valued input it equals MATLAB's uint8 imresize.

    Runs in float64 so per-pass rounding ties resolve exactly as on uint8.
    """

    def __init__(self, scale: int):
        super().__init__()
        self.scale = check_scale(scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        dtype = lr.dtype
        # float64 is unavailable on some accelerators (MPS); fall back to float32 there.
        exact = torch.float64 if lr.device.type in ("cpu", "cuda") else torch.float32
        return imresize_torch(lr.to(exact), self.scale, quantize=True).to(dtype)
