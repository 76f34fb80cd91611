"""Paper Table I variants: names and order, layer order inside the blocks, parameter counts derived by hand, Hydra."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir

from srlab.models.dynamic_conv import DynamicConv2d
from srlab.models.hdsrnet import VARIANTS, HDSRNet

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

PAPER_ORDER = [
    "six_conv", "upper_plain", "upper_no_dynamic", "upper_no_dilated", "upper_conv_for_dilated",
    "upper_conv_for_dynamic", "upper", "no_lower_residual", "full",
]

# Parameter arithmetic at x4, 64 channels, 5 upper blocks, 16 lower layers, K = 4 kernels.
HEAD = 3 * 64 * 9                                 # Conv3x3 3->64, no bias                   =   1,728
CONV = 64 * 64 * 9                                # Conv3x3 64->64, no bias (plain/dilated)  =  36,864
DYNAMIC = 4 * CONV + 4 * 64 + 64 * 16 + 16 * 4    # K kernels + K biases + attention 64->16->4 = 148,800
CB_X4 = 2 * (64 * 256 * 9 + 256) + 64 * 3 * 9     # two [Conv 64->256 + bias, PixelShuffle(2)] + Conv 64->3 = 297,152
LOWER = HEAD + 15 * CONV                          # 16 Conv+ReLU: 3->64 then 15 x 64->64     = 554,688


def upper(block: int) -> int:
    """Upper net: head Conv+ReLU and five blocks of `block` parameters each."""
    return HEAD + 5 * block


EXPECTED_X4 = {
    "six_conv": upper(CONV) + CB_X4,                             # 6 Conv+ReLU + CB          = 483,200
    "upper_plain": upper(CONV) + CB_X4,                          # same layers, with residuals = 483,200
    "upper_no_dynamic": upper(2 * CONV) + CB_X4,                 # dilated + plain           = 667,520
    "upper_no_dilated": upper(DYNAMIC + CONV) + CB_X4,           # dynamic + plain           = 1,227,200
    "upper_conv_for_dilated": upper(CONV + DYNAMIC + CONV) + CB_X4,  # plain, dynamic, plain = 1,411,520
    "upper_conv_for_dynamic": upper(3 * CONV) + CB_X4,           # dilated, plain, plain     = 851,840
    "upper": upper(CONV + DYNAMIC + CONV) + CB_X4,               # dilated, dynamic, plain   = 1,411,520
    "no_lower_residual": upper(CONV + DYNAMIC + CONV) + LOWER + CB_X4,  # same weights as HDSRNet = 1,966,208
    "full": upper(CONV + DYNAMIC + CONV) + LOWER + CB_X4,        # HDSRNet                   = 1,966,208
}

# What each row is made of: (dynamic convs, dilated convs, upper-block residuals, lower net, lower residual links).
STRUCTURE = {
    "six_conv": (0, 0, False, False, None),
    "upper_plain": (0, 0, True, False, None),
    "upper_no_dynamic": (0, 5, True, False, None),
    "upper_no_dilated": (5, 0, True, False, None),
    "upper_conv_for_dilated": (5, 0, True, False, None),
    "upper_conv_for_dynamic": (0, 5, True, False, None),
    "upper": (5, 5, True, False, None),
    "no_lower_residual": (5, 5, True, True, False),
    "full": (5, 5, True, True, True),
}


# The layers of each upper block in the order they run (docs/architecture.md, Table I):
# DiCR = dilated Conv+ReLU, DyCR = dynamic Conv+ReLU, CR = plain Conv+ReLU.
BLOCK_ORDER = {
    "six_conv": ("CR",),
    "upper_plain": ("CR",),
    "upper_no_dynamic": ("DiCR", "CR"),
    "upper_no_dilated": ("DyCR", "CR"),
    "upper_conv_for_dilated": ("CR", "DyCR", "CR"),
    "upper_conv_for_dynamic": ("DiCR", "CR", "CR"),
    "upper": ("DiCR", "DyCR", "CR"),
    "no_lower_residual": ("DiCR", "DyCR", "CR"),
    "full": ("DiCR", "DyCR", "CR"),
}


def upper_layers_as_run(model: HDSRNet) -> list[str]:
    """The kinds of the upper net's 3x3 convolutions in the order a forward pass calls them."""
    calls: list[str] = []

    def record(module, _inputs, _output):
        if isinstance(module, DynamicConv2d):
            calls.append("DyCR")
        else:
            calls.append("DiCR" if module.dilation == (2, 2) else "CR")

    convs = [m for m in model.upper.modules()
             if isinstance(m, DynamicConv2d) or (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))]
    handles = [m.register_forward_hook(record) for m in convs]
    try:
        with torch.no_grad():
            model.upper(torch.rand(1, 3, 6, 6))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def structure(model: HDSRNet) -> tuple:
    dynamic = sum(isinstance(m, DynamicConv2d) for m in model.modules())
    dilated = sum(isinstance(m, torch.nn.Conv2d) and m.dilation == (2, 2) for m in model.modules())
    residual = all(block.residual for block in model.upper.blocks)
    lower_residual = None if model.lower is None else model.lower.residual
    return dynamic, dilated, residual, model.lower is not None, lower_residual


pytestmark = pytest.mark.usefixtures("single_thread")


def test_arithmetic_terms():
    assert (HEAD, CONV, DYNAMIC, CB_X4, LOWER) == (1_728, 36_864, 148_800, 297_152, 554_688)
    assert EXPECTED_X4["full"] == 1_966_208  # docs/architecture.md, x4


def test_variants_are_the_paper_rows_in_order():
    assert list(VARIANTS) == PAPER_ORDER
    assert list(EXPECTED_X4) == list(STRUCTURE) == list(BLOCK_ORDER) == PAPER_ORDER


@pytest.mark.parametrize("variant", PAPER_ORDER)
def test_parameter_count_and_structure_at_x4(variant):
    model = HDSRNet(4, variant)
    assert trainable(model) == EXPECTED_X4[variant]
    assert structure(model) == STRUCTURE[variant]
    # The head Conv+ReLU, then five blocks whose layers run in the row's order (not only in its counts).
    assert upper_layers_as_run(model) == ["CR", *BLOCK_ORDER[variant] * 5]
    for block in model.upper.blocks:  # every layer is Conv+ReLU: the ReLU follows its conv
        assert all(isinstance(list(layer.children())[-1], torch.nn.ReLU) for layer in block.layers)


def test_unknown_variant_lists_every_valid_name():
    with pytest.raises(ValueError, match="unknown HDSRNet variant 'upper_no_lower'") as err:
        HDSRNet(4, "upper_no_lower")
    assert ", ".join(PAPER_ORDER) in str(err.value)


@pytest.mark.parametrize("variant", PAPER_ORDER)
def test_variant_builds_from_hydra_config_and_runs(variant):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        # Table I's own config (experiment=table1 builds on paper_x4); the default experiment is a narrower demo.
        cfg = compose("train", overrides=["experiment=paper_x4", f"model.variant={variant}"])
    model = hydra.utils.instantiate(cfg.model).eval()
    assert isinstance(model, HDSRNet) and model.variant == variant
    assert trainable(model) == EXPECTED_X4[variant]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 5, 7) * 255)
    assert out.shape == (2, 3, 20, 28) and torch.isfinite(out).all()
