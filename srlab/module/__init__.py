"""The LightningModule that trains and validates any srlab model."""

from srlab.module.sr_module import SRModule, build_model

__all__ = ["SRModule", "build_model"]
