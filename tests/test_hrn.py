"""HRN (the figures' model) and HRNReference (the released code's): DCTs, wiring, sizes, released keys, training."""

from __future__ import annotations

import subprocess
import sys
import warnings

import lightning as L
import numpy as np
import pytest
import scipy.fft
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from srlab.data.sample import SampleDataModule
from srlab.models.hrn import HRN, WRAB, CoordinateAttention, dct2, dct_matrix, idct2
from srlab.models.hrn_reference import (
    HRNReference,
    ReleasedCoordinateAttention,
    dct_width,
    from_released_checkpoint,
    idct_width,
    to_released_state_dict,
)
from srlab.module import SRModule
from srlab.scales import SUPPORTED_SCALES
from tests.conftest import REPO

ODD_SIZES = [(13, 17), (9, 6), (7, 11)]
TINY_HRN = {"n_feats": 8, "n_groups": 2, "n_blocks": 2, "expansion": 2, "reduction": 4}
TINY_REFERENCE = {"n_feats": 8, "n_resblocks": 1, "reduction": 4}
UPSAMPLER_STAGES = {2: [(0, 4)], 3: [(0, 9)], 4: [(0, 4), (2, 4)]}  # (index in tail.0, output channels / C)


def lr_image(*size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 255


def count(model: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------ DCTs


def test_orthonormal_dct2_round_trip_is_exact_in_float32():
    x = torch.rand(2, 8, 13, 17, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(idct2(dct2(x)), x, rtol=0, atol=1e-5)
    x64 = x.double()
    assert torch.allclose(idct2(dct2(x64)), x64, rtol=0, atol=1e-12)


def test_orthonormal_dct2_is_the_2d_dct_ii():
    matrix = dct_matrix(7, torch.device("cpu"), torch.float64)
    assert torch.allclose(matrix @ matrix.T, torch.eye(7, dtype=torch.float64), atol=1e-12)
    x = torch.rand(1, 2, 5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct2(x).numpy(), expected, rtol=0, atol=1e-12)
    # Cached per (size, device, dtype).
    assert dct_matrix(7, torch.device("cpu"), torch.float64) is matrix
    assert dct_matrix(7, torch.device("cpu"), torch.float32) is not matrix


def test_released_dct_convention_is_unnormalised_1d_along_the_width():
    # torch_dct.dct / idct with norm=None are scipy's type-II DCT and its inverse (norm "backward").
    x = torch.rand(2, 3, 5, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    coeffs = dct_width(x)
    np.testing.assert_allclose(coeffs.numpy(), scipy.fft.dct(x.numpy(), type=2, axis=-1), rtol=0, atol=1e-12)
    assert coeffs[..., 0].allclose(2 * x.sum(dim=-1))  # X_0 = 2 * sum: unnormalised
    np.testing.assert_allclose(idct_width(coeffs).numpy(), x.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        idct_width(x).numpy(), scipy.fft.idct(x.numpy(), type=2, axis=-1), rtol=0, atol=1e-12
    )
    x32 = x.float()
    assert torch.allclose(idct_width(dct_width(x32)), x32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("transform", [dct2, dct_width], ids=["dct2", "dct_width"])
def test_dct_first_built_in_inference_mode_still_trains(transform):
    # Lightning validates under torch.inference_mode; a matrix cached there must not break training.
    size = (23, 29)  # a size no other test uses, so the cache is filled here
    with torch.inference_mode():
        transform(torch.rand(1, 1, *size))
    x = torch.rand(1, 1, *size, requires_grad=True)
    transform(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("transform", [dct2, dct_width], ids=["dct2", "dct_width"])
def test_dct_used_under_the_meta_device_leaves_the_cpu_cache_real(transform):
    # FLOP counts (srlab.eval.complexity) run models under torch.device("meta").
    size = (19, 31)  # a size no other test uses
    with torch.device("meta"):
        assert transform(torch.rand(1, 1, *size)).device.type == "meta"
    x = torch.rand(1, 1, *size)
    assert transform(x).device.type == "cpu" and torch.isfinite(transform(x)).all()


# ------------------------------------------------------------------------------ HRN


def test_coordinate_attention_gates_the_input_and_adds_it_back():
    attention = CoordinateAttention(16, reduction=4).eval()
    assert attention.squeeze.out_channels == 8  # max(8, 16 // 4)
    assert isinstance(attention.norm, torch.nn.BatchNorm2d) and isinstance(attention.act, torch.nn.ELU)
    for gate in (attention.gate_h, attention.gate_w):
        torch.nn.init.zeros_(gate.weight)  # sigmoid(0) = 0.5 in both directions
    x = torch.randn(2, 16, 7, 5)
    torch.testing.assert_close(attention(x), x + x * 0.5 * 0.5)


def test_wrab_is_wide_elu_narrow_attention_with_the_last_features_as_residual():
    block = WRAB(3 * 8, 8, expansion=4, reduction=4)
    wide, act, narrow, attention = block.body
    assert (wide.in_channels, wide.out_channels, narrow.out_channels) == (24, 32, 8)
    assert isinstance(act, torch.nn.ELU) and isinstance(attention, CoordinateAttention)
    torch.nn.init.zeros_(narrow.weight)
    torch.nn.init.zeros_(narrow.bias)
    x = torch.randn(1, 24, 6, 5)
    torch.testing.assert_close(block(x), x[:, 16:])  # zero body: the residual is the previous block's output


def test_dem_fuses_the_figures_lines_and_carries_the_frequency_stream():
    model = HRN(2, **TINY_HRN).eval()
    seen: dict[str, list[torch.Tensor]] = {"frequency_in": [], "frequency_out": [], "fuse_2_in": []}

    def record(name_in: str, name_out: str | None = None):
        def hook(module, args, out) -> None:  # returns None: the output stays as it is
            seen[name_in].append(args[0])
            if name_out:
                seen[name_out].append(out)
        return hook

    for dem in model.dems:
        dem.frequency.register_forward_hook(record("frequency_in", "frequency_out"))
        dem.fuse_2.register_forward_hook(record("fuse_2_in"))
    seen["head_in"], seen["head_out"] = [], []
    model.head.register_forward_hook(record("head_in", "head_out"))
    with torch.no_grad():
        model(lr_image(9, 7))
    # One stream from the head's DCT, handed from DEM to DEM (not a new DCT per module).
    torch.testing.assert_close(seen["frequency_in"][0], dct2(seen["head_out"][0]))
    torch.testing.assert_close(seen["frequency_in"][1], seen["frequency_out"][0])
    # The second fusion reads [second WRDB, first WRDB, block input, IDCT(frequency)].
    first = model.dems[0]
    fused = seen["fuse_2_in"][0]
    assert fused.shape[1] == 4 * 8 and first.fuse_1.in_channels == 2 * 8
    torch.testing.assert_close(fused[:, 8:16], first.spatial_1(seen["head_out"][0]))
    torch.testing.assert_close(fused[:, 16:24], seen["head_out"][0])
    torch.testing.assert_close(fused[:, 24:], idct2(seen["frequency_out"][0]))


def hrn_parameters(scale: int, c: int = 32, expansion: int = 2, dems: int = 4, hidden: int = 8) -> int:
    """HRN's parameter count from its drawing, term by term."""
    attention = c * hidden + 2 * hidden + 2 * hidden * c  # squeeze (no bias), BN affine, two gates (no bias)
    narrow = 9 * expansion * c * c + c
    wrabs = sum(9 * k * c * expansion * c + expansion * c + narrow + attention for k in (1, 2, 3))  # dense inputs
    wrdb = wrabs + (4 * c * c + c)  # + 1x1 fusion of [input, 3 outputs]
    dem = 3 * wrdb + (2 * c * c + c) + (4 * c * c + c)  # 2 spatial + 1 frequency WRDB, two fusions
    upsampler = {2: 9 * c * 4 * c + 4 * c, 3: 9 * c * 9 * c + 9 * c, 4: 2 * (9 * c * 4 * c + 4 * c)}[scale]
    return (9 * 3 * c + c) + dems * dem + upsampler + (9 * c * 3 + 3)


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_hrn_default_parameter_count(scale):
    expected = {2: 2_135_459, 3: 2_181_699, 4: 2_172_451}[scale]
    assert hrn_parameters(scale) == expected
    model = HRN(scale)
    assert count(model) == count(model, trainable=True) == expected
    assert all("mean" not in name for name, _ in model.named_parameters())  # the mean shift is a buffer
    assert count(HRN(4, n_feats=64)) == hrn_parameters(4, c=64) == 8_620_547


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_hrn_output_shape_at_odd_sizes(scale, size):
    model = HRN(scale, **TINY_HRN).eval()
    with torch.no_grad():
        out = model(lr_image(*size, batch=2))
    assert out.shape == (2, 3, scale * size[0], scale * size[1]) and torch.isfinite(out).all()


def test_hrn_default_runs_at_two_sizes_in_a_row():
    model = HRN(3).eval()
    with torch.no_grad():
        assert model(lr_image(11, 7)).shape == (1, 3, 33, 21)
        assert model(lr_image(6, 10)).shape == (1, 3, 18, 30)


# ------------------------------------------------------------------------------ HRNReference


def reference_parameters(scale: int, c: int = 64, blocks: int = 20, hidden: int = 4) -> int:
    conv3 = 9 * c * c + c
    attention = c * hidden + 2 * hidden + 2 * hidden * c  # conv_1x1, the unused BN's affine, F_h, F_w
    group = blocks * (2 * conv3 + attention) + conv3
    upsampler = sum(9 * c * k * c + k * c for _, k in UPSAMPLER_STAGES[scale])
    return (9 * 3 * c + c) + 12 * group + 8 * (2 * c * c + c) + upsampler + (9 * c * 3 + 3)


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_reference_parameter_count_matches_the_released_code(scale):
    expected = {2: 18_572_099, 3: 18_756_739, 4: 18_719_811}[scale]
    assert reference_parameters(scale) == expected
    with torch.device("meta"):  # counts only
        as_released, fixed = HRNReference(scale), HRNReference(scale, fix_wiring=True)
    assert count(as_released) == count(fixed) == expected
    batch_norms = 12 * 20 * 2 * 4  # the never-applied attention BNs: 12 groups x 20 blocks x (weight, bias) x 4
    conv3, attention = 9 * 64 * 64 + 64, 64 * 4 + 2 * 4 + 2 * 4 * 64
    c3_and_b4 = (2 * 64 * 64 + 64) + (20 * (2 * conv3 + attention) + conv3)  # never used as released
    assert c3_and_b4 == 1_537_824
    assert count(fixed, trainable=True) == expected - batch_norms
    assert count(as_released, trainable=True) == expected - c3_and_b4 - (batch_norms - 20 * 8)


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("fix_wiring", [False, True])
def test_reference_output_shape_at_odd_sizes(scale, fix_wiring):
    model = HRNReference(scale, fix_wiring, **TINY_REFERENCE).eval()
    with torch.no_grad():
        for size in ODD_SIZES:
            out = model(lr_image(*size, batch=2))
            assert out.shape == (2, 3, scale * size[0], scale * size[1]) and torch.isfinite(out).all()


def test_reference_attention_equals_the_released_48x48_pooling():
    """At 48x48, the runtime row/column means are the released AdaptiveAvgPool2d((48, 1)) / ((1, 48))."""
    attention = ReleasedCoordinateAttention(16, reduction=4).eval()
    x = torch.randn(2, 16, 48, 48)
    rows = torch.nn.AdaptiveAvgPool2d((48, 1))(x).permute(0, 1, 3, 2)  # (N, C, 1, 48)
    columns = torch.nn.AdaptiveAvgPool2d((1, 48))(x)  # (N, C, 1, 48)
    mixed = torch.relu(attention.conv_1x1(torch.cat((rows, columns), dim=3)))  # no BN: the released forward skips it
    mixed_rows, mixed_columns = mixed.split([48, 48], dim=3)
    gate_h = torch.sigmoid(attention.F_h(mixed_rows.permute(0, 1, 3, 2)))
    gate_w = torch.sigmoid(attention.F_w(mixed_columns))
    with torch.no_grad():
        torch.testing.assert_close(attention(x), x * gate_h.expand_as(x) * gate_w.expand_as(x))
    assert not any(p.requires_grad for p in attention.bn.parameters())


def released_forward(model: HRNReference, lr: torch.Tensor, fix_wiring: bool) -> torch.Tensor:
    """The released forward pass, unrolled by hand (with or without its two slips)."""
    c3, b4 = (model.c3, model.b4) if fix_wiring else (model.c1, model.b2)
    x = model.head(lr / 255 - torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
    fx = dct_width(x)
    c1 = model.c1(torch.cat([model.b1(x), x], 1))
    fb1 = model.fb1(fx)
    c2 = model.c2(torch.cat([model.b2(c1), idct_width(fb1)], 1))
    c3_out = c3(torch.cat([model.b3(c2), c2], 1))
    fb2 = model.fb2(fb1)
    c4 = model.c4(torch.cat([b4(c3_out), idct_width(fb2)], 1))
    c5 = model.c5(torch.cat([model.b5(c4), c4], 1))
    fb3 = model.fb3(fb2)
    c6 = model.c6(torch.cat([model.b6(c5), idct_width(fb3)], 1))
    c7 = model.c7(torch.cat([model.b7(c6), c6], 1))
    fb4 = model.fb4(fb3)
    c8 = model.c8(torch.cat([model.b8(c7), idct_width(fb4)], 1))
    out = model.tail(x + c8)
    return (out + torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)) * 255


@pytest.mark.parametrize("fix_wiring", [False, True])
def test_reference_follows_the_released_wiring(fix_wiring):
    model = HRNReference(2, fix_wiring, **TINY_REFERENCE).eval()
    lr = lr_image(7, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(lr), released_forward(model, lr, fix_wiring), rtol=1e-5, atol=1e-3)
        before = model(lr)
        for name in ("c3", "b4"):
            for param in getattr(model, name).parameters():
                param.add_(0.1)
        changed = not torch.allclose(model(lr), before)
    assert changed == fix_wiring  # as released, c3 and b4 never touch the output
    frozen = {name for name in ("c3", "b4") if not any(p.requires_grad for p in getattr(model, name).parameters())}
    assert frozen == (set() if fix_wiring else {"c3", "b4"})


# ------------------------------------------------------------------------------ released checkpoint layout


def released_layout(scale: int, c: int = 64, blocks: int = 20, hidden: int = 4) -> dict[str, tuple[int, ...]]:
    """The key layout of the released `hrn_x4.pth` (`torch.save(net.state_dict())` of hrn/model/hrn.py's Net)."""
    keys: dict[str, tuple[int, ...]] = {}
    for name in ("sub_mean", "add_mean"):
        keys |= {f"{name}.shifter.weight": (3, 3, 1, 1), f"{name}.shifter.bias": (3,)}
    keys |= {"head.0.weight": (c, 3, 3, 3), "head.0.bias": (c,)}
    groups = [f"b{i}" for i in range(1, 9)] + [f"fb{i}" for i in range(1, 5)]
    for group in groups:
        for block in range(blocks):
            prefix = f"{group}.body.{block}.body"
            keys |= {
                f"{prefix}.0.weight": (c, c, 3, 3), f"{prefix}.0.bias": (c,),
                f"{prefix}.2.weight": (c, c, 3, 3), f"{prefix}.2.bias": (c,),
                f"{prefix}.3.conv_1x1.weight": (hidden, c, 1, 1),
                f"{prefix}.3.bn.weight": (hidden,), f"{prefix}.3.bn.bias": (hidden,),
                f"{prefix}.3.bn.running_mean": (hidden,), f"{prefix}.3.bn.running_var": (hidden,),
                f"{prefix}.3.bn.num_batches_tracked": (),
                f"{prefix}.3.F_h.weight": (c, hidden, 1, 1), f"{prefix}.3.F_w.weight": (c, hidden, 1, 1),
            }
        keys |= {f"{group}.body.{blocks}.weight": (c, c, 3, 3), f"{group}.body.{blocks}.bias": (c,)}
    for i in range(1, 9):
        keys |= {f"c{i}.body.0.weight": (c, 2 * c, 1, 1), f"c{i}.body.0.bias": (c,)}
    for index, factor in UPSAMPLER_STAGES[scale]:
        keys |= {f"tail.0.{index}.weight": (factor * c, c, 3, 3), f"tail.0.{index}.bias": (factor * c,)}
    keys |= {"tail.1.weight": (3, c, 3, 3), "tail.1.bias": (3,)}
    return keys


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_released_layout_at_full_size(scale):
    with torch.device("meta"):  # shapes only
        model = HRNReference(scale)
    released = to_released_state_dict(model)
    assert {k: tuple(v.shape) for k, v in released.items()} == released_layout(scale)


def tiny_released(scale: int = 2, seed: int = 0) -> tuple[HRNReference, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    model = HRNReference(scale, **TINY_REFERENCE)
    # Non-default BN statistics, so that a key mapped to the wrong place would show.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_()
    return model, to_released_state_dict(model)


def outputs_match(a: torch.nn.Module, b: torch.nn.Module) -> None:
    lr = lr_image(6, 7, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(b.eval()(lr), a.eval()(lr), rtol=0, atol=1e-4)


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
def test_released_file_round_trip(scale, tmp_path):
    model, released = tiny_released(scale)
    assert {k: tuple(v.shape) for k, v in released.items()} == released_layout(scale, c=8, blocks=1, hidden=2)
    released["sub_mean.shifter.bias"] = torch.tensor([-0.4488, -0.4371, -0.4040])  # as the released file stores it
    path = tmp_path / f"hrn_x{scale}.pth"
    torch.save(released, path)
    loaded = from_released_checkpoint(path, scale, **TINY_REFERENCE)
    outputs_match(model, loaded)
    again = to_released_state_dict(loaded)
    assert all(torch.allclose(again[k].float(), released[k].float()) for k in released)
    # A plain load_state_dict of the released layout works too (what eval.py ckpt_path=hrn_x4.pth does).
    fresh = HRNReference(scale, **TINY_REFERENCE)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    outputs_match(model, fresh)


def test_pytorch_0_4_files_without_num_batches_tracked_load():
    model, released = tiny_released()
    released = {k: v for k, v in released.items() if not k.endswith("num_batches_tracked")}
    outputs_match(model, from_released_checkpoint(released, 2, **TINY_REFERENCE))


@pytest.mark.parametrize(
    "wrap",
    [lambda sd: {"state_dict": sd}, lambda sd: {f"module.{k}": v for k, v in sd.items()}],
    ids=["state_dict", "module."],
)
def test_released_wrappers_and_prefixes(wrap):
    model, released = tiny_released()
    outputs_match(model, from_released_checkpoint(wrap(released), 2, **TINY_REFERENCE))


def test_released_missing_and_unexpected_keys_are_named():
    _, released = tiny_released()
    del released["fb3.body.0.body.3.F_w.weight"]
    released["b9.body.0.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        from_released_checkpoint(released, 2, **TINY_REFERENCE)
    message = str(err.value)
    assert message.startswith("the given state dict does not fit HRNReference(scale=2) in the released HRN layout:")
    assert "missing keys: fb3.body.0.body.3.F_w.weight" in message
    assert "unexpected keys: b9.body.0.weight" in message


def test_released_x4_file_loaded_as_x2_names_the_scale(tmp_path):
    _, released = tiny_released(4)
    path = tmp_path / "hrn_x4.pth"
    torch.save(released, path)
    with pytest.raises(ValueError) as err:
        from_released_checkpoint(path, 2, **TINY_REFERENCE)
    message = str(err.value)
    assert str(path) in message and "unexpected keys: tail.0.2.weight, tail.0.2.bias" in message
    assert "load it with scale=4" in message


def test_released_x2_file_loaded_as_x3_names_the_shapes():
    _, released = tiny_released(2)
    with pytest.raises(ValueError) as err:
        from_released_checkpoint(released, 3, **TINY_REFERENCE)
    assert "tail.0.0.weight: file (32, 8, 3, 3) vs model (72, 8, 3, 3)" in str(err.value)
    assert "load it with scale=2" in str(err.value)


def test_released_file_with_another_mean_shift_is_refused():
    _, released = tiny_released()
    released["add_mean.shifter.bias"] = released["add_mean.shifter.bias"] * 255  # a 0..255 model
    with pytest.raises(ValueError, match=r"add_mean\.shifter\.bias = \[114\.444, .*\] differs from the released"):
        from_released_checkpoint(released, 2, **TINY_REFERENCE)


def test_released_weights_with_fix_wiring_warn_that_c3_and_b4_were_never_trained():
    _, released = tiny_released()
    with pytest.warns(UserWarning, match="c3 and b4 were never trained"):
        from_released_checkpoint(released, 2, fix_wiring=True, **TINY_REFERENCE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_released_checkpoint(released, 2, **TINY_REFERENCE)


def test_eval_loads_a_released_file_through_the_model_config(tmp_path):
    """What `eval.py model=hrn_reference model.scale=4 ckpt_path=hrn_x4.pth` builds."""
    from srlab.tasks.weights import load_model, plan_sources

    model, released = tiny_released(4)
    path = tmp_path / "hrn_x4.pth"
    torch.save(released, path)
    overrides = ["model=hrn_reference", "model.scale=4", *(f"model.{k}={v}" for k, v in TINY_REFERENCE.items())]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*overrides, f"ckpt_path={path}", "scales=[4]"])
    source = plan_sources(cfg)[4]
    outputs_match(model, load_model(source, cfg.model, torch.device("cpu")))


# ------------------------------------------------------------------------------ configs and training


@pytest.mark.parametrize(
    ("name", "cls", "params"), [("hrn", HRN, 2_172_451), ("hrn_reference", HRNReference, 18_719_811)]
)
def test_model_configs_build(name, cls, params):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", "model.scale=4"])
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert type(model) is cls and model.scale == 4 and count(model) == params


@pytest.mark.parametrize(
    "model",
    [
        {"_target_": "srlab.models.hrn.HRN", "scale": 2, **TINY_HRN},
        {"_target_": "srlab.models.hrn_reference.HRNReference", "scale": 2, **TINY_REFERENCE},
    ],
    ids=["hrn", "hrn_reference"],
)
def test_srmodule_training_lowers_the_loss(model, tmp_path):
    L.seed_everything(0)
    datamodule = SampleDataModule(scale=2, patch_size=24, batch_size=4, steps_per_epoch=40)
    module = SRModule(model=model, optimizer={"_target_": "torch.optim.Adam", "lr": 2e-3})
    losses: list[float] = []

    class RecordLoss(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        default_root_dir=tmp_path, max_steps=40, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[RecordLoss()],
    )
    trainer.fit(module, datamodule=datamodule)
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"loss did not drop enough: first {first:.2f}, last {last:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [["model=hrn"], ["model=hrn_reference", *(f"model.{k}={v}" for k, v in TINY_REFERENCE.items())]],
    ids=["hrn", "hrn_reference"],
)
def test_train_py_smoke(overrides, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", *overrides, "debug=smoke", f"hydra.run.dir={tmp_path}",
         "callbacks.progress_bar=null"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("cls", [HRN, HRNReference])
def test_unsupported_scale_is_refused(cls):
    with pytest.raises(ValueError, match=r"scale=5 is not supported; choose one of \[2, 3, 4\]"):
        cls(5)
