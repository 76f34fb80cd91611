"""Tiled and self-ensemble inference reproduce whole-image inference (srlab.eval.inference).

The tiling rule under test: output is exact when tile_overlap >= the model's
receptive radius in LR pixels (HDSRNet: 23), whatever the tile size, also
when the image is not a multiple of the tile, and despite HDSRNet's global
average pooling (handled by freezing the image-wide means pass by pass).

Tolerances: in float64 tiled and whole-image outputs agree to <= 1e-9 (measured: 0, the
same sums in the same order), while an overlap one pixel short of the radius is off by
> 1e-3 (measured 3e-3 to 1.2e-2), so the bound separates a correct tiling from a one-pixel
error by six orders of magnitude. In float32 the bound is 1e-6 x the output's largest value
(a few float32 ulps; measured <= 2.6e-7 x).
"""

import pytest
import torch
from torch import nn

from srlab.data.imresize import imresize_torch
from srlab.eval.inference import dihedral, dihedral_inverse, receptive_radius, super_resolve, tile_spans
from srlab.models.bicubic import Bicubic
from srlab.models.hdsrnet import HDSRNet

# Receptive radius in LR px: upper head 1 + blocks x (dilated 2 + dynamic 1 + plain 1), then the CB's
# LR conv (1) and its HR conv (1 HR px, so 1 LR px). The lower net (depth x 1) is never wider.
HDSRNET_RADIUS = 1 + 5 * 4 + 2  # 23, the paper's model
SMALL_RADIUS = 1 + 2 * 4 + 2  # 11, two blocks
FLOAT64_BOUND = 1e-9
FLOAT32_RELATIVE_BOUND = 1e-6  # x max |whole-image output|
ONE_PIXEL_SHORT_MIN_ERROR = 1e-3


def small_hdsrnet(scale: int) -> HDSRNet:
    """HDSRNet with 2 blocks (2 dynamic convs, so 3 tiling passes), 4 channels, float64 to see exactness."""
    torch.manual_seed(0)
    return HDSRNet(scale, channels=4, num_blocks=2, lower_depth=4).double().eval()


@pytest.fixture(scope="module")
def lr_image() -> torch.Tensor:
    torch.manual_seed(1)
    return (torch.rand(1, 3, 41, 47, dtype=torch.float64) * 255).round()  # 41 and 47: not multiples of the tile


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


pytestmark = pytest.mark.usefixtures("single_thread")


def test_tile_spans_cover_each_pixel_once_and_clip_the_context():
    spans = tile_spans(41, 16, 12)
    assert [(c0, c1) for _, _, c0, c1 in spans] == [(0, 16), (16, 32), (32, 41)]
    assert [(i0, i1) for i0, i1, _, _ in spans] == [(0, 28), (4, 41), (20, 41)]
    with pytest.raises(ValueError, match="tile must be >= 1"):
        tile_spans(10, 0, 4)


def test_receptive_radius_of_hdsrnet():
    torch.manual_seed(0)
    assert receptive_radius(HDSRNet(3, channels=4), 3, size=52) == HDSRNET_RADIUS
    assert receptive_radius(HDSRNet(3, channels=4, num_blocks=2, lower_depth=4), 3, size=32) == SMALL_RADIUS


@pytest.mark.parametrize("self_ensemble", [False, True], ids=["plain", "x8"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiled_equals_whole_image_in_float64(scale, self_ensemble, lr_image):
    model = small_hdsrnet(scale)
    # Tiles of 16 (12 with x8, on a 25x31 crop to keep the 8 passes short): neither divides the image.
    x, tile = (lr_image[..., :25, :31], 12) if self_ensemble else (lr_image, 16)
    assert x.shape[-2] % tile and x.shape[-1] % tile
    with torch.inference_mode():
        whole = super_resolve(model, x, scale, self_ensemble=self_ensemble)
        tiled = super_resolve(model, x, scale, tile=tile, tile_overlap=SMALL_RADIUS, self_ensemble=self_ensemble)
        short = super_resolve(model, x, scale, tile=tile, tile_overlap=SMALL_RADIUS - 1, self_ensemble=self_ensemble)
    assert tiled.shape == whole.shape == (1, 3, x.shape[-2] * scale, x.shape[-1] * scale)
    assert max_error(tiled, whole) <= FLOAT64_BOUND
    # One pixel less overlap than the receptive radius shows at the tile borders: the bound above catches it.
    assert max_error(short, whole) > ONE_PIXEL_SHORT_MIN_ERROR


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiled_float32_matches_to_float_rounding(scale, lr_image):
    torch.manual_seed(0)
    model = HDSRNet(scale, channels=4).eval()  # the paper's depth: radius 23, five global-pool passes
    lr = lr_image.float()
    with torch.inference_mode():
        whole = model(lr)
        tiled = super_resolve(model, lr, scale, tile=24, tile_overlap=HDSRNET_RADIUS)
    assert max_error(tiled, whole) <= FLOAT32_RELATIVE_BOUND * whole.abs().max().item()


def test_tiled_bicubic_is_bit_exact(lr_image):
    model = Bicubic(3)
    with torch.inference_mode():
        assert torch.equal(super_resolve(model, lr_image, 3, tile=16, tile_overlap=4), model(lr_image))


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse_undoes_each_transform(k, lr_image):
    assert torch.equal(dihedral_inverse(dihedral(lr_image, k), k), lr_image)


def test_self_ensemble_is_exact_for_an_equivariant_model(lr_image):
    # MATLAB bicubic without the uint8 rounding between its two passes is linear and commutes with
    # flips and transposes. (With the rounding, transposing swaps the pass order, so Bicubic itself
    # differs by rounding on a transposed input.)
    def matlab_bicubic(x):
        return imresize_torch(x, 3, quantize=False)

    with torch.inference_mode():
        ensemble = super_resolve(matlab_bicubic, lr_image, 3, self_ensemble=True)
    assert (ensemble - matlab_bicubic(lr_image)).abs().max().item() < 1e-9


def test_self_ensemble_of_any_model_is_equivariant(lr_image):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)).double()
    x = lr_image[..., :20, :30]
    with torch.inference_mode():
        assert not torch.allclose(model(x), dihedral_inverse(model(dihedral(x, 3)), 3))  # the model is not
        ensemble = super_resolve(model, x, 2, self_ensemble=True)
        # Averaging over all 8 transforms makes the result transform with its input, which only holds
        # if every output is mapped back by the right inverse.
        for k in range(8):
            transformed = super_resolve(model, dihedral(x, k), 2, self_ensemble=True)
            assert (transformed - dihedral(ensemble, k)).abs().max().item() < 1e-9
    assert ensemble.shape == (1, 3, 40, 60)
