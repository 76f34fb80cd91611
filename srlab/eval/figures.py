"""Paper-style visual comparisons (Figs. 2-7): the HR with a marked region, then zoomed crops of each method.

Drawn with numpy/OpenCV only. Layout: the HR image (scaled to the panel
height) with a red rectangle, then one panel per method: the nearest-neighbour
zoom of the same region, labelled with the method and its PSNR (dB) on the
whole image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Panel", "comparison_figure", "textured_box"]

_RED = (220, 30, 30)
_WHITE = 255
_LABEL_HEIGHT = 28


@dataclass
class Panel:
    """One method's SR (uint8 HxWx3, same size as the HR) and its PSNR on the whole image (None for the HR)."""

    label: str
    image: np.ndarray
    psnr: float | None = None


def textured_box(hr: np.ndarray, size: int | None = None) -> tuple[int, int, int]:
    """(x, y, size) of the square with the most detail (mean |Laplacian| of the grey HR): where SR differs."""
    grey = hr if hr.ndim == 2 else cv2.cvtColor(hr, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    size = int(size or max(16, min(h, w) // 4))
    size = min(size, h, w)
    detail = np.abs(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F))
    # Box sum at every top-left corner via an integral image.
    integral = cv2.integral(detail)
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), size


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def _labelled(img: np.ndarray, text: str) -> np.ndarray:
    strip = np.full((_LABEL_HEIGHT, img.shape[1], 3), _WHITE, dtype=np.uint8)
    scale = 0.5
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    while tw > img.shape[1] - 4 and scale > 0.25:  # shrink long labels to fit under the panel
        scale -= 0.05
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(strip, text, (max((img.shape[1] - tw) // 2, 2), 19), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([img, strip], axis=0)


def comparison_figure(hr: np.ndarray, panels: Sequence[Panel], box: tuple[int, int, int] | None = None,
                      title: str = "HR", panel_size: int = 192, gap: int = 6) -> np.ndarray:
    """One uint8 RGB image: [HR with the box, labelled `title`] [HR crop] [crop of each panel], each labelled."""
    hr = _rgb(hr)
    h, w = hr.shape[:2]
    for panel in panels:
        if panel.image.shape[:2] != (h, w):
            ph, pw = panel.image.shape[:2]
            raise ValueError(f"{panel.label}: image {pw}x{ph} differs from the HR's {w}x{h}")
    x, y, size = box or textured_box(hr)
    if not (0 <= x and 0 <= y and x + size <= w and y + size <= h and size > 0):
        raise ValueError(f"box (x={x}, y={y}, size={size}) is not inside the {w}x{h} HR image")
    overview_w = max(1, round(w * panel_size / h))
    overview = cv2.resize(hr, (overview_w, panel_size), interpolation=cv2.INTER_AREA)
    f = panel_size / h
    thickness = max(2, panel_size // 96)
    cv2.rectangle(overview, (round(x * f), round(y * f)), (round((x + size) * f) - 1, round((y + size) * f) - 1),
                  _RED, thickness)
    columns = [_labelled(overview, title)]
    for panel in [Panel("HR", hr), *panels]:
        crop = _rgb(panel.image)[y : y + size, x : x + size]
        zoom = cv2.resize(crop, (panel_size, panel_size), interpolation=cv2.INTER_NEAREST)
        text = panel.label if panel.psnr is None else f"{panel.label} {panel.psnr:.2f} dB"
        columns.append(_labelled(zoom, text))
    spacer = np.full((panel_size + _LABEL_HEIGHT, gap, 3), _WHITE, dtype=np.uint8)
    parts = []
    for column in columns:
        parts += [column, spacer]
    return np.ascontiguousarray(np.concatenate(parts[:-1], axis=1))
