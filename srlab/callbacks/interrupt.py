"""Stopping a training run without losing it: a signal or Ctrl-C writes `last.ckpt`, and so does every N-th step.

Signals (`signals`: SIGTERM and SIGUSR2 by default; SLURM sends SIGTERM at the time limit, on
`scancel` and on preemption, and SIGUSR2 `signal_delay_s` before the limit when asked to, as
hydra-submitit-launcher does):

- The handler only records the signal. Each rank then learns at the end of every training step
  (and after a validation) whether any rank got one: one all-reduce (MAX) of the recorded signal
  number, only when there are several ranks. So every rank stops after the same step, whichever
  ranks the signal reached and whenever it arrived (mid-step, mid-validation).
- Stopping raises Lightning's `SIGTERMException` at the end of that step, after the validation the
  step may run (it is not cut short), on every rank; `on_exception` then writes the trainer's full
  state (weights, optimiser, scheduler, loop position) to `last.ckpt` on global rank 0, through the
  configured CheckpointIO (atomic: temp file + rename).
- The handlers are installed from `setup` (a SIGUSR2 while the model is set up is recorded, not
  fatal) to the end of `fit`, in place of Lightning's SIGTERM handler, which broadcasts from inside
  the handler: when the signal lands mid-step, that broadcast meets another rank's gradient
  all-reduce. The handlers found before `fit` are put back afterwards.
- `hand_over_stop` (called by the train task once `fit` has stopped) then runs the handler that was
  installed for the signal before `fit`: under hydra-submitit-launcher that is submitit's SIGUSR2
  handler, which pickles the job and requeues it (`max_num_timeout`), so the requeue comes after the
  checkpoint and the two handlers never race. Under plain SLURM (sbatch + srun, no submitit) a
  `requeue_signal` stop (SIGUSR2; not SIGTERM, which `scancel` sends too) requeues the job itself
  (`scontrol requeue`, global rank 0). The exit status is 128 + the signal number (143 for
  SIGTERM, 140 for SIGUSR2), as for a process killed by that signal.
- The run folder's `last.ckpt` is what a relaunch of the same command (or the requeued job) resumes
  from (`resume=auto`, srlab.tasks.checks).

Ctrl-C (KeyboardInterrupt) saves at once, without waiting for the end of the step; any other
exception (a NaN loss, a crash) writes nothing: the last good checkpoint stays as it was.

`every_n_train_steps=N` also refreshes `last.ckpt` every N steps, so a hard kill (SIGKILL, node
failure, OOM killer) loses at most N steps. It is separate from ModelCheckpoint's own
`every_n_train_steps`, which would also pick the best checkpoint at those steps, from the latest
(stale) validation score.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

INTERRUPTS = (KeyboardInterrupt, SIGTERMException)


def as_signal(value: str | int) -> signal.Signals:
    """`SIGUSR2`, `USR2` or 12 -> signal.SIGUSR2; the error names the value."""
    if isinstance(value, int):
        return signal.Signals(value)
    name = str(value).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"InterruptCheckpoint: {value!r} is not a signal name (e.g. SIGTERM, SIGUSR2)") from None


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for an array task, else SLURM_JOB_ID (None: no SLURM)."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_slurm_job(job_id: str) -> bool:
    """`scontrol requeue <job_id>`: SLURM puts the job back in the queue; it reruns the same batch script."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("SLURM job %s not requeued: scontrol requeue failed (%s)", job_id, err)
        return False
    if result.returncode != 0:
        log.error("SLURM job %s not requeued: scontrol requeue exited %d: %s",
                  job_id, result.returncode, result.stderr.strip())
        return False
    log.warning("SLURM job %s requeued (scontrol requeue); it resumes from the run folder's last.ckpt", job_id)
    return True


