"""Building blocks shared by srlab models: mean shift, Conv+ReLU, sub-pixel construction block."""

from __future__ import annotations

import math

import torch
from torch import nn

# DIV2K RGB mean on the [0, 1] scale, used by EDSR-family models (HDSRNet included).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Subtracts (sign=-1) or adds (sign=+1) the dataset mean; a frozen buffer, not a parameter."""

    def __init__(self, sign: int, rgb_range: float = 255.0, mean: tuple[float, float, float] = DIV2K_RGB_MEAN):
        super().__init__()
        self.register_buffer("shift", sign * rgb_range * torch.tensor(mean).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def conv3x3(in_channels: int, out_channels: int, *, bias: bool, dilation: int = 1) -> nn.Conv2d:
    """3x3 'same' convolution; `bias` has no default because HDSRNet's convs have none and HRN's have one."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias)


def conv_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    """Bias-free 3x3 Conv + ReLU; a Sequential so state-dict keys read `<name>.0.weight` as in the reference."""
    return nn.Sequential(conv3x3(in_channels, out_channels, bias=False, dilation=dilation), nn.ReLU(inplace=True))


class SubPixelUpsampler(nn.Sequential):
    """EDSR-style upsampler: log2(scale) x [Conv3x3 C->4C (bias), PixelShuffle(2)], or one 9C stage for x3."""

    def __init__(self, scale: int, channels: int):
        stages: list[nn.Module] = []
        if scale == 3:
            stages += [nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3)]
        elif scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                stages += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"scale={scale!r} is not supported by the sub-pixel upsampler (use 2, 3, 4 or 8)")
        super().__init__(*stages)


class ConstructionBlock(nn.Module):
    """HDSRNet's CB: sub-pixel upsampling, then a bias-free Conv3x3 to RGB."""

    def __init__(self, scale: int, channels: int = 64, out_channels: int = 3):
        super().__init__()
        self.upsample = SubPixelUpsampler(scale, channels)
        self.to_rgb = conv3x3(channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_rgb(self.upsample(x))
