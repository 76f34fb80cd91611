"""NaNGuard: a NaN/Inf training loss stops the run (or skips the step), and never reaches a checkpoint.

`on_nonfinite: stop` (default) raises `NonFiniteLossError` before the backward
pass of the bad step, so the optimiser never sees it; the message gives the
step and the last checkpoint, which is left untouched. `on_nonfinite: skip`
lets backward run, then drops the step's gradients so the optimiser leaves the
weights alone (under AMP the grad scaler skips such a step by itself), and
stops after `max_consecutive_skips` bad steps in a row. Either way, a
checkpoint whose weights or optimiser state hold NaN/Inf is refused before a
byte is written.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

MODES = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """The training loss or the saved state became NaN/Inf; the message gives the step and what to do."""


def _first_nonfinite(tensors: dict[str, Any], prefix: str) -> str | None:
    """Name of the first floating tensor (nested dicts/lists walked) holding NaN/Inf, or None."""
    stack: list[tuple[str, Any]] = [(prefix, tensors)]
    while stack:
        name, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{name}[{i}]", v) for i, v in enumerate(value))
        elif torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


class NaNGuard(Callback):
    """Watches the training loss each step; see the module docstring for `on_nonfinite` and the checkpoint check."""

    def __init__(self, on_nonfinite: str = "stop", max_consecutive_skips: int = 100):
        if on_nonfinite not in MODES:
            raise ValueError(f"on_nonfinite={on_nonfinite!r}; valid values: {', '.join(MODES)}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips={max_consecutive_skips} must be at least 1")
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._skip_this_step = False
        self._batch_idx: int | None = None

    @staticmethod
    def _last_checkpoint(trainer: L.Trainer) -> str:
        callback = trainer.checkpoint_callback
        path = (callback.last_model_path or callback.best_model_path) if callback is not None else ""
        return f"last checkpoint {path} is intact" if path else "no checkpoint was saved yet"

    def _where(self, trainer: L.Trainer) -> str:
        batch = f", batch {self._batch_idx}" if self._batch_idx is not None else ""
        return f"step {trainer.global_step} (epoch {trainer.current_epoch}{batch})"

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        # Under DDP a NaN on one rank poisons every rank's all-reduced gradients: decide together.
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        value = loss.detach().float().mean().item()
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at {self._where(trainer)}: stopped; "
                f"{self._last_checkpoint(trainer)}. Lower the learning rate or check the data; "
                "callbacks.nan_guard.on_nonfinite=skip skips such steps instead"
            )
        self._skip_this_step = True
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips > self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite training loss at {self.consecutive_skips} steps in a row, the last at "
                f"{self._where(trainer)} (max_consecutive_skips={self.max_consecutive_skips}): stopped; "
                f"{self._last_checkpoint(trainer)}"
            )
        log.warning(
            "non-finite training loss (%s) at %s: optimiser step skipped (%d skipped so far)",
            value, self._where(trainer), self.skipped_steps,
        )

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._skip_this_step:
            # Parameters without a gradient are left alone by every torch optimiser (Adam moments too).
            optimizer.zero_grad(set_to_none=True)
            self._skip_this_step = False
        else:
            self.consecutive_skips = 0

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = _first_nonfinite(checkpoint.get("state_dict", {}), "state_dict") or _first_nonfinite(
            checkpoint.get("optimizer_states", []), "optimizer_states"
        )
        if bad:
            raise NonFiniteLossError(
                f"refusing to save a checkpoint at step {trainer.global_step}: {bad} holds NaN/Inf; "
                f"{self._last_checkpoint(trainer)}"
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
