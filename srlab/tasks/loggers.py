"""Loggers for train and eval tasks: built from config, W&B offline without a key, W&B identity kept across resumes.

A W&B run's id is recorded in the run folder (`wandb_id.txt`), so a resumed run continues the
same W&B run; the jobs of a Hydra multirun share one W&B group named after the sweep folder.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from srlab.utils.files import atomic_write_text

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_id.txt"


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


