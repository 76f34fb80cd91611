"""Dynamic convolution (Chen et al., CVPR 2020): per-sample attention over K kernels.

Each sample gets its own 3x3 kernel, the softmax(logits / T)-weighted sum of K
kernels (and biases). Shapes and init follow the HDSRNet reference so the
authors' checkpoints load unchanged (docs/architecture.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KernelAttention(nn.Module):
    """Global pool -> 1x1 conv (C -> C/4) -> ReLU -> 1x1 conv (-> K) -> softmax(logits / T).

    T is a 0-d buffer, not a Python float: annealing it changes a value on the device, which
    neither recompiles a `torch.compile`d model (a float is guarded by value) nor needs a host
    copy. It is saved in the state dict; a state dict from before it was (no `temperature`
    key) loads with the temperature the module was built with.
    """

    def __init__(self, in_channels: int, num_kernels: int, reduction: int = 4, temperature: float = 40.0):
        super().__init__()
        hidden = max(in_channels // reduction, 1)
        # A Sequential with a ReLU at index 1 so keys read `net.0.weight`, `net.2.weight` as in the reference.
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_kernels, 1, bias=False),
        )
        self.temperature: torch.Tensor
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.register_load_state_dict_pre_hook(_keep_temperature_when_absent)
        for conv in (self.net[0], self.net[2]):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        logits = self.net(pooled).flatten(1)
        return torch.softmax(logits / self.temperature, dim=1)


def _keep_temperature_when_absent(module: KernelAttention, state_dict: dict, prefix: str, *args) -> None:
    """Older state dicts (and the authors' files) hold no temperature: keep the module's own."""
    state_dict.setdefault(prefix + "temperature", module.temperature.detach().clone())


class DynamicConv2d(nn.Module):
    """3x3 (or any odd) dynamic convolution with K kernels; 'same' padding, stride 1.

    The batched path aggregates one kernel per sample and runs a single grouped
    convolution over the whole batch (groups = batch). Unlike the reference, the
    fold of the batch into channels goes through `reshape`, so channels_last
    inputs with batch > 1 are handled correctly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        num_kernels: int = 4,
        temperature: float = 40.0,
        bias: bool = True,
        dilation: int = 1,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.num_kernels = num_kernels
        self.attention = KernelAttention(in_channels, num_kernels, temperature=temperature)
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(num_kernels, out_channels)) if bias else None
        for k in range(num_kernels):
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
        if self.bias is not None:
            nn.init.normal_(self.bias)  # standard normal, as the reference does

    @property
    def temperature(self) -> float:
        """The softmax temperature as a number (reading it waits for the device; the setter does not)."""
        return float(self.attention.temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        with torch.no_grad():
            self.attention.temperature.fill_(float(value))

    def aggregate(self, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample kernels (B, O, I, k, k) and biases (B, O) from attention (B, K)."""
        weight = torch.einsum("bk,koihw->boihw", attention, self.weight)
        bias = attention @ self.bias if self.bias is not None else None
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        weight, bias = self.aggregate(self.attention(x))
        if batch == 1:
            # One sample: a plain convolution keeps the input's memory format.
            bias0 = None if bias is None else bias[0]
            return F.conv2d(x, weight[0], bias0, padding=self.padding, dilation=self.dilation)
        # Folding the batch into channels is a view only for NCHW: a channels_last batch is folded by
        # one copy, and its output goes back to channels_last so the layers after it stay NHWC.
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        folded = x.reshape(1, batch * channels, height, width)
        out = F.conv2d(
            folded,
            weight.reshape(batch * self.out_channels, self.in_channels, self.kernel_size, self.kernel_size),
            None if bias is None else bias.reshape(-1),
            padding=self.padding,
            dilation=self.dilation,
            groups=batch,
        )
        out = out.reshape(batch, self.out_channels, out.shape[-2], out.shape[-1])
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def forward_per_sample(self, x: torch.Tensor) -> torch.Tensor:
        """Reference path: one convolution per sample (used by tests to check the batched path)."""
        weight, bias = self.aggregate(self.attention(x))
        outs = [
            F.conv2d(
                x[i : i + 1], weight[i], None if bias is None else bias[i], padding=self.padding, dilation=self.dilation
            )
            for i in range(x.shape[0])
        ]
        return torch.cat(outs, dim=0)
