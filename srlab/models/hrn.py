"""HRN (Ji et al., Neural Networks 2022): cross-domain heterogeneous residual network.

Three nested residual levels: outer (a long skip over dual-domain enhancement
modules, DEMs, whose frequency branch works on an orthonormal 2-D DCT of the
features), middle (wide-activated residual-in-residual dense blocks, WRDBs) and
inner (wide-activated residual attention blocks, WRABs, with coordinate
attention). Every layer is size-agnostic, so any input size works.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from srlab.models.common import DIV2K_RGB_MEAN, SubPixelUpsampler, conv3x3
from srlab.scales import check_scale

# --------------------------------------------------------------------------- DCT


@functools.lru_cache(maxsize=64)
def dct_matrix(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (size x size): y = D @ x along one axis, x = D.T @ y inverts it.

    Cached per (size, device, dtype): the matrix depends only on the runtime input size.
    """
    n = torch.arange(size, dtype=torch.float64)
    k = n[:, None]
    matrix = torch.cos(math.pi * (2 * n[None, :] + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)  # the DC row gets sqrt(1/N) so that D is orthogonal
    # Built in float64 then cast, so low-precision dtypes round the exact values once.
    return matrix.to(device=device, dtype=dtype)


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes of (..., H, W)."""
    rows = dct_matrix(x.shape[-2], x.device, x.dtype)
    cols = dct_matrix(x.shape[-1], x.device, x.dtype)
    return rows @ x @ cols.T


def idct2(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of `dct2` (orthonormal DCT-III): the transposed matrices."""
    rows = dct_matrix(coeffs.shape[-2], coeffs.device, coeffs.dtype)
    cols = dct_matrix(coeffs.shape[-1], coeffs.device, coeffs.dtype)
    return rows.T @ coeffs @ cols


# ------------------------------------------------------------------ building blocks


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021): separate attention maps along H and along W.

    Pooling along W gives one descriptor per row, pooling along H one per column; a shared 1x1
    conv mixes them, then one 1x1 conv per direction gives sigmoid gates that are multiplied in.
    Pooling is a plain mean over the runtime axis, so no size is baked in (unlike the HRN
    reference, which fixes the pooling to the 48x48 training patch).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)  # Hou et al.'s floor of 8 hidden channels
        self.squeeze = conv1x1(channels, hidden)
        # ReLU without BatchNorm: SR networks avoid BN (EDSR), and the HRN reference uses ReLU too.
        self.act = nn.ReLU(inplace=True)
        self.gate_h = conv1x1(hidden, channels)
        self.gate_w = conv1x1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pooled_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        # One shared transform over both directions, as in the paper (concatenate, then split).
        mixed = self.act(self.squeeze(torch.cat((pooled_h, pooled_w), dim=2)))
        mixed_h, mixed_w = mixed.split((height, width), dim=2)
        attention_h = torch.sigmoid(self.gate_h(mixed_h))  # (N, C, H, 1)
        attention_w = torch.sigmoid(self.gate_w(mixed_w.transpose(2, 3)))  # (N, C, 1, W)
        return x * attention_h * attention_w


class WRAB(nn.Module):
    """Wide-activated residual attention block: x + CA(conv(ReLU(conv_wide(x)))).

    Wide activation as in WDSR-A: the ReLU runs on `expansion * channels` features between two
    3x3 convs (weight normalisation, which WDSR adds, is not used).
    """

    def __init__(self, channels: int, expansion: int = 4, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels * expansion, bias=True),
            nn.ReLU(inplace=True),
            conv3x3(channels * expansion, channels, bias=True),
            CoordinateAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class WRDB(nn.Module):
    """Wide-activated residual-in-residual dense block: densely connected WRABs plus a local skip.

    Block i (i >= 1) sees the 1x1 fusion of the concatenation of the block input and all previous
    block outputs; a final 1x1 fusion of everything (RDN's local feature fusion) is added to the input.
    """

    def __init__(self, channels: int, n_blocks: int, expansion: int = 4, reduction: int = 16):
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"a WRDB needs at least one block, got n_blocks={n_blocks}")
        self.blocks = nn.ModuleList(WRAB(channels, expansion, reduction) for _ in range(n_blocks))
        # The first block takes the input as is; block i fuses i + 1 feature maps.
        self.input_fusions = nn.ModuleList(conv1x1((i + 1) * channels, channels) for i in range(1, n_blocks))
        self.output_fusion = conv1x1((n_blocks + 1) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for index, block in enumerate(self.blocks):
            block_input = x if index == 0 else self.input_fusions[index - 1](torch.cat(features, dim=1))
            features.append(block(block_input))
        return x + self.output_fusion(torch.cat(features, dim=1))


class DEM(nn.Module):
    """Dual-domain enhancement module: a spatial WRDB and a WRDB on the 2-D DCT of the same input.

    The frequency branch returns to the spatial domain with the inverse DCT; a 1x1 conv fuses both.
    """

    def __init__(
        self, channels: int, n_blocks: int, n_freq_blocks: int, expansion: int = 4, reduction: int = 16
    ):
        super().__init__()
        self.spatial = WRDB(channels, n_blocks, expansion, reduction)
        # Each DEM transforms its own input; the reference code instead chains one DCT-domain stream
        # across stages, which ties the modules together for no stated benefit.
        self.frequency = WRDB(channels, n_freq_blocks, expansion, reduction)
        self.fusion = conv1x1(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.spatial(x)
        frequency = idct2(self.frequency(dct2(x)))
        # No extra skip here: both WRDBs are already residual and the outer skip spans all DEMs.
        return self.fusion(torch.cat((spatial, frequency), dim=1))


# ------------------------------------------------------------------------- network


class HRN(nn.Module):
    """Cross-domain heterogeneous residual network.

    head conv -> `n_groups` DEMs -> conv, plus the head features (outer residual) -> sub-pixel
    upsampler -> conv to RGB; the DIV2K mean is subtracted at the input and added back at the
    output (a frozen buffer, not a parameter).

    Default (n_feats=32, n_groups=4, n_blocks=4, n_freq_blocks=2, expansion=4, reduction=16):
    1,928,387 parameters at x2, 1,974,627 at x3, 1,965,379 at x4 (the WDSR-A width of 32 features
    with 4x wide activation keeps the model in the 1-3 M range).
    Input: RGB (N, 3, h, w) in [0, rgb_range]; output: (N, 3, scale*h, scale*w), same range.
    """

    def __init__(
        self,
        scale: int,
        n_feats: int = 32,
        n_groups: int = 4,
        n_blocks: int = 4,
        n_freq_blocks: int = 2,
        expansion: int = 4,
        reduction: int = 16,
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.register_buffer("rgb_mean", torch.tensor(rgb_mean).view(1, 3, 1, 1) * rgb_range)
        self.head = conv3x3(3, n_feats, bias=True)
        self.body = nn.Sequential(
            *(DEM(n_feats, n_blocks, n_freq_blocks, expansion, reduction) for _ in range(n_groups)),
            conv3x3(n_feats, n_feats, bias=True),
        )
        self.tail = nn.Sequential(SubPixelUpsampler(self.scale, n_feats), conv3x3(n_feats, 3, bias=True))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        shallow = self.head(lr - self.rgb_mean)
        deep = shallow + self.body(shallow)  # outer residual learning
        return self.tail(deep) + self.rgb_mean
