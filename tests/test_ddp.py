"""DDP: 2 CPU processes (trainer=ddp_cpu) validate exactly like one, write once, and keep one folder per run."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import lightning as L
import pytest
from hydra import compose, initialize_config_dir

from srlab.data.sample import SAMPLE_VAL, SampleDataModule
from srlab.data.sampler import StepSampler
from srlab.module import SRModule
from tests.train_runs import REPO, SMOKE, checkpoint, logged, read_csv, run_train, train_env

# Three validation images on two ranks: rank 0 scores images 0 and 2, rank 1 image 1 (uneven shards).
# coins.png is stored grey, so the grey scoring path is sharded too.
VAL_IMAGES = [*SAMPLE_VAL, "coins.png"]


def test_ranks_draw_disjoint_samples_and_keep_the_epoch_length():
    dataset = list(range(8))
    ranks = [StepSampler(dataset, batch_size=2, steps_per_epoch=4, num_replicas=2, rank=r) for r in (0, 1)]
    ids = [list(s) for s in ranks]
    assert ids[0] == [0, 1, 4, 5, 8, 9, 12, 13] and ids[1] == [2, 3, 6, 7, 10, 11, 14, 15]
    assert all(len(s) == 8 for s in ranks)  # 4 steps of 2 per rank: an epoch is 4 steps on any number of ranks


def test_ddp_config_documents_the_effective_batch():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "trainer.devices=4", "data.batch_size=16"])
    strategy = cfg.trainer.strategy
    assert (strategy._target_, strategy.broadcast_buffers) == ("lightning.pytorch.strategies.DDPStrategy", False)
    assert (cfg.trainer.accelerator, cfg.trainer.num_nodes) == ("gpu", 1)
    assert cfg.data.batch_size * cfg.trainer.devices * cfg.trainer.num_nodes == 64  # the paper's batch
    text = (REPO / "configs" / "trainer" / "ddp.yaml").read_text()
    assert "data.batch_size x trainer.devices x trainer.num_nodes" in text


@pytest.mark.slow
def test_two_process_ddp_multirun(tmp_path):
    """One DDP job of a multirun: one folder, rank-0-only files, and the validation of one process."""
    log_root = tmp_path / "logs"
    run_train(
        ["-m", "seed=3", "trainer=ddp_cpu", *SMOKE, f"paths.log_dir={log_root}", "trainer.limit_val_batches=1.0",
         f"+data.val_images=[{','.join(VAL_IMAGES)}]"],
        tmp_path, timeout=400,
    )
    # Only the sweep folder: ranks > 0 neither relaunched the sweep nor opened run folders of their own.
    assert [p.name for p in log_root.iterdir()] == ["multirun"]
    (sweep_dir,) = [p for p in log_root.glob("multirun/*/*") if p.is_dir()]
    (job_dir,) = [p for p in sweep_dir.iterdir() if p.is_dir()]
    assert job_dir.name.startswith("0_") and "seed=3" in job_dir.name
    assert (job_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran inside the job's folder

    # An epoch is steps_per_epoch steps on any number of ranks (each rank drew its own batch per step).
    saved = checkpoint(job_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 2
    assert sorted(p.name for p in (job_dir / "checkpoints").iterdir()) == ["best-step2.ckpt", "last.ckpt"]
    # ComparisonImages keeps images with index < 2: rank 1's shard holds image 1 (coffee), which
    # would appear here had rank 1 written anything.
    images = sorted(p.name for p in (job_dir / "images").rglob("*.png"))
    assert images == ["Sample_coffee.png"]

    # The same weights validated by one process: same mean over the same three images.
    datamodule = SampleDataModule(scale=2, patch_size=24, batch_size=2, steps_per_epoch=2, val_images=VAL_IMAGES)
    module = SRModule.load_from_checkpoint(job_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    (single,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    for key in ("val/psnr", "val/ssim", "val/Sample/psnr"):
        (ddp_value,) = logged(job_dir, key).values()
        assert ddp_value == pytest.approx(single[key], abs=1e-4), key

    (row,) = read_csv(sweep_dir / "sweep_summary.csv")
    assert (row["job"], row["seed"], row["trainer"], row["status"]) == ("0", "3", "ddp_cpu", "ok")
    assert float(row["val/psnr"]) == pytest.approx(single["val/psnr"], abs=1e-4)


@pytest.mark.slow
def test_two_process_ddp_single_run_has_one_folder(tmp_path):
    """A plain run under DDP: rank 1 reuses the parent's dated run folder instead of making its own."""
    log_root = tmp_path / "logs"
    run_train(["trainer=ddp_cpu", *SMOKE, f"paths.log_dir={log_root}"], tmp_path, timeout=400)
    run_dirs = [p for p in log_root.glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    run_dir = run_dirs[0]
    assert sorted(p.name for p in log_root.iterdir()) == [run_dir.parent.name]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train_ddp_process_1.log").is_file()
    assert checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_ranks_started_by_torchrun_run_a_multirun_then_close_their_process_group(tmp_path):
    """torchrun starts both ranks (Lightning starts none). They run both jobs of a multirun in one process
    group and close it once, when the process ends, so each exits 0."""
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "train.py",
         "-m", "trainer=ddp_cpu", *SMOKE, "seed=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=REPO, env={**train_env(tmp_path), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    closed = "DDP: closed the process group (ranks started by TorchElasticEnvironment)"
    assert (done.stdout + done.stderr).count(closed) == 2, done.stderr[-3000:]  # once per rank, after both jobs
    rows = read_csv(sweep / "sweep_summary.csv")
    assert [(row["seed"], row["status"]) for row in rows] == [("1", "ok"), ("2", "ok")]
    for row in rows:
        assert checkpoint(sweep / row["run_dir"] / "checkpoints" / "last.ckpt")["global_step"] == 2


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_at_that_step(tmp_path):
    """Rank 1 alone gets a NaN loss at step 2: both ranks stop there, with the same step in their messages.

    A rank that went on alone would wait forever in the next gradient all-reduce; the run ending
    within the timeout, on both ranks, at step 2, is the cross-rank decision at work.
    """
    run_dir = tmp_path / "run"
    output = run_train(
        ["trainer=ddp_cpu", *SMOKE, "data.steps_per_epoch=4", "trainer.max_steps=4", f"hydra.run.dir={run_dir}",
         "+callbacks.nan_input._target_=tests.train_runs.NaNInputOnRank", "+callbacks.nan_input.rank=1",
         "+callbacks.nan_input.step=2", "callbacks.nan_guard.check_every_n_steps=1"],
        tmp_path, timeout=400, expect_rc=1,
    )
    # Each rank's traceback ends with its own error; rank 0's own loss was finite, it stops on rank 1's word.
    stop = re.compile(r"\[rank(\d)\]: \S*NonFiniteLossError: non-finite training loss (\(.*?\) at step \d+ \(.*?\))")
    stops = dict(stop.findall(output))
    assert stops == {"0": "(on another rank) at step 2 (epoch 0, batch 2)", "1": "(nan) at step 2 (epoch 0, batch 2)"}
    # Checked every step: steps 0 and 1 were trained and logged, the poisoned step 2 reached no optimiser or checkpoint.
    assert sorted(logged(run_dir, "train/loss_step")) == [0, 1]
    assert not list(run_dir.rglob("*.ckpt"))
