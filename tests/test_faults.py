"""Faults during training: NaN/Inf loss, SIGKILL mid-write, disk full / unwritable folders, worker crashes.

Tests run as root here, where chmod 0o500 does not stop writes: the unwritable
folder is then /sys (sysfs refuses new files even to root), and "disk full" is
an `OSError(ENOSPC)` injected into the fsync of the checkpoint write, where a
full disk reports itself for buffered writes.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from srlab.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from srlab.data.base import SRDataModule
from srlab.data.cache import DiskImage
from srlab.data.datasets import ImagePair
from srlab.data.io import write_image
from srlab.data.sample import SampleDataModule
from srlab.module import SRModule
from srlab.utils.checkpoint_io import TEMP_SUFFIX, AtomicCheckpointIO, CheckpointWriteError, atomic_torch_save

TINY_HDSRNET = {
    "_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "channels": 8, "num_blocks": 1, "lower_depth": 2,
    "num_kernels": 2,
}
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LossPoisoned(SRModule):
    """SRModule whose loss is NaN at the given global steps (a stand-in for a diverging run)."""

    def __init__(self, nan_steps: set[int], **kwargs):
        super().__init__(model=TINY_HDSRNET, optimizer=ADAM, **kwargs)
        self.nan_steps = set(nan_steps)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step in self.nan_steps else loss


def sample_data() -> SampleDataModule:
    return SampleDataModule(
        scale=2, patch_size=16, batch_size=2, steps_per_epoch=4, train_images=("chelsea.png",),
        val_images=("coffee.png",),
    )


def make_trainer(ckpt_dir: Path, max_steps: int, *callbacks: Callback, every_n_steps: int = 2) -> L.Trainer:
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=every_n_steps, save_last=True)
    return L.Trainer(
        accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[checkpoint, *callbacks], plugins=[AtomicCheckpointIO()],
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


# -- NaN / Inf ------------------------------------------------------------------------------------


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    trainer = make_trainer(ckpt_dir, 10, NaNGuard())
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(LossPoisoned({5}), datamodule=sample_data())
    assert str(info.value) == (
        f"non-finite training loss (nan) at step 5 (epoch 1, batch 1): stopped; last checkpoint "
        f"{ckpt_dir / 'last.ckpt'} is intact. Lower the learning rate or check the data; "
        "callbacks.nan_guard.on_nonfinite=skip skips such steps instead"
    )
    assert trainer.global_step == 5
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())
    restored = SRModule.load_from_checkpoint(ckpt_dir / "last.ckpt", map_location="cpu")
    assert restored.scale == 2
    assert leftovers(ckpt_dir) == []


class ParameterTrace(Callback):
    """A copy of one weight after every optimiser step, keyed by the step count."""

    def __init__(self):
        self.after_step: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step[trainer.global_step] = next(pl_module.model.parameters()).detach().clone()


def test_skip_mode_drops_only_the_bad_step(tmp_path):
    guard, trace = NaNGuard(on_nonfinite="skip"), ParameterTrace()
    trainer = make_trainer(tmp_path / "checkpoints", 6, guard, trace)
    module = LossPoisoned({3})
    trainer.fit(module, datamodule=sample_data())
    assert trainer.global_step == 6
    assert guard.skipped_steps == 1
    assert torch.equal(trace.after_step[4], trace.after_step[3])  # the NaN step changed nothing
    assert not torch.equal(trace.after_step[5], trace.after_step[4])  # and training went on
    assert not torch.equal(trace.after_step[3], trace.after_step[2])
    assert all(torch.isfinite(p).all() for p in module.parameters())
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 6
    assert saved["callbacks"]["NaNGuard"] == {"skipped_steps": 1}

    # A non-finite state is never written: poison a weight and try to save.
    name, weight = list(module.model.named_parameters())[-1]
    with torch.no_grad():
        weight.view(-1)[0] = float("inf")
    target = tmp_path / "checkpoints" / "poisoned.ckpt"
    with pytest.raises(NonFiniteLossError) as info:
        trainer.save_checkpoint(target)
    assert str(info.value) == (
        f"refusing to save a checkpoint at step 6: state_dict.model.{name} holds NaN/Inf; "
        f"last checkpoint {tmp_path / 'checkpoints' / 'last.ckpt'} is intact"
    )
    assert not target.exists()
    assert leftovers(tmp_path / "checkpoints") == []


def test_skip_mode_gives_up_after_too_many_bad_steps_in_a_row(tmp_path):
    trainer = make_trainer(tmp_path / "checkpoints", 10, NaNGuard(on_nonfinite="skip", max_consecutive_skips=2))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(LossPoisoned(set(range(2, 10))), datamodule=sample_data())
    assert str(info.value) == (
        "non-finite training loss at 3 steps in a row, the last at step 4 (epoch 1, batch 0) "
        f"(max_consecutive_skips=2): stopped; last checkpoint {tmp_path / 'checkpoints' / 'last.ckpt'} is intact"
    )


def test_nan_guard_rejects_unknown_mode():
    with pytest.raises(ValueError, match="^on_nonfinite='ignore'; valid values: stop, skip$"):
        NaNGuard(on_nonfinite="ignore")


# -- SIGKILL during checkpoint writes -------------------------------------------------------------


def save_forever(folder: str, payload: torch.Tensor, first_step: int) -> None:
    """The killed process: overwrite last.ckpt and rotate three step files, as a training run does."""
    io = AtomicCheckpointIO()
    step = first_step
    while True:
        checkpoint = {"step": step, "payload": payload, "marker": torch.full((64,), step)}
        io.save_checkpoint(checkpoint, f"{folder}/last.ckpt")
        io.save_checkpoint(checkpoint, f"{folder}/step-{step % 3}.ckpt")
        step += 1


def wait_for_temp_file(folder: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if leftovers(folder):
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.slow
def test_sigkill_never_leaves_a_corrupt_checkpoint(tmp_path):
    # Forked, not spawned: the writer starts in milliseconds instead of re-importing torch and Lightning.
    context = multiprocessing.get_context("fork")
    payload = torch.arange(8 * 2**20, dtype=torch.float32)  # 32 MiB: each write takes a while
    rng = random.Random(8)
    killed_mid_write = 0
    for round_ in range(12):
        writer = context.Process(target=save_forever, args=(str(tmp_path), payload, 1000 * round_), daemon=True)
        writer.start()
        if round_ % 2:
            # Kill the moment a temp file exists: mid-write (unless the rename wins the race).
            assert wait_for_temp_file(tmp_path), "the writer never started a checkpoint"
        else:
            time.sleep(rng.uniform(0.02, 0.6))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
        killed_mid_write += bool(leftovers(tmp_path))

        checkpoints = sorted(tmp_path.glob("*.ckpt"))
        assert {p.name for p in checkpoints} <= {"last.ckpt", "step-0.ckpt", "step-1.ckpt", "step-2.ckpt"}
        for path in checkpoints:  # every file that looks like a checkpoint is a complete one
            saved = torch.load(path, map_location="cpu", weights_only=True)
            assert torch.equal(saved["payload"], payload), path
            assert torch.equal(saved["marker"], torch.full((64,), saved["step"])), path
        assert all(name.startswith(".") and not name.endswith(".ckpt") for name in leftovers(tmp_path))
    assert killed_mid_write >= 3, f"only {killed_mid_write} of 12 kills landed during a write"
    # A clean save on this host removes the temp files the killed writers left.
    atomic_torch_save({"step": -1}, tmp_path / "last.ckpt")
    assert leftovers(tmp_path) == []
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": -1}


# -- disk full / unwritable -----------------------------------------------------------------------


class DiskFullFrom(Callback):
    """From step `step` on, every fsync fails with ENOSPC, as on a full disk."""

    def __init__(self, monkeypatch, step: int):
        self.monkeypatch, self.step = monkeypatch, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            def full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self.monkeypatch.setattr(os, "fsync", full)


def test_disk_full_during_training_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "checkpoints"
    trainer = make_trainer(ckpt_dir, 6, DiskFullFrom(monkeypatch, step=2), every_n_steps=2)
    with pytest.raises(CheckpointWriteError) as info:
        trainer.fit(LossPoisoned(set()), datamodule=sample_data())
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"[Errno {errno.ENOSPC}] could not save checkpoint {ckpt_dir / 'epoch=0-step=4.ckpt'}: no space left on "
        f"the device; earlier checkpoints in {ckpt_dir} were left as they were"
    )
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    for name in ("epoch=0-step=2.ckpt", "last.ckpt"):
        assert torch.load(ckpt_dir / name, map_location="cpu", weights_only=False)["global_step"] == 2


def test_target_that_is_a_folder(tmp_path):
    (tmp_path / "last.ckpt").mkdir()
    with pytest.raises(CheckpointWriteError) as info:
        atomic_torch_save({"step": 1}, tmp_path / "last.ckpt")
    assert str(info.value) == (
        f"[Errno {errno.EISDIR}] could not save checkpoint {tmp_path / 'last.ckpt'}: a folder of that name is in "
        f"the way; earlier checkpoints in {tmp_path} were left as they were"
    )
    assert leftovers(tmp_path) == []


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the checkpoint folder should be")
    with pytest.raises(CheckpointWriteError, match=r"checkpoints exists but is not a folder; earlier checkpoints"):
        atomic_torch_save({"step": 1}, tmp_path / "checkpoints" / "last.ckpt")


def _can_create(folder: Path) -> bool:
    probe = folder / f".srlab-probe-{os.getpid()}"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_unwritable_folder(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        atomic_torch_save({"step": 1}, folder / "last.ckpt")
        folder.chmod(0o500)
    else:  # root ignores permission bits; sysfs still refuses to create files
        folder = Path("/sys")
        if not folder.is_dir() or _can_create(folder):
            pytest.skip("running as root and /sys accepts new files: no unwritable folder to test with")
    try:
        with pytest.raises(CheckpointWriteError) as info:
            atomic_torch_save({"step": 2}, folder / "srlab-test.ckpt")
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o700)
    assert str(info.value).startswith(
        f"[Errno {errno.EACCES}] could not save checkpoint {folder / 'srlab-test.ckpt'}: the folder is not writable"
    )
    assert not (folder / "srlab-test.ckpt").exists()
    if folder != Path("/sys"):
        assert torch.load(folder / "last.ckpt", weights_only=True) == {"step": 1}  # the earlier one is intact


# -- dataloader worker crash ----------------------------------------------------------------------


class DiskPairs(SRDataModule):
    """Training pairs whose pixels are read from disk in the workers (as DIV2K's are)."""

    def __init__(self, pairs: list[ImagePair], num_workers: int):
        super().__init__(scale=2, patch_size=8, batch_size=2, steps_per_epoch=4, num_workers=num_workers)
        self.pairs = pairs

    def load_train_pairs(self) -> list[ImagePair]:
        return self.pairs

    def load_eval_sets(self) -> dict:
        return {}


@pytest.mark.parametrize("kind", ["png", "npy"])
def test_worker_crash_names_the_file(tmp_path, kind):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    lr_path, hr_path = tmp_path / f"lr.{kind}", tmp_path / f"hr.{kind}"
    for path, image in ((lr_path, hr[::2, ::2]), (hr_path, hr)):
        if kind == "png":
            write_image(path, image)
        else:
            np.save(path, image)
    data = DiskPairs([ImagePair("img", DiskImage(lr_path, (16, 16, 3)), DiskImage(hr_path, (32, 32, 3)))], 2)
    data.setup("fit")
    hr_path.write_bytes(hr_path.read_bytes()[:100])  # the file goes bad after the run started
    with pytest.raises(Exception) as info:
        next(iter(data.train_dataloader()))
    message = str(info.value)
    assert "in DataLoader worker process" in message  # raised in a worker, re-raised here
    reason = "not a readable image" if kind == "png" else "unreadable cached image"
    assert f"{hr_path}: {reason}" in message
