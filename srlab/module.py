"""SRModule: the LightningModule that trains and validates any srlab model built from config.

The model, optimizer and scheduler arrive as Hydra configs and are instantiated
here, so a checkpoint holds everything `SRModule.load_from_checkpoint` needs.
"""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from srlab.metrics.sr_metrics import SRMetrics
from srlab.utils.perf import apply_speed_options, channels_last_input

LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


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
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; valid names: {', '.join(LOSSES)}")
        model, optimizer, scheduler = (
            OmegaConf.to_container(c, resolve=True) if isinstance(c, DictConfig) else c
            for c in (model, optimizer, scheduler)
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

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model(self.layout(lr))

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the memory layout the model was set up for."""
        return channels_last_input(images) if self.channels_last else images

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        sr = self.model(self.layout(batch["lr"]))
        loss = self.loss_fn(sr, self.layout(batch["hr"]))
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["lr"].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, params=self.parameters())
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
