"""HRN (Ji et al., Neural Networks 2022) as its figures draw it: a cross-domain heterogeneous residual network.

Three nested residual levels (docs/baselines.md lists what the figures fix and what srlab chose):

- outer: a Conv head, a chain of dual-domain enhancement modules (DEMs) and a long skip from the
  head to the end. A 2-D DCT of the head features starts one frequency stream that every DEM
  carries on; each DEM joins its inverse DCT to its spatial path.
- middle: wide-activated residual-in-residual dense blocks (WRDBs), three densely linked WRABs,
  a fusion Conv and a residual.
- inner: wide-activated residual attention blocks (WRABs), wide Conv, ELU, narrow Conv, coordinate
  attention (CA) and a residual.

Every layer works at the input's own size (no pooling to a fixed patch size). The released code's
own, different topology is `srlab.models.hrn_reference`.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from srlab.models.common import MeanShift, SubPixelUpsampler, conv3x3
from srlab.scales import check_scale

# --------------------------------------------------------------------------- DCT


@functools.lru_cache(maxsize=64)
def dct_matrix(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (size x size): y = D @ x along one axis, x = D.T @ y inverts it.

    Cached per (size, device, dtype): the matrix depends only on the runtime input size.
    """
    # A matrix first built under torch.inference_mode (a validation pass) would be an inference
    # tensor, and training could then not save it for backward; build it as a normal tensor always.
    # Built on the CPU explicitly: under a `torch.device("meta")` context (FLOP counts) a default-device
    # tensor would be a meta one, cached for a real device.
    with torch.inference_mode(False), torch.no_grad():
        n = torch.arange(size, dtype=torch.float64, device="cpu")
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


def conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


