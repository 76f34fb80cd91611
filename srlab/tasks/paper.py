"""The end of `python train.py -m experiment=paper`: the paper report, rendered from the runs of the sweep folder.

`PaperReport` is the sweep's Hydra callback (configs/experiment/paper.yaml puts it in place of the
plain `SweepSummary`, whose job records and sweep_summary.csv it keeps). When the multirun ends it

1. finds each paper run's job folder (`run=<name>` in `paper_runs`; the newest folder of a run
   when the folder holds several), its status and its best checkpoint (`metrics.json` names the
   best step, `checkpoints/best-step<N>.ckpt` holds its weights);
2. renders the report by running the evaluate task as `eval.py` would, in a child process:
   `report=paper`, `ckpt_path={2: <x2 best>, 3: <x3 best>, 4: <x4 best>}`, `report.table1_dir=<sweep>`,
   into `<sweep>/report/` (Tables I-VII as Markdown/CSV/LaTeX under tables/, figures/, results.csv);
3. writes `<sweep>/report/runs.md` (and .csv/.tex) and `<sweep>/report/paper_report.md`: which run
   fed which table, and every run that failed or did not finish, by name.

Why a child process: the callback runs inside Hydra's multirun, whose global state (the composed
train config, HydraConfig, logging to the sweep) an in-process eval would have to swap out and back;
a child gets its own Hydra, logs into the report folder, frees its memory when it ends, cannot leave
the sweep's process in a broken state, and is exactly the command a user can rerun by hand
(`python -m srlab.tasks.paper <sweep dir>` renders the report again without training).

A failed job does not stop the sweep: `on_job_end` records the error (job_status.json, the job's
log) and hands Hydra a finished job, so every other run still trains, the summary and the report
name the failed one, and the command then exits with status 1. A job killed on the way (SIGKILL, a
SLURM time limit without requeue) keeps its `running` record and is named as not finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from srlab.callbacks.sweep_summary import COMPLETED, FAILED, RUNNING, SweepSummary, failure_text, read_job_status
from srlab.data.benchmark import BENCHMARK_SETS, canonical_benchmark
from srlab.eval.report import Table, failed_runs_note, save_table, to_markdown
from srlab.utils.files import atomic_write_text

log = logging.getLogger(__name__)

REPORT_DIR = "report"
# What the child process runs: eval.py's entry point, also without the repository's eval.py (a pip install).
EVAL_ENTRY = "from srlab.cli import eval_main; eval_main()"


@dataclass
class PaperRun:
    """One job folder of the sweep: which paper run it is, how it ended, its best checkpoint."""

    name: str
    job_dir: Path
    scale: int
    variant: str
    status: str  # completed | failed | running | unknown (a folder without job_status.json)
    error: str | None
    best_checkpoint: Path | None
    best_psnr: float | None

    @property
    def usable(self) -> bool:
        """Finished, with a best checkpoint: its scores go into the report."""
        return self.status in (COMPLETED, "unknown") and self.best_checkpoint is not None

    @property
    def problem(self) -> str | None:
        """Why this run is not in the report, or None when it is."""
        if self.status == FAILED:
            return failure_text(self.error)
        if self.status == RUNNING:
            return "not finished (killed, stopped or still running; rerun the command to resume it)"
        if self.best_checkpoint is None:
            return "no best checkpoint (no validation ran)"
        return None


def _best(job_dir: Path) -> tuple[Path | None, float | None]:
    """(best checkpoint, its val/psnr): the step metrics.json records as best, else the newest best-step*.ckpt."""
    metrics_file = job_dir / "metrics.json"
    best = json.loads(metrics_file.read_text()).get("best") if metrics_file.is_file() else None
    psnr = best.get("val/psnr") if best else None
    if best and (job_dir / "checkpoints" / f"best-step{best['step']}.ckpt").is_file():
        return job_dir / "checkpoints" / f"best-step{best['step']}.ckpt", psnr
    candidates = sorted((job_dir / "checkpoints").glob("best-step*.ckpt"), key=lambda p: p.stat().st_mtime)
    return (candidates[-1], psnr) if candidates else (None, psnr)


def find_paper_runs(sweep_dir: str | os.PathLike) -> dict[str, PaperRun]:
    """run name -> its job folder in `sweep_dir` (the most recently started one when there are several)."""
    found: dict[str, tuple[float, PaperRun]] = {}
    for config_file in sorted(Path(sweep_dir).glob("*/.hydra/config.yaml")):
        job_dir = config_file.parent.parent
        cfg = OmegaConf.load(config_file)
        name = cfg.get("run")
        if name is None or name not in (cfg.get("paper_runs") or {}):
            continue
        status = read_job_status(job_dir) or {}
        checkpoint, psnr = _best(job_dir)
        run = PaperRun(str(name), job_dir, int(OmegaConf.select(cfg, "model.scale")),
                       str(OmegaConf.select(cfg, "model.variant")), status.get("status", "unknown"),
                       status.get("error"), checkpoint, psnr)
        started = (job_dir / ".hydra" / "overrides.yaml").stat().st_mtime  # Hydra rewrites it at each job start
        if name not in found or started > found[name][0]:
            found[name] = (started, run)
    return {name: run for name, (_, run) in found.items()}


def hydra_quoted(value: str | os.PathLike) -> str:
    """`value` as a quoted Hydra override value: paths may hold '=' and ',' (job folders are named run=x2)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def eval_overrides(sweep_dir: Path, runs: dict[str, PaperRun], settings: dict[str, Any]) -> tuple[list[str], list]:
    """(eval.py overrides, [(set, why)] of benchmark sets left out) for the report of `runs`."""
    hdsrnet = {run.scale: run for run in runs.values() if run.variant == "full" and run.usable}
    root = Path(settings["benchmark_root"])
    present, missing = [], []
    for name in settings["datasets"]:
        name = canonical_benchmark(str(name))
        (present if (root / name).is_dir() else missing).append(name)
    missing_note = [(name, f"no {root / name} (python -m srlab.data.download benchmarks --root {root.parent})")
                    for name in missing]
    if not hdsrnet:
        present = []  # no HDSRNet weights: Tables I, VI and VII alone
    overrides = [
        f"report={settings['report']}",
        f"hydra.run.dir={hydra_quoted(sweep_dir / REPORT_DIR)}",
        "hydra.output_subdir=null",  # no .hydra/ here: the report folder must not look like a job of the sweep
        f"benchmark_root={hydra_quoted(root)}",
        f"datasets=[{','.join(present)}]",
        f"device={settings['device']}",
    ]
    if hdsrnet:
        mapping = ", ".join(f"{scale}: {hydra_quoted(run.best_checkpoint)}" for scale, run in sorted(hdsrnet.items()))
        overrides += [f"ckpt_path={{{mapping}}}", f"scales=[{','.join(str(s) for s in sorted(hdsrnet))}]"]
    if any(run.scale == 4 for run in runs.values()):
        overrides.append(f"report.table1_dir={hydra_quoted(sweep_dir)}")
    return overrides + [str(o) for o in settings.get("eval_overrides") or []], missing_note


