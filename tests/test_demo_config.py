"""The demo (`python train.py`, experiment=demo) as composed: the photos it trains and scores on, its schedule
ending at its last step, the pictures it saves, and a summary that says how its model differs from the paper's."""

from __future__ import annotations

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srlab.data.io import read_image
from srlab.data.sample import SAMPLE_TRAIN, SAMPLE_VAL, skimage_data_dir
from srlab.tasks.train import model_description
from tests.train_runs import REPO


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_the_default_run_is_the_demo():
    assert compose_train([]) == compose_train(["experiment=demo"])


def test_demo_trains_and_scores_on_photos_shipped_with_scikit_image_held_out_apart():
    cfg = compose_train([])
    data = hydra.utils.instantiate(cfg.data)
    assert data.val_images == SAMPLE_VAL == ("coffee.png", "rocket.jpg")
    assert data.train_images == SAMPLE_TRAIN and not set(SAMPLE_TRAIN) & set(SAMPLE_VAL)
    assert len(SAMPLE_TRAIN) == 8 and data.augment and data.permute_channels
    for name in (*SAMPLE_TRAIN, *SAMPLE_VAL):  # shipped inside the installed scikit-image: nothing downloaded
        image = read_image(skimage_data_dir() / name)
        assert min(image.shape[:2]) >= 2 * cfg.data.patch_size, name
    assert cfg.data.patch_size % cfg.model.scale == 0


def test_demo_schedule_anneals_to_its_last_step_in_fp32():
    cfg = compose_train([])
    steps = cfg.trainer.max_epochs * cfg.data.steps_per_epoch
    scheduler = cfg.module.scheduler
    assert scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert (scheduler.T_max, scheduler.eta_min, cfg.module.optimizer.lr) == (steps, 1e-5, 1e-3)
    assert cfg.trainer.max_steps in (-1, steps)
    assert cfg.trainer.precision == "32-true"  # the same numerics path on every CPU (no emulated bf16)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.module.optimizer.lr)
    lr_scheduler = hydra.utils.instantiate(scheduler, optimizer=optimizer)
    for _ in range(steps - 1):
        optimizer.step()
        lr_scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5, abs=1e-8)  # the last step trains at eta_min


def test_demo_draws_its_learning_curve_and_keeps_the_papers_architecture():
    cfg = compose_train([])
    curve = cfg.callbacks.learning_curve
    assert curve._target_ == "srlab.callbacks.learning_curve.LearningCurve"
    assert OmegaConf.to_container(curve)["path"] == "${paths.output_dir}/learning_curve.png"
    assert (cfg.model._target_, cfg.model.variant, cfg.model.scale) == ("srlab.models.hdsrnet.HDSRNet", "full", 2)


def test_summary_names_every_model_setting_that_differs_from_the_papers():
    assert model_description({"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "variant": "full",
                              "channels": 64}) == "HDSRNet x2"
    assert model_description({"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "channels": 32}) == (
        "HDSRNet x2, channels=32 (paper: 64)")
    demo = compose_train([])
    # The demo's narrower width is said in the title of its final table.
    assert model_description(OmegaConf.to_container(demo.model, resolve=True)) == "HDSRNet x2, channels=32 (paper: 64)"
