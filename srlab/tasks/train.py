"""The train task (what `train.py` runs): build everything from the config, fit, summarise.

`train(cfg)` reads top to bottom; the helpers above it hold the details that scaling out
needs: which checkpoint `ckpt_path=last` means and keeping DDP's child processes inside
their Hydra multirun job. Loggers (and the W&B run identity) are built by
`srlab.tasks.loggers`; config mistakes are caught first by `srlab.tasks.checks`.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, read_write
from rich.console import Console
from rich.table import Table

from srlab.eval.scoring import mean_scores, score_dataset
from srlab.models.bicubic import Bicubic
from srlab.module import SRModule
from srlab.tasks.checks import LIGHTNING_CKPT_KEYWORDS, resolve_ckpt_path, validate_config
from srlab.tasks.loggers import finish_wandb, instantiate_loggers, log_config, multirun_sweep_dir, prepare_wandb_env
from srlab.utils.files import write_csv

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Callbacks: a dict of named configs, each with a `_target_` (null entries are skipped)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """`ckpt_path` as Lightning takes it: `last` means `<resume_dir>/checkpoints/last.ckpt`.

    validate_config has already failed, naming the path, if that file does not exist.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in LIGHTNING_CKPT_KEYWORDS:
        return ckpt_path
    path = resolve_ckpt_path(cfg)
    return None if path is None else str(path)


# -- DDP under Hydra ----------------------------------------------------------------------------------
def keep_ddp_children_in_job(trainer: L.Trainer) -> None:
    """Makes DDP's child processes rerun this multirun job alone, in this job's folder.

    Lightning starts ranks > 0 by rerunning the script with the parent's arguments plus
    `hydra.run.dir=<parent's run.dir>`. That is right for a single run, but in a multirun
    the arguments still say `-m` and hold the whole sweep (every child would launch the
    sweep again, in new folders) and `run.dir` is not the job's folder. So the arguments
    become this job's own overrides in run mode, and `run.dir` the job's output folder.
    The config name is carried over; `--config-path`/`--config-dir` flags are not.
    """
    if not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher) or multirun_sweep_dir() is None:
        return
    hydra_cfg = HydraConfig.get()
    sys.argv = [
        sys.argv[0], f"--config-name={hydra_cfg.job.config_name}", *hydra_cfg.overrides.task, "hydra.mode=RUN"
    ]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def summarise(module: SRModule, datamodule, output_dir: Path, console: Console | None = None) -> list[dict]:
    """Scores the model and MATLAB bicubic on every eval set; prints a table and writes summary.csv."""
    device = module.device
    module.eval()
    bicubic = Bicubic(module.scale)
    rows = []
    for dataset in datamodule.eval_sets:
        model_psnr, model_ssim = mean_scores(score_dataset(module.model, dataset, device))
        bic_psnr, bic_ssim = mean_scores(score_dataset(bicubic, dataset, device))
        rows.append({"dataset": dataset.name, "scale": module.scale, "images": len(dataset),
                     "model_psnr": model_psnr, "model_ssim": model_ssim,
                     "bicubic_psnr": bic_psnr, "bicubic_ssim": bic_ssim})
    table = Table(title=f"x{module.scale} validation (PSNR dB / SSIM on Y, shave {module.scale})")
    for col in ("dataset", "images", "model", "bicubic", "gain (dB)"):
        table.add_column(col)
    for r in rows:
        gain = r["model_psnr"] - r["bicubic_psnr"]
        table.add_row(r["dataset"], str(r["images"]), f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f}",
                      f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}", f"{gain:+.2f}")
    (console or Console()).print(table)
    write_csv(output_dir / "summary.csv", rows, list(rows[0]))
    return rows


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final metrics (what a sweeper optimises)."""
    validate_config(cfg)  # one-line errors for config mistakes, before any data is read
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = checkpoint_to_resume(cfg)
    prepare_wandb_env(cfg)

    datamodule = hydra.utils.instantiate(cfg.data)
    module: SRModule = hydra.utils.instantiate(cfg.module)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg, output_dir)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    keep_ddp_children_in_job(trainer)

    failed = True
    try:
        log_config(loggers, cfg, trainer, output_dir)
        with warnings.catch_warnings():
            # Training batches are indexed by step (srlab.data.sampler), so resuming mid-epoch is exact;
            # Lightning cannot see that and would warn that the dataloader is not resumable.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        if cfg.get("summary") and trainer.is_global_zero:
            summarise_best(trainer, module, datamodule, output_dir)
        failed = False
    except SIGTERMException as stop:
        # Lightning stops at the end of the step (InterruptCheckpoint saved last.ckpt) and exits 0;
        # report the signal instead, as a killed process would, so schedulers see the run stopped.
        raise SystemExit(128 + signal.SIGTERM) from stop
    finally:
        finish_wandb(failed)
    return metrics


def main_metric(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a Hydra sweeper optimises: `metrics[cfg.optimized_metric]`, or None when unset or not logged."""
    return metrics.get(cfg.get("optimized_metric") or "", None)


def summarise_best(trainer: L.Trainer, module: SRModule, datamodule, output_dir: Path) -> list[dict]:
    """`summarise` on the best checkpoint when one was saved, else on the final weights."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        log.info("summary: loading best checkpoint %s", best)
        module = SRModule.load_from_checkpoint(best, map_location=module.device)
    datamodule.setup("validate")
    return summarise(module, datamodule, output_dir)