def runs_table(runs: dict[str, PaperRun], order: list[str], sweep_dir: Path) -> Table:
    """One row per paper run: what it trained, how it ended, what it feeds."""
    rows = []
    for name in [*order, *sorted(set(runs) - set(order))]:
        run = runs.get(name)
        if run is None:
            rows.append([name, "-", "-", "not run", "-", "-", "-"])
            continue
        feeds = [table for table, fed in (("Tables II-V", run.variant == "full"), ("Table I", run.scale == 4)) if fed]
        rows.append([name, f"x{run.scale}", run.variant, run.problem or "ok",
                     "-" if run.best_psnr is None else f"{run.best_psnr:.2f}",
                     "-" if run.best_checkpoint is None else run.best_checkpoint.relative_to(sweep_dir).as_posix(),
                     ", ".join(feeds) or "-"])
    header = ["run", "scale", "variant", "status", "best val PSNR (dB)", "best checkpoint", "feeds"]
    return Table("runs", f"Runs of {sweep_dir}", header, rows)


def render_paper_report(sweep_dir: str | os.PathLike, settings: dict[str, Any], order: list[str] | None = None,
                        ) -> list[str]:
    """Renders `<sweep_dir>/report/`; returns the problems (failed or unfinished runs, a failed render), by name."""
    sweep_dir = Path(sweep_dir).resolve()
    runs = find_paper_runs(sweep_dir)
    order = list(order or runs)
    report_dir = sweep_dir / REPORT_DIR
    problems = [f"{name} ({run.problem})" for name, run in runs.items() if run.problem]
    missing = [name for name in order if name not in runs]
    overrides, sets_left_out = eval_overrides(sweep_dir, runs, settings)
    command = [sys.executable, "-c", EVAL_ENTRY, *overrides]
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report_dir / "command.txt", "python eval.py " + " ".join(f'"{o}"' for o in overrides) + "\n")
    log.info("paper report: rendering into %s (eval.py %s)", report_dir, " ".join(overrides))
    result = subprocess.run(command, cwd=os.getcwd(), check=False)
    if result.returncode:
        problems.append(f"the report (eval.py exited {result.returncode}; see {report_dir / 'cli.log'})")

    table = runs_table(runs, order, sweep_dir)
    left_out = [(name, run.problem) for name, run in runs.items() if run.problem]
    left_out += [(name, "not run in this folder") for name in missing]
    if left_out:
        table.notes.append(failed_runs_note(left_out, "the report"))
    if sets_left_out:
        table.notes.append("Benchmark sets not scored: " + "; ".join(f"{n} ({why})" for n, why in sets_left_out) + ".")
    save_table(table, report_dir)
    tables_md = report_dir / "tables" / "paper_tables.md"
    parts = [f"# Paper report: {sweep_dir}\n", to_markdown(table)]
    if tables_md.is_file():
        parts.append(tables_md.read_text())
    report = atomic_write_text(report_dir / "paper_report.md", "\n".join(parts))
    print(to_markdown(table), flush=True)
    log.info("paper report: %s", report)
    return problems


