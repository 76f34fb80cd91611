"""SRModule: the LightningModule that trains and validates any srlab model built from config.

The model, optimizer and scheduler arrive as Hydra configs and are instantiated
here, so a checkpoint holds everything `SRModule.load_from_checkpoint` needs.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from srlab.metrics.sr_metrics import SRMetrics
from srlab.utils.perf import apply_speed_options, channels_last_input
from srlab.utils.safe_load import guarded_load

LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}
EXAMPLE_LR_SIZE = 16  # side of the model summary's example input (LR px)


def central_region(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centred `size` (H, W) window of `target`: the loss region of a model whose valid convolutions shrink it."""
    (height, width), (out_h, out_w) = target.shape[-2:], size
    if (out_h, out_w) == (height, width):
        return target
    if out_h > height or out_w > width or (height - out_h) % 2 or (width - out_w) % 2:
        raise ValueError(f"model output {out_w}x{out_h} cannot be centred in the target {width}x{height}")
    top, left = (height - out_h) // 2, (width - out_w) // 2
    return target[..., top : top + out_h, left : left + out_w]


def parameter_groups(model: nn.Module, groups: list[dict] | None, lr: float | None) -> list[dict]:
    """Optimiser parameter groups from `module.param_groups` (per-layer learning rates).

    Each entry is ``{params: <glob or list of globs on the model's parameter names>, lr_scale: <x optimizer.lr>,
    <any other optimiser option for that group>}``; a parameter joins the first entry whose glob
    matches it, the rest stay in the first group with the optimiser's own settings. A glob that
    matches nothing is an error listing the parameter names, so a typo never trains silently at one lr.
    """
    named = list(model.named_parameters())
    if not groups:
        return [{"params": [p for _, p in named]}]
    taken: set[str] = set()
    built = []
    for i, group in enumerate(groups):
        options = dict(group)
        patterns = options.pop("params", None)
        patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
        if not patterns:
            raise ValueError(f"module.param_groups[{i}] has no `params` glob (e.g. 'convs.2.*')")
        members = [(n, p) for n, p in named if n not in taken and any(fnmatchcase(n, g) for g in patterns)]
        if not members:
            raise ValueError(f"module.param_groups[{i}].params={patterns} matches no parameter of "
                             f"{type(model).__name__}; its parameters: {', '.join(n for n, _ in named)}")
        if "lr_scale" in options:
            if lr is None:
                raise ValueError(f"module.param_groups[{i}].lr_scale needs module.optimizer.lr")
            options["lr"] = lr * float(options.pop("lr_scale"))
        taken.update(n for n, _ in members)
        built.append({"params": [p for _, p in members], **options})
    rest = [p for n, p in named if n not in taken]
    return ([{"params": rest}] if rest else []) + built


class SRModule(L.LightningModule):
    """L1 training; per-dataset PSNR/SSIM on Y (shave = scale) logged as `val/<Dataset>/psnr|ssim`.

    `val/psnr` and `val/ssim` repeat the first validation set's scores: the metric that
    checkpointing and sweeps optimise.

    Speed options (`srlab.utils.perf`, measured by `python -m srlab.bench`): `channels_last`
    stores the model's 4-D weights and every batch NHWC; `narrow_convs` runs 3x3 convs with
    few outputs (to_rgb) as a GEMM on CPU; `compile` runs the model through
    `torch.compile` (`compile_mode` e.g. "reduce-overhead"); bf16 is the trainer's
    `precision: bf16-mixed`; a fused Adam is `optimizer.fused: true` (Lightning allows it only
    without mixed precision when gradients are clipped).
    """

    def __init__(
        self,
        model: DictConfig | dict,
        optimizer: DictConfig | dict,
        scheduler: DictConfig | dict | None = None,
        scheduler_interval: str = "step",
        loss: str = "l1",
        channels_last: bool = False,
        narrow_convs: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        param_groups: list[dict] | None = None,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")
        model, optimizer, scheduler, param_groups = (
            OmegaConf.to_container(c, resolve=True) if isinstance(c, DictConfig | ListConfig) else c
            for c in (model, optimizer, scheduler, param_groups)
        )
        self.save_hyperparameters()
        self.model = apply_speed_options(
            hydra.utils.instantiate(model), channels_last, compile, {"mode": compile_mode}, narrow_convs
        )
        self.channels_last = channels_last
        self.scale = int(getattr(self.model, "scale", model.get("scale")))
        self.loss_fn = LOSSES[loss]
        self.val_names: list[str] = []
        self.val_metrics = nn.ModuleList()
        # A tiny LR image for Lightning's model summary, which runs it once at setup to fill its FLOPs and
        # In/Out sizes columns (FLOPs of this 16x16 input). Not with compile: it would compile the model there.
        self.example_input_array = None if compile else torch.zeros(1, 3, EXAMPLE_LR_SIZE, EXAMPLE_LR_SIZE)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only: bool | None = None, **kwargs: Any) -> SRModule:
        """Lightning's loader, weights-only unless `weights_only=False` or the file is trusted (srlab.utils.safe_load).

        A file whose pickle would run code raises `UnsafeCheckpointError` naming it and the global it asked for.
        """
        with guarded_load(checkpoint_path, weights_only) as weights_only:
            return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, weights_only,
                                                **kwargs)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model(self.layout(lr))

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the memory layout the model was set up for."""
        return channels_last_input(images) if self.channels_last else images

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # A pre-upsampling model gets bicubic-upscaled crops (its Y for a luma model) from the data module
        # (srlab.data.base); a valid-convolution model returns less than its input: score the centre.
        pre_upsampled = getattr(self.model, "pre_upsample", False)
        forward = self.model.forward_upsampled if pre_upsampled else self.model
        sr = forward(self.layout(batch["lr"]))
        loss = self.loss_fn(sr, self.layout(central_region(batch["hr"], sr.shape[-2:])))
        # Not prog_bar: the bar reads its values every step (a host sync), the loggers every log_every_n_steps.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=batch["lr"].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        groups = parameter_groups(self.model, self.hparams.param_groups, self.hparams.optimizer.get("lr"))
        # Built partial, then called: Hydra would turn the groups' dicts into DictConfigs, which torch rejects.
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, _partial_=True)(groups)
        if not self.hparams.scheduler:
            return optimizer
        scheduler = hydra.utils.instantiate(self.hparams.scheduler, optimizer=optimizer)
        interval = self.hparams.scheduler_interval
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # -- validation / test ---------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        names = list(getattr(datamodule, "eval_names", []) or [])
        if names and names != self.val_names:
            self.val_names = names
            self.val_metrics = nn.ModuleList(SRMetrics(self.scale) for _ in names).to(self.device)

    def _eval_step(self, batch: dict, dataloader_idx: int) -> torch.Tensor:
        sr = self.model(self.layout(batch["lr"]))
        self.val_metrics[dataloader_idx].update(sr, batch["hr"], batch["grey"])
        return sr

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self._eval_step(batch, dataloader_idx)

    def _log_eval(self, prefix: str) -> None:
        for i, (name, metric) in enumerate(zip(self.val_names, self.val_metrics)):
            scores = metric.compute()  # reduced across ranks by torchmetrics (sums, so exact)
            for key, value in scores.items():
                self.log(f"{prefix}/{name}/{key}", value.float(), sync_dist=False, add_dataloader_idx=False)
                if i == 0:
                    self.log(f"{prefix}/{key}", value.float(), prog_bar=True, sync_dist=False, add_dataloader_idx=False)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")
