"""Luminance for models that work on Y: MATLAB `rgb2ycbcr`'s Y, and an RGB image given a new Y with its Cb and Cr kept.

The BT.601 conversion itself is the metric's (`srlab.metrics.sr_metrics.to_luma`, Y = 16 +
(65.481 R + 128.553 G + 24.966 B) / 255 on 0..255 values), so training on Y and scoring on Y use
one formula. Putting a new Y back needs no inverse transform: the Cb and Cr weights each sum to
zero, so adding the same value c to R, G and B leaves Cb and Cr unchanged and moves Y by
c * 219 / 255.
"""

from __future__ import annotations

import torch

from srlab.metrics.sr_metrics import Y_WEIGHTS, to_luma

__all__ = ["GREY_AXIS_GAIN", "replace_y", "rgb_to_y"]

#: RGB change per unit of Y along the grey axis (R = G = B), where Cb and Cr stay fixed: 255 / 219.
GREY_AXIS_GAIN = 255.0 / sum(Y_WEIGHTS)


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) or (3, H, W) RGB in 0..255 -> Y in 16..235 with one channel, in `rgb`'s dtype."""
    if rgb.dim() not in (3, 4) or rgb.shape[-3] != 3:
        raise ValueError(f"rgb_to_y expects RGB as (N, 3, H, W) or (3, H, W), got shape {tuple(rgb.shape)}")
    batch = rgb if rgb.dim() == 4 else rgb.unsqueeze(0)
    y = to_luma(batch).to(rgb.dtype)
    return y if rgb.dim() == 4 else y[0]


def replace_y(rgb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The RGB image whose Y is `y` (N, 1, H, W) and whose Cb and Cr are those of `rgb` (N, 3, H, W); not clamped."""
    if y.shape[-3] != 1 or y.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(f"replace_y: Y {tuple(y.shape)} must be one channel of RGB's size {tuple(rgb.shape)}")
    return rgb + (y - rgb_to_y(rgb)) * GREY_AXIS_GAIN
