"""The authors' HDSRNet_x{2,3,4}.pt layout, checked without srlab's own mapping or re-implementation.

The key list below is written out by hand, in the order the released code registers its modules
(the lower net `conv1`..`conv16`, the output conv `conv17`, the upsampler, the upper net `Block`,
then the two mean-shift convs; inside a dynamic conv its own `weight`/`bias` come before its
attention's). A state dict of random tensors in that layout is saved as a file, loaded through
`srlab.models.reference.from_reference_checkpoint`, and srlab's output is compared with a forward
pass this file writes from the paper's equations (docs/architecture.md) in plain
`torch.nn.functional`, on the same tensors:

    upper:  H_0 = ReLU(conv(x)),  HB(H) = CR(DyCR(DiCR(H))) + H  five times        (Eq. 3)
    lower:  O_1..O_16 = ReLU(conv(.)), layer j in 10..16 takes O_{j-1} + O_{18-j},
            the output is O_16 + O_1                                               (Eq. 4)
    fusion: upper * lower                                                          (Eq. 1)
    CB:     sub-pixel conv(s) with bias + PixelShuffle, then conv 64 -> 3
    mean shift: 1x1 convs, identity weight, bias -/+ DIV2K mean x 255

A dynamic conv is computed one sample at a time: attention = softmax(W2 ReLU(W1 avgpool(x)) / T)
with T = 40, kernel = sum_k attention_k W_k, bias = sum_k attention_k b_k.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srlab.models.reference import from_reference_checkpoint, to_reference_state_dict

# --- the released files' keys and shapes, in file order --------------------------------------------------------
LOWER_AND_OUTPUT_CONV = [
    ("conv1.0.weight", (64, 3, 3, 3)),
    ("conv2.0.weight", (64, 64, 3, 3)),
    ("conv3.0.weight", (64, 64, 3, 3)),
    ("conv4.0.weight", (64, 64, 3, 3)),
    ("conv5.0.weight", (64, 64, 3, 3)),
    ("conv6.0.weight", (64, 64, 3, 3)),
    ("conv7.0.weight", (64, 64, 3, 3)),
    ("conv8.0.weight", (64, 64, 3, 3)),
    ("conv9.0.weight", (64, 64, 3, 3)),
    ("conv10.0.weight", (64, 64, 3, 3)),
    ("conv11.0.weight", (64, 64, 3, 3)),
    ("conv12.0.weight", (64, 64, 3, 3)),
    ("conv13.0.weight", (64, 64, 3, 3)),
    ("conv14.0.weight", (64, 64, 3, 3)),
    ("conv15.0.weight", (64, 64, 3, 3)),
    ("conv16.0.weight", (64, 64, 3, 3)),
    ("conv17.0.weight", (3, 64, 3, 3)),
]
UPSAMPLER = {
    2: [
        ("upsample.up.body.0.weight", (256, 64, 3, 3)),
        ("upsample.up.body.0.bias", (256,)),
    ],
    3: [
        ("upsample.up.body.0.weight", (576, 64, 3, 3)),
        ("upsample.up.body.0.bias", (576,)),
    ],
    4: [
        ("upsample.up.body.0.weight", (256, 64, 3, 3)),
        ("upsample.up.body.0.bias", (256,)),
        ("upsample.up.body.2.weight", (256, 64, 3, 3)),
        ("upsample.up.body.2.bias", (256,)),
    ],
}
UPPER_AND_MEAN_SHIFTS = [
    ("Block.conv1.0.weight", (64, 3, 3, 3)),
    ("Block.conv2.0.weight", (64, 64, 3, 3)),
    ("Block.conv3.0.weight", (4, 64, 64, 3, 3)),
    ("Block.conv3.0.bias", (4, 64)),
    ("Block.conv3.0.attention.net.0.weight", (16, 64, 1, 1)),
    ("Block.conv3.0.attention.net.2.weight", (4, 16, 1, 1)),
    ("Block.conv4.0.weight", (64, 64, 3, 3)),
    ("Block.conv5.0.weight", (64, 64, 3, 3)),
    ("Block.conv6.0.weight", (4, 64, 64, 3, 3)),
    ("Block.conv6.0.bias", (4, 64)),
    ("Block.conv6.0.attention.net.0.weight", (16, 64, 1, 1)),
    ("Block.conv6.0.attention.net.2.weight", (4, 16, 1, 1)),
    ("Block.conv7.0.weight", (64, 64, 3, 3)),
    ("Block.conv8.0.weight", (64, 64, 3, 3)),
    ("Block.conv9.0.weight", (4, 64, 64, 3, 3)),
    ("Block.conv9.0.bias", (4, 64)),
    ("Block.conv9.0.attention.net.0.weight", (16, 64, 1, 1)),
    ("Block.conv9.0.attention.net.2.weight", (4, 16, 1, 1)),
    ("Block.conv10.0.weight", (64, 64, 3, 3)),
    ("Block.conv11.0.weight", (64, 64, 3, 3)),
    ("Block.conv12.0.weight", (4, 64, 64, 3, 3)),
    ("Block.conv12.0.bias", (4, 64)),
    ("Block.conv12.0.attention.net.0.weight", (16, 64, 1, 1)),
    ("Block.conv12.0.attention.net.2.weight", (4, 16, 1, 1)),
    ("Block.conv13.0.weight", (64, 64, 3, 3)),
    ("Block.conv14.0.weight", (64, 64, 3, 3)),
    ("Block.conv15.0.weight", (4, 64, 64, 3, 3)),
    ("Block.conv15.0.bias", (4, 64)),
    ("Block.conv15.0.attention.net.0.weight", (16, 64, 1, 1)),
    ("Block.conv15.0.attention.net.2.weight", (4, 16, 1, 1)),
    ("Block.conv16.0.weight", (64, 64, 3, 3)),
    ("sub_mean.weight", (3, 3, 1, 1)),
    ("sub_mean.bias", (3,)),
    ("add_mean.weight", (3, 3, 1, 1)),
    ("add_mean.bias", (3,)),
]
# Published parameter counts (docs/architecture.md) plus the two frozen 1x1 mean-shift convs (2 x 12).
PARAMETERS_WITH_MEAN_SHIFTS = {2: 1_818_496 + 24, 3: 2_003_136 + 24, 4: 1_966_208 + 24}

DIV2K_MEAN_X255 = [0.4488 * 255, 0.4371 * 255, 0.4040 * 255]
TEMPERATURE = 40.0  # the released code's DynamicConv default; its files do not store it
DILATED = (2, 5, 8, 11, 14)  # Block.conv<n>: the dilated conv of each upper block
DYNAMIC = (3, 6, 9, 12, 15)
PLAIN = (4, 7, 10, 13, 16)
TOLERANCE = 1e-4  # float32, relative to the output's magnitude (see test_srlab_output_equals_the_equations)


def authors_layout(scale: int) -> list[tuple[str, tuple[int, ...]]]:
    return LOWER_AND_OUTPUT_CONV + UPSAMPLER[scale] + UPPER_AND_MEAN_SHIFTS


def random_authors_state_dict(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the authors' layout, He-scaled so 16-layer stacks keep activations near the input's size."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in authors_layout(scale):
        if key.startswith(("sub_mean", "add_mean")):
            continue
        fan_in = math.prod(shape[-3:]) if len(shape) >= 4 else shape[-1]
        state[key] = torch.randn(shape, generator=generator) * math.sqrt(2 / fan_in)
        if key.endswith("bias"):
            state[key] = torch.randn(shape, generator=generator) * 0.5
    # The fused features are products of two nets (about 1e5 here): bring the output to a photo's range.
    state["conv17.0.weight"] /= 1000
    for name, sign in (("sub_mean", -1), ("add_mean", +1)):
        state[f"{name}.weight"] = torch.eye(3).reshape(3, 3, 1, 1)
        state[f"{name}.bias"] = sign * torch.tensor(DIV2K_MEAN_X255)
    return {key: state[key] for key, _ in authors_layout(scale)}  # file order


# --- the paper's equations, on the file's tensors ---------------------------------------------------------------
def conv_relu(x: torch.Tensor, weight: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    return F.relu(F.conv2d(x, weight, padding=dilation, dilation=dilation))


def dynamic_conv_relu(x: torch.Tensor, w: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    kernels, biases = w[f"{prefix}.weight"], w[f"{prefix}.bias"]  # (K, 64, 64, 3, 3), (K, 64)
    outputs = []
    for sample in x.split(1):
        pooled = sample.mean(dim=(2, 3), keepdim=True)
        logits = F.conv2d(F.relu(F.conv2d(pooled, w[f"{prefix}.attention.net.0.weight"])),
                          w[f"{prefix}.attention.net.2.weight"]).flatten()
        attention = torch.softmax(logits / TEMPERATURE, dim=0)
        kernel = sum(a * k for a, k in zip(attention, kernels))
        bias = sum(a * b for a, b in zip(attention, biases))
        outputs.append(F.relu(F.conv2d(sample, kernel, bias, padding=1)))
    return torch.cat(outputs)


def hdsrnet_from_the_equations(x: torch.Tensor, w: dict[str, torch.Tensor], scale: int) -> torch.Tensor:
    x = F.conv2d(x, w["sub_mean.weight"], w["sub_mean.bias"])

    upper = conv_relu(x, w["Block.conv1.0.weight"])
    for dilated, dynamic, plain in zip(DILATED, DYNAMIC, PLAIN):
        h = conv_relu(upper, w[f"Block.conv{dilated}.0.weight"], dilation=2)
        h = dynamic_conv_relu(h, w, f"Block.conv{dynamic}.0")
        upper = conv_relu(h, w[f"Block.conv{plain}.0.weight"]) + upper

    outputs = {1: conv_relu(x, w["conv1.0.weight"])}
    for j in range(2, 17):
        layer_input = outputs[j - 1] if j <= 9 else outputs[j - 1] + outputs[18 - j]
        outputs[j] = conv_relu(layer_input, w[f"conv{j}.0.weight"])
    lower = outputs[16] + outputs[1]

    features = upper * lower
    stages = (0, 2) if scale == 4 else (0,)
    for stage in stages:
        weight, bias = w[f"upsample.up.body.{stage}.weight"], w[f"upsample.up.body.{stage}.bias"]
        features = F.pixel_shuffle(F.conv2d(features, weight, bias, padding=1), 3 if scale == 3 else 2)
    rgb = F.conv2d(features, w["conv17.0.weight"], padding=1)
    return F.conv2d(rgb, w["add_mean.weight"], w["add_mean.bias"])


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_written_layout_matches_the_published_sizes(scale):
    layout = authors_layout(scale)
    assert len({key for key, _ in layout}) == len(layout) == (54 if scale in (2, 3) else 56)
    assert sum(math.prod(shape) for _, shape in layout) == PARAMETERS_WITH_MEAN_SHIFTS[scale]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srlab_output_equals_the_equations(scale, tmp_path):
    weights = random_authors_state_dict(scale, seed=scale)
    path = tmp_path / f"HDSRNet_x{scale}.pt"
    torch.save(weights, path)
    model = from_reference_checkpoint(path, scale).eval()

    lr = torch.rand(2, 3, 9, 7, generator=torch.Generator().manual_seed(10 + scale)) * 255
    with torch.no_grad():
        ours = model(lr)
        expected = hdsrnet_from_the_equations(lr, weights, scale)
    assert ours.shape == expected.shape == (2, 3, 9 * scale, 7 * scale)
    # Relative to the output's magnitude (hundreds of grey levels); float32 rounding alone is ~1e-6 of it.
    magnitude = expected.abs().max().item()
    assert magnitude > 100
    assert (ours - expected).abs().max().item() <= TOLERANCE * magnitude
    # Not a trivially constant map: the two samples and the pixels differ.
    assert not torch.allclose(expected[0], expected[1]) and expected.std().item() > 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srlab_writes_back_the_same_keys_shapes_and_values(scale):
    weights = random_authors_state_dict(scale, seed=scale)
    written = to_reference_state_dict(from_reference_checkpoint(weights, scale))
    assert {k: tuple(v.shape) for k, v in written.items()} == dict(authors_layout(scale))
    for key, value in weights.items():
        if key.startswith(("sub_mean", "add_mean")):  # srlab's own buffers, checked against the file, not loaded
            torch.testing.assert_close(written[key], value, rtol=0, atol=1e-4)
        else:
            assert torch.equal(written[key], value), key
