"""The authors' checkpoint layout: srlab -> reference keys -> srlab round trips, wrappers, clear failures.

The layout itself, and srlab's output against the paper's equations on it: tests/test_authors_layout.py.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from srlab.models.hdsrnet import HDSRNet
from srlab.models.reference import from_reference_checkpoint, to_reference_state_dict
from tests.test_authors_layout import authors_layout

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# A narrow model with every kind of layer, for the tests that are about keys rather than sizes.
TINY = {"channels": 8, "num_blocks": 2, "lower_depth": 4}


def lr_image(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 7, 6, generator=torch.Generator().manual_seed(seed)) * 255


def outputs_match(a: torch.nn.Module, b: torch.nn.Module) -> None:
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(lr_image()), a.eval()(lr_image()), rtol=0, atol=1e-5)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_round_trip_through_a_reference_file(scale, tmp_path):
    torch.manual_seed(scale)
    model = HDSRNet(scale)
    reference = to_reference_state_dict(model)
    assert {k: tuple(v.shape) for k, v in reference.items()} == dict(authors_layout(scale))  # written out by hand
    path = tmp_path / f"HDSRNet_x{scale}.pt"
    torch.save(reference, path)

    loaded = from_reference_checkpoint(path, scale)
    assert isinstance(loaded, HDSRNet) and loaded.scale == scale
    outputs_match(model, loaded)
    # And back again: the same file contents.
    again = to_reference_state_dict(loaded)
    assert all(torch.equal(again[k], reference[k]) for k in reference)


def tiny_reference(scale: int = 2, variant: str = "full") -> tuple[HDSRNet, dict[str, torch.Tensor]]:
    model = HDSRNet(scale, variant, **TINY)
    return model, to_reference_state_dict(model)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd, "epoch": 1199},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"model.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"model.module.{k}": v for k, v in sd.items()}},
    ],
    ids=["model", "state_dict", "module.", "model.", "state_dict+model.module."],
)
def test_wrappers_and_prefixes_are_accepted(wrap, tmp_path):
    model, reference = tiny_reference()
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(reference), path)
    outputs_match(model, from_reference_checkpoint(path, 2, **TINY))
    outputs_match(model, from_reference_checkpoint(wrap(reference), 2, **TINY))


@pytest.mark.parametrize("variant", ["six_conv", "upper", "no_lower_residual"])
def test_variants_round_trip_in_the_same_numbering(variant):
    model, reference = tiny_reference(4, variant)
    # The final conv follows the lower net's layers (conv1..conv4 here, so conv5); without a lower
    # net it keeps the published name conv17.
    final = "conv5.0.weight" if model.lower is not None else "conv17.0.weight"
    assert final in reference and reference[final].shape == (3, 8, 3, 3)
    assert any(k.startswith("conv1.") for k in reference) == (model.lower is not None)
    outputs_match(model, from_reference_checkpoint(reference, 4, variant, **TINY))


def test_x4_file_loaded_as_x2_names_the_upsampler_keys_and_the_scale(tmp_path):
    path = tmp_path / "HDSRNet_x4.pt"
    torch.save(to_reference_state_dict(HDSRNet(4)), path)
    with pytest.raises(ValueError, match=r"does not fit HDSRNet\(scale=2, variant='full'\)") as err:
        from_reference_checkpoint(path, 2)
    message = str(err.value)
    assert str(path) in message and "scale=2" in message
    assert "unexpected keys: upsample.up.body.2.weight, upsample.up.body.2.bias" in message
    assert "x4" in message and "load it with scale=4" in message


def test_x2_file_loaded_as_x3_names_the_mismatching_shapes():
    _, reference = tiny_reference(2)
    with pytest.raises(ValueError, match=r"^the given state dict does not fit HDSRNet\(scale=3") as err:
        from_reference_checkpoint(reference, 3, **TINY)
    message = str(err.value)
    assert "scale=3" in message and "load it with scale=2" in message
    assert "upsample.up.body.0.weight: file (32, 8, 3, 3) vs model (72, 8, 3, 3)" in message


def test_missing_key_is_named():
    _, reference = tiny_reference()
    del reference["Block.conv3.0.attention.net.2.weight"]
    with pytest.raises(ValueError, match=r"missing keys: Block\.conv3\.0\.attention\.net\.2\.weight$"):
        from_reference_checkpoint(reference, 2, **TINY)


def test_a_different_mean_shift_is_refused():
    _, reference = tiny_reference()
    reference["add_mean.bias"] = reference["add_mean.bias"] / 255  # trained on [0, 1] inputs
    with pytest.raises(ValueError, match=r"add_mean\.bias = \[0\.4488, 0\.4371, 0\.404\] differs .* DIV2K"):
        from_reference_checkpoint(reference, 2, **TINY)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="HDSRNet_x3.pt"):
        from_reference_checkpoint(tmp_path / "HDSRNet_x3.pt", 3)


def test_model_config_loads_a_reference_file(tmp_path):
    """What `eval.py model=hdsrnet_reference model.path=... model.scale=4` instantiates."""
    torch.manual_seed(4)
    model = HDSRNet(4)
    path = tmp_path / "HDSRNet_x4.pt"
    torch.save({"model": to_reference_state_dict(model)}, path)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["model=hdsrnet_reference", f"model.path={path}", "model.scale=4"])
    outputs_match(model, hydra.utils.instantiate(cfg.model))
