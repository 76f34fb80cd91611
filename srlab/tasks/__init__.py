"""Tasks: what `train.py` and `eval.py` run, each a function of a composed config.

`train(cfg)` fits a model (srlab.tasks.train); `evaluate(cfg)` scores it on the benchmarks,
renders the paper's tables or upscales images (srlab.tasks.evaluate, .upscale). Weight loading
(.weights), loggers (.loggers) and fail-fast config checks (.checks) sit below them. The
library packages (models, data, metrics, eval, callbacks) never import a task.
"""

from srlab.tasks.checks import ConfigError, EvalError, validate_config
from srlab.tasks.evaluate import evaluate
from srlab.tasks.train import train

__all__ = ["ConfigError", "EvalError", "evaluate", "train", "validate_config"]
