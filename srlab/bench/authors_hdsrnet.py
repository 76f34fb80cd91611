"""The benchmark's baseline: HDSRNet the way its authors wrote it, and the copy of srlab's weights into it.

fp32, contiguous NCHW, eager; a dynamic convolution that folds the batch into
channels for one grouped convolution, the reference's module layout and 1x1-conv
mean shifts. `baseline_like` loads an srlab HDSRNet's weights (mapped by
`srlab.models.reference`) and temperatures into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srlab.models.common import DIV2K_RGB_MEAN, SubPixelUpsampler
from srlab.models.hdsrnet import HDSRNet
from srlab.models.reference import to_reference_state_dict


class AuthorsAttention(nn.Module):
    """Kernel attention: average pool, 1x1 conv, ReLU, 1x1 conv, softmax(logits / T)."""

    def __init__(self, channels: int, num_kernels: int, temperature: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels // 4, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 4, num_kernels, 1, bias=False),
        )
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(F.adaptive_avg_pool2d(x, 1)).view(x.size(0), -1)
        return F.softmax(logits / self.temperature, dim=1)


class AuthorsDynamicConv(nn.Module):
    """Dynamic 3x3 convolution with the batch folded into channels: one grouped conv, groups = batch.

    It uses `view`, as the reference does, so it needs contiguous NCHW input.
    """

    def __init__(self, channels: int, num_kernels: int = 4, temperature: float = 40.0):
        super().__init__()
        self.attention = AuthorsAttention(channels, num_kernels, temperature)
        self.weight = nn.Parameter(torch.randn(num_kernels, channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.randn(num_kernels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.size()
        attention = self.attention(x)
        kernels = self.weight.size(0)
        weight = torch.mm(attention, self.weight.view(kernels, -1)).view(-1, channels, 3, 3)
        bias = torch.mm(attention, self.bias).view(-1)
        out = F.conv2d(x.view(1, -1, height, width), weight, bias, padding=1, groups=batch)
        return out.view(batch, -1, height, width)


def authors_conv_relu(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False), nn.ReLU(inplace=True)
    )


class AuthorsMeanShift(nn.Conv2d):
    """EDSR's frozen 1x1 convolution adding `sign` x the DIV2K mean (identity weight)."""

    def __init__(self, sign: int, rgb_range: float = 255.0):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_RGB_MEAN)
        self.requires_grad_(False)


class AuthorsUpsampler(nn.Module):
    """The reference's `upsample.up.body` nesting around the sub-pixel stages."""

    def __init__(self, scale: int, channels: int):
        super().__init__()
        self.up = nn.Module()
        self.up.body = SubPixelUpsampler(scale, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up.body(x)


class AuthorsHDSRNet(nn.Module):
    """HDSRNet in the reference layout: `Block.conv1..16` (upper), `conv1..16` (lower), `conv17` (to RGB).

    Upper block b holds `Block.conv{3b+2}` (dilated), `Block.conv{3b+3}` (dynamic) and
    `Block.conv{3b+4}` (plain); forward follows the paper's Eqs. 1, 3 and 4 step by step.
    """

    def __init__(self, scale: int, channels: int = 64, num_blocks: int = 5, depth: int = 16):
        super().__init__()
        self.num_blocks, self.depth = num_blocks, depth
        self.sub_mean = AuthorsMeanShift(-1)
        self.add_mean = AuthorsMeanShift(+1)
        self.Block = nn.Module()
        self.Block.add_module("conv1", authors_conv_relu(3, channels))
        for b in range(num_blocks):
            self.Block.add_module(f"conv{3 * b + 2}", authors_conv_relu(channels, channels, dilation=2))
            dynamic = nn.Sequential(AuthorsDynamicConv(channels), nn.ReLU(inplace=True))
            self.Block.add_module(f"conv{3 * b + 3}", dynamic)
            self.Block.add_module(f"conv{3 * b + 4}", authors_conv_relu(channels, channels))
        for j in range(1, depth + 1):
            self.add_module(f"conv{j}", authors_conv_relu(3 if j == 1 else channels, channels))
        self.upsample = AuthorsUpsampler(scale, channels)
        self.add_module(f"conv{depth + 1}", nn.Sequential(nn.Conv2d(channels, 3, 3, padding=1, bias=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        upper = self.Block.conv1(x)
        for b in range(self.num_blocks):
            dilated, dynamic, plain = (getattr(self.Block, f"conv{3 * b + i}") for i in (2, 3, 4))
            upper = plain(dynamic(dilated(upper))) + upper
        outputs = []
        lower = x
        for j in range(1, self.depth + 1):
            lower = getattr(self, f"conv{j}")(lower)
            outputs.append(lower)
            if j > self.depth // 2:  # Eq. 4: layer j + 1 also takes O_{depth + 1 - j}
                lower = lower + outputs[self.depth - j]
        out = getattr(self, f"conv{self.depth + 1}")(self.upsample(upper * lower))
        return self.add_mean(out)


def baseline_like(model: HDSRNet) -> AuthorsHDSRNet:
    """The authors' HDSRNet holding `model`'s weights and temperatures, on `model`'s device."""
    if model.variant != "full":
        raise ValueError(f"the baseline is the published HDSRNet; got variant {model.variant!r}")
    device = next(model.parameters()).device
    baseline = AuthorsHDSRNet(model.scale, model.construct.to_rgb.in_channels,
                              len(model.upper.blocks), len(model.lower.layers)).to(device)
    baseline.load_state_dict(to_reference_state_dict(model), strict=True)
    theirs = [m for m in baseline.modules() if isinstance(m, AuthorsDynamicConv)]
    for ours, their in zip(model.dynamic_convs(), theirs, strict=True):
        their.attention.temperature = ours.temperature
    return baseline
