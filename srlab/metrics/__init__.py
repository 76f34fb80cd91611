"""PSNR / SSIM on Y with border shave, the protocol of every SR paper table (docs/protocol.md)."""

from srlab.metrics.sr_metrics import SRMetrics, prepare_for_scoring, psnr_ssim_per_image, quantize, ssim_valid, to_luma

__all__ = ["SRMetrics", "prepare_for_scoring", "psnr_ssim_per_image", "quantize", "ssim_valid", "to_luma"]
