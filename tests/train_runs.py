"""Helpers for the tests that train: a tiny HDSRNet, train.py as a subprocess or in-process, run-folder readers.

Also generated data in the real layouts (a DIV2K folder, HR-only benchmark sets), and the
test-only Lightning callbacks a train.py subprocess loads by `_target_`
(`tests.train_runs.KillAtStep`; train.py's folder, the repository root, is on its path).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from srlab.data.imresize import bicubic_downscale, modcrop
from srlab.data.io import write_image

REPO = Path(__file__).resolve().parents[1]

# HDSRNet with every part kept but 7k parameters: a whole validation image takes ~0.5 s on CPU.
TINY_MODEL = ["model.channels=8", "model.num_blocks=1", "model.lower_depth=2"]
# debug=smoke-sized training with the tiny model and no progress bar in captured output.
SMOKE = ["debug=smoke", *TINY_MODEL, "callbacks.progress_bar=null"]


def random_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random colours (a 6x6 grid, bicubic-upscaled) plus noise: content at every scale, like a photo."""
    coarse = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def write_div2k(root: Path, images: dict[int, np.ndarray], scale: int | None, valid_from: int = 801) -> Path:
    """DIV2K layout: numbers < valid_from go to train, the rest to valid; LR files when `scale` is given."""
    for number, hr in images.items():
        split = "train" if number < valid_from else "valid"
        write_image(root / f"DIV2K_{split}_HR" / f"{number:04d}.png", hr)
        if scale is not None:
            lr = bicubic_downscale(modcrop(hr, scale), scale)
            write_image(root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}" / f"{number:04d}x{scale}.png", lr)
    return root


def write_div2k_layout(root: Path, numbers: range, scale: int, size: tuple[int, int] = (48, 60), seed: int = 0) -> Path:
    """DIV2K's training folders (`DIV2K_train_HR/0001.png`, `DIV2K_train_LR_bicubic/X{s}/0001x{s}.png`) of
    generated images."""
    rng = np.random.default_rng(seed)
    return write_div2k(root, {number: random_photo(rng, *size) for number in numbers}, scale)


def write_hr_set(folder: Path, stems: tuple[str, ...], size: tuple[int, int], seed: int = 0) -> Path:
    """A benchmark set of generated HR images alone (`<folder>/HR/<stem>.png`); srlab makes the LR images."""
    rng = np.random.default_rng(seed)
    for stem in stems:
        write_image(folder / "HR" / f"{stem}.png", random_photo(rng, *size))
    return folder


def train_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a train.py subprocess: W&B offline with every W&B folder under tmp_path."""
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path / "wandb"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        HYDRA_FULL_ERROR="1",
    )
    env.pop("WANDB_API_KEY", None)
    return env


def start_train(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python train.py <args>` from the repository root, output captured; `extra_env` adds variables."""
    return subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=REPO, env={**train_env(tmp_path), **(extra_env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240, expect_rc: int = 0) -> str:
    """Waits for a started run; fails with the end of its output if the exit status differs."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"train.py still running after {timeout} s:\n{output[-4000:]}") from None
    assert proc.returncode == expect_rc, f"train.py exited {proc.returncode}, expected {expect_rc}:\n{output[-4000:]}"
    return output


def run_train(args: list[str], tmp_path: Path, timeout: float = 240, expect_rc: int = 0,
              extra_env: dict[str, str] | None = None) -> str:
    return finish(start_train(args, tmp_path, extra_env), timeout, expect_rc)


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would run with, `run_dir` as its run folder, for in-process runs.

    Sets the Hydra runtime fields that `hydra.main` would (output_dir, cwd), so
    `${hydra:...}` interpolations resolve; call `clear_hydra()` afterwards.
    """
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.run.dir = str(run_dir)
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(REPO)
        cfg.hydra.job.name = "train"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def clear_hydra() -> None:
    HydraConfig.instance().cfg = None


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def logged(run_dir: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric in the run's csv/metrics.csv."""
    rows = read_csv(run_dir / "csv" / "metrics.csv")
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class KillAtStep(L.Callback):
    """SIGKILLs its own process once `step` optimiser steps are done, before that step's checkpoint."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NaNInputOnRank(L.Callback):
    """Fills rank `rank`'s training batch with NaN at step `step`: only that rank's loss is non-finite."""

    def __init__(self, rank: int, step: int):
        self.rank = rank
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            batch["lr"].fill_(float("nan"))


class PauseAtStep(L.Callback):
    """After `step` steps, touches `marker` and waits (up to `timeout` s) for a signal to act on."""

    def __init__(self, step: int, marker: str, timeout: float = 120):
        self.step = step
        self.marker = Path(marker)
        self.timeout = timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + self.timeout
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGINT raises KeyboardInterrupt in here; SIGTERM sets the flag


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until `path` exists; fails early with the output if the process ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            output, _ = proc.communicate()
            raise AssertionError(f"train.py exited {proc.returncode} before {path.name} appeared:\n{output[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)
