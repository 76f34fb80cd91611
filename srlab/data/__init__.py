"""Data: MATLAB-exact bicubic degradation, image IO, benchmark sets, datasets and LightningDataModules.

The names below are imported on first use (PEP 562 module ``__getattr__``), so that
``import srlab.data.imresize`` (what the models need) does not load Lightning. The
``imresize`` function stays at ``srlab.data.imresize.imresize``: exported here it would
shadow its own module.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "bicubic_downscale": "srlab.data.imresize",
    "bicubic_upscale": "srlab.data.imresize",
    "imresize_torch": "srlab.data.imresize",
    "modcrop": "srlab.data.imresize",
    "ImageReadError": "srlab.data.io",
    "list_images": "srlab.data.io",
    "read_image": "srlab.data.io",
    "write_image": "srlab.data.io",
    "BENCHMARK_SETS": "srlab.data.benchmark",
    "BenchmarkSet": "srlab.data.benchmark",
    "canonical_benchmark": "srlab.data.benchmark",
    "load_benchmark": "srlab.data.benchmark",
    "EvalDataset": "srlab.data.datasets",
    "ImagePair": "srlab.data.datasets",
    "PatchDataset": "srlab.data.datasets",
    "SRDataModule": "srlab.data.base",
    "DIV2KDataModule": "srlab.data.div2k",
    "FolderDataModule": "srlab.data.folder",
    "SampleDataModule": "srlab.data.sample",
    "ensure_benchmarks": "srlab.data.download",
    "ensure_div2k": "srlab.data.download",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
