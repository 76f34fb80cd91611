"""The package-level public API: documented imports work, every `__all__` name resolves, imports stay light."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types

import pytest

PUBLIC_PACKAGES = ("srlab.models", "srlab.data", "srlab.metrics", "srlab.callbacks")


def test_documented_imports():
    from srlab.data import (
        DIV2KDataModule,
        SampleDataModule,
        bicubic_downscale,
        bicubic_upscale,
        load_benchmark,
        read_image,
        write_image,
    )
    from srlab.metrics import SRMetrics, psnr_ssim_per_image
    from srlab.models import HRN, SRCNN, VARIANTS, Bicubic, DynamicConv2d, HDSRNet, VariantSpec

    assert inspect.isclass(DIV2KDataModule) and inspect.isclass(SampleDataModule)
    assert all(callable(f) for f in (bicubic_downscale, bicubic_upscale, load_benchmark, read_image, write_image))
    assert inspect.isclass(SRMetrics) and callable(psnr_ssim_per_image)
    assert all(inspect.isclass(c) for c in (HRN, SRCNN, Bicubic, DynamicConv2d, HDSRNet, VariantSpec))
    assert "full" in VARIANTS and isinstance(VARIANTS["full"], VariantSpec)


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__), f"{package}.__all__ lists a name twice"
    for name in module.__all__:
        value = getattr(module, name)
        # A module here would mean a public name shadowed by (or shadowing) a submodule of the same name.
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
    star: dict = {}
    exec(f"from {package} import *", star)
    assert set(module.__all__) <= set(star)


def test_unknown_name_is_an_attribute_error():
    import srlab.data

    with pytest.raises(AttributeError, match="'srlab.data' has no attribute 'DIV3KDataModule'"):
        srlab.data.DIV3KDataModule  # noqa: B018


@pytest.mark.parametrize("package", ["srlab.models", "srlab.metrics", "srlab.data", "srlab.data.imresize"])
def test_import_does_not_load_lightning(package):
    # A fresh interpreter: this test process has long imported Lightning.
    code = f"import sys, {package}; print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", f"import {package} loads Lightning"


def test_model_contract():
    # What srlab.models' docstring promises of every model: `scale` in, `.scale` kept, RGB x scale out.
    import torch

    from srlab.models import HRN, SRCNN, Bicubic, HDSRNet

    lr = torch.rand(1, 3, 6, 5) * 255
    small = {HDSRNet: {"channels": 8, "num_blocks": 1, "lower_depth": 2}, HRN: {"n_feats": 8, "n_groups": 1},
             SRCNN: {"filters": (8, 4)}, Bicubic: {}}
    for cls, kwargs in small.items():
        model = cls(3, **kwargs).eval()
        assert model.scale == 3, cls
        with torch.no_grad():
            out = model(lr)
        assert out.shape == (1, 3, 18, 15) and out.dtype == torch.float32, cls
