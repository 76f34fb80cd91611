"""Loggers for train and eval tasks: built from config, W&B offline without a key, W&B identity kept across resumes.

A W&B run's id is recorded in the run folder (`wandb_id.txt`), so a resumed run continues the
same W&B run; the jobs of a Hydra multirun share one W&B group named after the sweep folder.
Only global rank 0 (known from the launcher's environment before `fit`: `global_rank_from_env`)
starts the W&B run and writes that file. A resumed run keeps the `csv/metrics.csv` already in its
folder (its own one under `resume=auto`) and appends to it, where Lightning's CSVLogger would delete it.
"""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from srlab.tasks.checks import auto_resume_checkpoint, resolve_ckpt_path
from srlab.utils.files import atomic_write_text
from srlab.utils.safe_load import load_file

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


def resumed_run_dir(cfg: DictConfig) -> Path | None:
    """The run folder this run continues: `resume_dir` with a `ckpt_path`, or its own folder under `resume=auto`."""
    if cfg.get("ckpt_path") and cfg.get("resume_dir"):
        return Path(cfg.resume_dir)
    auto = auto_resume_checkpoint(cfg)
    return auto.parent.parent if auto is not None else None


def wandb_identity(cfg: DictConfig, logger_cfg: DictConfig, output_dir: Path) -> dict:
    """id/resume/group/name for a WandbLogger; values set in the logger config win.

    Resuming (`ckpt_path` with a `resume_dir`, or `resume=auto` in the run's own folder) continues
    the W&B run that folder recorded; a multirun's jobs join one group named after the sweep folder.
    """
    identity: dict = {}
    resume_dir = resumed_run_dir(cfg)
    resumed_id = read_wandb_id(resume_dir) if resume_dir is not None else None
    if resumed_id and not logger_cfg.get("id"):
        identity.update(id=resumed_id, resume="allow")
        log.info("W&B: resuming run %s recorded in %s", resumed_id, resume_dir)
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


def global_rank_from_env(devices_per_node: int = 1) -> int:
    """This process's global rank as its launcher set it, before `fit` (0 when nothing says otherwise).

    RANK (torchrun); else NODE_RANK x devices per node + LOCAL_RANK (Lightning's own launcher, and a
    manual multi-node launch, where Lightning's import-time guess reads LOCAL_RANK alone and takes
    node 1's first process for rank 0); else SLURM_PROCID (srun).
    """
    env = os.environ
    if env.get("RANK"):
        return int(env["RANK"])
    if env.get("NODE_RANK") or env.get("LOCAL_RANK"):
        return int(env.get("NODE_RANK") or 0) * devices_per_node + int(env.get("LOCAL_RANK") or 0)
    return int(env.get("SLURM_PROCID") or 0)


def is_global_zero(trainer: L.Trainer) -> bool:
    """Global rank 0 by the trainer and by the environment; a non-zero rank also makes Lightning's rank-zero-only
    code (a logger's experiment, which would start a W&B run during `fit`) stand down."""
    env_rank = global_rank_from_env(trainer.num_devices)
    if env_rank != 0 and rank_zero_only.rank == 0:
        rank_zero_only.rank = env_rank
    return trainer.is_global_zero and env_rank == 0


def continue_csv_log(logger: CSVLogger, resume_ckpt: Path) -> None:
    """Keeps the metrics.csv already in a resumed run's folder (its own, under resume=auto); the run appends to it.

    Lightning's CSVLogger deletes an existing metrics.csv when it starts. The rows are set aside
    while it starts, then written back without those logged at or after the checkpoint's step
    (after a hard kill they were logged past the checkpoint; the resumed run logs those steps again).
    """
    metrics = Path(logger.log_dir) / "metrics.csv"
    if not metrics.is_file():
        return
    with open(metrics, newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    try:
        step = int(load_file(resume_ckpt, mmap=True)["global_step"])
        rows = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
    except Exception as err:  # keep every row rather than fail the run over its log
        log.warning("csv log: could not read the step of %s (%s); keeping every earlier row", resume_ckpt, err)
    metrics.unlink()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
        writer = logger.experiment  # Lightning's writer starts here (and would have deleted the file)
    buffer = io.StringIO()
    table = csv.DictWriter(buffer, fieldnames=header)
    table.writeheader()
    table.writerows(rows)
    atomic_write_text(metrics, buffer.getvalue())
    # The writer appends under this header, and rewrites the file with the new columns a resumed run adds.
    writer.metrics_keys = sorted(header)
    log.info("csv log: %s continues (%d earlier rows kept)", metrics, len(rows))


def log_config(loggers: list[Logger], cfg: DictConfig, trainer: L.Trainer, output_dir: Path) -> None:
    """On global rank 0 only: sends the resolved config to every logger, records the W&B run id in the run folder,
    and, when the run resumes, keeps the csv log already in its folder (`continue_csv_log`)."""
    if not is_global_zero(trainer):
        return
    resume_ckpt = resolve_ckpt_path(cfg)
    if resume_ckpt is not None:
        for logger in loggers:
            if isinstance(logger, CSVLogger):
                continue_csv_log(logger, resume_ckpt)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(resolved)  # creates the W&B run
        if isinstance(logger, WandbLogger) and isinstance(logger.version, str):
            atomic_write_text(output_dir / WANDB_ID_FILE, f"{logger.version}\n")


def finish_wandb(failed: bool) -> None:
    """Closes the W&B run, so the next job of a multirun starts its own instead of appending to this one."""
    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


