"""Train any srlab model from composed Hydra configs: `python train.py [group=choice ...] [key=value ...]`."""

from srlab.cli import train_main

if __name__ == "__main__":
    train_main()
