"""Speed levers shared by SRModule and the benchmark: channels_last, narrow-conv GEMMs, torch.compile, bf16.

Each helper keeps fp32 numerics unless asked otherwise; `srlab.bench` measures
which of them win on a given machine.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Convolutions with at most this many outputs run as a GEMM on CPU (see NarrowConv2d).
NARROW_MAX_OUT_CHANNELS = 4


def to_channels_last(model: nn.Module) -> nn.Module:
    """Stores every 4-D parameter and buffer channels_last, in place; returns `model`.

    `model.to(memory_format=torch.channels_last)` raises on the dynamic conv's
    5-D kernel bank, so only 4-D tensors are converted. Parameter objects are kept
    (their `.data` is swapped), so optimisers built earlier stay valid.
    """
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in channels_last layout (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision name ('fp32', 'bf16'); unknown names raise, listing the valid ones."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid names: {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast(device: torch.device | str, dtype: str = "fp32") -> contextlib.AbstractContextManager:
    """Mixed precision for `dtype` 'bf16' (convolutions and matmuls in bf16); a no-op context for 'fp32'."""
    if resolve_dtype(dtype) is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def bf16_supported(device: torch.device | str) -> bool:
    """Whether `device` runs bf16 convolutions natively (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def compile_model(model: nn.Module, **options) -> nn.Module:
    """Compiles `model`'s forward in place (`nn.Module.compile`), so state-dict keys stay unprefixed.

    `options` go to `torch.compile` (e.g. `mode="reduce-overhead"`, `dynamic=False`). Only for a
    model that is never trained again: `options={"options": {"freezing": True}}` folds the weights
    in as constants (inductor's inference freezing).
    """
    model.compile(**options)
    return model


def narrow_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=1)` for a 3x3 kernel, as one GEMM and eight shifted adds.

    The GEMM (9 * out x in) @ (in x H*W) gives every tap's response plane; each output
    pixel then sums its nine neighbours' planes (zero outside the image). Works on NCHW
    and channels_last input without copying it; returns NCHW.
    """
    batch, _, height, width = x.shape
    out_channels = weight.shape[0]
    taps = weight.permute(2, 3, 0, 1).reshape(9 * out_channels, -1)  # rows ordered (dy, dx, out)
    planes = torch.matmul(taps, x.flatten(2)).view(batch, 3, 3, out_channels, height, width)
    out = planes[:, 1, 1].clone()  # the centre tap covers every pixel
    for dy in range(3):
        for dx in range(3):
            if dy == dx == 1:
                continue
            sy, sx = dy - 1, dx - 1  # output (y, x) reads tap plane (y + sy, x + sx)
            out[:, :, max(-sy, 0) : height - max(sy, 0), max(-sx, 0) : width - max(sx, 0)] += planes[
                :, dy, dx, :, max(sy, 0) : height + min(sy, 0), max(sx, 0) : width + min(sx, 0)
            ]
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class NarrowConv2d(nn.Conv2d):
    """A 3x3 'same' convolution with few outputs (HDSRNet's 64 -> 3 to_rgb) computed by `narrow_conv3x3` on CPU.

    oneDNN pads output channels to a SIMD block of 16, so a 3-output convolution costs as
    much as a 16-output one; the GEMM does only the real work (about 2.7x faster for
    to_rgb here). Same parameters and state dict as `nn.Conv2d`; other devices use F.conv2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4:
            return super().forward(x)
        return narrow_conv3x3(x, self.weight, self.bias)


def is_narrow_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.out_channels <= NARROW_MAX_OUT_CHANNELS
        and module.kernel_size == (3, 3)
        and module.padding == (1, 1)
        and module.stride == (1, 1)
        and module.dilation == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def use_narrow_convs(model: nn.Module) -> nn.Module:
    """Swaps every 3x3 'same' nn.Conv2d with <= 4 outputs for a NarrowConv2d holding the same parameters."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_narrow_conv(child):
                narrow = NarrowConv2d(child.in_channels, child.out_channels, 3, padding=1, bias=child.bias is not None,
                                      device="meta")
                narrow.weight, narrow.bias = child.weight, child.bias
                setattr(parent, name, narrow)
    return model


def apply_speed_options(
    model: nn.Module,
    channels_last: bool = False,
    compile: bool = False,
    compile_options: dict | None = None,
    narrow_convs: bool = False,
) -> nn.Module:
    """The speed options SRModule and `srlab.bench` share, applied in place; returns `model`."""
    if narrow_convs:
        use_narrow_convs(model)
    if channels_last:
        to_channels_last(model)
    if compile:
        compile_model(model, **{k: v for k, v in (compile_options or {}).items() if v is not None})
    return model
