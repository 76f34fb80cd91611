"""Tests for the MATLAB-compatible bicubic imresize (srlab.data.imresize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srlab.data.imresize import (
    bicubic_downscale,
    bicubic_upscale,
    imresize,
    imresize_torch,
    modcrop,
    resize_matrix,
)
from srlab.scales import SUPPORTED_SCALES
from tests.conftest import require_shared_data

BENCHMARK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmark"


def _read_png(path: Path) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"could not read {path}"
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img  # single-channel files (Set14 bridge) stay 2-D


# --- bit-exactness against the MATLAB-made benchmark LR files -----------------


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_downscale_matches_matlab_lr_files(set_name: str, scale: int) -> None:
    hr_dir = require_shared_data(f"benchmark/{set_name}/HR")
    hr_paths = sorted(hr_dir.glob("*.png"))
    assert hr_paths, f"no HR images in {hr_dir}"
    for hr_path in hr_paths:
        lr_path = BENCHMARK / set_name / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
        hr = _read_png(hr_path)
        lr = _read_png(lr_path)
        out = bicubic_downscale(modcrop(hr, scale), scale)
        assert out.dtype == np.uint8
        assert out.shape == lr.shape, f"{hr_path.name} x{scale}: shape {out.shape} != {lr.shape}"
        assert np.array_equal(out, lr), (
            f"{hr_path.name} x{scale}: {(out != lr).sum()} pixels differ from the MATLAB LR file"
        )


# --- torch path is a twin of the numpy path ------------------------------------


def _random_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _to_nchw(img: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype)


def _from_nchw(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_torch_quantized_equals_numpy_uint8(scale: int) -> None:
    hr = _random_image(12 * scale, 10 * scale, seed=scale)
    lr = _random_image(13, 11, seed=10 + scale)
    for img, factor in ((hr, 1 / scale), (lr, float(scale))):
        ref = imresize(img, factor)
        out = imresize_torch(_to_nchw(img, torch.float64), factor, quantize=True)
        assert out.dtype == torch.float64
        assert np.array_equal(_from_nchw(out).astype(np.uint8), ref)
        assert np.array_equal(_from_nchw(out), ref.astype(np.float64))  # integer-valued


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_torch_float_matches_numpy_float(scale: int) -> None:
    img = np.random.default_rng(100 + scale).random((9 * scale, 7 * scale, 3))
    for factor in (1 / scale, float(scale)):
        ref = imresize(img, factor)
        assert ref.dtype == np.float64
        out = imresize_torch(torch.from_numpy(img).permute(2, 0, 1)[None], factor, quantize=False)
        np.testing.assert_allclose(_from_nchw(out), ref, rtol=0, atol=1e-10)


def test_float_path_does_not_round() -> None:
    img = np.random.default_rng(0).random((8, 8)) * 255
    out = imresize(img, 0.5)
    assert out.dtype == np.float64
    assert not np.allclose(out, np.round(out))


# --- shapes, invariants, weights ----------------------------------------------


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_upscale_shape_and_constant(scale: int) -> None:
    lr = _random_image(7, 5, seed=scale)
    up = bicubic_upscale(lr, scale)
    assert up.shape == (7 * scale, 5 * scale, 3) and up.dtype == np.uint8
    grey = np.full((6, 9), 137, dtype=np.uint8)
    assert bicubic_upscale(grey, scale).shape == (6 * scale, 9 * scale)
    assert np.all(bicubic_upscale(grey, scale) == 137)
    assert np.all(bicubic_downscale(np.full((6 * scale, 3 * scale), 137, np.uint8), scale) == 137)


@pytest.mark.parametrize("in_len", [1, 2, 5, 17, 255])
def test_downscale_output_length_is_exact(in_len: int) -> None:
    # 1/3 is not exactly representable; ceil(in * (1/3)) must not overshoot.
    for s in SUPPORTED_SCALES:
        img = np.zeros((in_len, 1), dtype=np.uint8)
        assert imresize(img, 1 / s).shape == (-(-in_len // s), 1)


@pytest.mark.parametrize(
    ("in_len", "out_len", "scale"),
    [(12, 6, 0.5), (12, 4, 1 / 3), (12, 3, 0.25), (5, 10, 2.0), (5, 15, 3.0), (5, 20, 4.0), (1, 3, 3.0), (6, 6, 1.0)],
)
def test_resize_matrix_rows_sum_to_one(in_len: int, out_len: int, scale: float) -> None:
    mat = resize_matrix(in_len, out_len, scale)
    assert mat.shape == (out_len, in_len) and mat.dtype == np.float64
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert not mat.flags.writeable
    assert resize_matrix(in_len, out_len, scale) is mat  # cached


def test_resize_matrix_identity_at_scale_one() -> None:
    np.testing.assert_array_equal(resize_matrix(7, 7, 1.0), np.eye(7))


def test_modcrop() -> None:
    img = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    out = modcrop(img, 3)
    assert out.shape == (6, 9, 3)
    np.testing.assert_array_equal(out, img[:6, :9])
    assert modcrop(np.zeros((8, 8)), 4).shape == (8, 8)


# --- bad input -----------------------------------------------------------------


def test_downscale_rejects_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="uint8"):
        bicubic_downscale(np.zeros((8, 8, 3), dtype=np.float32), 2)
    with pytest.raises(ValueError, match="uint8"):
        bicubic_upscale(np.zeros((8, 8, 3), dtype=np.uint16), 2)


def test_downscale_rejects_not_divisible() -> None:
    with pytest.raises(ValueError, match=r"not divisible by scale 3.*modcrop"):
        bicubic_downscale(np.zeros((10, 9, 3), dtype=np.uint8), 3)


def test_rejects_wrong_dims() -> None:
    with pytest.raises(ValueError, match="HxW or HxWx3"):
        bicubic_downscale(np.zeros((8, 8, 4), dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="HxW or HxWx3"):
        bicubic_upscale(np.zeros((2, 8, 8, 3), dtype=np.uint8), 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        imresize_torch(torch.zeros(3, 8, 8), 2, quantize=True)


def test_output_length_ignores_float_noise() -> None:
    # 50 * 1.1 == 55.00000000000001 in float64; MATLAB's intended size is 55.
    assert imresize(np.zeros((50, 10)), 1.1).shape == (55, 11)
