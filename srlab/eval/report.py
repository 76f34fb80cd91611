"""The paper's tables beside srlab's numbers, rendered as Markdown, CSV and LaTeX.

- :func:`benchmark_table`: Tables II-V in the paper's layout (every compared
  method's paper numbers), then srlab's measured rows and the delta of the
  measured HDSRNet to the paper's.
- :func:`collect_table1` / :func:`table1`: Table I from a finished ablation
  multirun folder (one job folder per variant, as `train.py -m` writes them),
  at x4 only; failed or unfinished runs are named in a note (:func:`failed_runs_note`).
- :class:`Table` with :func:`to_markdown`, :func:`to_csv`, :func:`to_latex`
  and :func:`save_table`: one table model, three renderers, atomic writes
  (:mod:`srlab.utils.files`).

Tables VI and VII are measured in :mod:`srlab.eval.complexity`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from omegaconf import OmegaConf

from srlab.callbacks.sweep_summary import FAILED, RUNNING, failure_text, read_job_status
from srlab.data.benchmark import canonical_benchmark
from srlab.eval.paper import dataset_table, load_paper_tables, roman_numeral, table1_rows
from srlab.scales import SUPPORTED_SCALES
from srlab.utils.files import atomic_write_text

log = logging.getLogger(__name__)

TABLE1_SCALE = 4  # the paper's Table I compares the variants at x4 (on Urban100)

__all__ = [
    "LeftOut",
    "Table",
    "benchmark_table",
    "collect_table1",
    "failed_runs_note",
    "save_table",
    "scan_table1",
    "table1",
    "to_csv",
    "to_latex",
    "to_markdown",
]


# -- the table model and its renderers ---------------------------------------------------------
@dataclass
class Table:
    """A rendered table: `name` is the file stem (table2...), cells are already formatted strings."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def to_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    return buffer.getvalue()


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "×": r"$\times$", "Δ": r"$\Delta$", "−": "$-$", "≈": r"$\approx$"}


