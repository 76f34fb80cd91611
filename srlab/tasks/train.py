"""The train task (what `train.py` runs): build everything from the config, fit, summarise.

`train(cfg)` reads top to bottom; the helpers above it hold the details that scaling out
needs: which checkpoint `ckpt_path=last` means, keeping DDP's child processes inside
their Hydra multirun job, and ending a job's DDP ranks so the next job starts its own.
Loggers (and the W&B run identity) are built by `srlab.tasks.loggers`; config mistakes
are caught first by `srlab.tasks.checks`.
"""

from __future__ import annotations

import atexit
import inspect
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write
from rich.console import Console
from rich.table import Table

from srlab.callbacks.interrupt import hand_over_stop
from srlab.data.io import tensor_to_uint8, write_image
from srlab.eval.figures import Panel, comparison_figure
from srlab.eval.scoring import mean_scores, score_dataset
from srlab.models.bicubic import Bicubic
from srlab.module import SRModule
from srlab.tasks.checks import LIGHTNING_CKPT_KEYWORDS, resolve_ckpt_path, validate_config
from srlab.tasks.loggers import finish_wandb, instantiate_loggers, log_config, multirun_sweep_dir, prepare_wandb_env
from srlab.utils.files import write_csv
from srlab.utils.safe_load import load_file

log = logging.getLogger(__name__)
# `${not:...}` in configs: trainer=gpu / ddp benchmark cuDNN unless trainer.deterministic is set.
OmegaConf.register_new_resolver("not", lambda value: not value, replace=True)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Callbacks: a dict of named configs, each with a `_target_` (null entries are skipped)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """`ckpt_path` as Lightning takes it: `last` means `<resume_dir>/checkpoints/last.ckpt`.

    Without `ckpt_path`, `resume=auto` (the default) continues from this run folder's own
    `checkpoints/last.ckpt` when there is one: a relaunch of the same command in the same folder
    (`hydra.run.dir`, a multirun job folder, a requeued SLURM job) picks up where it stopped.
    validate_config has already failed, naming the path, if that file does not exist.
    """
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in LIGHTNING_CKPT_KEYWORDS:
        return ckpt_path
    path = resolve_ckpt_path(cfg)
    if path is not None and ckpt_path is None:
        log.info("resume=auto: continuing from %s (this run folder's last checkpoint; resume=never starts over)", path)
    return None if path is None else str(path)


def finished_run_metrics(cfg: DictConfig, ckpt_path: str | None) -> dict[str, float] | None:
    """The run folder's last validation metrics when `resume=auto` found its last.ckpt at the run's final step.

    Relaunching a finished run (rerunning a sweep) then trains nothing and reads no data. Lightning would
    also stop at once, but only after building data and model and scoring the summary again. The final
    step is `trainer.max_steps`, or `max_epochs` x `data.steps_per_epoch` (None when either is unusual).
    """
    if ckpt_path is None or cfg.get("ckpt_path") is not None:  # only the folder's own last.ckpt (resume=auto)
        return None
    trainer_cfg, data_cfg = cfg.get("trainer") or {}, cfg.get("data") or {}
    if trainer_cfg.get("accumulate_grad_batches", 1) != 1 or trainer_cfg.get("limit_train_batches") is not None:
        return None
    bounds = [trainer_cfg.get("max_steps", -1)]
    if (trainer_cfg.get("max_epochs") or -1) >= 0 and data_cfg.get("steps_per_epoch"):
        bounds.append(trainer_cfg.max_epochs * data_cfg.steps_per_epoch)
    bounds = [b for b in bounds if b is not None and b >= 0]
    step = load_file(ckpt_path, mmap=True).get("global_step", 0)
    if not bounds or step < min(bounds):
        return None
    metrics_file = Path(cfg.paths.output_dir) / "metrics.json"
    last = json.loads(metrics_file.read_text()).get("last") if metrics_file.is_file() else None
    log.info("resume=auto: %s is at step %d, the end of this run; nothing to train (resume=never starts over)",
             ckpt_path, step)
    return {k: float(v) for k, v in (last or {}).items() if k not in ("step", "epoch")}


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


#: What Lightning's launcher exports into this process for the ranks it starts (and leaves there after fit).
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: How long a job waits for its DDP child processes to exit once fit is over.
CHILD_EXIT_TIMEOUT_S = 300


