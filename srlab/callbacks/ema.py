"""EMA of the weights (`callbacks=ema`): Lightning's WeightAveraging with torch's EMA update, exact across resumes.

Lightning's `WeightAveraging` does the work: after every optimiser step it updates an
`AveragedModel` (the first update copies the weights, each later one is
``ema = decay * ema + (1 - decay) * weights``), swaps the average in for validation, writes it as
the checkpoint's ``state_dict`` with the trained weights under ``current_model_state``, restores
both on resume, and copies the average into the model when training ends.

`ExponentialMovingAverage` adds two things:

- Buffers are not averaged: the average holds the trained model's current buffers (HDSRNet's
  dynamic-conv temperature, its mean shift). An annealed temperature is a setting of the model,
  not a weight, and averaging it would validate and save a temperature the model never had.
- ModelCheckpoint may write ``last.ckpt`` after the final copy (its own ``on_train_end``, e.g.
  when a resumed run deferred its last save); such a checkpoint held the average twice, and a run
  resumed from it went on from the average instead of the trained weights. The trained weights
  are kept from that moment and written as ``current_model_state``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ExponentialMovingAverage(WeightAveraging):
    """EMA with `decay` of the parameters, updated after every optimiser step; buffers follow the trained model.

    `device`: where the average lives (default: the model's; "cpu" saves accelerator memory).
    """

    def __init__(self, decay: float = 0.999, device: str | None = None):
        super().__init__(device=device, use_buffers=False, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay
        self._trained_weights: dict[str, torch.Tensor] | None = None

    def _sync_buffers(self, pl_module: L.LightningModule) -> None:
        """Copies the trained model's buffers into the average, by name."""
        if self._average_model is None:
            return
        current = dict(pl_module.named_buffers())
        with torch.no_grad():
            for name, buffer in self._average_model.module.named_buffers():
                if name in current:
                    buffer.copy_(current[name])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._trained_weights = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync_buffers(pl_module)  # before the swap, so validation keeps the current buffers
        super().on_validation_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync_buffers(pl_module)
        self._trained_weights = {name: value.detach().clone() for name, value in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)  # the model now holds the average

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._trained_weights is None:  # after on_train_end the model holds the average: nothing to sync
            self._sync_buffers(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._trained_weights is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self._trained_weights