def _tex(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A `table` float with a booktabs `tabular` (needs \\usepackage{booktabs})."""
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(table.title)}}}",
             r"\begin{tabular}{" + "l" * len(table.header) + "}", r"\toprule",
             " & ".join(_tex(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {_tex(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


def save_table(table: Table, folder: str | os.PathLike) -> dict[str, Path]:
    """<folder>/<name>.md, .csv and .tex."""
    folder = Path(folder)
    return {
        "md": atomic_write_text(folder / f"{table.name}.md", to_markdown(table)),
        "csv": atomic_write_text(folder / f"{table.name}.csv", to_csv(table)),
        "tex": atomic_write_text(folder / f"{table.name}.tex", to_latex(table)),
    }


# -- Tables II-V ---------------------------------------------------------------------------
def _cell(psnr: float | None, ssim: float | None) -> str:
    return "-" if psnr is None or ssim is None else f"{psnr:.2f}/{ssim:.4f}"


def _printed_method(row: dict) -> str:
    if row.get("ours"):
        return f"{row['method']} (Ours)"
    return row["method"] if row.get("ref") is None else f"{row['method']} [{row['ref']}]"


def _measured(results: Sequence[dict], model: str, dataset: str, scale: int) -> tuple[float, float] | None:
    for r in results:
        if r["model"] == model and canonical_benchmark(r["dataset"]) == dataset and int(r["scale"]) == scale:
            return float(r["psnr"]), float(r["ssim"])
    return None


def benchmark_table(dataset: str, results: Sequence[dict], model: str = "HDSRNet",
                    scales: Sequence[int] = SUPPORTED_SCALES) -> Table:
    """Table II/III/IV/V for `dataset`: the paper's rows, srlab's measured Bicubic and `model`, and the delta.

    `results` are rows of results.csv (model, dataset, scale, psnr, ssim). The
    delta row is measured `model` minus the paper's HDSRNet at each scale.
    """
    dataset = canonical_benchmark(dataset)
    key = dataset_table(dataset)
    roman = roman_numeral(key)
    paper = load_paper_tables()[key]
    scale_cols = [f"×{s}" for s in scales]
    header = ["Dataset", "Methods", *scale_cols]
    rows = [["", "", *["PSNR(dB)/SSIM"] * len(scales)]]
    paper_hdsrnet: dict[int, tuple[float, float] | None] = {}
    for row in paper["rows"]:
        cells = []
        for s in scales:
            value = row.get(f"x{s}")
            cells.append(_cell(value["psnr"], value["ssim"]) if value else "-")
            if row.get("ours"):
                paper_hdsrnet[s] = (value["psnr"], value["ssim"]) if value else None
        rows.append([paper["dataset_printed"] if len(rows) == 1 else "", _printed_method(row), *cells])
    for label in dict.fromkeys(["Bicubic", model]):
        measured = [_measured(results, label, dataset, s) for s in scales]
        rows.append(["", f"{label} (srlab, measured)", *[_cell(*(m or (None, None))) for m in measured]])
    deltas = []
    for s in scales:
        measured, reference = _measured(results, model, dataset, s), paper_hdsrnet.get(s)
        if measured is None or reference is None:
            deltas.append("-")
        else:
            deltas.append(f"{measured[0] - reference[0]:+.2f}/{measured[1] - reference[1]:+.4f}")
    rows.append(["", f"Δ {model} (srlab) − HDSRNet (paper)", *deltas])
    notes = [f"Paper rows: Tian et al. 2024, Table {roman}. srlab rows: this run, Y channel, shave = scale, "
             "MATLAB-bicubic LR (docs/protocol.md)."]
    return Table(key, f"TABLE {roman}: {paper['caption']}", header, rows, notes)


# -- Table I -----------------------------------------------------------------------------------
def _best_scores(metrics_csv: Path) -> tuple[float, float, int]:
    """(best val/psnr, val/ssim on the same row, step) from a Lightning CSVLogger metrics.csv."""
    best = None
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            psnr, ssim = row.get("val/psnr") or "", row.get("val/ssim") or ""
            if not psnr or not ssim or math.isnan(float(psnr)):
                continue
            if best is None or float(psnr) > best[0]:
                best = (float(psnr), float(ssim), int(float(row.get("step") or 0)))
    if best is None:
        raise ValueError(f"{metrics_csv}: no row with val/psnr and val/ssim (did validation run?)")
    return best


def _val_sets(metrics_csv: Path) -> list[str]:
    with open(metrics_csv, newline="") as f:
        header = next(csv.reader(f), [])
    return [c.split("/")[1] for c in header if c.startswith("val/") and c.count("/") == 2 and c.endswith("/psnr")]


def _table1_runs(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """(job folder, {variant, scale}) of each HDSRNet run in a multirun folder (other jobs are skipped)."""
    runs = []
    for config_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        run_dir = config_file.parent.parent
        cfg = OmegaConf.load(config_file)
        variant = OmegaConf.select(cfg, "model.variant")
        if variant is None:
            log.warning("%s: no model.variant in its config; not an HDSRNet ablation run, skipped", run_dir)
            continue
        runs.append((run_dir, {"variant": variant, "scale": OmegaConf.select(cfg, "model.scale")}))
    return runs


def _table1_scale(scales: set, wanted: int | None) -> int:
    """The scale Table I compares at: `wanted`, else x4 (the paper's) when present, else the folder's only scale."""
    if wanted is not None:
        return wanted
    if TABLE1_SCALE in scales:
        return TABLE1_SCALE
    if len(scales) == 1:
        return next(iter(scales))
    raise ValueError(f"runs at scales {sorted(scales, key=str)} and none at x{TABLE1_SCALE}: Table I compares the "
                     f"variants at one scale (x{TABLE1_SCALE} in the paper)")


class LeftOut(NamedTuple):
    """A run of a Table I folder that has no score in the table, and why."""

    run: str  # the job folder's name
    variant: str
    why: str
    other_scale: bool = False  # a run at another scale (HDSRNet x2/x3 of a whole-paper sweep), not a failure


def scan_table1(sweep_dir: str | os.PathLike, scale: int | None = None) -> tuple[list[dict], list[LeftOut]]:
    """(entries, left out) of a Table I multirun folder: `collect_table1`'s entries, and each run that is
    not in them: a failed or unfinished run (`job_status.json`), a run without validation scores, a run
    at another scale."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: Table I sweep folder does not exist")
    runs = _table1_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"{sweep_dir}: no finished runs (<job>/.hydra/config.yaml) in this folder")
    scale = _table1_scale({info["scale"] for _, info in runs}, scale)
    found: dict[str, dict] = {}
    left_out: list[LeftOut] = []
    for run_dir, info in runs:
        variant = info["variant"]
        if info["scale"] != scale:
            left_out.append(LeftOut(run_dir.name, variant, f"x{info['scale']}", other_scale=True))
            continue
        status = read_job_status(run_dir) or {}
        if status.get("status") == FAILED:
            left_out.append(LeftOut(run_dir.name, variant, failure_text(status.get("error"))))
            continue
        if status.get("status") == RUNNING:
            left_out.append(LeftOut(run_dir.name, variant, "not finished (killed, stopped or still running)"))
            continue
        metrics = run_dir / "csv" / "metrics.csv"
        try:
            psnr, ssim, step = _best_scores(metrics)
        except FileNotFoundError:
            why = f"no {metrics.relative_to(run_dir)} (Table I reads each run's CSV log)"
            left_out.append(LeftOut(run_dir.name, variant, why))
            continue
        except ValueError:
            left_out.append(LeftOut(run_dir.name, variant, "no validation score"))
            continue
        entry = {"variant": variant, "psnr": psnr, "ssim": ssim, "step": step, "scale": info["scale"],
                 "val_set": ", ".join(_val_sets(metrics)), "run_dir": str(run_dir)}
        if variant not in found or psnr > found[variant]["psnr"]:
            found[variant] = entry
    order = [r["variant"] for r in table1_rows()]
    entries = sorted(found.values(), key=lambda e: order.index(e["variant"]) if e["variant"] in order else len(order))
    return entries, left_out


