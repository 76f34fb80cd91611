"""NaNGuard: a NaN/Inf training loss stops the run (or skips the step), and never reaches a checkpoint.

Each step's loss is copied into a small buffer on the device, which costs no host sync; the
buffer is read every `check_every_n_steps` steps (by default: every step on CPU, where a read
waits for nothing, and every `trainer.log_every_n_steps` steps on an accelerator, the steps
where logging reads values anyway), before any checkpoint is written, before validation and
when training ends.

`on_nonfinite: stop` (default) raises `NonFiniteLossError` naming the first bad step. Checked
every step, that happens before the bad step's backward pass, so the optimiser never sees it;
checked every N steps, the weights updated since then are not saved: the message gives the
last checkpoint, which is left untouched. `on_nonfinite: skip` reads the loss every step (a
host sync per step, the price of knowing before the update), lets backward run, then drops the
step's gradients so the optimiser leaves the weights alone (under AMP the grad scaler skips such
a step by itself), and stops after `max_consecutive_skips` bad steps in a row. Either way, a
checkpoint whose weights or optimiser state hold NaN/Inf is refused before a byte is written.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.distributed import ReduceOp

log = logging.getLogger(__name__)

MODES = ("stop", "skip")
# With logging off (log_every_n_steps=0), an accelerator run still checks this often.
DEFAULT_STEPS_BETWEEN_CHECKS = 50
# Where a loss was recorded: (global step, epoch, batch index).
Place = tuple[int, int, int | None]


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


def _shown(loss: float) -> str:
    """The bad loss as the messages print it; under DDP this rank's own loss may have been finite."""
    return "on another rank" if math.isfinite(loss) else str(loss)


class NaNGuard(Callback):
    """Watches the training loss; see the module docstring for `on_nonfinite`, the check cadence and checkpoints."""

    def __init__(self, on_nonfinite: str = "stop", max_consecutive_skips: int = 100,
                 check_every_n_steps: int | None = None):
        if on_nonfinite not in MODES:
            raise ValueError(f"on_nonfinite={on_nonfinite!r}; valid values: {', '.join(MODES)}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips={max_consecutive_skips} must be at least 1")
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps} must be at least 1 (or null: automatic)")
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.check_every_n_steps = check_every_n_steps
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._skip_this_step = False
        self._batch_idx: int | None = None
        self._losses: torch.Tensor | None = None  # the unchecked losses, on the module's device
        self._unchecked: list[Place] = []  # where each of them was recorded

    def steps_between_checks(self, trainer: L.Trainer) -> int:
        """How many losses are recorded on the device before one read (see the module docstring)."""
        if self.on_nonfinite == "skip":
            return 1
        if self.check_every_n_steps is not None:
            return self.check_every_n_steps
        if trainer.strategy.root_device.type == "cpu":
            return 1
        return trainer.log_every_n_steps or DEFAULT_STEPS_BETWEEN_CHECKS

    @staticmethod
    def _last_checkpoint(trainer: L.Trainer) -> str:
        callback = trainer.checkpoint_callback
        path = (callback.last_model_path or callback.best_model_path) if callback is not None else ""
        return f"last checkpoint {path} is intact" if path else "no checkpoint was saved yet"

    @staticmethod
    def _where(step: int, epoch: int, batch_idx: int | None) -> str:
        batch = f", batch {batch_idx}" if batch_idx is not None else ""
        return f"step {step} (epoch {epoch}{batch})"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unchecked, self._skip_this_step = [], False
        self._losses = torch.empty(self.steps_between_checks(trainer), dtype=torch.float32, device=pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def _record(self, trainer: L.Trainer, loss: torch.Tensor) -> None:
        if self._losses is None:  # a backward pass outside fit
            self._losses = torch.empty(self.steps_between_checks(trainer), dtype=torch.float32, device=loss.device)
        loss = loss.detach()
        # One copy on the device (the cast included), no host sync.
        self._losses[len(self._unchecked)].copy_(loss if loss.dim() == 0 else loss.mean())
        self._unchecked.append((trainer.global_step, trainer.current_epoch, self._batch_idx))

    def _first_bad(self, trainer: L.Trainer, collective: bool = True) -> tuple[Place, float] | None:
        """Reads the unchecked losses (one host sync): where the first non-finite one was, and its value.

        A collective read (every rank at the same step) also starts a new window; a local one leaves
        it, so that every rank keeps filling its window in step with the others.
        """
        count = len(self._unchecked)
        if count == 0:
            return None
        losses = self._losses[:count]
        positions = torch.arange(count, device=losses.device, dtype=torch.float32)
        first = torch.where(torch.isfinite(losses), float(count), positions).min()
        if collective and trainer.world_size > 1:
            # Under DDP a NaN on one rank poisons every rank's all-reduced gradients: decide together.
            first = trainer.strategy.reduce(first, reduce_op=ReduceOp.MIN)
        read = torch.cat([first.reshape(1), losses]).tolist()
        unchecked = self._unchecked
        if collective:
            self._unchecked = []
        index = int(read[0])
        return None if index >= count else (unchecked[index], read[1 + index])

    def _stop(self, trainer: L.Trainer, bad: tuple[Place, float]) -> None:
        (step, epoch, batch_idx), value = bad
        noticed = "" if step == trainer.global_step else (
            f", noticed at step {trainer.global_step} (checked every {self.steps_between_checks(trainer)} steps)"
        )
        raise NonFiniteLossError(
            f"non-finite training loss ({_shown(value)}) at {self._where(step, epoch, batch_idx)}{noticed}: stopped; "
            f"{self._last_checkpoint(trainer)}. Lower the learning rate or check the data; "
            "callbacks.nan_guard.on_nonfinite=skip skips such steps instead"
        )

    def _check(self, trainer: L.Trainer, collective: bool = True) -> None:
        bad = self._first_bad(trainer, collective)
        if bad is not None:
            self._stop(trainer, bad)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._record(trainer, loss)
        if len(self._unchecked) < self.steps_between_checks(trainer):
            return
        bad = self._first_bad(trainer)
        if bad is None:
            return
        if self.on_nonfinite == "stop":
            self._stop(trainer, bad)
        (step, epoch, batch_idx), value = bad
        self._skip_this_step = True
        self.skipped_steps += 1
        self.consecutive_skips += 1
        if self.consecutive_skips > self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite training loss at {self.consecutive_skips} steps in a row, the last at "
                f"{self._where(step, epoch, batch_idx)} (max_consecutive_skips={self.max_consecutive_skips}): "
                f"stopped; {self._last_checkpoint(trainer)}"
            )
        log.warning(
            "non-finite training loss (%s) at %s: optimiser step skipped (%d skipped so far)",
            _shown(value), self._where(step, epoch, batch_idx), self.skipped_steps,
        )

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.on_nonfinite != "skip":
            return
        if self._skip_this_step:
            # Parameters without a gradient are left alone by every torch optimiser (Adam moments too).
            optimizer.zero_grad(set_to_none=True)
            self._skip_this_step = False
        else:
            self.consecutive_skips = 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)  # weights updated from a NaN loss are not worth validating

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # This rank's losses only: a save is not always reached by every rank at once (a collective could hang).
        # A NaN from another rank still shows in the weights, which every rank shares after the all-reduce.
        self._check(trainer, collective=False)
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
