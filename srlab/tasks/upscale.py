"""The upscale task (`eval.py task=upscale`): upscale a user's image or folder; bad files are reported and skipped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from srlab.data.datasets import to_tensor
from srlab.data.io import IMAGE_SUFFIXES, ImageReadError, read_image, tensor_to_uint8, write_image
from srlab.tasks.checks import EvalError
from srlab.tasks.weights import load_model, make_forward, plan_sources, resolve_device

log = logging.getLogger(__name__)


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
    model = load_model(source, cfg.model, device)
    summary = upscale_files(make_forward(cfg, model, scale), files, output, scale, device)
    head, *skipped = summary.lines()
    log.info(head)
    for line in skipped:
        log.warning(line.strip())
    log.info("output folder: %s", output)
    return 1 if summary.skipped and not summary.written else 0
