"""Cluster readiness: SIGUSR2/SIGTERM stop every rank at one step with last.ckpt written, requeue, auto-resume.

End to end on CPU with fake SLURM variables (and a fake `scontrol` that records its
arguments), submitit's local executor for the hydra-submitit-launcher path, and two gloo
ranks for DDP. What is exact: a run stopped by a signal (or SIGKILLed after a periodic
last.ckpt) and relaunched with the same command in the same folder ends with the same
weights and logs the same losses as the uninterrupted run (srlab.data.sampler, tests/test_resume.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from srlab.callbacks.interrupt import InterruptCheckpoint, as_signal
from srlab.tasks.checks import ConfigError, validate_config
from srlab.tasks.loggers import WANDB_ID_FILE, global_rank_from_env, wandb_identity
from srlab.tasks.train import checkpoint_to_resume
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
)

# Two epochs of three steps; validation after steps 3 and 6; last.ckpt written only at validations
# (and by whatever a test adds), so a last.ckpt at step 2 or 4 can only come from what is under test.
BASE = [*SMOKE, "seed=7", "data.steps_per_epoch=3", "trainer.max_epochs=2", "trainer.max_steps=6"]
# What srun sets for a one-task job step (Lightning then uses its SLURMEnvironment).
FAKE_SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "srlab-test", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
              "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


class PauseForSignal(L.Callback):
    """Test callback: after `step` steps, global rank 0 touches `marker` and waits (up to `timeout` s) for a signal.

    Plain callbacks run before InterruptCheckpoint, so the signal is recorded before the ranks agree on stopping.
    """

    def __init__(self, step: int, marker: str, timeout: float = 60):
        self.step = step
        self.marker = Path(marker)
        self.timeout = timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step or not trainer.is_global_zero:
            return
        (stopper,) = [c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint)]
        self.marker.touch()
        deadline = time.monotonic() + self.timeout
        while not stopper.received and time.monotonic() < deadline:
            time.sleep(0.05)


class SignalAtStep(L.Callback):
    """Test callback: sends `signal` to its own process once `step` steps are done."""

    def __init__(self, step: int, signal: str = "SIGUSR2"):
        self.step = step
        self.signal = as_signal(signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


def pause_at(step: int, marker: Path) -> list[str]:
    return ["+callbacks.pause._target_=tests.test_slurm_resume.PauseForSignal", f"+callbacks.pause.step={step}",
            f"+callbacks.pause.marker={marker}"]


def fake_scontrol(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment with a `scontrol` that appends its arguments to a file first on PATH, that file)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted BASE run's folder."""
    tmp_path = tmp_path_factory.mktemp("reference")
    run_train([*BASE, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    return tmp_path / "run"


def assert_same_run(resumed_dir: Path, reference_dir: Path) -> None:
    """Same final weights and scheduler, and a csv log holding every step's loss as the uninterrupted run logged it."""
    expected, resumed = checkpoint(reference_dir / "checkpoints" / "last.ckpt"), checkpoint(
        resumed_dir / "checkpoints" / "last.ckpt"
    )
    assert resumed["global_step"] == expected["global_step"] == 6
    for name, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]
    assert logged(resumed_dir, "train/loss_step") == logged(reference_dir, "train/loss_step")
    assert logged(resumed_dir, "val/psnr") == logged(reference_dir, "val/psnr")


# -- resume=auto and explicit ckpt_path ------------------------------------------------------------------
def test_auto_resume_takes_the_run_folders_last_checkpoint_unless_told_otherwise(tmp_path):
    run_dir, other = tmp_path / "run", tmp_path / "other.ckpt"
    (run_dir / "checkpoints").mkdir(parents=True)
    other.write_bytes(b"")

    def resume_from(*overrides: str) -> str | None:
        try:
            return checkpoint_to_resume(compose_train([*SMOKE, *overrides], run_dir))
        finally:
            clear_hydra()

    assert resume_from() is None  # a fresh folder starts from step 0
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resume_from() == str(run_dir / "checkpoints" / "last.ckpt")
    assert resume_from(f"ckpt_path={other}") == str(other)  # an explicit checkpoint wins
    assert resume_from("ckpt_path=last", f"resume_dir={tmp_path}") == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resume_from("resume=never") is None
    with pytest.raises(ConfigError, match="resume='sometimes' must be auto .* or never"):
        resume_from("resume=sometimes")


def test_auto_resume_refuses_another_models_checkpoint_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    x2 = compose_train([*SMOKE], run_dir)
    clear_hydra()
    torch.save({"hyper_parameters": {"model": OmegaConf.to_container(x2.model, resolve=True)}},
               run_dir / "checkpoints" / "last.ckpt")
    cfg = compose_train([*SMOKE, "model.scale=4"], run_dir)
    try:
        with pytest.raises(ConfigError, match=r"resume=auto: .* is for another model: model.scale=2 .* vs 4 here"):
            validate_config(cfg)
    finally:
        clear_hydra()


def test_auto_resume_continues_the_wandb_run_the_folder_recorded(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / WANDB_ID_FILE).write_text("abc123\n")
    cfg = compose_train([*SMOKE, "logger=wandb"], run_dir)
    try:
        assert "id" not in wandb_identity(cfg, cfg.logger.wandb, run_dir)  # no last.ckpt: a new W&B run
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
        assert wandb_identity(cfg, cfg.logger.wandb, run_dir) == {"id": "abc123", "resume": "allow", "name": "run"}
        with open_dict(cfg):
            cfg.resume = "never"
        assert "id" not in wandb_identity(cfg, cfg.logger.wandb, run_dir)
    finally:
        clear_hydra()


def test_global_rank_from_env(monkeypatch):
    for key in ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert global_rank_from_env(4) == 0
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert global_rank_from_env(4) == 5  # srun
    monkeypatch.setenv("NODE_RANK", "1")
    assert global_rank_from_env(4) == 4  # node 1's first process (Lightning's import-time guess says 0)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert global_rank_from_env(4) == 6
    monkeypatch.setenv("RANK", "3")
    assert global_rank_from_env(4) == 3  # torchrun


# -- signals, requeue, relaunch --------------------------------------------------------------------------
def test_after_a_failed_fit_the_signals_reach_the_handlers_from_before(tmp_path):
    """Lightning's teardown puts back the handlers it found at fit start (InterruptCheckpoint's); those then pass
    a signal on as the launcher's own handler would, instead of swallowing it between the jobs of a multirun."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    class FailAtStep(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            raise RuntimeError("crash")

    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path, callbacks=[FailAtStep(), InterruptCheckpoint(str(tmp_path))])
        with pytest.raises(RuntimeError, match="crash"):
            trainer.fit(BoringModel())
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_usr2_under_slurm_saves_requeues_and_the_same_command_resumes_exactly(tmp_path, reference, monkeypatch):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    path_env, scontrol_calls = fake_scontrol(tmp_path)
    for key, value in {**FAKE_SLURM, **path_env}.items():
        monkeypatch.setenv(key, value)  # inherited by train.py
    command = [*BASE, f"hydra.run.dir={run_dir}", *pause_at(2, marker)]

    proc = start_train(command, tmp_path)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGUSR2)
    output = finish(proc, expect_rc=128 + signal.SIGUSR2)  # 140: stopped by SIGUSR2
    assert checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert f"SIGUSR2 at step 2: saved {run_dir / 'checkpoints' / 'last.ckpt'}" in output
    assert scontrol_calls.read_text().split("\n") == ["requeue 4242", ""]
    assert not (run_dir / "metrics.json").exists()  # stopped before the first validation

    # The requeued job runs the same command in the same folder: it resumes, it does not start over.
    output = run_train(command, tmp_path)
    assert f"resume=auto: continuing from {run_dir / 'checkpoints' / 'last.ckpt'}" in output
    assert_same_run(run_dir, reference)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best-step6.ckpt", "last.ckpt"]
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(
        (reference / "metrics.json").read_text()
    )
    assert scontrol_calls.read_text().split("\n") == ["requeue 4242", ""]  # a finished run requeues nothing


@pytest.mark.slow
def test_hard_kill_loses_at_most_n_steps_and_a_relaunch_resumes_exactly(tmp_path, reference):
    run_dir = tmp_path / "run"
    command = [*BASE, f"hydra.run.dir={run_dir}", "callbacks.interrupt_checkpoint.every_n_train_steps=2"]
    killed = start_train([*command, "+callbacks.kill._target_=tests.train_runs.KillAtStep", "+callbacks.kill.step=5"],
                         tmp_path)
    finish(killed, expect_rc=-signal.SIGKILL)
    # SIGKILLed after step 5: last.ckpt is step 4 (every 2 steps), written after the validation's one at step 3.
    assert checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best-step3.ckpt", "last.ckpt"]

    run_train(command, tmp_path)
    assert_same_run(run_dir, reference)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best-step6.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_submitit_job_requeues_after_usr2_and_resumes_in_its_job_folder(tmp_path, reference):
    """hydra-submitit-launcher (local executor): submitit's SIGUSR2 handler requeues after last.ckpt is written."""
    log_root = tmp_path / "logs"
    run_train(["-m", "hydra/launcher=submitit_local", *BASE, f"paths.log_dir={log_root}",
               "+callbacks.usr2._target_=tests.test_slurm_resume.SignalAtStep", "+callbacks.usr2.step=2"], tmp_path)
    # One job folder in the dated sweep folder: the requeued job found it again (its ${now:} was not re-read).
    (job_dir,) = [p for p in log_root.glob("multirun/*/*/*") if p.is_dir() and (p / ".hydra").is_dir()]
    submitit_logs = "".join(p.read_text() for p in job_dir.parent.glob(".submitit/*/*.out"))
    assert "Requeued job" in submitit_logs
    job_log = (job_dir / "cli.log").read_text()
    assert f"SIGUSR2 at step 2: saved {job_dir / 'checkpoints' / 'last.ckpt'}" in job_log
    assert f"resume=auto: continuing from {job_dir / 'checkpoints' / 'last.ckpt'}" in job_log
    assert_same_run(job_dir, reference)


@pytest.mark.slow
def test_usr2_to_rank_0_stops_both_ddp_ranks_at_the_same_step(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    proc = start_train([*SMOKE, "trainer=ddp_cpu", "data.steps_per_epoch=4", "trainer.max_steps=4",
                        f"hydra.run.dir={run_dir}", *pause_at(2, marker)], tmp_path)
    wait_for(marker, proc)
    proc.send_signal(signal.SIGUSR2)  # rank 0 only: rank 1 is a separate process Lightning started
    output = finish(proc, expect_rc=128 + signal.SIGUSR2)
    assert f"SIGUSR2 at step 2: saved {run_dir / 'checkpoints' / 'last.ckpt'}" in output
    saved = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 2 and saved["optimizer_states"][0]["state"]
    rank1_log = run_dir / "train_ddp_process_1.log"
    deadline = time.monotonic() + 60  # rank 1 may still be exiting
    while "stopped at step" not in (rank1_log.read_text() if rank1_log.is_file() else ""):
        assert time.monotonic() < deadline, f"rank 1 did not report its stop in {rank1_log}"
        time.sleep(0.2)
    assert "SIGUSR2: rank 1 stopped at step 2" in rank1_log.read_text()


# -- multi-node W&B identity -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("rank_env", [{"RANK": "1", "WORLD_SIZE": "2"}, {"NODE_RANK": "1", "LOCAL_RANK": "0"}],
                         ids=["torchrun-rank-1", "node-1-local-0"])
def test_a_nonzero_rank_by_environment_starts_no_wandb_run(tmp_path, rank_env, monkeypatch):
    """A manual multi-node launch: only global rank 0 may start the W&B run and write wandb_id.txt."""
    for key, value in rank_env.items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    run_train([*SMOKE, "logger=wandb", f"hydra.run.dir={run_dir}"], tmp_path)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()  # it did train
    assert not (run_dir / WANDB_ID_FILE).exists()
    assert not (run_dir / "wandb").exists() and not (tmp_path / "wandb").exists()