class PaperReport(SweepSummary):
    """The paper sweep's Hydra callback: job records and sweep_summary.csv (SweepSummary), then the paper report.

    Args: `report`: eval.py's report option (`paper`); `debug_report`: the one used when a debug
    config is chosen (`paper_quick`: token timings); `datasets`: the benchmark sets of Tables II-V
    (sets missing under `benchmark_root` are named and skipped); `benchmark_root`: default
    `<paths.data_dir>/benchmark`; `device`: eval.py's device; `eval_overrides`: more eval.py overrides.
    """

    def __init__(self, report: str = "paper", debug_report: str = "paper_quick",
                 datasets: list[str] | tuple[str, ...] = BENCHMARK_SETS,
                 benchmark_root: str | None = None, device: str = "auto", eval_overrides: list[str] | None = None):
        self.settings = {"report": report, "debug_report": debug_report, "datasets": list(datasets),
                         "benchmark_root": benchmark_root, "device": device,
                         "eval_overrides": list(eval_overrides or [])}

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        super().on_job_end(config, job_return)  # job_status.json: completed, or failed with the error
        if job_return.status != JobStatus.FAILED:
            return
        # Hydra's sweepers raise the first failed job's exception once the jobs have run, which would skip
        # the end-of-sweep callbacks; this job's error is recorded, so the sweep ends normally and names it.
        log.error("run %s failed; the other runs go on and the report names it", config.hydra.runtime.output_dir,
                  exc_info=job_return._return_value)
        job_return.status = JobStatus.COMPLETED
        job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # `${hydra:...}` in paths.* resolves against this sweep
        super().on_multirun_end(config)
        settings = dict(self.settings)
        if OmegaConf.select(config, "hydra.runtime.choices.debug"):
            settings["report"] = settings["debug_report"]
        settings["benchmark_root"] = settings["benchmark_root"] or f"{config.paths.data_dir}/benchmark"
        order = list(OmegaConf.select(config, "paper_runs") or [])
        problems = render_paper_report(config.hydra.sweep.dir, settings, order)
        if problems:
            log.error("paper sweep: not everything is in the report: %s", "; ".join(problems))
            raise SystemExit(1)  # not an Exception: Hydra would turn that into a warning and exit 0


def main(argv: list[str] | None = None) -> int:
    """`python -m srlab.tasks.paper <sweep dir> [eval.py overrides]`: the report of a sweep folder, no training."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--report", default="paper", help="eval.py report option (paper, paper_quick)")
    parser.add_argument("--benchmark-root", default="data/benchmark")
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", help="more eval.py overrides, e.g. tile=200")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = {"report": args.report, "datasets": list(BENCHMARK_SETS),
                "benchmark_root": args.benchmark_root, "device": args.device, "eval_overrides": args.overrides}
    problems = render_paper_report(args.sweep_dir, settings)
    for problem in problems:
        print(f"not in the report: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
