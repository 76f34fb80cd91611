"""HRN as its authors' released code builds it (github.com/zhangyongqin/HRN, `hrn/model/hrn.py`), and its checkpoints.

The released network differs from the paper's figures (`srlab.models.hrn`): four stages, each of
two spatial residual groups and one frequency group. A residual group is RCAN-style: residual
blocks Conv3x3-ReLU-Conv3x3 with coordinate attention, then a Conv3x3, plus a residual. The
frequency stream starts from a DCT of the head features and is carried from stage to stage. Pairs
of features are fused by a 1x1 Conv + ELU:

    stage k (k = 1..4, i = 2k - 1, j = 2k):
        c_i  = c{i}([b{i}(x), x])                  x: the head output, then the previous c_j
        f    = fb{k}(f)                            f: DCT(head output) at the start
        c_j  = c{j}([b{j}(c_i), IDCT(f)])
    output = tail(head output + c_8)

Kept from the released code: module names (so `hrn_x4.pth` keys load directly), widths (64
features, 20 blocks per group, attention reduction 16), input range [0, 1] minus the DIV2K mean,
and its DCT convention (`torch_dct.dct` / `idct` with `norm=None`: 1-D along the width,
unnormalised DCT-II, X_k = 2 sum_n x_n cos(pi k (2n + 1) / 2W), and its exact inverse), written
here with matrices instead of the torch_dct package.

Changed, so that srlab can use it:
- Any input size. The released attention pools with `AdaptiveAvgPool2d((48, 1))` / `((1, 48))` and
  splits at [48, 48], so only 48x48 inputs run. Here each row is averaged over the width and each
  column over the height at the input's own size: the same numbers at 48x48, and defined at any size.
- RGB 0..255 in and out (the srlab model contract): divided by 255 on the way in, multiplied on the way out.
- `fix_wiring`. The released forward pass uses `c1` where `c3` belongs (stage 2's first fusion) and
  `b2` where `b4` belongs (stage 2's second group), so `c3` and `b4` are never used.
  `fix_wiring=False` (default) runs it as released and freezes `c3` and `b4`: they get no
  gradient either way, and frozen they do not trouble DDP. `fix_wiring=True` uses them as intended.
- The attention's BatchNorm (`bn`), which the released code defines but never applies, is kept
  for the key layout, never applied and frozen.
- The mean shifts are srlab's frozen buffers; the released 1x1-conv form (`sub_mean.shifter.*`) is
  checked against them on loading, not loaded.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from srlab.models.common import DIV2K_RGB_MEAN, MeanShift, SubPixelUpsampler, conv3x3
from srlab.models.hrn import dct_matrix
from srlab.models.reference import check_key_layout, read_state_dict, rounded
from srlab.scales import check_scale

N_STAGES = 4  # fixed by the released code: b1..b8, fb1..fb4, c1..c8
MEAN_SHIFT_SIGNS = {"sub_mean": -1, "add_mean": +1}
# The stage whose modules the released forward pass swaps (1-based) and what it uses instead.
SLIPPED_STAGE = 2
UNUSED_AS_RELEASED = ("c3", "b4")

# --------------------------------------------------------------------------- DCT


@functools.lru_cache(maxsize=64)
def unnormalised_dct_matrices(size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, D^-1) for the unnormalised DCT-II of `norm=None`: X = D @ x, x = D^-1 @ X along one axis.

    D[k, n] = 2 cos(pi k (2n + 1) / 2N) is the orthonormal matrix with its rows scaled by 2 sqrt(N)
    (k = 0) and sqrt(2N) (k > 0); its inverse is therefore the transpose with the columns divided back.
    """
    with torch.inference_mode(False), torch.no_grad():  # normal tensors even if first built during validation
        orthonormal = dct_matrix(size, torch.device("cpu"), torch.float64)
        row_scale = torch.full((size,), math.sqrt(2.0 * size), dtype=torch.float64, device="cpu")  # not meta
        row_scale[0] = 2.0 * math.sqrt(size)
        forward = row_scale[:, None] * orthonormal
        inverse = orthonormal.T / row_scale[None, :]
        return forward.to(device=device, dtype=dtype), inverse.to(device=device, dtype=dtype)


def dct_width(x: torch.Tensor) -> torch.Tensor:
    """`torch_dct.dct(x, norm=None)`: unnormalised DCT-II along the last axis (the width)."""
    forward, _ = unnormalised_dct_matrices(x.shape[-1], x.device, x.dtype)
    return x @ forward.T


def idct_width(coeffs: torch.Tensor) -> torch.Tensor:
    """`torch_dct.idct(X, norm=None)`: the exact inverse of `dct_width`."""
    _, inverse = unnormalised_dct_matrices(coeffs.shape[-1], coeffs.device, coeffs.dtype)
    return coeffs @ inverse.T


# ------------------------------------------------------------------ building blocks
# Attribute names follow the released module tree, so that state-dict keys match it.


