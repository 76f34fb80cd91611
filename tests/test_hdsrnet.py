"""HDSRNet as published: exact parameter counts, output shapes, the frozen mean shift, exact dynamic conv."""

from __future__ import annotations

import pytest
import torch

from srlab.models.common import DIV2K_RGB_MEAN
from srlab.models.dynamic_conv import DynamicConv2d
from srlab.models.hdsrnet import HDSRNet

# docs/architecture.md: trainable parameters, mean shift excluded (x2 is the paper's "1,819K").
PAPER_PARAMETERS = {2: 1_818_496, 3: 2_003_136, 4: 1_966_208}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lr_image(*size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 255




pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("scale", sorted(PAPER_PARAMETERS))
def test_trainable_parameter_count_matches_the_paper(scale):
    model = HDSRNet(scale)
    assert trainable(model) == PAPER_PARAMETERS[scale]
    # Nothing frozen hides among the parameters: every parameter trains.
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS[scale]


def test_mean_shift_is_a_frozen_buffer_with_the_div2k_mean():
    model = HDSRNet(2)
    parameter_names = [name for name, _ in model.named_parameters()]
    assert not any(name.startswith(("sub_mean", "add_mean")) for name in parameter_names)
    buffers = dict(model.named_buffers())
    mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(buffers["sub_mean.shift"], -mean)
    torch.testing.assert_close(buffers["add_mean.shift"], mean)
    # The shift is part of the model's state (saved and moved with it) without being trainable.
    assert {"sub_mean.shift", "add_mean.shift"} <= set(model.state_dict())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape_on_odd_sizes(scale):
    model = HDSRNet(scale).eval()
    with torch.no_grad():
        out = model(lr_image(7, 9, batch=2))
    assert out.shape == (2, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient():
    model = HDSRNet(4)
    model(lr_image(6, 5, batch=2)).mean().backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []


def sharp_dynamic_conv(channels: int = 8, dilation: int = 1) -> DynamicConv2d:
    """T = 1 so the attention, and thus each sample's kernel, differs clearly between inputs."""
    return DynamicConv2d(channels, channels, 3, num_kernels=4, temperature=1.0, dilation=dilation)


def distinct_inputs(channels: int, batch: int, size: int = 9) -> torch.Tensor:
    """Samples with different channel statistics, so the pooled attention differs per sample."""
    x = torch.randn(batch, channels, size, size)
    return x + torch.randn(batch, channels, 1, 1) * 3


@pytest.mark.parametrize("dilation", [1, 2])
def test_dynamic_conv_batched_equals_each_sample_alone(dilation):
    conv = sharp_dynamic_conv(dilation=dilation)
    x = distinct_inputs(8, batch=2)
    attention = conv.attention(x)
    assert (attention[0] - attention[1]).abs().max() > 0.05, "the test needs two different per-sample kernels"
    with torch.no_grad():
        batched = conv(x)
        alone = torch.cat([conv(x[:1]), conv(x[1:])])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    # Each sample really used its own kernel: swapping the attention changes the output.
    with torch.no_grad():
        weight, bias = conv.aggregate(attention.flip(0))
        swapped = torch.nn.functional.conv2d(x[:1], weight[0], bias[0], padding=conv.padding, dilation=dilation)
    assert (swapped - batched[:1]).abs().max() > 1e-2


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_dynamic_conv_batched_path_equals_per_sample_loop(channels_last):
    conv = sharp_dynamic_conv()
    x = distinct_inputs(8, batch=3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        assert not x.is_contiguous()
    x_loop = x.detach().clone().requires_grad_(True)
    x = x.requires_grad_(True)
    batched = conv(x)
    batched_grads = torch.autograd.grad(batched.square().sum(), [x, conv.weight, conv.bias])
    looped = conv.forward_per_sample(x_loop)
    looped_grads = torch.autograd.grad(looped.square().sum(), [x_loop, conv.weight, conv.bias])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    for got, want in zip(batched_grads, looped_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_hdsrnet_batch_equals_samples_alone_also_channels_last():
    model = HDSRNet(2).eval()
    x = lr_image(8, 7, batch=2)
    x[1] = x[1].flip(-1) * 0.5  # a darker, mirrored second image: different attention
    attentions = []
    model.dynamic_convs()[0].attention.register_forward_hook(lambda module, args, out: attentions.append(out))
    with torch.no_grad():
        alone = torch.cat([model(x[:1]), model(x[1:])])
        batched = model(x)
        batched_cl = model(x.contiguous(memory_format=torch.channels_last))
    assert (attentions[2][0] - attentions[2][1]).abs().max() > 1e-3, "the two images must get different kernels"
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(batched_cl, alone, rtol=1e-4, atol=1e-3)


def test_lower_net_residual_links_follow_eq4():
    """O_i = layer_i(input_i); input_10 = O_9 + O_8, ..., input_16 = O_15 + O_2; output = O_16 + O_1."""
    from srlab.models.hdsrnet import SymmetricLowerNet

    net = SymmetricLowerNet(channels=8, depth=16, residual=True)
    x = torch.randn(2, 3, 9, 10)
    outs = {}
    h = x
    for i in range(1, 17):
        if i >= 10:
            h = outs[i - 1] + outs[18 - i]
        outs[i] = net.layers[i - 1](h)
        h = outs[i]
    expected = outs[16] + outs[1]
    with torch.no_grad():
        assert torch.allclose(net(x), expected, atol=1e-6)
