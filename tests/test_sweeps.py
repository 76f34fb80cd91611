"""Sweeps: every experiment config runs under debug=smoke, multiruns write one folder per run and a
summary CSV, and the SLURM / local parallel launcher configs compose into working launchers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srlab.callbacks.sweep_summary import SUMMARY_FILE, collect_sweep, write_sweep_summary
from srlab.models.hdsrnet import VARIANTS
from srlab.tasks.train import train
from tests.train_runs import REPO, SMOKE, TINY_MODEL, checkpoint, clear_hydra, compose_train, read_csv, run_train

# Globbed when the tests are collected: a new experiment file is smoke-tested without editing this file.
# `demo` is the default config, which tests/test_train_cli.py runs end to end; `table1` is the
# session's shared Table I sweep (conftest.table1_sweep), checked in test_table1_sweep_summary.
EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
SINGLE_RUN_EXPERIMENTS = [e for e in EXPERIMENTS if e not in ("demo", "table1")]


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def assert_finished_run(run_dir: Path, launched_by_hydra: bool = True) -> dict:
    """A finished smoke run: config, last.ckpt after both steps, and metrics.json's best = its logged validation."""
    assert (run_dir / ".hydra" / "config.yaml").is_file() == launched_by_hydra
    assert checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    best = json.loads((run_dir / "metrics.json").read_text())["best"]
    validations = [r for r in read_csv(run_dir / "csv" / "metrics.csv") if r.get("val/psnr")]
    best_logged = max(validations, key=lambda r: float(r["val/psnr"]))
    assert best["val/psnr"] == pytest.approx(float(best_logged["val/psnr"]))
    assert best["step"] == int(best_logged["step"]) + 1  # Lightning logs a validation at the step before
    return best


@pytest.mark.slow
@pytest.mark.parametrize("experiment", SINGLE_RUN_EXPERIMENTS)
def test_experiment_runs_under_smoke(experiment, tmp_path):
    """Each experiment config trains 2 steps in-process under debug=smoke (HDSRNet ones with a tiny model)."""
    run_dir = tmp_path / "run"
    args = [f"experiment={experiment}", "debug=smoke", "callbacks.progress_bar=null"]
    model_target = compose_with_hydra(args).model._target_
    if model_target == "srlab.models.hdsrnet.HDSRNet":
        args += TINY_MODEL
    cfg = compose_train(args, run_dir)
    try:
        train(cfg)
    finally:
        clear_hydra()
    assert cfg.task_name == compose_with_hydra([f"experiment={experiment}"]).task_name
    best = assert_finished_run(run_dir, launched_by_hydra=False)
    saved = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["hyper_parameters"]["model"]["_target_"] == model_target
    assert saved["hyper_parameters"]["model"]["scale"] == cfg.model.scale
    assert math.isfinite(best["val/psnr"])


@pytest.mark.slow
def test_table1_sweep_summary(table1_sweep):
    """The shared Table I sweep: one summary row per variant, in paper order, each its job's best validation."""
    rows = read_csv(table1_sweep / SUMMARY_FILE)
    assert [(r["job"], r["model.variant"], r["status"]) for r in rows] == [
        (str(i), variant, "ok") for i, variant in enumerate(VARIANTS)
    ]
    for row in rows:
        best = assert_finished_run(table1_sweep / row["run_dir"])
        assert float(row["val/psnr"]) == pytest.approx(best["val/psnr"])
        assert int(row["best_step"]) == best["step"]


@pytest.mark.slow
def test_parallel_multirun_writes_run_folders_and_a_summary(tmp_path):
    """Two scales x one learning rate through hydra/launcher=parallel (joblib, two runs at once)."""
    sweep_dir = tmp_path / "sweep"
    run_train(
        ["-m", *SMOKE, "model.scale=2,4", "module.optimizer.lr=0.0002", "hydra/launcher=parallel",
         f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in job_dirs] == ["0", "1"]
    best = {}
    for job_dir in job_dirs:
        config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        assert config.module.optimizer.lr == 2e-4
        best[config.model.scale] = assert_finished_run(job_dir)
    rows = read_csv(sweep_dir / SUMMARY_FILE)
    assert [(r["job"], r["model.scale"], r["module.optimizer.lr"], r["status"]) for r in rows] == [
        ("0", "2", "0.0002", "ok"), ("1", "4", "0.0002", "ok")
    ]
    for row in rows:
        assert float(row["val/psnr"]) == pytest.approx(best[int(row["model.scale"])]["val/psnr"])
        assert int(row["best_step"]) == best[int(row["model.scale"])]["step"]


def test_sweep_summary_columns_and_rows(tmp_path):
    """Job folders as Hydra and MetricsFile leave them; a job that never validated still gets its row."""

    def job(num: int, overrides: list[str], best: dict | None) -> None:
        job_dir = tmp_path / f"{num}_{','.join(overrides)}"
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"job": {"num": num}}}))
        (job_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
        if best is not None:
            (job_dir / "metrics.json").write_text(json.dumps({"best": best, "last": best}))

    job(10, ["seed=2", "model.variant=full"], {"step": 40, "epoch": 1, "val/Set5/psnr": 30.5, "val/psnr": 30.5})
    job(2, ["seed=1", "model.variant=upper"], {"step": 20, "epoch": 0, "val/Set5/psnr": 29.0, "val/psnr": 29.0})
    job(3, ["seed=3", "model.variant=six_conv"], None)
    path = write_sweep_summary(tmp_path)
    assert path == tmp_path / SUMMARY_FILE
    lines = path.read_text().splitlines()
    assert lines[0] == "job,seed,model.variant,status,best_step,best_epoch,val/psnr,val/Set5/psnr,run_dir"
    assert lines[1:] == [
        "2,1,upper,ok,20,0,29.0,29.0,\"2_seed=1,model.variant=upper\"",
        "3,3,six_conv,no validation,,,,,\"3_seed=3,model.variant=six_conv\"",
        "10,2,full,ok,40,1,30.5,30.5,\"10_seed=2,model.variant=full\"",
    ]
    assert collect_sweep(tmp_path / "nothing here") == []


def test_sweep_summary_is_a_hydra_callback():
    cfg = compose_with_hydra([])
    assert cfg.hydra.callbacks.sweep_summary._target_ == "srlab.callbacks.sweep_summary.SweepSummary"


def test_slurm_launcher_composes():
    cfg = compose_with_hydra(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2",
         "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600", "paths.root_dir=/cluster/srlab"]
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # One SLURM task per GPU, as many as Lightning's DDP expects (it checks SLURM_NTASKS).
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 8, 8)
    assert (launcher["partition"], launcher["timeout_min"], launcher["mem_gb"]) == ("gpu", 600, 64)
    assert launcher["submitit_folder"].startswith("/cluster/srlab/outputs/multirun/")
    assert launcher["submitit_folder"].endswith("/.submitit/%j")  # SLURM logs inside the sweep folder
    instance = hydra.utils.instantiate(cfg.hydra.launcher)
    assert (instance.params["tasks_per_node"], instance.params["nodes"]) == (8, 2)


def test_parallel_launcher_composes():
    cfg = compose_with_hydra(["hydra/launcher=parallel"])
    instance = hydra.utils.instantiate(cfg.hydra.launcher)
    assert type(instance).__name__ == "JoblibLauncher"
    assert instance.joblib == {**instance.joblib, "n_jobs": 2, "prefer": "processes"}
