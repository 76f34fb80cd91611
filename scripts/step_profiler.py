"""Lightning's SimpleProfiler that also keeps every training step's duration, for scripts/gpu_check.sh.

The simple profiler's report gives means, which the first steps (cuDNN autotuning, worker start-up)
skew; this subclass writes the raw per-step durations of the training batch and of the wait for the
next batch to ``<dirpath>/<stage>-step-durations.json`` beside the report, so the check can take
steady-state medians. Used as ``+trainer.profiler._target_=step_profiler.StepRecordingProfiler``
with ``scripts/`` on PYTHONPATH.
"""

from __future__ import annotations

import json
import os

from lightning.pytorch.profilers import SimpleProfiler

# Action names of Lightning's training loop (lightning.pytorch.loops.training_epoch_loop).
STEP_ACTIONS = {"batch": "run_training_batch", "data_wait": "[_TrainingEpochLoop].train_dataloader_next"}


class StepRecordingProfiler(SimpleProfiler):
    """SimpleProfiler plus ``<stage>-step-durations.json``: seconds per training step and per data wait."""

    def summary(self) -> str:
        if self.dirpath and self._stage and self._local_rank in (None, 0):
            durations = {key: list(self.recorded_durations.get(action, [])) for key, action in STEP_ACTIONS.items()}
            stage = getattr(self._stage, "value", self._stage)  # "fit", as in the report's file name
            os.makedirs(self.dirpath, exist_ok=True)
            with open(os.path.join(self.dirpath, f"{stage}-step-durations.json"), "w") as f:
                json.dump(durations, f)
        return super().summary()
