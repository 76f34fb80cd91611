"""Ctrl-C (SIGINT) or SIGTERM during training saves `last.ckpt` before the process exits.

Lightning turns SIGTERM into `SIGTERMException` once the current batch has finished
(on every rank at the same step, the flag being broadcast from rank 0), and Ctrl-C
into `KeyboardInterrupt`; both reach `on_exception`. This callback then writes the
trainer's full state (weights, optimiser, scheduler, loop position) to `last.ckpt`,
so `ckpt_path=last resume_dir=<run folder>` continues from where the run stopped.
Any other exception (a NaN loss, a crash) writes nothing: the last good checkpoint
stays as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

INTERRUPTS = (KeyboardInterrupt, SIGTERMException)


class InterruptCheckpoint(Checkpoint):
    """Saves `<dirpath>/<filename>.ckpt` when training is stopped by SIGINT or SIGTERM."""

    def __init__(self, dirpath: str, filename: str = "last"):
        if not filename:
            raise ValueError("InterruptCheckpoint: filename must not be empty")
        self.dirpath = Path(dirpath)
        self.filename = filename

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, INTERRUPTS) or trainer.state.fn != TrainerFn.FITTING:
            return
        # Not trainer.save_checkpoint: its closing barrier would hang if another rank is already gone
        # (a Ctrl-C reaches the ranks at different moments). The strategy writes on global rank 0 only,
        # through the configured CheckpointIO (atomic: temp file + rename).
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.save_checkpoint(checkpoint, self.ckpt_path)
        if trainer.is_global_zero:
            log.warning(
                "%s at step %d: saved %s; resume with ckpt_path=last resume_dir=%s",
                type(exception).__name__, trainer.global_step, self.ckpt_path, self.dirpath.parent,
            )