class CoordinateAttention(nn.Module):
    """CA as in the HRN figure: X/Y average pooling, concat + Conv, BN + ELU, a Conv + sigmoid per direction.

    The two gates multiply the input (coordinate attention, Hou et al. 2021) and the input is added
    back (the figure's residual): out = x + x * gate_h * gate_w. Pooling is the mean over the
    runtime width (one value per row) and height (one per column), so no size is baked in.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8):
        super().__init__()
        # C / reduction hidden channels as in the released code, with Hou et al.'s floor of 8
        # (the released code's 64 / 16 = 4 would leave 2 at srlab's default width of 32).
        hidden = max(min_hidden, channels // reduction)
        self.squeeze = conv1x1(channels, hidden, bias=False)  # BN follows, so a bias would be redundant
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.ELU(inplace=True)
        self.gate_h = conv1x1(hidden, channels, bias=False)
        self.gate_w = conv1x1(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pooled_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1): "X AvgPool", one value per row
        pooled_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1): "Y AvgPool", one per column
        mixed = self.act(self.norm(self.squeeze(torch.cat((pooled_h, pooled_w), dim=2))))
        mixed_h, mixed_w = mixed.split((height, width), dim=2)
        gate_h = torch.sigmoid(self.gate_h(mixed_h))  # (N, C, H, 1)
        gate_w = torch.sigmoid(self.gate_w(mixed_w)).transpose(2, 3)  # (N, C, 1, W)
        return x + x * gate_h * gate_w


class WRAB(nn.Module):
    """Wide-activated residual attention block: wide 3x3 Conv -> ELU -> narrow 3x3 Conv -> CA, plus a residual.

    In a WRDB the block reads the concatenation of the WRDB input and all earlier block outputs
    (`in_channels` = k * channels); the wide Conv takes that concatenation directly, as the dense
    arrows meet the block input in the figure. The residual is the last `channels` of it: the
    previous block's output (the WRDB input for the first block), the line the skip starts from.
    """

    def __init__(self, in_channels: int, channels: int, expansion: int = 2, reduction: int = 16):
        super().__init__()
        if in_channels % channels:
            raise ValueError(f"WRAB in_channels={in_channels} is not a multiple of channels={channels}")
        self.channels = channels
        self.body = nn.Sequential(
            conv3x3(in_channels, channels * expansion, bias=True),
            nn.ELU(inplace=True),
            conv3x3(channels * expansion, channels, bias=True),
            CoordinateAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -self.channels :] + self.body(x)


class WRDB(nn.Module):
    """Wide-activated residual-in-residual dense block: densely linked WRABs, a 1x1 fusion Conv and a residual.

    Block i reads [input, out_1, ..., out_(i-1)]; the fusion Conv reads [input, out_1, ..., out_n]
    (RDN's local feature fusion) and its output is added to the input.
    """

    def __init__(self, channels: int, n_blocks: int = 3, expansion: int = 2, reduction: int = 16):
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"a WRDB needs at least one WRAB, got n_blocks={n_blocks}")
        self.blocks = nn.ModuleList(
            WRAB((i + 1) * channels, channels, expansion, reduction) for i in range(n_blocks)
        )
        self.fusion = conv1x1((n_blocks + 1) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for block in self.blocks:
            features.append(block(torch.cat(features, dim=1)))
        return x + self.fusion(torch.cat(features, dim=1))


class DEM(nn.Module):
    """Dual-domain enhancement module (figure (a)): two spatial WRDBs with two fusions, one frequency WRDB.

        s1  = WRDB_1(x)
        c1  = Conv([x, s1])                       first fusion: block input and WRDB output
        s2  = WRDB_2(c1)
        f'  = WRDB_f(f)                           the frequency stream, handed on to the next DEM
        out = Conv([s2, s1, x, IDCT(f')])          second fusion: the figure's three lines and the IDCT

    The figure's upper loop leaves the spatial path after the block input has joined the first WRDB's
    output; it is read as that WRDB's output, since the lower loop already brings the block input.
    Both fusions are 1x1 Convs (the released code fuses with 1x1 Convs; the figure gives no size)
    with no activation (the figure draws none; the released code's fusions add an ELU).
    """

    def __init__(self, channels: int, n_blocks: int = 3, expansion: int = 2, reduction: int = 16):
        super().__init__()
        self.spatial_1 = WRDB(channels, n_blocks, expansion, reduction)
        self.fuse_1 = conv1x1(2 * channels, channels)
        self.spatial_2 = WRDB(channels, n_blocks, expansion, reduction)
        self.frequency = WRDB(channels, n_blocks, expansion, reduction)
        self.fuse_2 = conv1x1(4 * channels, channels)

    def forward(self, x: torch.Tensor, frequency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s1 = self.spatial_1(x)
        s2 = self.spatial_2(self.fuse_1(torch.cat((x, s1), dim=1)))
        frequency = self.frequency(frequency)
        out = self.fuse_2(torch.cat((s2, s1, x, idct2(frequency)), dim=1))
        return out, frequency


# ------------------------------------------------------------------------- network


class HRN(nn.Module):
    """Cross-domain heterogeneous residual network, following the paper's figures.

    head Conv3x3 -> F; frequency stream = DCT2(F); `n_groups` DEMs carry (spatial, frequency) on;
    F + DEM output (long skip) -> sub-pixel upsampler -> Conv3x3 to RGB.

    Sources: the figures fix the topology; the released code gives 64 features, 4 frequency groups
    (one per DEM here; its 8 spatial groups are the figure's two WRDBs per DEM) and CA reduction 16;
    it normalises RGB to [0, 1] minus the DIV2K mean, which srlab keeps (input and output are
    0..`rgb_range` at the boundary, per the srlab model contract). Chosen where the sources are
    silent: 4 DEMs, 3 WRABs per WRDB (the figure draws three), wide-activation expansion 2 and
    32 features, which keeps the default near HDSRNet's size (1.97 M at x4):
    2,135,459 / 2,181,699 / 2,172,451 parameters at x2 / x3 / x4 (64 features: 8,620,547 at x4).

    DCT: the orthonormal 2-D DCT-II over each channel's H x W, with matrices built for the input size
    (cached per size, device and dtype; the inverse is the exact transpose). The figure's FDCT
    map is 2-D, and orthonormal scaling keeps the frequency stream on the feature scale at any
    input size, where the released code's unnormalised 1-D DCT grows with the width.

    Input: RGB (N, 3, h, w) in [0, rgb_range]; output: (N, 3, scale*h, scale*w), same range.
    """

    def __init__(
        self,
        scale: int,
        n_feats: int = 32,
        n_groups: int = 4,
        n_blocks: int = 3,
        expansion: int = 2,
        reduction: int = 16,
        rgb_range: float = 255.0,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        if n_groups < 1:
            raise ValueError(f"HRN needs at least one DEM, got n_groups={n_groups}")
        self.rgb_range = float(rgb_range)
        # The released code works on [0, 1] minus the DIV2K mean; the division is at the boundary.
        self.sub_mean = MeanShift(-1, rgb_range=1.0)
        self.add_mean = MeanShift(+1, rgb_range=1.0)
        self.head = conv3x3(3, n_feats, bias=True)
        self.dems = nn.ModuleList(DEM(n_feats, n_blocks, expansion, reduction) for _ in range(n_groups))
        self.tail = nn.Sequential(SubPixelUpsampler(self.scale, n_feats), conv3x3(n_feats, 3, bias=True))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        shallow = self.head(self.sub_mean(lr / self.rgb_range))
        features, frequency = shallow, dct2(shallow)
        for dem in self.dems:
            features, frequency = dem(features, frequency)
        deep = shallow + features  # outer residual learning: the long skip from the head
        return self.add_mean(self.tail(deep)) * self.rgb_range
