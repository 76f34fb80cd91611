"""Baseline models SRCNN and HRN: shapes, gradients, a few optimisation steps, parameter counts (HRN: test_hrn.py)."""

from __future__ import annotations

import pytest
import torch

from srlab.data.imresize import imresize_torch
from srlab.models.hrn import HRN
from srlab.models.srcnn import SRCNN
from srlab.scales import SUPPORTED_SCALES

ODD_SIZE = (13, 17)


def tiny_hrn(scale: int) -> HRN:
    """A narrow, shallow HRN that still has every kind of module (DEM, spatial and frequency WRDBs, WRAB, CA)."""
    return HRN(scale, n_feats=8, n_groups=1, n_blocks=2, expansion=2, reduction=4)


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
    with pytest.raises(ValueError, match=r"kernel sizes must be odd for 'same' padding, got \(9, 1, 4\)"):
        SRCNN(2, kernel_sizes=(9, 1, 4))


# ------------------------------------------------------------------------------ HRN
# DCTs, wiring, parameter counts and the released-code model: tests/test_hrn.py.


def test_hrn_rejects_unsupported_scale():
    with pytest.raises(ValueError):
        HRN(5)
