"""Console entry points `srlab-train` and `srlab-eval`: the train and eval tasks on the configs shipped in the package.

They compose `pkg://srlab.configs`, so a pip-installed srlab runs experiments from any folder
(run folders go to `./outputs`, data is looked for in `./data`); `train.py` and `eval.py` in
the repository call the same functions.
"""

import hydra
from omegaconf import DictConfig

from srlab.tasks.evaluate import run_eval_cli
from srlab.tasks.train import main_metric, train

CONFIGS = "pkg://srlab.configs"


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
def train_main(cfg: DictConfig) -> float | None:
    return main_metric(cfg, train(cfg))


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="eval")
def eval_main(cfg: DictConfig) -> None:
    run_eval_cli(cfg)
