"""Soak: many train/validate/checkpoint cycles through train.py's code path must not leak memory or files.

A tiny HDSRNet trains on the built-in sample photos with a validation every 4
steps and last.ckpt refreshed every 2 steps (plus the best checkpoint, the
comparison images, the CSV log and one persistent loader worker). After each
validation the probe records the process's resident memory and its number of
open file descriptors; after a warm-up both must stay flat. The figures are
printed (`pytest -s`) so a report can quote them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from srlab.tasks.train import train

REPO = Path(__file__).resolve().parents[1]
VALIDATIONS = 60
WARMUP = 15
RSS_TOLERANCE_MIB = 16.0  # allocator noise; keeping one validation image (0.5 MiB) per cycle would exceed it


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class ResourceProbe(Callback):
    """Resident memory (MiB) and open file descriptors after every validation (class-level: one per run)."""

    samples: list[tuple[int, float, int]] = []

    def on_validation_end(self, trainer, pl_module):
        ResourceProbe.samples.append((trainer.global_step, rss_mib(), open_fds()))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count memory and open files")
def test_repeated_training_and_validation_do_not_leak(tmp_path):
    steps_per_validation = 4
    overrides = [
        "debug=smoke",
        f"paths.output_dir={tmp_path}",
        "model.channels=8", "model.num_blocks=1", "model.lower_depth=2", "model.num_kernels=2",
        "+data.train_images=[astronaut.png]", "+data.val_images=[chessboard_RGB.png]", "data.num_workers=1",
        f"data.steps_per_epoch={steps_per_validation}",
        "trainer.max_epochs=-1", f"trainer.max_steps={VALIDATIONS * steps_per_validation}",
        "+trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.progress_bar=null",
        f"+callbacks.resource_probe._target_={__name__}.ResourceProbe",
    ]
    ResourceProbe.samples = []
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # as @hydra.main does: the hydra node moves out of the job config
        with open_dict(cfg):
            del cfg["hydra"]
        metrics = train(cfg)

    samples = ResourceProbe.samples
    assert len(samples) == VALIDATIONS
    assert samples[-1][0] == VALIDATIONS * steps_per_validation
    assert metrics["val/psnr"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()

    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    settled_rss, settled_fds = rss[WARMUP:], fds[WARMUP:]
    growth = max(settled_rss) - settled_rss[0]
    print(
        f"\nsoak: {VALIDATIONS} validations, {samples[-1][0]} steps, {len(list((tmp_path / 'checkpoints').iterdir()))}"
        f" checkpoint files; RSS MiB first {rss[0]:.1f}, after warm-up {settled_rss[0]:.1f}, "
        f"max {max(settled_rss):.1f}, last {rss[-1]:.1f} (growth after warm-up {growth:+.1f}); "
        f"open fds first {fds[0]}, after warm-up {settled_fds[0]}, min {min(settled_fds)}, max {max(settled_fds)}, "
        f"last {fds[-1]}"
    )
    assert growth <= RSS_TOLERANCE_MIB, f"RSS grew {growth:.1f} MiB over {len(settled_rss)} validations: {rss}"
    assert max(settled_fds) - min(settled_fds) <= 1, f"open file descriptors drifted: {fds}"
