"""PSNR / SSIM on Y with border shave, the protocol of every SR paper table."""
