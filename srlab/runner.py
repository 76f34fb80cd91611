"""What `train.py` does, as a reusable function: build everything from the config, fit, summarise."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from srlab.eval.evaluate import mean_scores, score_dataset
from srlab.models.bicubic import Bicubic
from srlab.module import SRModule

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Callbacks / loggers: a dict of named configs, each with a `_target_` (null entries are skipped)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def prepare_wandb_env(cfg: DictConfig) -> None:
    """W&B runs offline when there is no API key, so `logger=wandb` never needs the network."""
    uses_wandb = any("WandbLogger" in str(c.get("_target_", "")) for c in (cfg.get("logger") or {}).values() if c)
    if uses_wandb and not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no WANDB_API_KEY, logging offline (sync later with `wandb sync`)")


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
        table.add_row(r["dataset"], str(r["images"]), f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f}",
                      f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}", f"{r['model_psnr'] - r['bicubic_psnr']:+.2f}")
    (console or Console()).print(table)
    path = output_dir / "summary.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return rows


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final metrics (what a sweeper optimises)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    prepare_wandb_env(cfg)

    datamodule = hydra.utils.instantiate(cfg.data)
    module: SRModule = hydra.utils.instantiate(cfg.module)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        if cfg.get("summary") and trainer.is_global_zero:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best:
                log.info("summary: loading best checkpoint %s", best)
                module = SRModule.load_from_checkpoint(best, map_location=module.device)
            datamodule.setup("validate")
            summarise(module, datamodule, output_dir)
    finally:
        for logger in loggers:
            if hasattr(logger, "experiment") and "Wandb" in type(logger).__name__:
                import wandb

                wandb.finish()  # a multirun must not merge runs into one W&B run
    return metrics