class InterruptCheckpoint(Checkpoint):
    """Saves `<dirpath>/<filename>.ckpt` when training is stopped by a signal or Ctrl-C, and every N steps.

    The module docstring says when and how; `stop_signal` is the signal every rank stopped on (0 if none).
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "last",
        signals: Sequence[str | int] = ("SIGTERM", "SIGUSR2"),
        every_n_train_steps: int | None = None,
        requeue_signal: str | int | None = "SIGUSR2",
    ):
        if not filename:
            raise ValueError("InterruptCheckpoint: filename must not be empty")
        if every_n_train_steps is not None and (isinstance(every_n_train_steps, bool) or every_n_train_steps < 1):
            raise ValueError(f"InterruptCheckpoint: every_n_train_steps={every_n_train_steps!r} must be >= 1 or null")
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.signals = tuple(as_signal(s) for s in signals)
        self.every_n_train_steps = every_n_train_steps
        self.requeue_signal = as_signal(requeue_signal) if requeue_signal else None
        self.received = 0  # signal number recorded by this process's handler
        self.stop_signal = 0  # signal number all ranks agreed to stop on
        self._trainer: L.Trainer | None = None
        self._handlers_before_fit: dict[int, Callable | int | None] = {}
        self._fitting = False  # between setup and the end of fit: signals are recorded, not passed on

    @property
    def ckpt_path(self) -> Path:
        return self.dirpath / f"{self.filename}.ckpt"

    # -- signal handling ---------------------------------------------------------------------------------
    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                signal.signal(sig, self._on_signal)

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._handlers_before_fit.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # The launcher's handlers (submitit's) or the defaults, before Lightning registers its own.
        self._handlers_before_fit = {int(s): signal.getsignal(s) for s in self.signals}
        self._trainer = trainer
        self._fitting = True
        self._install()  # from here a signal is recorded (SIGUSR2's default action would end the process)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()  # again: Lightning has since put its own SIGTERM handler in front of this one

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._fitting = False
            self._restore()  # after Lightning's teardown, which restores what it found: these handlers

    def _on_signal(self, signum: int, frame) -> None:
        if not self._fitting:
            # Left installed after a failed fit (Lightning's teardown restores the handlers it found, these):
            # behave as the handler from before fit would.
            self._pass_on(signum, frame)
            return
        # Only records: no collective and no I/O inside a signal handler.
        self.received = self.received or signum
        trainer = self._trainer
        if trainer is not None and trainer.world_size == 1:
            self._stop(trainer, signum)  # one process: nothing to agree on (Lightning's own behaviour)

    def _pass_on(self, signum: int, frame) -> None:
        before_fit = self._handlers_before_fit.get(signum, signal.SIG_DFL)
        if callable(before_fit):
            before_fit(signum, frame)
        elif before_fit != signal.SIG_IGN:  # the default action (SIGTERM, SIGUSR2: end the process)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _agree(self, trainer: L.Trainer) -> int:
        """The signal any rank recorded (the largest number), or 0; every rank calls this at the same point."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([self.received], dtype=torch.int32, device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return int(flag.item())
        return self.received

    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        self.stop_signal = self.stop_signal or signum
        if not trainer.validating:
            # Lightning raises SIGTERMException at the end of the current step once this flag is set.
            trainer._signal_connector.received_sigterm = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        signum = self._agree(trainer)
        if signum:
            self._stop(trainer, signum)
        elif self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            trainer.save_checkpoint(self.ckpt_path)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stop_signal and trainer.state.fn == TrainerFn.FITTING:
            # Let the validation finish: Lightning would stop it after any batch, and ranks hold different
            # shares of the images, so they would stop at different points of the final gather.
            trainer._signal_connector.received_sigterm = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        signum = self.stop_signal or self._agree(trainer)
        if signum:
            self.stop_signal = signum
            trainer._signal_connector.received_sigterm = True

    # -- saving -----------------------------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, INTERRUPTS) or trainer.state.fn != TrainerFn.FITTING:
            self._fitting = False
            return
        # Not trainer.save_checkpoint: its closing barrier would hang if another rank is already gone
        # (a Ctrl-C reaches the ranks at different moments). The strategy writes on global rank 0 only,
        # through the configured CheckpointIO (atomic: temp file + rename).
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.save_checkpoint(checkpoint, self.ckpt_path)
        self._fitting = False  # saved: a further signal now acts as it would have before fit
        cause = signal.Signals(self.stop_signal).name if self.stop_signal else type(exception).__name__
        if trainer.is_global_zero:
            log.warning(
                "%s at step %d: saved %s; relaunch the same command in the same run folder to resume (resume=auto)",
                cause, trainer.global_step, self.ckpt_path,
            )
        else:
            log.warning("%s: rank %d stopped at step %d", cause, trainer.global_rank, trainer.global_step)

    def hand_over(self, trainer: L.Trainer) -> int:
        """After a signal stop (last.ckpt written): the launcher's handling of the signal; returns the exit status."""
        self._restore()  # Lightning's teardown restored the handlers it found at fit start: these ones
        signum = self.stop_signal or int(signal.SIGTERM)
        before_fit = self._handlers_before_fit.get(signum)
        if callable(before_fit):
            # submitit's handler: on global rank 0 it checkpoints the job (pickles the launcher call) and
            # requeues it, then exits; on the other ranks it only logs.
            log.info("%s: handing over to the handler installed before training (%s)",
                     signal.Signals(signum).name, getattr(before_fit, "__qualname__", before_fit))
            before_fit(signum, None)
        elif signum == self.requeue_signal and trainer.is_global_zero and (job_id := slurm_job_id()):
            requeue_slurm_job(job_id)
        return 128 + signum


def hand_over_stop(trainer: L.Trainer) -> int:
    """Exit status after `fit` stopped on SIGTERMException; first runs InterruptCheckpoint.hand_over when present."""
    for callback in trainer.callbacks:
        if isinstance(callback, InterruptCheckpoint):
            return callback.hand_over(trainer)
    return 128 + int(signal.SIGTERM)
