"""PSNR / SSIM exactly as SR papers score them (docs/protocol.md), built on torchmetrics.

Protocol: quantise SR to uint8 values, convert to Y (BT.601, 16..235) — or use
the luma of a grey image directly —, shave `scale` pixels per border, then PSNR
(peak 255) and MATLAB-style SSIM (11x11 Gaussian, sigma 1.5, valid region), in
float64, averaged per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio

Y_WEIGHTS = (65.481, 128.553, 24.966)  # ITU-R BT.601 for inputs in 0..255, output 16..235


def quantize(img: torch.Tensor) -> torch.Tensor:
    """What is saved as a PNG: clamp to [0, 255], round halves up (MATLAB's uint8 cast; torch.round is half-to-even)."""
    return img.clamp(0, 255).add(0.5).floor()


def to_luma(img: torch.Tensor, grey: torch.Tensor | Sequence[bool] | bool = False) -> torch.Tensor:
    """(N, 3, H, W) RGB in 0..255 -> (N, 1, H, W) float64 Y; grey images keep their own channel values.

    A grey file is fed to the model as three equal channels; its score uses the
    BT.601 luma without offset (0.299 R + 0.587 G + 0.114 B), which returns the
    grey value itself when the channels are equal.
    """
    img = img.to(torch.float64)
    if img.shape[1] == 1:
        return img
    weights = img.new_tensor(Y_WEIGHTS).view(1, 3, 1, 1)
    y = (img * weights).sum(dim=1, keepdim=True) / 255.0 + 16.0
    grey_mask = torch.as_tensor(grey, device=img.device, dtype=torch.bool).reshape(-1)
    if grey_mask.any():
        luma = (img * weights).sum(dim=1, keepdim=True) / sum(Y_WEIGHTS)
        y = torch.where(grey_mask.expand(img.shape[0]).view(-1, 1, 1, 1), luma, y)
    return y


def shave(img: torch.Tensor, border: int) -> torch.Tensor:
    return img[..., border:-border, border:-border] if border > 0 else img


def prepare_for_scoring(
    sr: torch.Tensor, hr: torch.Tensor, scale: int, grey=False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise SR, bring both to Y (float64) and shave `scale` pixels from every border."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {tuple(sr.shape)} differs from HR shape {tuple(hr.shape)}")
    return shave(to_luma(quantize(sr), grey), scale), shave(to_luma(hr, grey), scale)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    """MATLAB fspecial('gaussian', size, sigma) as its 1-D factor (the 2-D window is its outer product)."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_valid(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0, size: int = 11, sigma: float = 1.5,
               k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image SSIM of (N, 1, H, W) float64 maps, MATLAB `ssim` style: Gaussian window, 'valid' region.

    Written here rather than taken from torchmetrics for two reasons: torchmetrics'
    structural_similarity_index_measure differs from a direct 'valid' 2-D Gaussian filtering
    (MATLAB's definition) by up to ~5e-4 per image, and its dense 11x11 float64 convolution
    made scoring several times slower than the model; two 1-D passes give the exact valid
    result (tested against scipy's correlate2d to 1e-12).
    """
    g = gaussian_window(size, sigma, x.dtype, x.device)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5, H, W), filtered in one go
    channels = maps.shape[1]
    rows = g.view(1, 1, size, 1).expand(channels, 1, size, 1)
    cols = g.view(1, 1, 1, size).expand(channels, 1, 1, size)
    filtered = F.conv2d(F.conv2d(maps, rows, groups=channels), cols, groups=channels)
    mu_x, mu_y, xx, yy, xy = filtered.unbind(dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)


def psnr_ssim_per_image(
    sr: torch.Tensor, hr: torch.Tensor, scale: int, grey=False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM, each of shape (N,), float64."""
    sr_y, hr_y = prepare_for_scoring(sr, hr, scale, grey)
    psnr = peak_signal_noise_ratio(sr_y, hr_y, data_range=255.0, reduction="none", dim=(1, 2, 3))
    return psnr, ssim_valid(sr_y, hr_y)


class SRMetrics(Metric):
    """Mean per-image PSNR and SSIM over a dataset; sums reduce exactly across DDP ranks."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.add_state("psnr_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ssim_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: torch.Tensor, hr: torch.Tensor, grey=False) -> None:
        psnr, ssim = psnr_ssim_per_image(sr, hr, self.scale, grey)
        self.psnr_sum += psnr.sum()
        self.ssim_sum += ssim.sum()
        self.count += psnr.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise RuntimeError("SRMetrics.compute() called before any image was scored")
        return {"psnr": self.psnr_sum / self.count, "ssim": self.ssim_sum / self.count}
