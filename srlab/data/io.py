"""Reading and writing images as uint8 RGB (or single-channel grey) arrays, with errors that name the file.

Documented conversions (what `read_image` returns):

- RGB -> HxWx3 RGB; RGBA -> RGB (alpha dropped, colour kept as stored, not composited);
- grey -> HxW; grey + alpha (PNG "LA") -> HxW grey (alpha dropped);
- palette -> RGB (expanded by the decoder; a palette with transparency -> RGB too);
- 16-bit (any of the above) -> 8-bit as round(v / 257), so 65535 -> 255 and 257 * k -> k.

A file stored with one grey channel stays 2-D, because the metric scores it on
that channel. Anything else (missing, empty, truncated, not an image, float or
signed pixels) raises `ImageReadError` naming the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from srlab.utils.files import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file that cannot be used as an image; the message names the file and the reason."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY_ALPHA = 4  # IHDR colour type of a grey + alpha PNG


def is_grey_alpha_png(data: np.ndarray) -> bool:
    """OpenCV expands grey + alpha PNGs to BGRA; the IHDR colour type (byte 25) says the file is grey."""
    return len(data) > 25 and data[:8].tobytes() == PNG_SIGNATURE and int(data[25]) == PNG_GREY_ALPHA


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 HxWx3 RGB, or HxW for a grey file (conversions: module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({err.strerror or err})") from err
    if data.size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageReadError(f"{path}: not a readable image (truncated, corrupt or not an image format)")
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit unsigned)")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels in (1, 2) or (channels == 4 and is_grey_alpha_png(data)):
            img = img[:, :, 0]  # grey, or grey + alpha: keep the grey channel
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageReadError(f"{path}: unsupported channel count {channels} (expected 1 to 4)")
    return np.ascontiguousarray(img)


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write a uint8 RGB/grey array as PNG (or the suffix's format) atomically (srlab.utils.files)."""
    path = Path(path)
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: write_image expects uint8, got {img.dtype}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, encoded = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise OSError(f"{path}: could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted by name; a missing or image-less folder is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def tensor_to_uint8(img) -> np.ndarray:
    """(3, H, W) float tensor in [0, 255] -> HxWx3 uint8 (clamped and rounded, as it is scored)."""
    from srlab.metrics.sr_metrics import quantize

    arr = quantize(img.detach().float()).to("cpu").numpy().astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))