def collect_table1(sweep_dir: str | os.PathLike, scale: int | None = None) -> list[dict]:
    """Best validation score of each HDSRNet variant in a finished multirun folder, at one scale.

    Each job folder holds `.hydra/config.yaml` (its `model.variant` and `model.scale`) and
    `csv/metrics.csv`. Only runs at `scale` count: by default x4, the paper's Table I scale, when the
    folder holds x4 runs (a whole-paper sweep also holds HDSRNet x2 and x3), else the folder's one
    scale (a smoke sweep). A variant run more than once keeps its best run; failed and unfinished
    runs are left out (`scan_table1` names them).
    Returns dicts {variant, psnr, ssim, step, scale, val_set, run_dir} in paper row order.
    """
    return scan_table1(sweep_dir, scale)[0]


def failed_runs_note(runs: Sequence[tuple[str, str]], what: str = "this table") -> str:
    """'Runs not in <what>: <run> (<why>); ...', the note that names every run a report leaves out."""
    return f"Runs not in {what}: " + "; ".join(f"{name} ({why})" for name, why in runs) + "."


def table1(sweep_dir: str | os.PathLike, scale: int | None = None) -> Table:
    """Table I: the paper's U100 x4 ablation rows beside each variant's best score in `sweep_dir` (at x4)."""
    entries, left_out = scan_table1(sweep_dir, scale)
    measured = {e["variant"]: e for e in entries}
    header = ["Methods", "variant", "paper PSNR(dB)/SSIM", "srlab PSNR(dB)/SSIM", "Δ srlab − paper"]
    rows = []
    for row in table1_rows():
        m = measured.get(row["variant"])
        delta = "-" if m is None else f"{m['psnr'] - row['psnr']:+.2f}/{m['ssim'] - row['ssim']:+.4f}"
        rows.append([row["method"], row["variant"], _cell(row["psnr"], row["ssim"]),
                     "-" if m is None else _cell(m["psnr"], m["ssim"]), delta])
    sets = sorted({(m["val_set"], m["scale"]) for m in measured.values()}, key=str)
    where = "; ".join(f"{name or '?'} x{run_scale}" for name, run_scale in sets) or "no run with a score"
    notes = ["Paper: Urban100 (U100) x4. srlab: best val/psnr of each run (val/ssim on the same step), measured on "
             f"{where}, from {Path(sweep_dir)}."]
    failed = [run for run in left_out if not run.other_scale]
    tried = {run.variant for run in failed}
    missing = [r["variant"] for r in table1_rows() if r["variant"] not in measured and r["variant"] not in tried]
    if missing:
        notes.append(f"Not in the sweep: {', '.join(missing)}.")
    if failed:
        notes.append(failed_runs_note([(run.run, run.why) for run in failed], "Table I"))
    other_scales = [f"{run.run} ({run.why})" for run in left_out if run.other_scale]
    if other_scales:
        notes.append(f"Runs at other scales, not Table I rows: {', '.join(other_scales)}.")
    return Table("table1", "TABLE I: PSNR AND SSIM OF DIFFERENT METHODS ON U100 FOR X4.", header, rows, notes)
