"""The paper experiments: the x2/x3/x4 recipe as composed, and the Table I sweep end to end under debug=smoke."""

from __future__ import annotations

import csv
from pathlib import Path

import hydra
import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srlab.models.hdsrnet import VARIANTS
from srlab.module import SRModule

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


def last_validation(metrics_csv: Path) -> dict[str, str]:
    return [row for row in csv.DictReader(metrics_csv.open()) if row.get("val/psnr")][-1]


@pytest.mark.slow
def test_table1_smoke_sweep_runs_all_nine(table1_sweep):
    """The shared Table I sweep (conftest.table1_sweep): nine x4 runs in paper order, each scored on its own weights."""
    runs = sorted((p for p in table1_sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))
    assert len(runs) == len(VARIANTS)
    for run, variant in zip(runs, VARIANTS):
        assert f"model.variant={variant}" in run.name.split(",")
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert (config.model.variant, config.model.scale, config.task_name) == (variant, 4, "table1")
        # The logged validation is the saved weights' own: re-validating last.ckpt gives the same PSNR.
        module = SRModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
        assert module.model.variant == variant
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, limit_val_batches=1)
        (scores,) = trainer.validate(module, datamodule=hydra.utils.instantiate(config.data), verbose=False)
        logged = last_validation(run / "csv" / "metrics.csv")
        assert float(logged["val/psnr"]) == pytest.approx(scores["val/psnr"], abs=1e-4)
        assert float(logged["val/ssim"]) == pytest.approx(scores["val/ssim"], abs=1e-6)
