"""HDSRNet (Tian et al., 2024) and its Table I ablation variants as flags of one class.

Architecture facts and parameter counts: docs/architecture.md. Output = CB(HUNet(x) * SLNet(x))
around a frozen mean shift, where HUNet = Conv+ReLU then five heterogeneous blocks
HB(x) = CR(DyCR(DiCR(x))) + x, and SLNet = 16 Conv+ReLU with symmetric
residual links (1,16) (2,15) ... (8,9).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from srlab.models.common import ConstructionBlock, MeanShift, conv_relu
from srlab.models.dynamic_conv import DynamicConv2d
from srlab.scales import check_scale

LAYER_KINDS = ("dilated", "dynamic", "plain")


@dataclass(frozen=True)
class VariantSpec:
    """What one Table I row changes: the layers inside each upper block, residuals, the lower net."""

    block_layers: tuple[str, ...]
    block_residual: bool
    lower: str | None  # "symmetric" (with residual links), "plain" (without), or None (no lower net)
    description: str


# Paper Table I, in the paper's order (section IV.D).
VARIANTS: dict[str, VariantSpec] = {
    "six_conv": VariantSpec(("plain",), False, None, "A combination of six stacked Conv+ReLU and a CB"),
    "upper_plain": VariantSpec(
        ("plain",), True, None, "Heterogeneous upper sub-network without Dilated Conv+ReLU, Dynamic Conv+ReLU and a CB"
    ),
    "upper_no_dynamic": VariantSpec(
        ("dilated", "plain"), True, None, "Heterogeneous upper sub-network without dynamic Conv+ReLU and a CB"
    ),
    "upper_no_dilated": VariantSpec(
        ("dynamic", "plain"), True, None, "Heterogeneous upper sub-network without dilated Conv+ReLU and a CB"
    ),
    "upper_conv_for_dilated": VariantSpec(
        ("plain", "dynamic", "plain"), True, None,
        "Heterogeneous upper sub-network with Conv+ReLU rather than dilated Conv+ReLU",
    ),
    "upper_conv_for_dynamic": VariantSpec(
        ("dilated", "plain", "plain"), True, None,
        "Heterogeneous upper sub-network with Conv+ReLU rather than dynamic Conv+ReLU",
    ),
    "upper": VariantSpec(("dilated", "dynamic", "plain"), True, None, "Heterogeneous upper sub-network and a CB"),
    "no_lower_residual": VariantSpec(
        ("dilated", "dynamic", "plain"), True, "plain",
        "HDSRNet without residual learning operations in symmetrical lower sub-network",
    ),
    "full": VariantSpec(("dilated", "dynamic", "plain"), True, "symmetric", "HDSRNet"),
}


def resolve_variant(variant: str) -> VariantSpec:
    if variant not in VARIANTS:
        raise ValueError(f"unknown HDSRNet variant {variant!r}; valid names: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


class DynamicConvReLU(nn.Module):
    """DyCR: dynamic convolution + ReLU, stored as `<name>.0` like the reference's Sequential."""

    def __init__(self, channels: int, num_kernels: int, temperature: float):
        super().__init__()
        self.add_module("0", DynamicConv2d(channels, channels, 3, num_kernels=num_kernels, temperature=temperature))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._modules["0"](x))


def make_layer(kind: str, channels: int, num_kernels: int, temperature: float) -> nn.Module:
    if kind == "dilated":
        return conv_relu(channels, channels, dilation=2)
    if kind == "dynamic":
        return DynamicConvReLU(channels, num_kernels, temperature)
    if kind == "plain":
        return conv_relu(channels, channels)
    raise ValueError(f"unknown layer kind {kind!r}; valid kinds: {', '.join(LAYER_KINDS)}")


class HeterogeneousBlock(nn.Module):
    """A stack of Conv+ReLU layers of the given kinds, with an optional identity residual."""

    def __init__(self, kinds: tuple[str, ...], channels: int, residual: bool, num_kernels: int, temperature: float):
        super().__init__()
        self.layers = nn.Sequential(*(make_layer(k, channels, num_kernels, temperature) for k in kinds))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class UpperNet(nn.Module):
    """HUNet: Conv+ReLU (3 -> C) then `num_blocks` heterogeneous blocks."""

    def __init__(self, spec: VariantSpec, channels: int, num_blocks: int, num_kernels: int, temperature: float):
        super().__init__()
        self.head = conv_relu(3, channels)
        self.blocks = nn.Sequential(
            *(
                HeterogeneousBlock(spec.block_layers, channels, spec.block_residual, num_kernels, temperature)
                for _ in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.head(x))


class SymmetricLowerNet(nn.Module):
    """SLNet: `depth` Conv+ReLU; with residual links the output of layer j > depth/2 gets O_{depth+1-j} added."""

    def __init__(self, channels: int, depth: int = 16, residual: bool = True):
        super().__init__()
        if depth % 2:
            raise ValueError(f"the symmetric lower network needs an even depth, got {depth}")
        self.layers = nn.ModuleList(
            [conv_relu(3, channels)] + [conv_relu(channels, channels) for _ in range(depth - 1)]
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = len(self.layers)
        half = depth // 2
        # Only O_1 .. O_{depth/2} are joined later, so only they are kept (halves inference memory).
        early: list[torch.Tensor] = []
        for j, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if self.residual and j <= half:
                early.append(x)
            elif self.residual:
                # Eq. 4: layer 10's input is O_9 + O_8, ..., the net's output is O_16 + O_1.
                x = x + early[depth - j]
        return x


class HDSRNet(nn.Module):
    """Heterogeneous dynamic convolutional network for SISR; RGB in [0, 255] in and out.

    Args:
        scale: upscaling factor, one of `srlab.scales.SUPPORTED_SCALES`.
        variant: a Table I row name (see `VARIANTS`); "full" is the published model.
        channels: feature width (64 in the paper).
        num_blocks: heterogeneous blocks in the upper net (5).
        lower_depth: Conv+ReLU layers in the lower net (16).
        num_kernels: dynamic-conv kernels K (4).
        temperature: initial softmax temperature of the kernel attention (40).
    """

    def __init__(
        self,
        scale: int,
        variant: str = "full",
        channels: int = 64,
        num_blocks: int = 5,
        lower_depth: int = 16,
        num_kernels: int = 4,
        temperature: float = 40.0,
        rgb_range: float = 255.0,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.variant = variant
        spec = resolve_variant(variant)
        self.sub_mean = MeanShift(-1, rgb_range)
        self.add_mean = MeanShift(+1, rgb_range)
        self.upper = UpperNet(spec, channels, num_blocks, num_kernels, temperature)
        self.lower = None if spec.lower is None else SymmetricLowerNet(channels, lower_depth, spec.lower == "symmetric")
        self.construct = ConstructionBlock(self.scale, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        features = self.upper(x)
        if self.lower is not None:
            features = features * self.lower(x)  # Eq. 1: element-wise product fusion
        return self.add_mean(self.construct(features))

    def dynamic_convs(self) -> list[DynamicConv2d]:
        return [m for m in self.modules() if isinstance(m, DynamicConv2d)]

    def set_temperature(self, temperature: float) -> None:
        for conv in self.dynamic_convs():
            conv.temperature = temperature
