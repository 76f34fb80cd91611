"""Anneals the dynamic-conv attention temperature during training (off by default; configs/callbacks/temperature.yaml).

Chen et al. (dynamic convolution, CVPR 2020) lower the softmax temperature linearly
from a high value to 1 over the first epochs so all K kernels get gradient early on;
the HDSRNet reference keeps T = 40 throughout, which is srlab's default.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from srlab.models.dynamic_conv import DynamicConv2d


class TemperatureAnnealing(L.Callback):
    """T goes linearly from `start` to `end` over the first `epochs` epochs (or `steps` optimiser steps), then stays.

    The value is a function of `trainer.global_step`, so resuming from a checkpoint continues
    the schedule. The temperature is a buffer of each dynamic conv (srlab.models.dynamic_conv),
    so checkpoints hold the value the model was trained and validated with. Setting it writes
    on the device (no recompile of a compiled model, no host sync), and only when it changes;
    it is logged as that device value, read only on the steps Lightning writes logs.
    """

    def __init__(self, start: float = 40.0, end: float = 1.0, epochs: float | None = 10, steps: int | None = None):
        if (epochs is None) == (steps is None):
            raise ValueError(f"give exactly one of epochs / steps for the annealing length, got {epochs=}, {steps=}")
        length = steps if steps is not None else epochs
        if length <= 0:
            raise ValueError(f"the annealing length must be positive, got {epochs=}, {steps=}")
        if start <= 0 or end <= 0:
            raise ValueError(f"temperatures must be positive, got {start=}, {end=}")
        self.start = float(start)
        self.end = float(end)
        self.epochs = epochs
        self.steps = steps
        self.total_steps: int | None = steps
        self._applied: float | None = None  # the temperature the model holds, as last set here

    def temperature_at(self, step: int) -> float:
        progress = min(step / self.total_steps, 1.0)
        return self.start + (self.end - self.start) * progress

    @staticmethod
    def dynamic_convs(pl_module: L.LightningModule) -> list[DynamicConv2d]:
        return [m for m in pl_module.modules() if isinstance(m, DynamicConv2d)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.dynamic_convs(pl_module):
            # Not an error: a Table I sweep with annealing has variants without dynamic convs.
            rank_zero_warn("TemperatureAnnealing: the model has no dynamic convolutions; nothing to anneal")
        if self.steps is None:
            steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
            self.total_steps = max(1, round(self.epochs * steps_per_epoch))
        self._applied = None  # the module may have been loaded or changed since the last fit

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        convs = self.dynamic_convs(pl_module)
        if not convs:
            return
        temperature = self.temperature_at(trainer.global_step)
        if temperature != self._applied:
            for conv in convs:
                conv.temperature = temperature
            self._applied = temperature
        # The buffer itself, not the float: a Python number would be copied to the device (a sync) every step.
        pl_module.log("train/temperature", convs[0].attention.temperature, on_step=True, on_epoch=False)
