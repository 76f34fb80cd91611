"""The scoring protocol (docs/protocol.md): known values and the paper's Bicubic rows on Set5 and Set14."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from srlab.metrics.sr_metrics import SRMetrics, psnr_ssim_per_image, quantize, to_luma
from srlab.tasks.evaluate import run_benchmark
from tests.conftest import REPO, require_shared_data

# Paper Tables II and III, Bicubic rows; tolerances of docs/protocol.md.
PAPER_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}
PSNR_TOL, SSIM_TOL = 0.03, 0.0015


def test_luma_matches_bt601_formula():
    rgb = torch.tensor([[[[255.0]], [[0.0]], [[0.0]]], [[[10.0]], [[20.0]], [[30.0]]]])
    y = to_luma(rgb).flatten().tolist()
    assert y[0] == pytest.approx(65.481 + 16)
    assert y[1] == pytest.approx((65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255 + 16)


def test_grey_images_are_scored_on_their_own_channel():
    grey = torch.full((1, 3, 4, 4), 100.0)
    assert to_luma(grey, grey=True).unique().item() == pytest.approx(100.0)
    assert to_luma(grey, grey=False).unique().item() == pytest.approx(219 / 255 * 100 + 16)


def test_psnr_of_a_known_error_and_quantisation():
    hr = torch.full((1, 3, 20, 20), 100.0)
    sr = hr.clone()
    sr[..., 2:-2, 2:-2] += 10.4  # rounds to +10 before scoring
    psnr, ssim = psnr_ssim_per_image(sr, hr, scale=2)
    dy = 10 * 219 / 255  # a grey step of 10 moves Y by 10*219/255
    assert psnr.item() == pytest.approx(10 * math.log10(255**2 / dy**2), abs=1e-5)
    assert 0 < ssim.item() < 1
    assert torch.equal(quantize(torch.tensor([-3.0, 2.5, 300.0])), torch.tensor([0.0, 3.0, 255.0]))


def test_identical_images_score_ssim_one_and_border_is_shaved():
    hr = torch.rand(2, 3, 30, 30) * 255
    hr = hr.round()
    sr = hr.clone()
    sr[..., :3, :] = 0  # damage only inside the x3 border
    psnr, ssim = psnr_ssim_per_image(sr, hr, scale=3)
    assert torch.isinf(psnr).all()
    assert ssim.tolist() == pytest.approx([1.0, 1.0])


def test_metric_averages_per_image_not_pooled():
    metric = SRMetrics(scale=2)
    hr = torch.full((2, 3, 16, 16), 128.0)
    sr = hr.clone()
    sr[0] += 1.0
    sr[1] += 8.0
    metric.update(sr[:1], hr[:1])
    metric.update(sr[1:], hr[1:])
    per_image, _ = psnr_ssim_per_image(sr, hr, scale=2)
    assert metric.compute()["psnr"].item() == pytest.approx(per_image.mean().item())
    pooled_mse = ((to_luma(sr) - to_luma(hr)) ** 2).mean().item()
    assert metric.compute()["psnr"].item() != pytest.approx(10 * math.log10(255**2 / pooled_mse))


def test_bicubic_rows_of_set5_and_set14_in_process(benchmark_root, tmp_path):
    """`eval.py model=bicubic datasets=[Set5,Set14]`, in-process: the paper's Bicubic rows (Tables II, III)."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=["model=bicubic", f"benchmark_root={benchmark_root}", "datasets=[Set5,Set14]",
                                         "figures.enabled=false", "device=cpu", f"paths.output_dir={tmp_path}"])
    results = run_benchmark(cfg)
    assert sorted((r["dataset"], r["scale"]) for r in results) == [(d, s) for d in ("Set14", "Set5") for s in (2, 3, 4)]
    for row in results:
        where = f"{row['dataset']} x{row['scale']}"
        paper_psnr, paper_ssim = PAPER_BICUBIC[row["dataset"], row["scale"]]
        assert (row["model"], row["paper_psnr"], row["paper_ssim"]) == ("Bicubic", f"{paper_psnr:.2f}",
                                                                        f"{paper_ssim:.4f}"), where
        assert abs(float(row["psnr"]) - paper_psnr) <= PSNR_TOL, where
        assert abs(float(row["ssim"]) - paper_ssim) <= SSIM_TOL, where


def test_shared_data_is_required_in_ci_and_optional_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no_such_set not found .*CI=true"):
        require_shared_data("benchmark/no_such_set")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"no_such_set not found"):
        require_shared_data("benchmark/no_such_set")


def test_ssim_equals_direct_matlab_style_valid_filtering():
    from scipy.signal import correlate2d

    from srlab.metrics.sr_metrics import ssim_valid

    x = (torch.rand(2, 1, 37, 45, dtype=torch.float64) * 255).round()
    y = (x + torch.randn_like(x) * 12).clamp(0, 255).round()
    t = np.arange(11) - 5
    g = np.exp(-(t**2) / (2 * 1.5**2))
    window = np.outer(g, g) / g.sum() ** 2  # fspecial('gaussian', 11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    for i in range(2):
        a, b = x[i, 0].numpy(), y[i, 0].numpy()
        f = lambda z: correlate2d(z, window, mode="valid")  # noqa: E731
        mu_a, mu_b = f(a), f(b)
        var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        assert ssim_valid(x[i : i + 1], y[i : i + 1]).item() == pytest.approx(ssim_map.mean(), abs=1e-12)
