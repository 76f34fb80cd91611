"""Train any srlab model from composed Hydra configs: `python train.py [group=choice ...] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from srlab.runner import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
