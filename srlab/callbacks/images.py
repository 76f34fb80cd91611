"""Writes Bicubic | SR | HR comparison strips of a few validation images after each validation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch

from srlab.data.io import tensor_to_uint8, write_image
from srlab.models.bicubic import Bicubic


def comparison_strip(lr: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor, scale: int, gap: int = 4) -> np.ndarray:
    """One uint8 image: MATLAB-bicubic upscale, model output and ground truth side by side (white gaps)."""
    bicubic = Bicubic(scale)(lr.unsqueeze(0).cpu())[0]
    tiles = [tensor_to_uint8(t.cpu()) for t in (bicubic, sr, hr)]
    h = tiles[0].shape[0]
    spacer = np.full((h, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([tiles[0], spacer, tiles[1], spacer, tiles[2]], axis=1)


class ComparisonImages(L.Callback):
    """Saves the first `num_images` of each validation set as `images/step<N>/<set>_<image>.png` (rank 0 only)."""

    def __init__(self, num_images: int = 2, dirname: str = "images", log_to_loggers: bool = True):
        self.num_images = num_images
        self.dirname = dirname
        self.log_to_loggers = log_to_loggers
        self._strips: list[tuple[str, np.ndarray]] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking or not trainer.is_global_zero or outputs is None:
            return
        index = batch["index"][0]
        if index >= self.num_images:
            return
        name = trainer.datamodule.eval_names[dataloader_idx]
        strip = comparison_strip(batch["lr"][0], outputs[0].float(), batch["hr"][0], pl_module.scale)
        self._strips.append((f"{name}_{batch['name'][0]}", strip))

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self._strips:
            return
        folder = Path(trainer.default_root_dir) / self.dirname / f"step{trainer.global_step:07d}"
        for key, strip in self._strips:
            write_image(folder / f"{key}.png", strip)
        if self.log_to_loggers:
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):  # W&B: Bicubic | SR | HR strips in the dashboard
                    logger.log_image(
                        key="val/comparison", images=[s for _, s in self._strips],
                        caption=[k for k, _ in self._strips], step=trainer.global_step,
                    )
        self._strips = []
