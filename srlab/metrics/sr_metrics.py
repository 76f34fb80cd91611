"""PSNR / SSIM exactly as SR papers score them (DESIGN.md §3), built on torchmetrics.

Protocol: quantise SR to uint8 values, convert to Y (BT.601, 16..235) — or use
the luma of a grey image directly —, shave `scale` pixels per border, then PSNR
(peak 255) and MATLAB-style SSIM (11x11 Gaussian, sigma 1.5, valid region), in
float64, averaged per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

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


def prepare_for_scoring(sr: torch.Tensor, hr: torch.Tensor, scale: int, grey=False) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise SR, bring both to Y (float64) and shave `scale` pixels from every border."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {tuple(sr.shape)} differs from HR shape {tuple(hr.shape)}")
    return shave(to_luma(quantize(sr), grey), scale), shave(to_luma(hr, grey), scale)


def psnr_ssim_per_image(sr: torch.Tensor, hr: torch.Tensor, scale: int, grey=False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM, each of shape (N,), float64."""
    sr_y, hr_y = prepare_for_scoring(sr, hr, scale, grey)
    psnr = peak_signal_noise_ratio(sr_y, hr_y, data_range=255.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(
        sr_y, hr_y, gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0,
        k1=0.01, k2=0.03, reduction="none",
    )
    return psnr, ssim


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
