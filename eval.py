"""Evaluate srlab models: `python eval.py [model=...] [ckpt_path=...] [report=paper] [task=upscale ...]`.

See configs/eval.yaml for every key; the work is done by srlab.eval.runner.
"""

import sys

import hydra
from omegaconf import DictConfig

from srlab.eval.runner import evaluate
from srlab.utils.checks import ConfigError


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        code = evaluate(cfg)
    except ConfigError as err:
        print(f"eval.py: error: {err}", file=sys.stderr)  # a config mistake: one line, no traceback
        sys.exit(2)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
