"""MATLAB-compatible bicubic ``imresize``, bit-exact on uint8 images.

Every SR paper builds its LR inputs with MATLAB ``imresize(HR, 1/s, 'bicubic')``
and scores bicubic baselines with ``imresize(LR, s, 'bicubic')``. PIL, OpenCV
and ``torch.nn.functional.interpolate`` use other kernels, no antialiasing or
other border rules, so they are not interchangeable (docs/protocol.md).

Why not a library: the registry's ``bicubic-pytorch`` reproduces MATLAB's
kernel but works in float and does not round between the two 1-D passes, so on
uint8 images it is not bit-exact with MATLAB, which rounds to uint8 after each
pass. Here both a numpy path (data preparation) and a torch path (on-device
evaluation / degradation) are built on one weight matrix and one pass plan.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = [
    "modcrop",
    "resize_matrix",
    "imresize",
    "imresize_torch",
    "bicubic_downscale",
    "bicubic_upscale",
]

# MATLAB's 'bicubic' is Keys' cubic convolution with a = -0.5, support [-2, 2].
_CUBIC_A = -0.5
_KERNEL_WIDTH = 4.0


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop HxW or HxWxC so that H and W are multiples of ``scale`` (top-left kept)."""
    if img.ndim not in (2, 3):
        raise ValueError(f"modcrop expects an HxW or HxWxC array, got shape {img.shape}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"modcrop scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    h, w = img.shape[:2]
    # MATLAB modcrop drops the bottom/right remainder, so the top-left anchors.
    return img[: h - h % scale, : w - w % scale, ...]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5, written as MATLAB's ``cubic`` does."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    a = _CUBIC_A
    return ((a + 2) * absx3 - (a + 3) * absx2 + 1) * (absx <= 1) + (
        a * absx3 - 5 * a * absx2 + 8 * a * absx - 4 * a
    ) * ((absx > 1) & (absx <= 2))


def _out_len(in_len: int, scale: float) -> int:
    # MATLAB's size is ceil(in*scale) on the intended ratio, but the float
    # product can land a hair above an integer (50 * 1.1 = 55.00000000000001
    # would give 56), so snap float noise away before the ceil. For 1/s with
    # s = 2..12 the product happens to be exact; the guard costs nothing.
    return int(math.ceil(round(in_len * scale, 9)))


@functools.lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix of MATLAB imresize 'bicubic' weights.

    Mirrors MATLAB's ``contributions``: antialiased (widened) kernel when
    downscaling, per-row normalisation, symmetric border mirroring with the
    weights of a repeated source index summed. The result is cached and
    read-only, so callers must copy before modifying.
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"lengths must be positive, got in_len={in_len}, out_len={out_len}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")

    kernel_width = _KERNEL_WIDTH
    if scale < 1:
        # Antialiasing: stretch the kernel by 1/scale so it low-passes the
        # input, and scale it by `scale` so it still integrates to 1.
        def kernel(d: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * d)

        kernel_width = kernel_width / scale
    else:
        kernel = _cubic

    # Output pixel x (1-based) maps to input coordinate u (1-based), aligning
    # pixel edges rather than centres, exactly as MATLAB does.
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside
    weights = kernel(u[:, None] - indices)
    # MATLAB normalises before mirroring; mirroring then only moves weights.
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Symmetric padding: index sequence 1..n, n..1 repeated (edge pixel doubled).
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    src = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]

    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], src.shape)
    # Several taps may mirror onto one source pixel: their weights add.
    np.add.at(mat, (rows, src), weights)
    mat.setflags(write=False)
    return mat


def _pass_plan(in_h: int, in_w: int, scale_h: float, scale_w: float) -> list[tuple[int, int, int, float]]:
    """The 1-D passes as (axis, in_len, out_len, scale); axis 0 = height, 1 = width.

    MATLAB resizes the dimension with the smaller scale first (stable sort, so
    height first on ties). For uint8 the order matters because of the rounding
    between passes.
    """
    dims = [(0, in_h, scale_h), (1, in_w, scale_w)]
    dims.sort(key=lambda d: d[2])  # stable: height first when scales are equal
    return [(axis, n, _out_len(n, s), s) for axis, n, s in dims]


def _quantize(y):
    """Round half away from zero and saturate to [0, 255], like MATLAB's uint8 cast.

    Works on numpy arrays and torch tensors alike so both paths share one rule.
    After clipping y >= 0, where floor(y + 0.5) is round-half-away-from-zero.
    """
    floor = torch.floor if isinstance(y, torch.Tensor) else np.floor
    return floor(y.clip(0.0, 255.0) + 0.5)


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return scale


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` for HxW or HxWxC arrays.

    uint8 input gives uint8 output, rounded after each 1-D pass (bit-exact with
    MATLAB). Float input gives float64 output without rounding.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC array, got shape {img.shape}")
    quantize = img.dtype == np.uint8
    if not quantize and not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"imresize supports uint8 or floating arrays, got dtype {img.dtype}")
    scale = _check_scale(scale)

    out = img.astype(np.float64)
    for axis, n, m, s in _pass_plan(img.shape[0], img.shape[1], scale, scale):
        mat = resize_matrix(n, m, s)
        # tensordot puts the new axis first; move it back into place.
        out = np.moveaxis(np.tensordot(mat, out, axes=(1, axis)), 0, axis)
        if quantize:
            out = _quantize(out)
    return out.astype(np.uint8) if quantize else out


def imresize_torch(x: torch.Tensor, scale: float, quantize: bool) -> torch.Tensor:
    """MATLAB bicubic imresize of an (N, C, H, W) float tensor, on x's device and dtype.

    With ``quantize=True`` each pass is rounded half away from zero and clamped
    to [0, 255]: on integer-valued float64 input this is identical to
    ``imresize`` on uint8. In float32 a sum that lands within float32 error of
    a .5 tie may round the other way, so use float64 where bit-exactness matters.
    """
    if x.ndim != 4:
        raise ValueError(f"imresize_torch expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"imresize_torch expects a floating tensor, got dtype {x.dtype}")
    scale = _check_scale(scale)

    out = x
    for axis, n, m, s in _pass_plan(x.shape[-2], x.shape[-1], scale, scale):
        mat = torch.from_numpy(resize_matrix(n, m, s).copy()).to(device=x.device, dtype=x.dtype)
        if axis == 0:
            out = torch.matmul(mat, out)  # (m, H) @ (N, C, H, W) -> (N, C, m, W)
        else:
            out = torch.matmul(out, mat.T)  # (N, C, H, W) @ (W, m) -> (N, C, H, m)
        if quantize:
            out = _quantize(out)
    return out


def _check_uint8_image(img: np.ndarray, name: str) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        dtype = getattr(img, "dtype", type(img).__name__)
        raise ValueError(f"{name} must be a uint8 numpy array (MATLAB-exact path), got dtype {dtype}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{name} must be HxW or HxWx3, got shape {img.shape}")


def _check_int_scale(scale: int) -> int:
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    return int(scale)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR = MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a uint8 HxWx3 or HxW image."""
    _check_uint8_image(hr, "hr")
    scale = _check_int_scale(scale)
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(
            f"hr size {h}x{w} is not divisible by scale {scale}; crop it first with modcrop(hr, {scale})"
        )
    # Weights use the double 1/scale, as MATLAB does when given 1/s; the
    # output length is snapped in _out_len so it is exactly h/scale.
    return imresize(hr, 1.0 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(lr, scale, 'bicubic')`` of a uint8 image; output scale*H x scale*W."""
    _check_uint8_image(lr, "lr")
    scale = _check_int_scale(scale)
    return imresize(lr, float(scale))
