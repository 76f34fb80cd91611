"""Export for deployment (`eval.py task=export`): ONNX and TorchScript files that take any batch and image size.

Outputs are compared with the PyTorch model to `TOLERANCE` = 1e-4 of the 0-255 range (0.0255), at two LR
sizes (24x20, 17x31) that differ from the traced example, with batches of 1 and 2. Also here: the model
summary's example input (its FLOPs column), which the same small-input forward serves.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch.utils.flop_counter import FlopCounterMode

from srlab.models import HDSRNet
from srlab.models.dynamic_conv import DynamicConv2d
from srlab.module import EXAMPLE_LR_SIZE, SRModule
from srlab.tasks import EvalError, evaluate
from srlab.tasks.export import TOLERANCE, KernelBankConv, export_model, exportable
from srlab.tasks.train import train
from srlab.utils.perf import apply_speed_options
from tests.train_runs import REPO, SMOKE, clear_hydra, compose_train

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = ((24, 20), (17, 31))
BATCHES = (1, 2)


def random_lr(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(batch * height + width)) * 255


def load_exported(path: Path):
    """The exported file as a function of a tensor, loaded the way a deployment would (not through srlab)."""
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["lr"]
        assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]  # dynamic batch and size
        return lambda x: torch.from_numpy(session.run(None, {"lr": x.numpy()})[0])
    scripted = torch.jit.load(str(path))
    return lambda x: scripted(x).detach()


def assert_matches_pytorch(path: Path, model: torch.nn.Module, scale: int) -> None:
    run = load_exported(path)
    for height, width in SIZES:
        for batch in BATCHES:
            lr = random_lr(batch, height, width)
            with torch.no_grad():
                expected = model(lr)
            got = run(lr)
            assert got.shape == (batch, 3, scale * height, scale * width)
            difference = float((got - expected).abs().max())
            assert difference <= TOLERANCE, f"{path.name} batch {batch} {height}x{width}: {difference}"


def test_kernel_bank_equals_the_dynamic_convolution():
    for dilation, bias in ((1, True), (2, False)):
        conv = DynamicConv2d(6, 5, num_kernels=4, dilation=dilation, bias=bias).eval()
        x = torch.randn(3, 6, 9, 11)
        with torch.no_grad():
            torch.testing.assert_close(KernelBankConv(conv)(x), conv(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(KernelBankConv(conv)(x[:1]), conv(x[:1]), rtol=1e-5, atol=1e-5)


def test_exportable_copy_undoes_speed_options_and_leaves_the_model_alone():
    model = apply_speed_options(HDSRNet(2, channels=8, num_blocks=1, lower_depth=2), channels_last=True,
                                narrow_convs=True).eval()
    export_copy = exportable(model)
    assert not any(isinstance(m, DynamicConv2d) for m in export_copy.modules())
    assert all(type(m).__name__ != "NarrowConv2d" for m in export_copy.modules())
    assert all(p.is_contiguous() for p in export_copy.parameters())
    assert len(model.dynamic_convs()) == 1  # the original keeps its dynamic convolution
    lr = random_lr(2, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(export_copy(lr), model(lr), rtol=0, atol=TOLERANCE)


def test_torchscript_export_takes_any_batch_and_size(tmp_path):
    model = HDSRNet(2).eval()  # the published x2 size, random weights
    path = tmp_path / "HDSRNet_x2.torchscript.pt"
    worst = export_model(model, path, "torchscript", scale=2)
    assert worst <= TOLERANCE
    assert_matches_pytorch(path, model, 2)


@pytest.mark.slow
def test_onnx_export_takes_any_batch_and_size(tmp_path):
    model = HDSRNet(2).eval()
    path = tmp_path / "HDSRNet_x2.onnx"
    export_model(model, path, "onnx", scale=2, opset=20)
    assert_matches_pytorch(path, model, 2)


def test_bicubic_export_is_refused_with_the_reason(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("eval", overrides=["task=export", "model=bicubic", "scales=[2]", f"paths.output_dir={tmp_path}"])
    with pytest.raises(EvalError, match="Bicubic has no weights to deploy .* not size-independent"):
        evaluate(cfg)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_eval_py_exports_a_trained_checkpoint(tmp_path):
    cfg = compose_train([*SMOKE, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path / "run")
    try:
        train(cfg)
    finally:
        clear_hydra()
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = subprocess.run(  # the command line, with an output file name
        [sys.executable, "eval.py", "task=export", "format=onnx", f"ckpt_path={ckpt}",
         f"output={tmp_path / 'deploy' / 'x2.onnx'}", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # In this process, into an output folder: the file is named after the model and scale.
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        export_cfg = compose("eval", overrides=["task=export", "format=torchscript", f"ckpt_path={ckpt}",
                                                f"output={tmp_path / 'deploy'}", f"paths.output_dir={tmp_path}"])
    assert evaluate(export_cfg) == 0
    files = sorted(p.name for p in (tmp_path / "deploy").iterdir())
    assert files == ["HDSRNet_x2.torchscript.pt", "x2.onnx"]
    # The PyTorch side is the checkpoint as srlab loads it (channels_last, narrow to_rgb GEMM).
    model = SRModule.load_from_checkpoint(ckpt, map_location="cpu").model.eval()
    for name in files:
        assert_matches_pytorch(tmp_path / "deploy" / name, model, 2)


def test_model_summary_counts_flops_of_a_tiny_example_input():
    module = SRModule(model={"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2},
                      optimizer={"_target_": "torch.optim.Adam", "lr": 1e-4}, channels_last=True, narrow_convs=True)
    assert tuple(module.example_input_array.shape) == (1, 3, EXAMPLE_LR_SIZE, EXAMPLE_LR_SIZE)
    summary = ModelSummary(module, max_depth=1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module.model(module.example_input_array)
    assert summary.total_flops == counter.get_total_flops() > 0  # the column no longer reads 0
    assert summary.in_sizes[0] == [1, 3, EXAMPLE_LR_SIZE, EXAMPLE_LR_SIZE]
    assert summary.out_sizes[0] == [1, 3, 2 * EXAMPLE_LR_SIZE, 2 * EXAMPLE_LR_SIZE]
    # With torch.compile the summary runs nothing (it would compile the model at setup).
    compiled = SRModule(model={"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2},
                        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-4}, compile=True)
    assert compiled.example_input_array is None
