"""Baseline models SRCNN and HRN: shapes, gradients, a few optimisation steps, parameter counts, DCT."""

from __future__ import annotations

import pytest
import torch

from srlab.data.imresize import imresize_torch
from srlab.models.hrn import HRN, dct2, dct_matrix, idct2
from srlab.models.srcnn import SRCNN
from srlab.scales import SUPPORTED_SCALES

ODD_SIZE = (13, 17)


def tiny_hrn(scale: int) -> HRN:
    """A narrow, shallow HRN that still has every kind of module (DEM, both WRDBs, WRAB, CA)."""
    return HRN(scale, n_feats=8, n_groups=1, n_blocks=2, n_freq_blocks=1, expansion=2, reduction=4)


def build(name: str, scale: int, small: bool = False) -> torch.nn.Module:
    if name == "srcnn":
        return SRCNN(scale, filters=(16, 8)) if small else SRCNN(scale)
    return tiny_hrn(scale) if small else HRN(scale)


def lr_image(*size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=generator) * 255




pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("name", ["srcnn", "hrn"])
def test_output_shape_on_odd_size(name, scale):
    model = build(name, scale).eval()
    with torch.no_grad():
        out = model(lr_image(*ODD_SIZE, batch=2))
    assert out.shape == (2, 3, scale * ODD_SIZE[0], scale * ODD_SIZE[1])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("name", ["srcnn", "hrn"])
def test_gradients_reach_every_parameter(name, scale):
    model = build(name, scale)
    out = model(lr_image(*ODD_SIZE))
    out.abs().mean().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
    # The mean shift is a frozen buffer, not something the optimiser could move.
    assert all("rgb_mean" not in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("name", ["srcnn", "hrn"])
def test_adam_steps_lower_l1_on_a_fixed_batch(name, scale):
    # A smooth HR target (an upscaled 4x4 random image), so there is something learnable to fit.
    hr = imresize_torch(lr_image(4, 4, batch=2, seed=1), 1.5 * scale, quantize=False).clamp(0, 255)
    lr = imresize_torch(hr, 1.0 / scale, quantize=False)
    assert hr.shape[-2:] == (6 * scale, 6 * scale)
    model = build(name, scale, small=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = (model(lr) - hr).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.9 * losses[0], losses


# ---------------------------------------------------------------------------- SRCNN


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_srcnn_parameter_count(scale):
    # conv1 9x9, 3 -> 64 (+64 biases); conv2 1x1, 64 -> 32 (+32); conv3 5x5, 32 -> 3 (+3).
    expected = 9 * 9 * 3 * 64 + 64 + 1 * 1 * 64 * 32 + 32 + 5 * 5 * 32 * 3 + 3
    assert expected == 20_099
    assert sum(p.numel() for p in SRCNN(scale).parameters()) == expected  # independent of scale


def test_srcnn_rejects_even_kernels():
    with pytest.raises(ValueError):
        SRCNN(2, kernel_sizes=(9, 1, 4))


# ------------------------------------------------------------------------------ HRN


def test_dct_round_trip_on_non_square_input():
    x = lr_image(13, 17, batch=2)
    assert torch.allclose(idct2(dct2(x)), x, rtol=0, atol=1e-5 * 255)
    x64 = x.double() / 255
    assert torch.allclose(idct2(dct2(x64)), x64, rtol=0, atol=1e-12)
    assert torch.allclose(idct2(dct2(x / 255)), x / 255, rtol=0, atol=1e-5)


def test_dct_is_orthonormal_dct_ii():
    matrix = dct_matrix(7, torch.device("cpu"), torch.float64)
    assert torch.allclose(matrix @ matrix.T, torch.eye(7, dtype=torch.float64), atol=1e-12)
    # A constant image has only a DC coefficient, equal to mean * sqrt(H * W) (orthonormal scaling).
    constant = torch.full((1, 1, 5, 9), 2.0, dtype=torch.float64)
    coeffs = dct2(constant)
    assert coeffs[0, 0, 0, 0].item() == pytest.approx(2.0 * (5 * 9) ** 0.5)
    coeffs[0, 0, 0, 0] = 0
    assert coeffs.abs().max().item() < 1e-12
    # Cached per (size, device, dtype).
    assert dct_matrix(7, torch.device("cpu"), torch.float64) is matrix
    assert dct_matrix(7, torch.device("cpu"), torch.float32) is not matrix


def test_hrn_runs_on_two_sizes_in_a_row():
    model = tiny_hrn(3).eval()
    with torch.no_grad():
        assert model(lr_image(13, 17)).shape == (1, 3, 39, 51)
        assert model(lr_image(10, 7)).shape == (1, 3, 30, 21)
    model = HRN(2).eval()
    with torch.no_grad():
        assert model(lr_image(9, 11)).shape == (1, 3, 18, 22)
        assert model(lr_image(16, 12)).shape == (1, 3, 32, 24)


# Default HRN, n_feats C = 32, expansion 4, coordinate-attention hidden width max(8, 32 // 16) = 8:
#   CA    = (32*8 + 8) + 2 * (8*32 + 32)                          =     840
#   WRAB  = (9*32*128 + 128) + (9*128*32 + 32) + CA                =  74_728
#   WRDB4 = 4 * WRAB + [(2+3+4) * 32*32 + 3*32] + (5*32*32 + 32)  = 313_376
#   WRDB2 = 2 * WRAB + (2*32*32 + 32) + (3*32*32 + 32)            = 154_640
#   DEM   = WRDB4 + WRDB2 + (2*32*32 + 32)                        = 470_096
#   common = head (9*3*32 + 32) + 4 * DEM + body conv (9*32*32 + 32) + last conv (9*32*3 + 3)
#          = 896 + 1_880_384 + 9_248 + 867                         = 1_891_395
#   upsampler: x2 (9*32*128 + 128) = 36_992; x3 (9*32*288 + 288) = 83_232; x4 2 * 36_992 = 73_984
HRN_DEFAULT_PARAMS = {2: 1_891_395 + 36_992, 3: 1_891_395 + 83_232, 4: 1_891_395 + 73_984}


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_hrn_default_parameter_count(scale):
    assert HRN_DEFAULT_PARAMS == {2: 1_928_387, 3: 1_974_627, 4: 1_965_379}
    count = sum(p.numel() for p in HRN(scale).parameters())
    assert count == HRN_DEFAULT_PARAMS[scale]
    assert 1_000_000 <= count <= 3_000_000


def test_hrn_rejects_unsupported_scale():
    with pytest.raises(ValueError):
        HRN(5)
