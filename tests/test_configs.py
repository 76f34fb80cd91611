"""Config composition: every experiment composes alone and under debug=smoke, a scheduler picked on the
command line arrives whole (no keys of the experiment's scheduler mixed in), the paper recipe values are
the paper's, and eval.py's `report` group is validated by Hydra."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
# Globbed: a new experiment or scheduler file is checked without editing this file.
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONFIG_DIR / "module" / "scheduler").glob("*.yaml"))
PAPER_EXPERIMENTS = {"paper_x2": 2, "paper_x3": 3, "paper_x4": 4, "table1": 4}

STEP_LR = "torch.optim.lr_scheduler.StepLR"
COSINE_LR = "torch.optim.lr_scheduler.CosineAnnealingLR"


def compose_config(name: str, overrides: list[str], hydra_node: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=overrides, return_hydra_config=hydra_node)


def scheduler_option(choice: str) -> dict:
    """The scheduler node exactly as its option file (and the files it builds on) defines it."""
    # Composed on its own, a group option still lands at its package (module.scheduler).
    return OmegaConf.to_container(compose_config(f"module/scheduler/{choice}", []).module.scheduler)


def built_scheduler(node: DictConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Instantiates the node as SRModule does: it fails on any key the scheduler class does not take."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    return hydra.utils.instantiate(node, optimizer=optimizer)


def test_every_experiment_and_scheduler_is_found():
    assert {"demo", *PAPER_EXPERIMENTS} <= set(EXPERIMENTS)
    assert {"step", "cosine"} <= set(SCHEDULERS)


@pytest.mark.parametrize("smoke", [False, True], ids=["recipe", "smoke"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_into_a_buildable_scheduler_and_data_node(experiment, smoke):
    cfg = compose_config("train", [f"experiment={experiment}", *(["debug=smoke"] if smoke else [])], hydra_node=True)
    choice = cfg.hydra.runtime.choices["module/scheduler"]
    assert OmegaConf.to_container(cfg.module.scheduler) == scheduler_option(choice)
    built_scheduler(cfg.module.scheduler)
    if smoke:
        # debug=smoke swaps the data group: the sample data module must accept every key it receives.
        data = hydra.utils.instantiate(cfg.data, scale=cfg.model.scale)
        assert type(data).__name__ == "SampleDataModule"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_scheduler_chosen_on_the_command_line_arrives_whole(experiment, scheduler):
    """Hydra applies command-line group choices over an experiment's `override /module/scheduler`, in either
    order; the experiment states no scheduler keys of its own, so none leak into the user's choice."""
    expected = scheduler_option(scheduler)
    for overrides in ([f"module/scheduler={scheduler}", f"experiment={experiment}"],
                      [f"experiment={experiment}", f"module/scheduler={scheduler}"]):
        node = compose_config("train", overrides).module.scheduler
        assert OmegaConf.to_container(node) == expected, overrides
        assert type(built_scheduler(node)).__name__ == expected["_target_"].rsplit(".", 1)[1]


def test_cosine_with_a_paper_experiment_is_a_pure_cosine_schedule():
    node = compose_config("train", ["module/scheduler=cosine", "experiment=paper_x2"]).module.scheduler
    assert node._target_ == COSINE_LR
    assert not {"step_size", "gamma"} & set(node)


@pytest.mark.parametrize("experiment, scale", sorted(PAPER_EXPERIMENTS.items()))
def test_paper_recipe_values(experiment, scale):
    """Paper IV.A/IV.C and the authors' training commands: DIV2K 1-900, HR patch 128 (126 at x3: LR 42),
    batch 64, L1, Adam (0.9, 0.999, 1e-8) at 1e-4 halved every 300k steps, clip by value at 10,
    1,200 epochs of 1,000 steps = 1.2M steps, Urban100 validation."""
    cfg = compose_config("train", [f"experiment={experiment}"])
    assert (cfg.model._target_, cfg.model.scale, cfg.model.variant) == ("srlab.models.hdsrnet.HDSRNet", scale, "full")
    data = cfg.data
    assert data._target_ == "srlab.data.div2k.DIV2KDataModule"
    assert list(data.data_range) == [1, 900]
    assert (data.patch_size, data.batch_size) == (126 if scale == 3 else 128, 64)
    assert list(data.val_sets) == ["Urban100"]
    module = cfg.module
    assert (module.loss, module.optimizer._target_, module.optimizer.lr) == ("l1", "torch.optim.Adam", 1e-4)
    assert (list(module.optimizer.betas), module.optimizer.eps) == ([0.9, 0.999], 1e-8)
    assert OmegaConf.to_container(module.scheduler) == {"_target_": STEP_LR, "step_size": 300_000, "gamma": 0.5}
    assert module.scheduler_interval == "step"
    trainer = cfg.trainer
    assert (trainer.gradient_clip_val, trainer.gradient_clip_algorithm) == (10.0, "value")
    assert trainer.max_steps == -1  # the run length is epochs x steps per epoch
    assert trainer.max_epochs * data.steps_per_epoch == 1_200_000


# -- eval.py: the `report` group ------------------------------------------------------------------
def test_no_report_by_default():
    cfg = compose_config("eval", [])
    assert cfg.get("report") is None and "paper" not in cfg


def test_report_paper_composes_at_the_report_key():
    cfg = compose_config("eval", ["report=paper", "report.table1_dir=/runs/table1"])
    report = cfg.report
    assert report.table1_dir == "/runs/table1"
    assert (report.runtime.enabled, report.runtime.scale, list(report.runtime.sizes)) == (True, 4, [256, 512])
    assert (report.runtime.warmup, report.runtime.repeats) == (5, 20)
    assert list(report.runtime.models) == ["HDSRNet", "SRCNN", "HRN", "Bicubic"]
    assert (report.complexity.enabled, report.complexity.scale, report.complexity.output_size) == (True, 4, 1024)
    assert list(report.complexity.models) == ["HDSRNet", "SRCNN", "HRN"]
    assert report.runtime.models.HDSRNet._target_ == "srlab.models.hdsrnet.HDSRNet"


def test_report_paper_quick_only_shortens_the_timing():
    paper = OmegaConf.to_container(compose_config("eval", ["report=paper"]).report)
    quick = OmegaConf.to_container(compose_config("eval", ["report=paper_quick"]).report)
    assert quick["runtime"] | {"sizes": [256, 512], "warmup": 5, "repeats": 20} == paper["runtime"]
    assert (quick["runtime"]["sizes"], quick["runtime"]["warmup"], quick["runtime"]["repeats"]) == ([64], 1, 1)
    assert {k: v for k, v in quick.items() if k != "runtime"} == {k: v for k, v in paper.items() if k != "runtime"}


def test_unknown_report_is_refused_by_hydra_with_the_choices():
    with pytest.raises(MissingConfigException, match="Could not find 'report/papr'") as err:
        compose_config("eval", ["report=papr"])
    assert "paper_quick" in str(err.value)


def test_report_settings_need_a_report():
    with pytest.raises(hydra.errors.ConfigCompositionException, match="report.table1_dir"):
        compose_config("eval", ["report.table1_dir=/runs/table1"])
