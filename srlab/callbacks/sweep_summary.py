"""At the end of a Hydra multirun, one CSV row per job: its overrides and its best validation metrics.

`SweepSummary` is a Hydra callback (configured under `hydra.callbacks`), so it runs
once in the process that launched the sweep, after every job has finished, whatever
the launcher (basic, joblib, SLURM). It reads what each job left in its folder:
`.hydra/overrides.yaml`, `.hydra/hydra.yaml` (the job number) and `metrics.json`
(written by `srlab.callbacks.MetricsFile`), and writes `<sweep dir>/sweep_summary.csv`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from srlab.utils.files import write_csv

log = logging.getLogger(__name__)

SUMMARY_FILE = "sweep_summary.csv"


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


class SweepSummary(Callback):
    """Hydra callback: `write_sweep_summary(hydra.sweep.dir)` when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(config.hydra.sweep.dir)