def launcher_env() -> dict[str, str | None]:
    """The launcher's variables before a job starts its ranks: what `end_ddp_job` restores."""
    return {key: os.environ.get(key) for key in LAUNCHER_ENV}


def end_ddp_job(trainer: L.Trainer, env_before: dict[str, str | None], failed: bool) -> None:
    """Leaves the process as the job found it where the job started its own DDP ranks, so a multirun's next job can.

    Lightning's launcher starts ranks > 0 as child processes after exporting LAUNCHER_ENV here,
    and fit leaves the process group open. In the next job of a multirun the leftover LOCAL_RANK
    makes Lightning think the ranks were started externally (it starts none), and the open group,
    whose peers were the previous job's exited children, is reused: its first collective fails with
    "Connection closed by peer". So: wait for this job's children (after a failure they may be stuck
    in a collective, so not then), close the group, restore the variables. Ranks started by SLURM
    or torchrun (no children here) keep their group: the same processes run the next job together.
    """
    launcher = trainer.strategy.launcher
    children = launcher.procs if isinstance(launcher, _SubprocessScriptLauncher) else []
    if not children:
        return
    for child in [] if failed else children:
        try:
            child.wait(timeout=CHILD_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("DDP rank process %d still runs %d s after fit; not waiting longer", child.pid,
                        CHILD_EXIT_TIMEOUT_S)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in env_before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def summarise(module: SRModule, datamodule, output_dir: Path, console: Console | None = None) -> list[dict]:
    """Scores the model and MATLAB bicubic on each eval set on the module's device; prints a table, writes summary.csv.

    A compiled model runs eagerly here: whole images come in many sizes, each a new compile for one pass.
    """
    device = module.device
    module.eval()
    bicubic = Bicubic(module.scale)
    rows, pictures = [], []
    with torch.compiler.set_stance("force_eager"):
        for dataset in datamodule.eval_sets:
            first: dict[str, torch.Tensor] = {}  # each method's output for the set's first image: the picture
            model_scores = score_dataset(module.model, dataset, device,
                                         on_image=lambda i, sr, first=first: i or first.setdefault("model", sr.cpu()))
            bic_scores = score_dataset(bicubic, dataset, device,
                                       on_image=lambda i, sr, first=first: i or first.setdefault("bicubic", sr.cpu()))
            (model_psnr, model_ssim), (bic_psnr, bic_ssim) = mean_scores(model_scores), mean_scores(bic_scores)
            rows.append({"dataset": dataset.name, "scale": module.scale, "images": len(dataset),
                         "model_psnr": model_psnr, "model_ssim": model_ssim,
                         "bicubic_psnr": bic_psnr, "bicubic_ssim": bic_ssim})
            pictures.append(save_comparison(output_dir, dataset, first, model_scores[0].psnr, bic_scores[0].psnr))
    described = model_description(module.hparams.get("model") or {}) or f"x{module.scale}"
    table = Table(title=f"{described}: validation (PSNR dB / SSIM on Y, shave {module.scale})")
    for col in ("dataset", "images", "model", "bicubic", "gain (dB)"):
        table.add_column(col)
    for r in rows:
        gain = r["model_psnr"] - r["bicubic_psnr"]
        table.add_row(r["dataset"], str(r["images"]), f"{r['model_psnr']:.2f} / {r['model_ssim']:.4f}",
                      f"{r['bicubic_psnr']:.2f} / {r['bicubic_ssim']:.4f}", f"{gain:+.2f}")
    console = console or Console()
    console.print(table)
    write_csv(output_dir / "summary.csv", rows, list(rows[0]))
    for path in [*pictures, output_dir / "learning_curve.png"]:  # the curve when a LearningCurve callback drew it
        if path.is_file():
            console.print(f"saved {path}")
    return rows


def model_description(model_cfg: dict) -> str:
    """'HDSRNet x2', plus each constructor argument set away from the class default, i.e. the paper's value
    (srlab's models default to their papers'): 'HDSRNet x2, channels=32 (paper: 64)'."""
    target = model_cfg.get("_target_")
    if not target:
        return ""
    defaults = {name: p.default for name, p in inspect.signature(hydra.utils.get_class(target)).parameters.items()
                if p.default is not inspect.Parameter.empty}
    changed = [f"{key}={value} (paper: {defaults[key]})" for key, value in model_cfg.items()
               if key in defaults and key != "scale" and value != defaults[key]]
    return ", ".join([f"{target.rsplit('.', 1)[-1]} x{model_cfg.get('scale')}", *changed])


def save_comparison(output_dir: Path, dataset, outputs: dict[str, torch.Tensor], model_psnr: float,
                    bicubic_psnr: float) -> Path:
    """comparison_<set>_<image>.png: the first image's most detailed square zoomed, HR | Bicubic | srlab (PSNR)."""
    item = dataset[0]
    panels = [Panel("Bicubic", tensor_to_uint8(outputs["bicubic"]), bicubic_psnr),
              Panel("srlab", tensor_to_uint8(outputs["model"]), model_psnr)]
    title = f"{dataset.name} {item['name']} x{dataset.scale}"
    path = output_dir / f"comparison_{dataset.name}_{item['name']}.png"
    write_image(path, comparison_figure(tensor_to_uint8(item["hr"]), panels, title=title))
    return path


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final metrics (what a sweeper optimises)."""
    validate_config(cfg)  # one-line errors for config mistakes, before any data is read
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = checkpoint_to_resume(cfg)
    finished = finished_run_metrics(cfg, ckpt_path)
    if finished is not None:
        return finished
    prepare_wandb_env(cfg)

    datamodule = hydra.utils.instantiate(cfg.data)
    module: SRModule = hydra.utils.instantiate(cfg.module)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg, output_dir)
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    keep_ddp_children_in_job(trainer)
    note_cluster_environment(trainer)
    env_before_job = launcher_env()

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
        # SIGTERM/SIGUSR2: every rank stopped after the same step and InterruptCheckpoint wrote last.ckpt.
        # W&B is closed first, then the launcher's own handler runs (submitit requeues the job) and the
        # exit status is 128 + the signal, as for a killed process, so schedulers see the run stopped.
        finish_wandb(failed=True)
        raise SystemExit(hand_over_stop(trainer)) from stop
    finally:
        finish_wandb(failed)
        end_ddp_job(trainer, env_before_job, failed)
    return metrics


def close_external_process_group() -> None:
    """Closes the process group at the end of a process whose ranks were started outside Lightning (torchrun, srun).

    Such ranks keep their group between the jobs of a multirun (`end_ddp_job`), so it is still open
    when the last job ends. PyTorch asks every distributed program to close it before exiting: left
    to the interpreter's shutdown, gloo's destructor can abort the process ("terminate called without
    an active exception", exit -6) when a peer has already gone, and a scheduler then records a run that
    finished as failed. Registered with `atexit`; each rank closes its own end without waiting for the
    others (a barrier could hang on a rank that failed). Ranks that Lightning started here
    (`LightningEnvironment`) are left alone: their parent closes its group once they have exited.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if _external_environment is None:
        return
    torch.distributed.destroy_process_group()
    log.info("DDP: closed the process group (ranks started by %s)", type(_external_environment).__name__)


def note_cluster_environment(trainer: L.Trainer) -> None:
    """Remembers whether this process's ranks were started outside Lightning, for `close_external_process_group`."""
    global _external_environment
    environment = getattr(trainer.strategy, "cluster_environment", None)
    external = (environment is not None and environment.creates_processes_externally
                and not isinstance(environment, LightningEnvironment))
    if external and _external_environment is None:
        # At exit, not at the end of this job: the same ranks may run the next job of a multirun, and
        # a job run by hydra-submitit-launcher returns to submitit, not to train.py, before the process ends.
        atexit.register(close_external_process_group)
    _external_environment = environment if external else None


#: The cluster environment (torchrun, SLURM, ...) that started this process's rank, if not Lightning.
_external_environment = None


def main_metric(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a Hydra sweeper optimises: `metrics[cfg.optimized_metric]`, or None when unset or not logged."""
    return metrics.get(cfg.get("optimized_metric") or "", None)


def summarise_best(trainer: L.Trainer, module: SRModule, datamodule, output_dir: Path) -> list[dict]:
    """`summarise` on the best checkpoint's weights when one was saved, else on the final weights.

    The weights go into the trained module itself (a new SRModule built from the checkpoint would
    compile again under module.compile=true), which goes back to the device it trained on: fit
    leaves it on the CPU.
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        log.info("summary: loading best checkpoint %s", best)
        module.load_state_dict(load_file(best)["state_dict"])
    module.to(trainer.strategy.root_device)
    datamodule.setup("validate")
    return summarise(module, datamodule, output_dir)
