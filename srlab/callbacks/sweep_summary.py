"""At the end of a Hydra multirun, one CSV row per job: its overrides and its best validation metrics.

`SweepSummary` is a Hydra callback (configured under `hydra.callbacks`), so it runs
once in the process that launched the sweep, after every job has finished, whatever
the launcher (basic, joblib, SLURM). It reads what each job left in its folder:
`.hydra/overrides.yaml`, `.hydra/hydra.yaml` (the job number), `metrics.json`
(written by `srlab.callbacks.MetricsFile`) and `job_status.json`, and writes
`<sweep dir>/sweep_summary.csv`.

`job_status.json` is written by the same callback in each job's own process (Hydra calls
`on_job_start` / `on_job_end` there, under any launcher): `running` when the job starts,
`completed` or `failed` (with the error) when it ends. A job killed on the way (SIGKILL, a
time limit, a SIGTERM stop) keeps `running`, so the summary says it did not finish, and a
failed job is named with its error rather than left out.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from srlab.utils.files import atomic_write_text, write_csv

log = logging.getLogger(__name__)

SUMMARY_FILE = "sweep_summary.csv"
JOB_STATUS_FILE = "job_status.json"
# job_status.json `status` values: the job started and has not ended (or was killed), ended, raised.
RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


def write_job_status(job_dir: str | Path, status: str, error: str | None = None) -> Path:
    """`<job_dir>/job_status.json`: {status, error, time}, written atomically."""
    record = {"status": status, "error": error, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return atomic_write_text(Path(job_dir) / JOB_STATUS_FILE, json.dumps(record, indent=2) + "\n")


def read_job_status(job_dir: str | Path) -> dict[str, Any] | None:
    """The job's status record, or None for a folder without one (a sweep from before it, a single run)."""
    path = Path(job_dir) / JOB_STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable job status (%s)", path, err)
        return None


def failure_text(error: str | None) -> str:
    """How a failed job is named wherever a run is listed: 'failed: <its error>' (job_status.json's `error`)."""
    return f"failed: {error or 'unknown error'}"


def describe_error(error: BaseException) -> str:
    """One line: the exception's type and message (the full traceback is in the job's log)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def parse_override(override: str) -> tuple[str, str]:
    """'model.scale=2' -> ('model.scale', '2'); '+foo=1' keeps its '+' in the key."""
    key, _, value = override.partition("=")
    return key, value


def job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One job folder as a flat dict: job number, overrides, best validation record, folder."""
    hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml")
    row: dict[str, Any] = {"job": OmegaConf.select(hydra_cfg, "hydra.job.num")}
    for override in OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")):
        key, value = parse_override(str(override))
        row[key] = value
    metrics_file = job_dir / "metrics.json"
    best = json.loads(metrics_file.read_text())["best"] if metrics_file.is_file() else None
    job_status = read_job_status(job_dir) or {}
    if job_status.get("status") == FAILED:
        row["status"] = failure_text(job_status.get("error"))
    elif job_status.get("status") == RUNNING:
        row["status"] = "not finished"  # killed or stopped on the way, or still running
    else:
        row["status"] = "ok" if best else "no validation"
    for key, value in (best or {}).items():
        row["best_step" if key == "step" else "best_epoch" if key == "epoch" else key] = value
    row["run_dir"] = job_dir.relative_to(sweep_dir).as_posix()
    return row


def collect_sweep(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every job folder under `sweep_dir` (any depth: override values may hold '/'), by job number."""
    sweep_dir = Path(sweep_dir)
    job_dirs = [f.parent.parent for f in sweep_dir.rglob(".hydra/overrides.yaml")]
    rows = [job_row(d, sweep_dir) for d in job_dirs if (d / ".hydra" / "hydra.yaml").is_file()]
    return sorted(rows, key=lambda r: (r["job"] is None, r["job"] if r["job"] is not None else 0, r["run_dir"]))


def summary_columns(rows: list[dict[str, Any]]) -> list[str]:
    """job, the overrides (first-seen order), status, best step/epoch, metrics (val/psnr first), run_dir."""
    fixed_tail = ("status", "best_step", "best_epoch", "run_dir")
    overrides, metrics = [], []
    for row in rows:
        for key in row:
            if key == "job" or key in fixed_tail:
                continue
            target = metrics if key.startswith(("val/", "test/", "train/")) else overrides
            if key not in target:
                target.append(key)
    metrics.sort(key=lambda k: (k.count("/") > 1, k))  # val/psnr, val/ssim before val/<Set>/psnr
    return ["job", *overrides, "status", "best_step", "best_epoch", *metrics, "run_dir"]


def write_sweep_summary(sweep_dir: str | Path, console: Console | None = None) -> Path | None:
    """Writes `<sweep_dir>/sweep_summary.csv` and prints it; None when the folder holds no job."""
    sweep_dir = Path(sweep_dir)
    rows = collect_sweep(sweep_dir)
    if not rows:
        log.warning("sweep summary: no job folders (<job>/.hydra/overrides.yaml) under %s", sweep_dir)
        return None
    columns = summary_columns(rows)
    path = write_csv(sweep_dir / SUMMARY_FILE, rows, columns)
    (console or Console()).print(summary_table(rows, columns, title=f"{sweep_dir} ({len(rows)} runs)"))
    log.info("sweep summary: %s", path)
    return path


def summary_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> Table:
    """The console view: only the overrides that differ between runs, and the overall metrics."""
    overrides = columns[1 : columns.index("status")]
    varying = [k for k in overrides if len({str(r.get(k)) for r in rows}) > 1]
    metrics = [c for c in columns if c.startswith("val/") and c.count("/") == 1]
    shown = ["job", *varying, "status", "best_step", *metrics]
    table = Table(title=title)
    for column in shown:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in shown))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _multirun_job_dir(config: DictConfig) -> Path | None:
    """This job's folder when it is a job of a multirun (single runs and DDP ranks > 0 run in RUN mode)."""
    if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
        return None
    return Path(config.hydra.runtime.output_dir)


class SweepSummary(Callback):
    """Hydra callback: each job's `job_status.json`; `write_sweep_summary(hydra.sweep.dir)` when a multirun ends."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job_dir = _multirun_job_dir(config)
        if job_dir is not None:
            write_job_status(job_dir, RUNNING)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        job_dir = _multirun_job_dir(config)
        if job_dir is None:
            return
        if job_return.status == JobStatus.COMPLETED:
            write_job_status(job_dir, COMPLETED)
        else:
            error = job_return._return_value  # the job's exception (the public getter raises it)
            write_job_status(job_dir, FAILED, describe_error(error) if isinstance(error, BaseException) else None)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(config.hydra.sweep.dir)
