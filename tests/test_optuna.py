"""Hyper-parameter search (`hparams_search=optuna`): the config composes into a seeded Optuna sweep that
maximises val/psnr, and a 3-trial smoke search writes its trials, sweep summary and best result."""

from __future__ import annotations

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srlab.callbacks.sweep_summary import SUMMARY_FILE
from srlab.tasks.train import main_metric
from tests.train_runs import REPO, SMOKE, read_csv, run_train

SEARCH_SPACE = {"module.optimizer.lr": "tag(log, interval(1e-4, 1e-2))", "data.batch_size": "choice(4, 8, 16)"}


def compose_search(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)


def test_optuna_search_config():
    cfg = compose_search([])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.mode.name == "MULTIRUN"  # `python train.py hparams_search=optuna` needs no -m
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/psnr"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 1234
    assert OmegaConf.to_container(sweeper.params) == SEARCH_SPACE
    # The sweep summary (a Hydra callback) still runs after an Optuna search.
    assert "sweep_summary" in cfg.hydra.callbacks
    # What a trial returns to the sweeper: the optimized metric, or None when it was not logged.
    assert main_metric(cfg, {"val/psnr": 31.5, "val/ssim": 0.9}) == 31.5
    assert main_metric(cfg, {"train/loss": 3.0}) is None


def seeded_proposals(n_trials: int) -> list[dict]:
    """The trials a TPE sampler seeded like the config proposes for SEARCH_SPACE (all in its random start-up phase)."""
    space = {"module.optimizer.lr": optuna.distributions.LogUniformDistribution(1e-4, 1e-2),
             "data.batch_size": optuna.distributions.CategoricalDistribution((4, 8, 16))}
    sampler = optuna.samplers.TPESampler(seed=1234, n_startup_trials=10)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    proposals = []
    for _ in range(n_trials):
        trial = study.ask(fixed_distributions=space)
        proposals.append(trial.params)
        study.tell(trial, 0.0)
    return proposals


@pytest.mark.slow
def test_three_trial_search_on_sample_data(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_train(["hparams_search=optuna", *SMOKE, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep_dir}"],
              tmp_path, timeout=400)

    rows = read_csv(sweep_dir / SUMMARY_FILE)
    assert [r["job"] for r in rows] == ["0", "1", "2"] and all(r["status"] == "ok" for r in rows)
    tried = [{"module.optimizer.lr": float(r["module.optimizer.lr"]), "data.batch_size": int(r["data.batch_size"])}
             for r in rows]
    assert tried == seeded_proposals(3)  # the seeded sampler drew the trials: the same seed, the same search

    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = max(rows, key=lambda r: float(r["val/psnr"]))  # one validation per smoke trial: its last is its best
    assert result["name"] == "optuna"
    assert result["best_value"] == pytest.approx(float(best["val/psnr"]), rel=1e-9)
    assert result["best_params"] == tried[rows.index(best)]
    for row in rows:  # every trial trained and kept its own run folder
        assert (sweep_dir / row["run_dir"] / "checkpoints" / "last.ckpt").is_file()