class ReleasedCoordinateAttention(nn.Module):
    """The released code's coordinate attention: x * gate_h * gate_w, no residual, ReLU, no bias, no BN applied."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"coordinate attention: channels={channels} // reduction={reduction} leaves no channels")
        self.conv_1x1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)  # defined by the released code, never applied in its forward pass
        self.bn.requires_grad_(False)
        self.relu = nn.ReLU(inplace=True)
        self.F_h = nn.Conv2d(hidden, channels, 1, bias=False)
        self.F_w = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        rows = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        columns = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        mixed = self.relu(self.conv_1x1(torch.cat((rows, columns), dim=2)))
        mixed_h, mixed_w = mixed.split((height, width), dim=2)
        gate_h = torch.sigmoid(self.F_h(mixed_h))  # (N, C, H, 1)
        gate_w = torch.sigmoid(self.F_w(mixed_w)).transpose(2, 3)  # (N, C, 1, W)
        return x * gate_h * gate_w


class ResidualAttentionBlock(nn.Module):
    """RCAN-style block: x + CA(Conv3x3(ReLU(Conv3x3(x)))); `body.0`, `body.2`, `body.3` as released."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels, bias=True),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels, bias=True),
            ReleasedCoordinateAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """`n_blocks` residual attention blocks and a Conv3x3 (`body.<n_blocks>`), plus a residual."""

    def __init__(self, channels: int, n_blocks: int = 20, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            *(ResidualAttentionBlock(channels, reduction) for _ in range(n_blocks)),
            conv3x3(channels, channels, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FusionConv(nn.Module):
    """1x1 Conv 2C -> C + ELU over a concatenated pair (`body.0` as released)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2 * channels, channels, 1), nn.ELU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# ------------------------------------------------------------------------- network


class HRNReference(nn.Module):
    """The released HRN topology (module docstring); RGB 0..rgb_range in and out, any input size.

    Defaults are the released ones (n_feats 64, n_resblocks 20, reduction 16):
    18,572,099 / 18,756,739 / 18,719,811 parameters at x2 / x3 / x4, as the released code counts
    its trainable ones. 1,539,584 of them are frozen with `fix_wiring=False` (`c3`, `b4` and every
    attention BatchNorm) and 1,920 (the BatchNorms) with `fix_wiring=True`.
    `load_state_dict` also accepts the released key layout (`hrn_x4.pth`); see `from_released_checkpoint`.
    """

    def __init__(
        self,
        scale: int,
        fix_wiring: bool = False,
        n_feats: int = 64,
        n_resblocks: int = 20,
        reduction: int = 16,
        rgb_range: float = 255.0,
    ):
        super().__init__()
        self.scale = check_scale(scale)
        self.fix_wiring = bool(fix_wiring)
        self.rgb_range = float(rgb_range)
        self.sub_mean = MeanShift(-1, rgb_range=1.0)  # the released code's [0, 1] range
        self.add_mean = MeanShift(+1, rgb_range=1.0)
        self.head = nn.Sequential(conv3x3(3, n_feats, bias=True))
        for i in range(1, 2 * N_STAGES + 1):
            setattr(self, f"b{i}", ResidualGroup(n_feats, n_resblocks, reduction))
        for k in range(1, N_STAGES + 1):
            setattr(self, f"fb{k}", ResidualGroup(n_feats, n_resblocks, reduction))
        for i in range(1, 2 * N_STAGES + 1):
            setattr(self, f"c{i}", FusionConv(n_feats))
        self.tail = nn.Sequential(SubPixelUpsampler(self.scale, n_feats), conv3x3(n_feats, 3, bias=True))
        if not self.fix_wiring:
            for name in UNUSED_AS_RELEASED:
                getattr(self, name).requires_grad_(False)

    def stage_modules(self, stage: int) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, nn.Module]:
        """(first group, first fusion, frequency group, second group, second fusion) of a 1-based stage."""
        i, j = 2 * stage - 1, 2 * stage
        first_fusion, second_group = getattr(self, f"c{i}"), getattr(self, f"b{j}")
        if stage == SLIPPED_STAGE and not self.fix_wiring:
            first_fusion, second_group = self.c1, self.b2  # the released forward pass's slips
        return getattr(self, f"b{i}"), first_fusion, getattr(self, f"fb{stage}"), second_group, getattr(self, f"c{j}")

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        shallow = self.head(self.sub_mean(lr / self.rgb_range))
        features, frequency = shallow, dct_width(shallow)
        for stage in range(1, N_STAGES + 1):
            first_group, first_fusion, frequency_group, second_group, second_fusion = self.stage_modules(stage)
            fused = first_fusion(torch.cat((first_group(features), features), dim=1))
            frequency = frequency_group(frequency)
            features = second_fusion(torch.cat((second_group(fused), idct_width(frequency)), dim=1))
        return self.add_mean(self.tail(shallow + features)) * self.rgb_range

    def load_state_dict(self, state_dict: Mapping, strict: bool = True, assign: bool = False):
        """srlab's own keys, or the released layout (recognised by `sub_mean.shifter.*`), checked and mapped."""
        if any(key.endswith("sub_mean.shifter.weight") for key in state_dict):
            state, source = read_state_dict(state_dict)
            state_dict = released_to_srlab(state, self, source)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


# ------------------------------------------------------------------ released checkpoints


def mean_shift_as_conv(model: HRNReference, name: str) -> dict[str, torch.Tensor]:
    """The released 1x1-conv form of a mean shift: identity weight, bias = the shift (on [0, 1])."""
    shift = getattr(model, name).shift.detach().reshape(3)
    return {
        f"{name}.shifter.weight": torch.eye(3, dtype=shift.dtype).reshape(3, 3, 1, 1),
        f"{name}.shifter.bias": shift.clone(),
    }


def to_released_state_dict(model: HRNReference) -> dict[str, torch.Tensor]:
    """`model`'s weights in the released key layout (what `torch.save(net.state_dict())` gives there)."""
    released = {k: v.detach().clone() for k, v in model.state_dict().items() if k.split(".")[0] not in MEAN_SHIFT_SIGNS}
    for name in MEAN_SHIFT_SIGNS:
        released.update(mean_shift_as_conv(model, name))
    return released


def guess_released_scale(state: Mapping[str, torch.Tensor], channels: int) -> int | None:
    """The scale a released upsampler (`tail.0.<n>`) was built for: one 9C stage is x3, n stages of 4C are x2**n."""
    stages = [k for k in state if k.startswith("tail.0.") and k.endswith(".weight")]
    if not stages:
        return None
    if len(stages) == 1 and state[stages[0]].shape[0] == 9 * channels:
        return 3
    if all(state[k].shape[0] == 4 * channels for k in stages):
        return 2 ** len(stages)
    return None


def check_released_layout(state: Mapping[str, torch.Tensor], model: HRNReference, source: str) -> None:
    """ValueError naming missing, unexpected and mis-shaped keys (and the file's likely scale)."""
    check_key_layout(
        state, to_released_state_dict(model),
        f"{source} does not fit HRNReference(scale={model.scale}) in the released HRN layout:",
        model.scale, guess_released_scale(state, model.tail[1].in_channels), "tail.0.*",
        # PyTorch 0.4.0 (the released code's) did not save BatchNorm's num_batches_tracked.
        optional_suffix=".num_batches_tracked",
    )


def check_released_mean_shift(state: Mapping[str, torch.Tensor], model: HRNReference, source: str) -> None:
    """The released sub_mean/add_mean convs must encode srlab's frozen DIV2K mean on [0, 1] (they are not loaded)."""
    for name in MEAN_SHIFT_SIGNS:
        for key, want in mean_shift_as_conv(model, name).items():
            got = state[key].to(want.dtype)
            if not torch.allclose(got, want, atol=1e-4):
                raise ValueError(
                    f"{source}: {key} = {rounded(got)} differs from the released HRN mean shift {rounded(want)}"
                    f" (DIV2K mean {DIV2K_RGB_MEAN} on [0, 1]); these weights expect another normalisation"
                )


def released_to_srlab(state: Mapping[str, torch.Tensor], model: HRNReference, source: str) -> dict[str, torch.Tensor]:
    """A released-layout state dict, checked, as a state dict for `model` (srlab's mean-shift buffers kept)."""
    check_released_layout(state, model, source)
    check_released_mean_shift(state, model, source)
    own = model.state_dict()
    mapped = {k: v for k, v in state.items() if k.split(".")[0] not in MEAN_SHIFT_SIGNS}
    # Keys the released format may lack (num_batches_tracked) and the mean shifts keep the model's values.
    mapped.update({k: v for k, v in own.items() if k not in mapped})
    if model.fix_wiring:
        warnings.warn(
            f"{source}: loaded with fix_wiring=True, but the released weights of {' and '.join(UNUSED_AS_RELEASED)}"
            " were never trained (the released forward pass does not use them); fine-tune before trusting outputs",
            stacklevel=3,
        )
    return mapped


def from_released_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping, scale: int, fix_wiring: bool = False, **model_kwargs
) -> HRNReference:
    """An `HRNReference` holding the released weights (`hrn_x4.pth`: `scale=4`).

    Accepts a path or a state dict, also wrapped as `{"model": ...}` / `{"state_dict": ...}` or with
    `module.` / `model.` key prefixes. `model_kwargs` go to `HRNReference` (widths, depths).
    """
    state, source = read_state_dict(path_or_state_dict)
    model = HRNReference(scale, fix_wiring, **model_kwargs)
    nn.Module.load_state_dict(model, released_to_srlab(state, model, source), strict=True)
    return model


def load_reference_hrn(path: str, scale: int, fix_wiring: bool = False, **model_kwargs) -> HRNReference:
    """Hydra target for a config with `path` (srlab's eval loads such models itself): the released file as a model."""
    return from_released_checkpoint(path, scale, fix_wiring, **model_kwargs)
