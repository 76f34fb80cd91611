"""Score a model on whole-image evaluation sets with the paper protocol (one image at a time)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from srlab.data.datasets import EvalDataset
from srlab.metrics.sr_metrics import psnr_ssim_per_image


@dataclass
class ImageScore:
    dataset: str
    image: str
    psnr: float
    ssim: float


@torch.inference_mode()
def score_dataset(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    dataset: EvalDataset,
    device: torch.device | str = "cpu",
    on_image: Callable[[int, torch.Tensor], None] | None = None,
) -> list[ImageScore]:
    """Per-image PSNR/SSIM of `model` on `dataset`; `on_image(index, sr)` sees each SR output (e.g. to save it)."""
    scores = []
    for index in range(len(dataset)):
        item = dataset[index]
        lr = item["lr"].unsqueeze(0).to(device)
        hr = item["hr"].unsqueeze(0).to(device)
        sr = model(lr)
        psnr, ssim = psnr_ssim_per_image(sr, hr, dataset.scale, grey=item["grey"])
        scores.append(ImageScore(dataset.name, item["name"], float(psnr[0]), float(ssim[0])))
        if on_image is not None:
            on_image(index, sr[0])
    return scores


def mean_scores(scores: list[ImageScore]) -> tuple[float, float]:
    n = len(scores)
    return sum(s.psnr for s in scores) / n, sum(s.ssim for s in scores) / n
