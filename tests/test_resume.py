"""Resuming: `ckpt_path=last`, a SIGKILLed run resumed to the exact same end, Ctrl-C/SIGTERM saving last.ckpt.

What is exact: a run resumed from a checkpoint taken after step k trains steps
k+1... on the very batches the uninterrupted run used (srlab.data.sampler), from the
restored weights, optimiser, scheduler and loop state, so on the same machine its
losses, validations and final weights are bit-identical to the uninterrupted run's.
Not exact: the epoch-mean `train/loss_epoch` of the epoch it resumed in averages only
the steps run after resuming.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from srlab.data.datasets import ImagePair, PatchDataset
from srlab.data.sampler import StepSampler
from srlab.tasks.checks import ConfigError
from srlab.tasks.train import train
from tests.train_runs import (
    SMOKE,
    checkpoint,
    clear_hydra,
    compose_train,
    finish,
    logged,
    run_train,
    start_train,
    wait_for,
    write_div2k_layout,
    write_hr_set,
)

# Two epochs of three steps, last.ckpt refreshed after every step.
RESUMABLE = [
    *SMOKE, "seed=7", "data.steps_per_epoch=3", "trainer.max_epochs=2", "trainer.max_steps=6",
    "callbacks.model_checkpoint.every_n_train_steps=1",
]


def test_step_sampler_starts_at_the_restored_step():
    dataset = list(range(6))  # only its length matters to DistributedSampler
    fresh = StepSampler(dataset, batch_size=2, steps_per_epoch=3)
    assert list(fresh) == [0, 1, 2, 3, 4, 5] and len(fresh) == 6
    # Resumed after 4 steps: epoch 1 (steps 3-5) continues with steps 4 and 5 only; len() keeps the epoch size.
    resumed = StepSampler(dataset, batch_size=2, steps_per_epoch=3, start_step=lambda: 4)
    assert list(resumed) == [8, 9, 10, 11] and len(resumed) == 6


def test_patch_depends_only_on_seed_and_sample_id():
    rng = np.random.default_rng(0)
    pairs = [ImagePair(f"im{i}", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                       rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(3)]
    first, second = PatchDataset(pairs, 2, 8, 12, seed=5), PatchDataset(pairs, 2, 8, 12, seed=5)
    for index in (7, 0, 41, 7):  # any order, any instance (worker, rank, resumed process)
        a, b = first[index], second[index]
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert not torch.equal(first[1]["hr"], PatchDataset(pairs, 2, 8, 12, seed=6)[1]["hr"])
    # Each pass over the images is a permutation: every image once per len(pairs) consecutive ids.
    assert sorted(first.image_index(i) for i in range(3, 6)) == [0, 1, 2]


def test_ckpt_path_last_names_the_missing_checkpoint(tmp_path):
    empty_run = tmp_path / "old_run"
    empty_run.mkdir()
    cfg = compose_train([*SMOKE, "ckpt_path=last", f"resume_dir={empty_run}"], tmp_path / "run")
    try:
        with pytest.raises(ConfigError, match=str(empty_run / "checkpoints" / "last.ckpt")):
            train(cfg)
    finally:
        clear_hydra()
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before any training


def div2k_with_workers(tmp_path: Path) -> list[str]:
    """RESUMABLE on a generated DIV2K folder (DIV2KDataModule, its cache) read by 2 loader worker processes."""
    root = write_div2k_layout(tmp_path / "DIV2K", range(1, 5), scale=2)
    benchmark = write_hr_set(tmp_path / "benchmark" / "Set5", ("a",), size=(40, 44)).parent
    return [*RESUMABLE, "data=div2k", f"data.root={root}", f"data.benchmark_root={benchmark}", "data.val_sets=[Set5]",
            "data.data_range=[1,4]", "data.patch_size=24", "data.batch_size=2", "data.num_workers=2"]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["sample", "div2k_2_workers"])
def test_sigkilled_run_resumes_to_the_uninterrupted_result(data, tmp_path):
    args = RESUMABLE if data == "sample" else div2k_with_workers(tmp_path)
    reference_dir, killed_dir, resumed_dir = tmp_path / "reference", tmp_path / "killed", tmp_path / "resumed"
    reference = start_train([*args, f"hydra.run.dir={reference_dir}"], tmp_path)
    killed = start_train(
        [*args, f"hydra.run.dir={killed_dir}", "+callbacks.kill._target_=tests.train_runs.KillAtStep",
         "+callbacks.kill.step=5"], tmp_path,
    )
    finish(killed, expect_rc=-signal.SIGKILL)
    finish(reference)
    # Killed after step 5, before its checkpoint: last.ckpt is step 4, in the middle of epoch 1.
    assert checkpoint(killed_dir / "checkpoints" / "last.ckpt")["global_step"] == 4

    run_train([*args, f"hydra.run.dir={resumed_dir}", "ckpt_path=last", f"resume_dir={killed_dir}"], tmp_path)

    expected, resumed = checkpoint(reference_dir / "checkpoints" / "last.ckpt"), checkpoint(
        resumed_dir / "checkpoints" / "last.ckpt"
    )
    assert resumed["global_step"] == expected["global_step"] == 6
    # Steps 5 and 6 (logged at steps 4 and 5) saw the same batches from the same state: identical losses.
    reference_losses = logged(reference_dir, "train/loss_step")
    assert sorted(reference_losses) == [0, 1, 2, 3, 4, 5]
    assert logged(resumed_dir, "train/loss_step") == {4: reference_losses[4], 5: reference_losses[5]}
    for name, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]
    # metrics.json: the best (epoch 0) came back with the checkpoint, the last validation matches.
    assert json.loads((resumed_dir / "metrics.json").read_text()) == json.loads(
        (reference_dir / "metrics.json").read_text()
    )


@pytest.mark.slow
def test_sigterm_and_ctrl_c_save_last_checkpoint(tmp_path):
    """No periodic checkpoint and no validation before step 2: last.ckpt can only come from the signal."""
    runs = {}
    for sig, exit_status in ((signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)):
        run_dir = tmp_path / sig.name
        marker = tmp_path / f"{sig.name}.paused"
        proc = start_train(
            [*SMOKE, "data.steps_per_epoch=4", "trainer.max_steps=4", f"hydra.run.dir={run_dir}",
             "+callbacks.pause._target_=tests.train_runs.PauseAtStep", "+callbacks.pause.step=2",
             f"+callbacks.pause.marker={marker}"], tmp_path,
        )
        runs[sig] = (proc, run_dir, marker, exit_status)
    for sig, (proc, _, marker, _) in runs.items():
        wait_for(marker, proc)
        proc.send_signal(sig)
    for sig, (proc, run_dir, _, exit_status) in runs.items():
        output = finish(proc, expect_rc=exit_status)
        saved = checkpoint(run_dir / "checkpoints" / "last.ckpt")
        assert saved["global_step"] == 2, sig.name
        assert saved["optimizer_states"][0]["state"], f"{sig.name}: Adam moments missing from the checkpoint"
        assert f"at step 2: saved {run_dir / 'checkpoints' / 'last.ckpt'}" in output
        assert not (run_dir / "metrics.json").exists()  # stopped before any validation
