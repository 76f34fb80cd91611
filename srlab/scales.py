"""The upscaling factors srlab supports end to end: models, DIV2K archives, paper tables, reports."""

from __future__ import annotations

__all__ = ["SUPPORTED_SCALES", "check_scale"]

SUPPORTED_SCALES: tuple[int, ...] = (2, 3, 4)


def check_scale(scale: int, supported: tuple[int, ...] = SUPPORTED_SCALES) -> int:
    """`scale` as an int; ValueError naming the value and the supported scales otherwise."""
    # bool is an int subclass; True would otherwise pass as x1 where 1 is supported.
    if isinstance(scale, bool) or scale not in supported:
        raise ValueError(f"scale={scale!r} is not supported; choose one of {list(supported)}")
    return int(scale)
