"""Learning-rate schedules that torch does not ship: the authors' released HDSRNet training schedule.

`ReferenceCodeLR` reproduces, per optimiser step, what the released code does per epoch
(docs/recipe.md, "The learning-rate schedule"): EDSR's `MultiStepLR(milestones=[200], gamma=0.5)`
is stepped once at the end of each epoch, and just before that step HDSRNet's `trainer.py` resets
every group's rate to `lr * 0.5 ** (epoch // 300)` (`epoch` 1-based). `MultiStepLR.step()` only
multiplies the current rate at a milestone, so the reset wins everywhere except right after epoch 200.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ReferenceCodeLR"]


class ReferenceCodeLR(LRScheduler):
    """The released code's schedule, stepped every optimiser step (Lightning `interval: step`).

    After `e` full epochs of `epoch_length` steps (e >= 1), the rate is
    `base * reset_gamma ** (e // reset_every)`, times `gamma` once for each milestone equal to `e`;
    during the first epoch it is `base`. With the defaults (999-step epochs, the released code's:
    EDSR's 71 passes over 900 images of batch 64 are 998 full batches and one of 28): 1e-4 to step
    299,699, halved after 299,700, 599,400 and 899,100 steps, and 5e-5 for the 999 steps of epoch
    201 (steps 199,800 to 200,798). `base` is each parameter group's own initial rate (the released
    code has one group, reset to `--lr`).
    """

    def __init__(self, optimizer: Optimizer, epoch_length: int = 999, reset_every: int = 300,
                 reset_gamma: float = 0.5, milestones: Sequence[int] = (200,), gamma: float = 0.5,
                 last_epoch: int = -1):
        for name, value in (("epoch_length", epoch_length), ("reset_every", reset_every)):
            if int(value) < 1:
                raise ValueError(f"ReferenceCodeLR: {name}={value!r} must be at least 1")
        self.epoch_length = int(epoch_length)
        self.reset_every = int(reset_every)
        self.reset_gamma = float(reset_gamma)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The rate of optimiser step `step` (0-based) as a multiple of the initial rate."""
        epochs_done = step // self.epoch_length
        if epochs_done == 0:
            return 1.0
        return self.reset_gamma ** (epochs_done // self.reset_every) * self.gamma ** self.milestones.count(epochs_done)

    def get_lr(self) -> list[float]:
        # `last_epoch` counts scheduler steps, one per optimiser step here; closed form, so resuming is exact.
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]
