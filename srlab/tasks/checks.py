"""Fail-fast checks of a composed run config, before any data is read or any step is taken.

`validate_config(cfg)` raises `ConfigError` with one line naming the key and
its value for the mistakes a user can make on the command line:

- a `_target_` that cannot be imported (model, data, optimiser, scheduler,
  callbacks, loggers); for the model, the model configs to choose from;
- a model that refuses its arguments: unknown variant (the model lists the
  valid ones), a scale it does not support, an unknown argument. The model
  is built on the ``meta`` device, so its own checks run and no memory or
  time is spent on weights;
- `data.scale` different from `model.scale`; an HR `data.patch_size` that is
  not a multiple of the scale; `data.batch_size` or `data.steps_per_epoch` below 1;
- a batch larger than the data: a training epoch is `steps_per_epoch` full
  batches of random crops per rank, drawn with repetition from the images
  (EDSR's repeat), so a batch can only outgrow the data when it or the epoch
  is empty (values below 1, caught above); whole-image evaluation runs one
  image at a time; images smaller than the patch are reported by the data
  modules when they load (naming the file);
- the data module refusing its arguments (unknown benchmark set names, bad
  DIV2K `data_range`, ...), through its own constructor, which reads no files;
- an unknown `module.loss`;
- `ckpt_path` that does not exist, `ckpt_path=last` without a usable
  `resume_dir`, a file that is not an srlab checkpoint, or a checkpoint of
  another model, variant or scale (the mismatching `model.*` keys are named);
  the same for the run folder's own last.ckpt that `resume=auto` continues from,
  and a `resume` other than auto / never.
- a `ckpt_path` file whose pickle would run code (`CheckpointRefusedError`; the
  file is read weights-only unless `trust_checkpoint=true`, srlab.utils.safe_load).

Hydra reports unknown config groups/options and override typos itself,
naming the key, before this function runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from srlab.module import LOSSES
from srlab.scales import SUPPORTED_SCALES
from srlab.utils.safe_load import UnsafeCheckpointError, load_file, trust_file

# Lightning's own ckpt_path keywords, resolved by the Trainer (not files).
LIGHTNING_CKPT_KEYWORDS = ("best", "hpc", "registry")
# `resume`: continue from the run folder's checkpoints/last.ckpt when no ckpt_path is given (auto), or not.
RESUME_MODES = ("auto", "never")


class ConfigError(ValueError):
    """A run config that cannot work; the one-line message names the key, the value and the fix."""


class EvalError(ConfigError):
    """A configuration or input problem; eval.py prints its message as one line and exits non-zero."""


class CheckpointRefusedError(ConfigError):
    """`ckpt_path` names a file whose pickle would run code; the line says how to opt in (trust_checkpoint=true)."""


def validate_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first mistake found (module docstring); return quietly otherwise."""
    check_targets(cfg)
    check_model(cfg)
    check_data(cfg)
    check_module(cfg)
    check_checkpoint(cfg)


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _cause(err: BaseException) -> BaseException:
    """Hydra wraps a constructor's exception in InstantiationException; the original says what is wrong."""
    while isinstance(err, hydra.errors.InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _group_options(group: str) -> list[str]:
    """Config names of a Hydra group (e.g. model -> bicubic, hdsrnet, ...), when Hydra is initialised."""
    if not GlobalHydra.instance().is_initialized():
        return []
    return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def _iter_targets(node: Any, key: str):
    """(dotted key, _target_) of every config node under `node` that names a target."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield f"{key}._target_", node["_target_"]
        for name, child in node.items():
            if name != "_target_":
                yield from _iter_targets(child, f"{key}.{name}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _iter_targets(child, f"{key}[{i}]")


def check_targets(cfg: DictConfig) -> None:
    for group in ("model", "data", "module", "callbacks", "logger"):
        node = cfg.get(group)
        if node is None:
            continue
        # Unresolved: targets are literal, and other values may need a live Hydra run to resolve.
        for key, target in _iter_targets(OmegaConf.to_container(node, resolve=False), group):
            try:
                hydra.utils.get_object(target)
            except Exception as err:  # ImportError, AttributeError, Hydra's wrapped variants
                hint = ""
                if key == "model._target_" and _group_options("model"):
                    hint = f"; model configs: {', '.join(_group_options('model'))} (choose with model=<name>)"
                raise ConfigError(f"{key}={target!r} cannot be imported ({_one_line(_cause(err))}){hint}") from err


def _scale(cfg: DictConfig) -> int:
    scale = cfg.model.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ConfigError(f"model.scale={scale!r} must be an integer upscaling factor of at least 2 "
                          f"({', '.join(map(str, SUPPORTED_SCALES[:-1]))} or {SUPPORTED_SCALES[-1]})")
    return scale


def check_model(cfg: DictConfig) -> None:
    model_cfg = _container(cfg.model)
    _scale(cfg)
    try:
        with torch.device("meta"):  # the model's own checks run; no weights are allocated or initialised
            hydra.utils.instantiate(model_cfg)
    except Exception as err:
        raise ConfigError(f"model ({model_cfg['_target_']}): {_one_line(_cause(err))}") from err


def check_data(cfg: DictConfig) -> None:
    data = cfg.get("data")
    if data is None:
        return
    scale = _scale(cfg)
    if data.get("scale") is not None and data.scale != scale:
        raise ConfigError(
            f"data.scale={data.scale} but model.scale={scale}; they must match "
            "(data.scale defaults to ${model.scale})"
        )
    try:
        hydra.utils.instantiate(data)  # constructors check their own arguments; none reads a file
    except Exception as err:
        message = _one_line(_cause(err))
        # A constructor's message that starts with one of its arguments (`patch_size=32 ...`) names that key.
        key = message.split("=", 1)[0]
        if "=" in message and key in data:
            raise ConfigError(f"data.{message}") from err
        raise ConfigError(f"data ({data.get('_target_')}): {message}") from err


def check_module(cfg: DictConfig) -> None:
    module = cfg.get("module")
    if module is not None and module.get("loss") is not None and module.loss not in LOSSES:
        raise ConfigError(f"module.loss={module.loss!r} is unknown; valid names: {', '.join(LOSSES)}")


def auto_resume_checkpoint(cfg: DictConfig) -> Path | None:
    """`<paths.output_dir>/checkpoints/last.ckpt` when `resume=auto`, no `ckpt_path` is given and that file exists.

    The run folder is stable for a relaunch in it: `hydra.run.dir=...`, a multirun job folder (same
    sweep dir and job number), a requeued SLURM job; a plain `python train.py` gets a new dated one.
    """
    resume = cfg.get("resume", "auto")
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume={resume!r} must be auto (continue from the run folder's checkpoints/last.ckpt "
                          "when it exists) or never (always start from step 0)")
    if cfg.get("ckpt_path") is not None or resume != "auto":
        return None
    # Unresolvable outside a Hydra run (a config composed by hand): then there is no run folder to resume.
    output_dir = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
    path = Path(output_dir) / "checkpoints" / "last.ckpt" if output_dir else None
    return path if path is not None and path.is_file() else None


def resolve_ckpt_path(cfg: DictConfig) -> Path | None:
    """The checkpoint file a run resumes from: `ckpt_path`, `<resume_dir>/checkpoints/last.ckpt` for `last`,
    or without `ckpt_path` the run folder's own last.ckpt (`auto_resume_checkpoint`)."""
    auto = auto_resume_checkpoint(cfg)  # also checks the `resume` value
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return auto
    if ckpt_path in LIGHTNING_CKPT_KEYWORDS:
        return None
    if ckpt_path == "last":
        resume_dir = cfg.get("resume_dir")
        if not resume_dir:
            raise ConfigError(
                "ckpt_path=last needs resume_dir=<the run folder to continue> (its checkpoints/last.ckpt is loaded)"
            )
        if not Path(resume_dir).is_dir():
            raise ConfigError(f"resume_dir={resume_dir}: no such folder (ckpt_path=last resumes from it)")
        return Path(resume_dir) / "checkpoints" / "last.ckpt"
    return Path(ckpt_path)


def _model_mismatch(saved: dict, wanted: dict) -> list[str]:
    if saved.get("_target_") != wanted.get("_target_"):
        return [f"model._target_={saved.get('_target_')} in the checkpoint vs {wanted.get('_target_')} here"]

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return list(a) == list(b)
        return a == b

    # Keys only one side has (added or dropped in another version) say nothing about compatibility.
    return [
        f"model.{key}={saved[key]!r} in the checkpoint vs {wanted[key]!r} here"
        for key in saved
        if key in wanted and not key.startswith("_") and not same(saved[key], wanted[key])
    ]


def load_checkpoint_hparams(path: Path) -> dict:
    """`hyper_parameters` of a Lightning checkpoint; memory-mapped, so the weights are not read.

    Weights-only (`srlab.utils.safe_load`): a file whose pickle would run code raises `CheckpointRefusedError`.
    """
    try:
        checkpoint = load_file(path, mmap=True)
    except UnsafeCheckpointError as err:
        raise CheckpointRefusedError(f"ckpt_path={err}") from err
    except Exception as err:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({_one_line(err)})") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("hyper_parameters"), dict):
        raise ConfigError(f"ckpt_path={path}: not a Lightning checkpoint of srlab's SRModule (no hyper_parameters)")
    return checkpoint["hyper_parameters"]


def check_checkpoint(cfg: DictConfig) -> None:
    path = resolve_ckpt_path(cfg)
    if path is None:
        return
    key = "ckpt_path" if cfg.get("ckpt_path") != "last" else "resume_dir"
    if path.is_dir():
        raise ConfigError(f"{key}={cfg.get(key)}: {path} is a folder; give the .ckpt file (e.g. checkpoints/last.ckpt)")
    if not path.is_file():
        raise ConfigError(f"{key}={cfg.get(key)}: no such checkpoint file {path}")
    if cfg.get("trust_checkpoint"):
        trust_file(path)  # the documented opt-in: this file is unpickled in full, here and when the run resumes
    saved = load_checkpoint_hparams(path).get("model")
    if not isinstance(saved, dict):
        raise ConfigError(f"ckpt_path={path}: not a checkpoint of srlab's SRModule (no hyper_parameters.model)")
    mismatches = _model_mismatch(saved, _container(cfg.model))
    if mismatches and cfg.get("ckpt_path") is None:
        raise ConfigError(
            f"resume=auto: this run folder's {path} is for another model: {'; '.join(mismatches)} "
            "(override model.* to match it, choose another run folder, or resume=never to start over in this one)"
        )
    if mismatches:
        raise ConfigError(
            f"ckpt_path={path} is for another model: {'; '.join(mismatches)} (override model.* to match it)"
        )
