"""Draws the run's learning curve (a validation metric against optimiser steps) as a PNG after every validation.

Redrawn each time, so a run stopped at any point leaves an up-to-date curve; the points travel in
checkpoints, so a resumed run keeps the whole curve. Drawn with OpenCV (already a dependency).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch

from srlab.data.io import write_image

WHITE, BLACK, GREY, BLUE, RED = (255, 255, 255), (0, 0, 0), (200, 200, 200), (31, 119, 180), (214, 39, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    raw = (high - low) / max(count, 1)
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    return [v * step for v in range(math.ceil(low / step), math.floor(high / step) + 1)]


def _label(value: float) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def draw_curve(
    steps: list[int], values: list[float], title: str, references: dict[str, float] | None = None,
    size: tuple[int, int] = (900, 540),
) -> np.ndarray:
    """An RGB uint8 plot of `values` against `steps`, with horizontal `references` lines (label: value)."""
    width, height = size
    left, right, top, bottom = 80, 20, 40, 50
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    refs = references or {}
    y_all = [*values, *refs.values()]
    y_low, y_high = min(y_all), max(y_all)
    pad = max(0.05 * (y_high - y_low), 0.05)
    y_low, y_high = y_low - pad, y_high + pad
    x_low, x_high = 0, max(max(steps), 1)

    def to_px(step: float, value: float) -> tuple[int, int]:
        x = left + (step - x_low) / (x_high - x_low) * (width - left - right)
        y = top + (y_high - value) / (y_high - y_low) * (height - top - bottom)
        return int(round(x)), int(round(y))

    for tick in _ticks(y_low, y_high):
        x0, y = to_px(x_low, tick)
        cv2.line(img, (x0, y), (width - right, y), GREY, 1)
        cv2.putText(img, f"{tick:.2f}", (5, y + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    for tick in _ticks(x_low, x_high):
        x, y0 = to_px(tick, y_low)
        cv2.line(img, (x, top), (x, y0), GREY, 1)
        cv2.putText(img, _label(tick), (x - 12, height - bottom + 20), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), BLACK, 1)
    for label, value in refs.items():
        _, y = to_px(x_low, value)
        for x in range(left, width - right, 12):  # dashed
            cv2.line(img, (x, y), (min(x + 6, width - right), y), RED, 1)
        cv2.putText(img, f"{label} {value:.2f}", (left + 6, y - 5), FONT, 0.45, RED, 1, cv2.LINE_AA)
    points = np.array([to_px(s, v) for s, v in zip(steps, values)], dtype=np.int32)
    cv2.polylines(img, [points.reshape(-1, 1, 2)], False, BLUE, 2, cv2.LINE_AA)
    for point in points:
        cv2.circle(img, tuple(int(c) for c in point), 3, BLUE, -1, cv2.LINE_AA)
    last = f"last {values[-1]:.2f} at step {steps[-1]}, best {max(values):.2f}"
    cv2.putText(img, f"{title}   ({last})", (left, 25), FONT, 0.55, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, "optimiser steps", (width // 2 - 50, height - 10), FONT, 0.5, BLACK, 1, cv2.LINE_AA)
    return img


class LearningCurve(L.Callback):
    """After each validation, appends (step, `monitor`) and rewrites `path` (PNG) on rank 0.

    `references`: horizontal lines, e.g. ``{"paper (T91)": 32.39}``.
    """

    def __init__(self, path: str, monitor: str = "val/psnr", references: dict[str, float] | None = None):
        self.path = Path(path)
        self.monitor = monitor
        self.references = {str(k): float(v) for k, v in (references or {}).items()}
        self.points: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or not torch.is_tensor(value) or value.numel() != 1:
            return
        self.points = [p for p in self.points if p[0] != trainer.global_step] + [(trainer.global_step, float(value))]
        if trainer.is_global_zero:
            steps, values = zip(*self.points)
            write_image(self.path, draw_curve(list(steps), list(values), f"{self.monitor} vs step", self.references))

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.points = [(int(s), float(v)) for s, v in state_dict.get("points", [])]
