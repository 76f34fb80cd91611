"""The evaluate task (what `eval.py` runs): score a model on the benchmark matrix and render the paper's tables.

- ``task=benchmark`` (default): for every scale x dataset, score the model with the SR
  protocol (docs/protocol.md) and write into the run folder ``results.csv`` (model, dataset,
  scale, psnr, ssim, paper_psnr, paper_ssim), ``per_image.csv``, optional SR PNGs and
  comparison figures. ``report=paper`` also scores MATLAB bicubic and renders Tables II-V
  (and I, VI, VII, see configs/report/paper.yaml) into ``tables/``.
- ``task=upscale``: `srlab.tasks.upscale`.
- ``task=export``: `srlab.tasks.export` (an ONNX or TorchScript file for deployment).

Weights come from ``ckpt_path`` (`srlab.tasks.weights`). A problem with the configuration
raises :class:`EvalError`, which `eval.py` prints as one line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from srlab.data.benchmark import canonical_benchmark, load_benchmark, load_image_folder
from srlab.data.datasets import EvalDataset
from srlab.data.io import tensor_to_uint8, write_image
from srlab.eval.complexity import complexity_table, runtime_table
from srlab.eval.figures import Panel, comparison_figure
from srlab.eval.paper import dataset_table, paper_value
from srlab.eval.report import Table, benchmark_table, save_table, table1, to_markdown
from srlab.eval.scoring import ImageScore, mean_scores, score_dataset
from srlab.metrics.sr_metrics import prepare_for_scoring
from srlab.models.bicubic import Bicubic
from srlab.tasks.checks import ConfigError, EvalError
from srlab.tasks.export import run_export
from srlab.tasks.loggers import finish_wandb, instantiate_loggers, prepare_wandb_env
from srlab.tasks.upscale import run_upscale
from srlab.tasks.weights import load_model, make_forward, model_label, plan_sources, resolve_device
from srlab.utils.files import atomic_write_text, write_csv

log = logging.getLogger(__name__)

RESULT_FIELDS = ("model", "dataset", "scale", "psnr", "ssim", "paper_psnr", "paper_ssim")
IMAGE_FIELDS = ("model", "dataset", "scale", "image", "psnr", "ssim")
TASKS = ("benchmark", "upscale", "export")


# -- benchmark ---------------------------------------------------------------------------------
def _paper(dataset: str, scale: int, label: str) -> tuple[float | None, float | None]:
    try:
        value = paper_value(dataset, scale, label)
    except ValueError:  # a method the paper does not list (HRN, a variant...)
        return None, None
    return value if value is not None else (None, None)


class _FigureSink:
    """Keeps the SR of the figure images while a dataset is scored."""

    def __init__(self, names: set[str], dataset: EvalDataset):
        self.indices = {i for i, p in enumerate(dataset.pairs) if p.name in names}
        self.outputs: dict[int, torch.Tensor] = {}

    def __call__(self, index: int, sr: torch.Tensor) -> None:
        if index in self.indices:
            self.outputs[index] = sr.detach().to("cpu")


def _figure_names(cfg: DictConfig, dataset: str, pairs) -> set[str]:
    chosen = (cfg.figures.get("images") or {}).get(dataset)
    if not chosen:
        return {pairs[0].name}  # the paper names no image files: the first of each set
    names = {str(n) for n in chosen}
    unknown = names - {p.name for p in pairs}
    if unknown:
        raise EvalError(f"figures.images.{dataset}: {sorted(unknown)} not in {dataset}")
    return names


def _draw_figures(cfg: DictConfig, out_dir: Path, label: str, dataset: EvalDataset, sink: _FigureSink,
                  scores: list[ImageScore], loggers: list) -> list[Path]:
    paths = []
    box = cfg.figures.get("box")
    for index, sr in sorted(sink.outputs.items()):
        item = dataset[index]
        bicubic = Bicubic(dataset.scale)(item["lr"].unsqueeze(0))
        # PSNR alone (the label): the protocol's scoring without the costly SSIM.
        bic_y, hr_y = prepare_for_scoring(bicubic, item["hr"].unsqueeze(0), dataset.scale, grey=item["grey"])
        panels = [Panel("Bicubic", tensor_to_uint8(bicubic[0]), float(peak_signal_noise_ratio(bic_y, hr_y, 255.0)))]
        if label != "Bicubic":
            panels.append(Panel(label, tensor_to_uint8(sr), scores[index].psnr))
        figure = comparison_figure(tensor_to_uint8(item["hr"]), panels, tuple(box) if box else None,
                                   title=f"{dataset.name} {item['name']} x{dataset.scale}")
        path = out_dir / "figures" / f"{dataset.name}_x{dataset.scale}_{item['name']}.png"
        write_image(path, figure)
        paths.append(path)
        for logger in loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key=f"figures/{dataset.name}_x{dataset.scale}", images=[figure],
                                 caption=[item["name"]])
    return paths


def _write_results(out_dir: Path, results: list[dict], per_image: list[dict]) -> None:
    write_csv(out_dir / "results.csv", results, RESULT_FIELDS)
    write_csv(out_dir / "per_image.csv", per_image, IMAGE_FIELDS)


@torch.inference_mode()
def _score_model(cfg: DictConfig, model: nn.Module, label: str, scale: int, sets: dict[str, EvalDataset],
                 out_dir: Path, results: list[dict], per_image: list[dict], loggers: list,
                 figures: bool) -> None:
    forward = make_forward(cfg, model, scale)
    device = resolve_device(cfg.device)
    for name, dataset in sets.items():
        save_dir = out_dir / "images" / label / name / f"x{scale}" if cfg.save_images else None
        sink = _FigureSink(_figure_names(cfg, name, dataset.pairs), dataset) if figures else None

        def on_image(index: int, sr: torch.Tensor, save_dir=save_dir, dataset=dataset, sink=sink) -> None:
            if save_dir is not None:
                write_image(save_dir / f"{dataset.pairs[index].name}.png", tensor_to_uint8(sr))
            if sink is not None:
                sink(index, sr)

        scores = score_dataset(forward, dataset, device, on_image=on_image)
        psnr, ssim = mean_scores(scores)
        paper_psnr, paper_ssim = _paper(name, scale, label)
        results.append({"model": label, "dataset": name, "scale": scale, "psnr": f"{psnr:.4f}", "ssim": f"{ssim:.6f}",
                        "paper_psnr": None if paper_psnr is None else f"{paper_psnr:.2f}",
                        "paper_ssim": None if paper_ssim is None else f"{paper_ssim:.4f}"})
        per_image += [{"model": label, "dataset": name, "scale": scale, "image": s.image,
                       "psnr": f"{s.psnr:.4f}", "ssim": f"{s.ssim:.6f}"} for s in scores]
        paper = "" if paper_psnr is None else f" (paper {paper_psnr:.2f}/{paper_ssim:.4f})"
        log.info("%s x%d %s: %.2f dB / %.4f%s", label, scale, name, psnr, ssim, paper)
        for logger in loggers:
            logger.log_metrics({f"{label}/{name}/x{scale}/psnr": psnr, f"{label}/{name}/x{scale}/ssim": ssim})
        if sink is not None:
            _draw_figures(cfg, out_dir, label, dataset, sink, scores, loggers)
        _write_results(out_dir, results, per_image)  # after every set: a crash keeps what is done


def _looks_like_path(entry: str) -> bool:
    return any(sep in entry for sep in ("/", "\\")) or entry.startswith(("~", "."))


def _checked_set(root: Path, entry: str) -> tuple[str, Path | None]:
    """(name, folder) of one `datasets` entry, checked before any scoring starts.

    A benchmark name or alias (Set5, U100...) is that set under `root`: (canonical name, None). Any
    other entry naming a folder is that folder, scored as a set named after it: (folder name, folder).
    """
    entry = str(entry)
    try:
        name = canonical_benchmark(entry)
    except ValueError as err:
        folder = Path(entry).expanduser()
        if folder.is_dir():
            return folder.resolve().name, folder
        if _looks_like_path(entry):
            raise EvalError(f"datasets: {entry} is not a folder (give a benchmark name or a folder of images)") from err
        raise EvalError(f"datasets: {err}, or a folder of images (e.g. datasets=[Set5,/path/to/my_set])") from err
    if not (root / name).is_dir():
        raise EvalError(f"benchmark_root={root}: no {name} folder (download: python -m srlab.data.download "
                        f"benchmarks --root {root.parent} --names {name})")
    return name, None


def _checked_sets(root: Path, entries) -> dict[str, Path | None]:
    """{set name: its folder, or None for a benchmark set under `root`}, in the given order; names are unique."""
    sets: dict[str, Path | None] = {}
    for entry in entries:
        name, folder = _checked_set(root, entry)
        if name in sets:
            raise EvalError(f"datasets: two entries are named {name} (results.csv names each set once); "
                            "rename a folder or drop the duplicate")
        sets[name] = folder
    return sets


def run_benchmark(cfg: DictConfig, loggers: list | None = None) -> list[dict]:
    """The datasets x scales matrix (plus Bicubic when report=paper); returns the rows of results.csv."""
    if not cfg.datasets:
        return []
    sources = plan_sources(cfg)
    root = Path(cfg.benchmark_root)
    names = _checked_sets(root, cfg.datasets)
    out_dir = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    loggers = loggers or []
    results: list[dict] = []
    per_image: list[dict] = []
    for scale, source in sources.items():
        sets = {}
        for name, folder in names.items():
            try:
                pairs = load_benchmark(root, name, scale) if folder is None else load_image_folder(folder, scale)
                sets[name] = EvalDataset(name, pairs, scale)
            except (FileNotFoundError, ValueError) as err:
                raise EvalError(str(err)) from err
        log.info("loading %s", source.describe())
        model = load_model(source, cfg.model, device)
        label = model_label(model, cfg.get("model_name"))
        figures = bool(cfg.figures.enabled)
        _score_model(cfg, model, label, scale, sets, out_dir, results, per_image, loggers, figures)
        if cfg.get("report") is not None and label != "Bicubic":
            _score_model(cfg, Bicubic(scale).to(device), "Bicubic", scale, sets, out_dir, results, per_image,
                         loggers, figures=False)
        del model
    log.info("results: %s", out_dir / "results.csv")
    return results


# -- the paper report --------------------------------------------------------------------------
def _models_at(models_cfg: DictConfig, scale: int) -> dict[str, Callable[[], nn.Module]]:
    return {label: partial(hydra.utils.instantiate, c, scale=scale) for label, c in models_cfg.items()}


def paper_report(cfg: DictConfig, results: list[dict], console: Console | None = None) -> list[Table]:
    """Tables II-V from `results`, Table I from `report.table1_dir`, Tables VI and VII measured here."""
    console = console or Console()
    out_dir = Path(cfg.paths.output_dir) / "tables"
    paper = cfg.report
    label = next((r["model"] for r in results if r["model"] != "Bicubic"), "Bicubic")
    tables = []
    if paper.get("table1_dir"):
        try:
            tables.append(table1(paper.table1_dir))
        except (FileNotFoundError, ValueError) as err:
            raise EvalError(f"report.table1_dir: {err}") from err
    else:
        log.info("Table I skipped: set report.table1_dir=<a finished Table I multirun folder>")
    for name in dict.fromkeys(r["dataset"] for r in results):
        try:
            dataset_table(name)
        except ValueError as err:  # a set the paper does not report has no paper table to sit beside
            log.info("no paper table for %s: %s", name, err)
            continue
        # Only this set's rows: the others may be folders (eval.py datasets=[Set5,/my/set]) with no paper name.
        tables.append(benchmark_table(name, [r for r in results if r["dataset"] == name], label))
    if paper.runtime.enabled:
        models = {name: factory() for name, factory in _models_at(paper.runtime.models, paper.runtime.scale).items()}
        table, _ = runtime_table(models, resolve_device(cfg.device), list(paper.runtime.sizes), paper.runtime.scale,
                                 paper.runtime.warmup, paper.runtime.repeats)
        tables.append(table)
    if paper.complexity.enabled:
        table, _ = complexity_table(_models_at(paper.complexity.models, paper.complexity.scale),
                                    paper.complexity.output_size, paper.complexity.scale)
        tables.append(table)
    combined = []
    for table in tables:
        save_table(table, out_dir)
        markdown = to_markdown(table)
        combined.append(markdown)
        console.print(markdown, markup=False, highlight=False, soft_wrap=True)  # no wrapping: valid Markdown
    atomic_write_text(out_dir / "paper_tables.md", "\n".join(combined))
    log.info("tables (Markdown, CSV, LaTeX): %s", out_dir)
    return tables


# -- entry -------------------------------------------------------------------------------------
def check_config(cfg: DictConfig) -> None:
    if cfg.task not in TASKS:
        raise EvalError(f"task={cfg.task}: choose one of {', '.join(TASKS)}")
    if not isinstance(cfg.datasets, (ListConfig, list)):
        raise EvalError(f"datasets={cfg.datasets}: give a list such as [Set5,Set14]")
    if not cfg.datasets and not (cfg.task == "benchmark" and cfg.get("report") is not None):
        raise EvalError("datasets=[] scores nothing; give e.g. datasets=[Set5,Set14] (an empty list is only "
                        "for report=paper, to render Tables I, VI and VII alone)")


def evaluate(cfg: DictConfig) -> int:
    """Run the configured task; returns the process exit code."""
    check_config(cfg)
    if cfg.task == "upscale":
        return run_upscale(cfg)
    if cfg.task == "export":
        return run_export(cfg)
    prepare_wandb_env(cfg)
    loggers = instantiate_loggers(cfg, Path(cfg.paths.output_dir))
    failed = True
    try:
        results = run_benchmark(cfg, loggers)
        if cfg.get("report") is not None:
            paper_report(cfg, results)
        failed = False
    finally:
        for logger in loggers:
            logger.finalize("failed" if failed else "success")  # e.g. CSVLogger writes its file here
        finish_wandb(failed)
    return 0


def run_eval_cli(cfg: DictConfig) -> None:
    """`evaluate` for a command line: a config mistake is one line on stderr and exit code 2, no traceback."""
    try:
        code = evaluate(cfg)
    except ConfigError as err:
        print(f"eval.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    if code:
        sys.exit(code)
