"""What `eval.py` does: score a model on the benchmark matrix, render the paper's tables, or upscale user images.

- ``task=benchmark`` (default): for every scale x dataset, score the model with
  the paper protocol (DESIGN.md §3) and write into the run folder
  ``results.csv`` (model, dataset, scale, psnr, ssim, paper_psnr, paper_ssim),
  ``per_image.csv``, optional SR PNGs and comparison figures. ``report=paper``
  also scores MATLAB bicubic and renders Tables II-V (and I, VI, VII, see the
  ``paper`` config block) into ``tables/``.
- ``task=upscale``: every image of ``input`` (a file or a folder) upscaled into
  ``output``; unreadable files are reported and skipped.

Weights: ``ckpt_path`` is a Lightning checkpoint of `train.py` (it holds the
model config), a plain weights file for the configured model (e.g. the
authors' ``HDSRNet_x4.pt`` with ``model=hdsrnet_reference``), or a mapping
scale -> file. Parameter-free models (bicubic) need none. A problem with the
configuration raises :class:`EvalError`, which `eval.py` prints as one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio
from tqdm.auto import tqdm

from srlab.data.benchmark import load_benchmark
from srlab.data.datasets import EvalDataset, to_tensor
from srlab.data.io import IMAGE_SUFFIXES, ImageReadError, read_image, tensor_to_uint8, write_image
from srlab.eval.complexity import complexity_table, runtime_table
from srlab.eval.evaluate import ImageScore, mean_scores, score_dataset
from srlab.eval.figures import Panel, comparison_figure
from srlab.eval.inference import make_inference, receptive_radius
from srlab.eval.paper import canonical_dataset, paper_value
from srlab.eval.report import Table, atomic_write_text, benchmark_table, save_table, table1, to_markdown, write_csv
from srlab.metrics.sr_metrics import prepare_for_scoring
from srlab.models.bicubic import Bicubic
from srlab.module import SRModule
from srlab.runner import finish_wandb, instantiate_loggers, prepare_wandb_env
from srlab.utils.checks import ConfigError, load_checkpoint_hparams

log = logging.getLogger(__name__)

RESULT_FIELDS = ("model", "dataset", "scale", "psnr", "ssim", "paper_psnr", "paper_ssim")
IMAGE_FIELDS = ("model", "dataset", "scale", "image", "psnr", "ssim")
TASKS = ("benchmark", "upscale")
REPORTS = (None, "paper")


class EvalError(ConfigError):
    """A configuration or input problem; eval.py prints its message as one line and exits non-zero."""


# -- weights -----------------------------------------------------------------------------------
@dataclass
class ModelSource:
    """How to build the model for one scale: a Lightning checkpoint, a weights file, or the config alone."""

    scale: int
    lightning_ckpt: Path | None = None
    weights: Path | None = None

    def describe(self) -> str:
        path = self.lightning_ckpt or self.weights
        return f"x{self.scale} from {path}" if path else f"x{self.scale} from the model config"


def _lightning_scale(path: Path) -> int | None:
    """The model scale stored in a Lightning checkpoint of SRModule, or None if `path` is not one."""
    try:
        hparams = load_checkpoint_hparams(path)
    except ConfigError:  # a plain weights file (or unreadable: its loader will say so)
        return None
    model_cfg = hparams.get("model") or {}
    if "scale" not in model_cfg:
        raise EvalError(f"ckpt_path={path}: checkpoint without hyper_parameters.model.scale (not from srlab?)")
    return int(model_cfg["scale"])


def _source_for(path: str, scale: int | None, model_cfg: DictConfig) -> ModelSource:
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise EvalError(f"ckpt_path={path}: no such file")
    ckpt_scale = _lightning_scale(file)
    if ckpt_scale is not None:
        if scale is not None and ckpt_scale != scale:
            raise EvalError(f"ckpt_path[{scale}]={path} is a x{ckpt_scale} checkpoint, listed under x{scale}")
        return ModelSource(ckpt_scale, lightning_ckpt=file)
    return ModelSource(int(scale if scale is not None else model_cfg.scale), weights=file)


def _has_parameters(model_cfg: DictConfig) -> bool:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = hydra.utils.instantiate(model_cfg)
    return any(True for _ in model.parameters())


def _self_loading(model_cfg: DictConfig) -> bool:
    """Model configs with a `path` (model=hdsrnet_reference) load their weights themselves."""
    return "path" in model_cfg.keys()  # `in` alone is False while the value is still ??? (missing)


def plan_sources(cfg: DictConfig, scales: list[int] | None = None) -> dict[int, ModelSource]:
    """scale -> ModelSource for each of `scales` (default cfg.scales) that has weights; checks come first.

    Parameter-free models run at every requested scale; a checkpoint only at its own.
    """
    requested = [int(s) for s in (scales or cfg.scales)]
    bad = [s for s in requested if s not in (2, 3, 4)]
    if bad or not requested:
        raise EvalError(f"scales={list(requested)}: choose from 2, 3 and 4")
    ckpt, model_cfg = cfg.get("ckpt_path"), cfg.model
    if isinstance(ckpt, (DictConfig, Mapping)):
        sources = {}
        for key, path in ckpt.items():
            scale = str(key).lower().removeprefix("x")
            if not scale.isdigit():
                raise EvalError(f"ckpt_path: key {key!r} is not a scale; write ckpt_path='{{2: a.ckpt, 4: b.ckpt}}'")
            sources[int(scale)] = _source_for(path, int(scale), model_cfg)
    elif ckpt:
        source = _source_for(ckpt, None, model_cfg)
        sources = {source.scale: source}
    elif _self_loading(model_cfg):
        if OmegaConf.is_missing(model_cfg, "path"):
            raise EvalError("this model loads its own weights: set model.path=<file> (or ckpt_path=<file>)")
        sources = {int(model_cfg.scale): ModelSource(int(model_cfg.scale))}
    elif _has_parameters(model_cfg):
        target = str(model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
        raise EvalError(
            f"ckpt_path is required: {target} has parameters (give a train.py checkpoint, "
            "e.g. ckpt_path=outputs/<run>/checkpoints/last.ckpt, or ckpt_path='{2: a.ckpt, 4: b.ckpt}')"
        )
    else:
        return {s: ModelSource(s) for s in requested}
    chosen = {s: sources[s] for s in requested if s in sources}
    if not chosen:
        have = ", ".join(f"x{s}" for s in sorted(sources))
        fix = ",".join(map(str, sorted(sources)))
        raise EvalError(f"the weights given are for {have}, but scales={requested}; set scales=[{fix}]")
    skipped = sorted(set(requested) - set(chosen))
    if skipped:
        log.info("no weights for x%s: evaluating %s only", ",x".join(map(str, skipped)),
                 ", ".join(f"x{s}" for s in chosen))
    return chosen


def build_model(source: ModelSource, model_cfg: DictConfig, device: torch.device) -> nn.Module:
    if source.lightning_ckpt is not None:
        model = SRModule.load_from_checkpoint(source.lightning_ckpt, map_location=device).model
    elif source.weights is not None and _self_loading(model_cfg):
        model = hydra.utils.instantiate(model_cfg, path=str(source.weights), scale=source.scale)
    else:
        model = hydra.utils.instantiate(model_cfg, scale=source.scale)
        if source.weights is not None:
            state = torch.load(source.weights, map_location="cpu", weights_only=True)
            try:
                model.load_state_dict(state.get("state_dict", state) if isinstance(state, Mapping) else state)
            except (RuntimeError, TypeError) as err:
                raise EvalError(f"ckpt_path={source.weights}: does not fit {type(model).__name__} x{source.scale}: "
                                f"{str(err).splitlines()[0]}") from err
    return model.to(device).eval()


def model_label(model: nn.Module, name: str | None = None) -> str:
    """The row name: the class name as the paper prints it (HDSRNet, SRCNN, Bicubic), plus a non-default variant."""
    if name:
        return name
    label = type(model).__name__
    variant = getattr(model, "variant", "full")
    return label if variant == "full" else f"{label}-{variant}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _inference(cfg: DictConfig, model: nn.Module, scale: int) -> Callable[[torch.Tensor], torch.Tensor]:
    tile, overlap = cfg.get("tile"), int(cfg.get("tile_overlap") or 0)
    if tile and any(True for _ in model.parameters()):
        radius = receptive_radius(model, scale)
        if radius is None or overlap < radius:
            need = "unbounded (the model is not local)" if radius is None else f"{radius} LR px"
            log.warning("tile_overlap=%d is below the receptive radius (%s): tiles will not match whole-image "
                        "inference exactly", overlap, need)
        else:
            log.info("tiled inference: tile=%d, tile_overlap=%d >= receptive radius %d LR px (exact)",
                     tile, overlap, radius)
    return make_inference(model, scale, tile, overlap, bool(cfg.get("self_ensemble")))


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
    forward = _inference(cfg, model, scale)
    device = resolve_device(cfg.device)
    for name, dataset in sets.items():
        save_dir = out_dir / "images" / label / name / f"x{scale}" if cfg.save_images else None
        sink = _FigureSink(_figure_names(cfg, name, dataset.pairs), dataset) if figures else None

        def on_image(index: int, sr: torch.Tensor) -> None:
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


def _checked_set(root: Path, name: str) -> str:
    """Canonical name of a benchmark set that exists under `root` (checked before any scoring starts)."""
    try:
        name = canonical_dataset(str(name))
    except ValueError as err:
        raise EvalError(f"datasets: {err}") from err
    if not (root / name).is_dir():
        raise EvalError(f"benchmark_root={root}: no {name} folder (download: python -m srlab.data.download "
                        f"benchmarks --root {root.parent} --names {name})")
    return name


def run_benchmark(cfg: DictConfig, loggers: list | None = None) -> list[dict]:
    """The datasets x scales matrix (plus Bicubic when report=paper); returns the rows of results.csv."""
    if not cfg.datasets:
        return []
    sources = plan_sources(cfg)
    root = Path(cfg.benchmark_root)
    names = [_checked_set(root, name) for name in cfg.datasets]
    out_dir = Path(cfg.paths.output_dir)
    device = resolve_device(cfg.device)
    loggers = loggers or []
    results: list[dict] = []
    per_image: list[dict] = []
    for scale, source in sources.items():
        sets = {}
        for name in names:
            try:
                sets[name] = EvalDataset(name, load_benchmark(root, name, scale), scale)
            except (FileNotFoundError, ValueError) as err:
                raise EvalError(str(err)) from err
        log.info("loading %s", source.describe())
        model = build_model(source, cfg.model, device)
        label = model_label(model, cfg.get("model_name"))
        figures = bool(cfg.figures.enabled)
        _score_model(cfg, model, label, scale, sets, out_dir, results, per_image, loggers, figures)
        if cfg.get("report") == "paper" and label != "Bicubic":
            _score_model(cfg, Bicubic(scale).to(device), "Bicubic", scale, sets, out_dir, results, per_image,
                         loggers, figures=False)
        del model
    log.info("results: %s", out_dir / "results.csv")
    return results


# -- the paper report --------------------------------------------------------------------------
def _models_at(models_cfg: DictConfig, scale: int) -> dict[str, Callable[[], nn.Module]]:
    return {label: partial(hydra.utils.instantiate, c, scale=scale) for label, c in models_cfg.items()}


def paper_report(cfg: DictConfig, results: list[dict], console: Console | None = None) -> list[Table]:
    """Tables II-V from `results`, Table I from `paper.table1_dir`, Tables VI and VII measured here."""
    console = console or Console()
    out_dir = Path(cfg.paths.output_dir) / "tables"
    paper = cfg.paper
    label = next((r["model"] for r in results if r["model"] != "Bicubic"), "Bicubic")
    tables = []
    if paper.get("table1_dir"):
        try:
            tables.append(table1(paper.table1_dir))
        except (FileNotFoundError, ValueError) as err:
            raise EvalError(f"paper.table1_dir: {err}") from err
    else:
        log.info("Table I skipped: set paper.table1_dir=<a finished Table I multirun folder>")
    tables += [benchmark_table(name, results, label) for name in dict.fromkeys(r["dataset"] for r in results)]
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


# -- upscale -----------------------------------------------------------------------------------
@dataclass
class UpscaleSummary:
    written: list[Path]
    skipped: list[tuple[Path, str]]  # (file, reason)

    def lines(self) -> list[str]:
        lines = [f"upscaled {len(self.written)} image(s), skipped {len(self.skipped)}"]
        lines += [f"  skipped {reason}" for _, reason in self.skipped]
        return lines


def _input_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise EvalError(f"input={path}: the folder has no files")
        return files
    raise EvalError(f"input={path}: no such file or folder")


@torch.inference_mode()
def upscale_files(forward: Callable[[torch.Tensor], torch.Tensor], files: list[Path], output: Path, scale: int,
                  device: torch.device) -> UpscaleSummary:
    """Upscale each file into `output/<stem>_x<scale>.png`; files that fail are collected, not fatal."""
    summary = UpscaleSummary([], [])
    stems = [f.stem for f in files]
    for file in tqdm(files, desc=f"upscale x{scale}", unit="image"):
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            summary.skipped.append((file, f"{file}: not an image file type ({file.suffix or 'no suffix'})"))
            continue
        try:
            image = read_image(file)
        except ImageReadError as err:
            summary.skipped.append((file, str(err)))
            continue
        try:
            sr = forward(to_tensor(image).unsqueeze(0).to(device))[0]
        except RuntimeError as err:  # e.g. out of memory on a huge image: suggest tiling, go on
            summary.skipped.append((file, f"{file}: inference failed ({str(err).splitlines()[0]}); try tile=256"))
            continue
        # Two inputs with one stem (a.png, a.jpg) keep their suffix in the name, so neither overwrites the other.
        stem = file.stem if stems.count(file.stem) == 1 else file.name
        target = output / f"{stem}_x{scale}.png"
        write_image(target, tensor_to_uint8(sr))
        summary.written.append(target)
    return summary


def run_upscale(cfg: DictConfig) -> int:
    """task=upscale; returns the exit code: 0 unless every input file failed."""
    if not cfg.get("input"):
        raise EvalError("task=upscale needs input=<image file or folder>")
    files = _input_files(Path(str(cfg.input)).expanduser())
    # One scale: the checkpoint's, or model.scale for a model without weights (bicubic).
    sources = plan_sources(cfg, scales=None if cfg.get("ckpt_path") else [int(cfg.model.scale)])
    if len(sources) != 1:
        raise EvalError(f"task=upscale runs one scale; the weights given cover {sorted(sources)} "
                        "(give one checkpoint, or scales=[s])")
    (scale, source), = sources.items()
    device = resolve_device(cfg.device)
    output = Path(str(cfg.output)) if cfg.get("output") else Path(cfg.paths.output_dir) / "upscaled"
    model = build_model(source, cfg.model, device)
    summary = upscale_files(_inference(cfg, model, scale), files, output, scale, device)
    head, *skipped = summary.lines()
    log.info(head)
    for line in skipped:
        log.warning(line.strip())
    log.info("output folder: %s", output)
    return 1 if summary.skipped and not summary.written else 0


# -- entry -------------------------------------------------------------------------------------
def check_config(cfg: DictConfig) -> None:
    if cfg.task not in TASKS:
        raise EvalError(f"task={cfg.task}: choose one of {', '.join(TASKS)}")
    if cfg.get("report") not in REPORTS:
        raise EvalError(f"report={cfg.report}: choose paper or null")
    if not isinstance(cfg.datasets, (ListConfig, list)):
        raise EvalError(f"datasets={cfg.datasets}: give a list such as [Set5,Set14]")
    if not cfg.datasets and not (cfg.task == "benchmark" and cfg.get("report") == "paper"):
        raise EvalError("datasets=[] scores nothing; give e.g. datasets=[Set5,Set14] (an empty list is only "
                        "for report=paper, to render Tables I, VI and VII alone)")


def evaluate(cfg: DictConfig) -> int:
    """Run the configured task; returns the process exit code."""
    check_config(cfg)
    if cfg.task == "upscale":
        return run_upscale(cfg)
    prepare_wandb_env(cfg)
    loggers = instantiate_loggers(cfg, Path(cfg.paths.output_dir))
    failed = True
    try:
        results = run_benchmark(cfg, loggers)
        if cfg.get("report") == "paper":
            paper_report(cfg, results)
        failed = False
    finally:
        for logger in loggers:
            logger.finalize("failed" if failed else "success")  # e.g. CSVLogger writes its file here
        finish_wandb(failed)
    return 0
