"""What `train.py` does, as a reusable function: build everything from the config, fit, summarise.

`train(cfg)` reads top to bottom; the helpers above it hold the details that scaling
out needs: which checkpoint `ckpt_path=last` means, the W&B run identity (its id is
kept in the run folder so a resumed run continues the same W&B run; a multirun's jobs
share one W&B group, the sweep), and keeping DDP's child processes inside their
Hydra multirun job.
"""

from __future__ import annotations

import logging
import netrc
import os
import signal
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write
from rich.console import Console
from rich.table import Table

from srlab.eval.evaluate import mean_scores, score_dataset
from srlab.eval.report import atomic_write_text, write_csv
from srlab.models.bicubic import Bicubic
from srlab.module import SRModule
from srlab.utils.checks import LIGHTNING_CKPT_KEYWORDS, resolve_ckpt_path, validate_config

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id.txt"


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


# -- W&B ------------------------------------------------------------------------------------------
def is_wandb(logger_cfg: DictConfig) -> bool:
    return "WandbLogger" in str(logger_cfg.get("_target_", ""))


def has_wandb_credentials() -> bool:
    """An API key in WANDB_API_KEY, or the ~/.netrc entry that `wandb login` writes for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def prepare_wandb_env(cfg: DictConfig) -> None:
    """W&B runs offline when there is no API key, so `logger=wandb` never needs the network."""
    uses_wandb = any(is_wandb(c) for c in (cfg.get("logger") or {}).values() if c)
    if uses_wandb and "WANDB_MODE" not in os.environ and not has_wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info("W&B: no WANDB_API_KEY, logging offline (sync later with `wandb sync`)")


def multirun_sweep_dir() -> Path | None:
    """The sweep folder when this process runs a job of a Hydra multirun, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def relative_name(path: Path, root: str | os.PathLike) -> str:
    """`path` relative to `root` when inside it (e.g. 'multirun/2026-01-31/12-00-00'), else its last part."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def read_wandb_id(run_dir: str | os.PathLike) -> str | None:
    path = Path(run_dir) / WANDB_ID_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def wandb_identity(cfg: DictConfig, logger_cfg: DictConfig, output_dir: Path) -> dict:
    """id/resume/group/name for a WandbLogger; values set in the logger config win.

    Resuming (`ckpt_path` with a `resume_dir` that recorded a W&B id) continues that W&B
    run; a multirun's jobs join one group named after the sweep folder.
    """
    identity: dict = {}
    resumed_id = read_wandb_id(cfg.resume_dir) if cfg.get("ckpt_path") and cfg.get("resume_dir") else None
    if resumed_id and not logger_cfg.get("id"):
        identity.update(id=resumed_id, resume="allow")
        log.info("W&B: resuming run %s recorded in %s", resumed_id, cfg.resume_dir)
    sweep_dir = multirun_sweep_dir()
    if sweep_dir is not None and not logger_cfg.get("group"):
        identity["group"] = relative_name(sweep_dir, cfg.paths.log_dir)
    if not logger_cfg.get("name"):
        identity["name"] = relative_name(output_dir, sweep_dir or cfg.paths.log_dir)
    return identity


def instantiate_loggers(cfg: DictConfig, output_dir: Path) -> list[Logger]:
    """Loggers from `cfg.logger`; a WandbLogger also gets its run identity (`wandb_identity`)."""
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        identity = wandb_identity(cfg, logger_cfg, output_dir) if is_wandb(logger_cfg) else {}
        loggers.append(hydra.utils.instantiate(logger_cfg, **identity))
    return loggers


def log_config(loggers: list[Logger], cfg: DictConfig, trainer: L.Trainer, output_dir: Path) -> None:
    """Sends the resolved config to every logger; records the W&B run id in the run folder (rank 0)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(resolved)  # creates the W&B run on rank 0
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            atomic_write_text(output_dir / WANDB_ID_FILE, f"{logger.version}\n")


def finish_wandb(failed: bool) -> None:
    """Closes the W&B run, so the next job of a multirun starts its own instead of appending to this one."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


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
        table.add_row(r["dataset"], str(r["images"]), f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f}",
                      f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}", f"{r['model_psnr'] - r['bicubic_psnr']:+.2f}")
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


def summarise_best(trainer: L.Trainer, module: SRModule, datamodule, output_dir: Path) -> list[dict]:
    """`summarise` on the best checkpoint when one was saved, else on the final weights."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        log.info("summary: loading best checkpoint %s", best)
        module = SRModule.load_from_checkpoint(best, map_location=module.device)
    datamodule.setup("validate")
    return summarise(module, datamodule, output_dir)
