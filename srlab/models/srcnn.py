"""SRCNN (Dong et al., TPAMI 2016): three convolutions on the bicubic-upscaled image, in RGB or on Y alone.

Two configurations (docs/baselines.md):

- ``model=srcnn``: the modern variant, RGB in and out, zero 'same' padding everywhere;
- ``model=srcnn_paper``: the paper's network, Y channel only (8,129 parameters at 64/32 filters),
  valid convolutions in training (a 33x33 input gives the central 21x21), replicate 'same'
  padding at test time as the authors' MATLAB code filters, Gaussian initialisation std 1e-3.

Both are pre-upsampling models (``pre_upsample = True``): in training the data module hands
``forward_upsampled`` crops of the bicubic-upscaled whole LR image (its Y channel when
``luma``), so a patch's borders are those of the upscaled image. ``forward`` keeps the suite's
contract: RGB LR in 0..255 in, RGB SR out. It upscales with MATLAB-exact bicubic (rounded as
the cached training input is); a Y model's output Y is combined with the bicubic image's Cb and
Cr (``srlab.data.color``), so scoring, saved images and every task work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from srlab.data.color import replace_y, rgb_to_y
from srlab.models.bicubic import Bicubic

PADDING_MODES = {"zeros": "constant", "replicate": "replicate", "reflect": "reflect"}


class SRCNN(nn.Module):
    """Patch extraction (9x9, 64) -> non-linear mapping (1x1, 32) -> reconstruction (5x5, channels).

    `channels` 3 works on RGB; 1 works on the Y channel (``luma``). `padding_mode` is the
    'same' padding of every layer at inference ("zeros", "replicate" as the authors' code,
    "reflect"). `valid_training` trains without padding: the output is smaller than the
    input by the kernels' reach, and SRModule scores the loss on the target's central
    region. `init_std` draws weights from N(0, std^2) with zero biases (the paper's 1e-3);
    None keeps PyTorch's default initialisation.
    """

    pre_upsample = True

    def __init__(
        self,
        scale: int,
        channels: int = 3,
        filters: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 1, 5),
        padding_mode: str = "zeros",
        valid_training: bool = False,
        init_std: float | None = None,
    ):
        super().__init__()
        if len(filters) != 2 or len(kernel_sizes) != 3:
            raise ValueError("SRCNN has three layers: give two filter counts and three kernel sizes")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd for 'same' padding, got {tuple(kernel_sizes)}")
        if channels not in (1, 3):
            raise ValueError(f"channels={channels!r} must be 3 (RGB) or 1 (the Y channel)")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not one of {', '.join(PADDING_MODES)}")
        if init_std is not None and not init_std > 0:
            raise ValueError(f"init_std={init_std!r} must be positive, or null for PyTorch's default initialisation")
        self.scale = int(scale)
        self.luma = channels == 1
        self.padding_mode = padding_mode
        self.valid_training = bool(valid_training)
        self.upscale = Bicubic(scale)
        widths = [channels, *filters, channels]
        # Unpadded layers; `run` pads each layer's input itself, so one set of weights serves both
        # the valid (training) and the 'same' (inference) forms.
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, k) for c_in, c_out, k in zip(widths[:-1], widths[1:], kernel_sizes)
        )
        self.relu = nn.ReLU(inplace=True)
        if init_std is not None:
            for conv in self.convs:
                nn.init.normal_(conv.weight, mean=0.0, std=init_std)
                nn.init.zeros_(conv.bias)

    @property
    def border(self) -> int:
        """Pixels lost per side by the valid form: 6 for 9-1-5 (a 33x33 input gives 21x21)."""
        return sum(conv.kernel_size[0] // 2 for conv in self.convs)

    def run(self, x: torch.Tensor, padded: bool = True) -> torch.Tensor:
        """The three layers on a pre-upsampled (N, channels, H, W) image in 0..255; valid form when not `padded`."""
        # SRCNN was trained on [0, 1] intensities; normalise here so the suite can feed [0, 255].
        x = x / 255.0
        for i, conv in enumerate(self.convs):
            reach = conv.kernel_size[0] // 2
            if padded and reach:
                x = F.pad(x, (reach, reach, reach, reach), mode=PADDING_MODES[self.padding_mode])
            x = conv(x)
            if i < len(self.convs) - 1:
                x = self.relu(x)
        return x * 255.0

    def forward_upsampled(self, x: torch.Tensor) -> torch.Tensor:
        """Training input -> output: `x` is the bicubic-upscaled image (its Y when `luma`), as data modules crop it."""
        return self.run(x, padded=not (self.valid_training and self.training))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """RGB LR (N, 3, h, w) in 0..255 -> RGB SR (N, 3, scale*h, scale*w), 'same' padding."""
        upscaled = self.upscale(lr)
        if not self.luma:
            return self.run(upscaled)
        return replace_y(upscaled, self.run(rgb_to_y(upscaled)))
