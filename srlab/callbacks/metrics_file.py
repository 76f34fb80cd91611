"""Writes the run folder's `metrics.json` after every validation: the latest and the best validation.

Logger-independent (a W&B-only run has it too), rewritten atomically, and its
best/latest records travel in checkpoints, so a resumed run keeps its best. The
sweep summary (`srlab.callbacks.sweep_summary`) reads one such file per job.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from srlab.utils.files import atomic_write_text

MODES = ("max", "min")


class MetricsFile(L.Callback):
    """`{"monitor", "mode", "best": {"step", "epoch", <metric>: value...}, "last": {...}}` in `path`.

    Records hold every scalar callback metric whose name starts with `prefix`;
    `best` is the validation where `monitor` was highest (`mode=max`) or lowest.
    """

    def __init__(self, path: str, monitor: str = "val/psnr", mode: str = "max", prefix: str = "val/"):
        if mode not in MODES:
            raise ValueError(f"MetricsFile: mode={mode!r} is not one of {', '.join(MODES)}")
        self.path = Path(path)
        self.monitor = monitor
        self.mode = mode
        self.prefix = prefix
        self.best: dict[str, float] | None = None
        self.last: dict[str, float] | None = None

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None or self.monitor not in self.best:
            return True
        return value > self.best[self.monitor] if self.mode == "max" else value < self.best[self.monitor]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(self.prefix) and torch.is_tensor(value) and value.numel() == 1
        }
        if not metrics:
            return
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, **dict(sorted(metrics.items()))}
        self.last = record
        if self.monitor in metrics and self._improves(metrics[self.monitor]):
            self.best = record
        if trainer.is_global_zero:
            content = {"monitor": self.monitor, "mode": self.mode, "best": self.best, "last": self.last}
            atomic_write_text(self.path, json.dumps(content, indent=2) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last": self.last}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.last = state_dict.get("last")
