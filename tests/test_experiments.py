"""The paper experiments: the x2/x3/x4 recipe as composed, and the Table I sweep end to end under debug=smoke."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srlab.models.hdsrnet import VARIANTS

REPO = Path(__file__).resolve().parents[1]


def compose_train(overrides: list[str], hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra_node)


@pytest.mark.parametrize("scale, patch", [(2, 128), (3, 126), (4, 128)])
def test_paper_recipe(scale, patch):
    cfg = compose_train([f"experiment=paper_x{scale}"])
    assert (cfg.model.scale, cfg.model.variant, cfg.data.scale) == (scale, "full", scale)
    assert cfg.task_name == f"paper_x{scale}"
    data = cfg.data
    assert data._target_ == "srlab.data.div2k.DIV2KDataModule"
    recipe = (list(data.data_range), data.patch_size, data.batch_size, data.steps_per_epoch)
    assert recipe == ([1, 900], patch, 64, 1000)
    assert list(data.val_sets) == ["Urban100"]
    assert (cfg.trainer.max_epochs, cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (
        1200, 10.0, "value"
    )
    module = cfg.module
    assert (module.loss, module.optimizer._target_, module.optimizer.lr) == ("l1", "torch.optim.Adam", 1e-4)
    assert (module.scheduler.step_size, module.scheduler.gamma, module.scheduler_interval) == (300000, 0.5, "step")


def test_table1_sweeps_the_nine_variants_in_paper_order_at_x4():
    cfg = compose_train(["experiment=table1"], hydra_node=True)
    assert [v.strip() for v in cfg.hydra.sweeper.params["model.variant"].split(",")] == list(VARIANTS)
    assert (cfg.model.scale, cfg.data.patch_size, cfg.task_name) == (4, 128, "table1")
    assert list(cfg.data.val_sets) == ["Urban100"]


def test_smoke_replaces_the_whole_data_node():
    """DIV2K-only keys must not leak into the sample data module, which would reject them."""
    cfg = compose_train(["experiment=table1", "debug=smoke"])
    assert cfg.data._target_ == "srlab.data.sample.SampleDataModule"
    assert not {"data_range", "val_sets", "root"} & set(cfg.data)
    assert (cfg.model.scale, cfg.data.patch_size, cfg.trainer.max_steps) == (4, 24, 2)


def last_val_psnr(metrics_csv: Path) -> float:
    rows = [row for row in csv.DictReader(metrics_csv.open()) if row.get("val/psnr")]
    return float(rows[-1]["val/psnr"])


@pytest.mark.slow
def test_table1_smoke_sweep_runs_all_nine(tmp_path):
    sweep_dir = tmp_path / "table1"
    command = [
        sys.executable, "train.py", "-m", "experiment=table1", "debug=smoke", f"hydra.sweep.dir={sweep_dir}",
        # One optimiser step each and no image strips: the sweep machinery is under test, not training.
        "data.steps_per_epoch=1", "trainer.max_steps=1", "callbacks.comparison_images=null",
        "callbacks.progress_bar=null",
    ]
    # Tiny tensors and mostly start-up work: one thread avoids OpenMP spinning when the CPUs are shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    runs = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert len(runs) == len(VARIANTS)
    for run, variant in zip(runs, VARIANTS):
        assert f"model.variant={variant}" in run.name.split(",")
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert (config.model.variant, config.model.scale) == (variant, 4)
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert 5.0 < last_val_psnr(run / "csv" / "metrics.csv") < 60.0
