"""Which weights a task loads, and the model built from them: a train.py checkpoint, a weights file, or the config.

`plan_sources` turns `ckpt_path` (one file, or a mapping scale -> file) and the model config
into one `ModelSource` per scale, checking everything before any scoring starts;
`load_model` builds the model for one source on a device; `make_forward` wraps it in tiled /
self-ensemble inference.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from srlab.eval.inference import make_inference, receptive_radius
from srlab.module import SRModule
from srlab.scales import SUPPORTED_SCALES
from srlab.tasks.checks import CheckpointRefusedError, ConfigError, EvalError, load_checkpoint_hparams
from srlab.utils.safe_load import UnsafeCheckpointError, load_file, trust_file

log = logging.getLogger(__name__)


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
    except CheckpointRefusedError:
        raise  # would run code: refused whatever kind of file it claims to be
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


def _named_files(cfg: DictConfig) -> list[Path]:
    """The weights files a run names: `ckpt_path` (one or a mapping) and a self-loading model's `path`."""
    ckpt = cfg.get("ckpt_path")
    paths = list(ckpt.values()) if isinstance(ckpt, (DictConfig, Mapping)) else [ckpt] if ckpt else []
    if _self_loading(cfg.model) and not OmegaConf.is_missing(cfg.model, "path") and cfg.model.path:
        paths.append(cfg.model.path)
    return [Path(str(p)).expanduser() for p in paths]


def plan_sources(cfg: DictConfig, scales: list[int] | None = None) -> dict[int, ModelSource]:
    """scale -> ModelSource for each of `scales` (default cfg.scales) that has weights; checks come first.

    Parameter-free models run at every requested scale; a checkpoint only at its own.
    """
    if cfg.get("trust_checkpoint"):
        for path in _named_files(cfg):
            trust_file(path)  # the documented opt-in: these files are unpickled in full (their code runs)
    requested = [int(s) for s in (scales or cfg.scales)]
    bad = [s for s in requested if s not in SUPPORTED_SCALES]
    if bad or not requested:
        raise EvalError(f"scales={list(requested)}: choose from {', '.join(map(str, SUPPORTED_SCALES))}")
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


def _chain(err: BaseException | None):
    """`err` and the exceptions it was raised from."""
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def load_model(source: ModelSource, model_cfg: DictConfig, device: torch.device) -> nn.Module:
    if source.lightning_ckpt is not None:
        # Uncompiled even if trained with module.compile=true: each image size would be a new compile.
        model = SRModule.load_from_checkpoint(source.lightning_ckpt, map_location=device, compile=False).model
    elif _self_loading(model_cfg):
        path = {} if source.weights is None else {"path": str(source.weights)}
        try:
            model = hydra.utils.instantiate(model_cfg, scale=source.scale, **path)
        except Exception as err:  # Hydra wraps the loader's refusal: report it as the one line it is
            cause = next((e for e in _chain(err) if isinstance(e, UnsafeCheckpointError)), None)
            if cause is not None:
                raise EvalError(f"{'model.path' if source.weights is None else 'ckpt_path'}={cause}") from err
            raise
    else:
        model = hydra.utils.instantiate(model_cfg, scale=source.scale)
        if source.weights is not None:
            try:
                state = load_file(source.weights)
            except UnsafeCheckpointError as err:
                raise EvalError(f"ckpt_path={err}") from err
            except pickle.UnpicklingError as err:
                raise EvalError(f"ckpt_path={source.weights}: not a readable weights file ({err})") from err
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


def make_forward(cfg: DictConfig, model: nn.Module, scale: int) -> Callable[[torch.Tensor], torch.Tensor]:
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
