"""SRCNN (Dong et al., TPAMI 2016): three convolutions on the bicubic-upscaled RGB image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from srlab.data.imresize import imresize_torch


class SRCNN(nn.Module):
    """Patch extraction (9x9, 64) -> non-linear mapping (1x1, 32) -> reconstruction (5x5, channels).

    Input: (N, channels, h, w) in [0, 255]; output: (N, channels, scale*h, scale*w) in [0, 255].
    The network itself is scale-agnostic; `scale` only sets the bicubic pre-upscaling.
    """

    def __init__(
        self,
        scale: int,
        channels: int = 3,
        filters: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 1, 5),
    ):
        super().__init__()
        if len(filters) != 2 or len(kernel_sizes) != 3:
            raise ValueError("SRCNN has three layers: give two filter counts and three kernel sizes")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {tuple(kernel_sizes)}")
        self.scale = int(scale)
        widths = [channels, *filters, channels]
        # The TPAMI network used valid convolutions (a smaller output); 'same' padding is used here so
        # the whole image is produced and scored under the standard shave-`scale` protocol.
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, k, padding=k // 2)
            for c_in, c_out, k in zip(widths[:-1], widths[1:], kernel_sizes)
        )
        self.relu = nn.ReLU(inplace=True)
        # Initialisation: PyTorch's default conv init (docs/baselines.md); the paper's Gaussian std 1e-3
        # was tuned for its SGD schedule, not for the suite's Adam recipe (docs/recipe.md).

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        # SRCNN's only pre-processing: MATLAB-compatible bicubic upscaling. Unquantised, so the float
        # path stays exact and cheap during training.
        x = imresize_torch(lr, float(self.scale), quantize=False)
        # SRCNN was trained on [0, 1] intensities; normalise here so the suite can feed [0, 255].
        x = x / 255.0
        for conv in self.convs[:-1]:
            x = self.relu(conv(x))
        return self.convs[-1](x) * 255.0
