"""eval.py task=export: a model as an ONNX or TorchScript file for deployment, for any image size and batch.

    python eval.py task=export format=onnx ckpt_path=x2.ckpt          # <run dir>/HDSRNet_x2.onnx
    python eval.py task=export format=torchscript ckpt_path=x2.ckpt   # <run dir>/HDSRNet_x2.torchscript.pt

The file holds the model's forward alone: float32 RGB ``(N, 3, h, w)`` NCHW in [0, 255] in,
``(N, 3, s*h, s*w)`` out, unclamped and unrounded (as the model contract says); N, h and w are
free. Tiled inference, self-ensemble and channels_last are not part of it.

HDSRNet's dynamic convolutions do not export as they run in srlab: DynamicConv2d folds the
batch into one grouped convolution (groups = batch) and takes a plain path for one image. An
ONNX Conv has a fixed group count and a traced graph keeps the branch it saw, so neither would
hold for every batch. For export each one becomes a `KernelBankConv`: one ordinary convolution
with all K kernels, then the attention-weighted sum of the K outputs. Convolution is linear in
the kernel, so this equals the dynamic convolution (to float rounding); it costs more FLOPs in
those layers (README, "Export for deployment").

After writing, the file is loaded (onnxruntime, torch.jit) and its outputs are compared with the
PyTorch model's on batches of 1 and 2 at two sizes other than the traced one; a difference over
`TOLERANCE` or a failure to run is an error naming the model, so a graph that holds one size
only (e.g. Bicubic's resize matrices, computed in NumPy from the input size) is never written
silently.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from srlab.models.dynamic_conv import DynamicConv2d
from srlab.tasks.checks import EvalError
from srlab.tasks.weights import load_model, model_label, plan_sources
from srlab.utils.perf import NarrowConv2d

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# Largest |exported - PyTorch| accepted: 1e-4 of the 0-255 range (float32 rounding here: about 1e-3 absolute).
TOLERANCE = 1e-4 * 255
TRACE_SHAPE = (2, 3, 32, 28)  # the example input the graph is traced with
CHECK_SIZES = ((24, 20), (17, 31))  # LR (h, w) the written file is checked at, with batches 1 and 2
CHECK_BATCHES = (1, 2)
EXPORTER_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx")
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")  # the exporters colour their messages


class KernelBankConv(nn.Module):
    """A DynamicConv2d computed as conv(x, all K kernels) weighted by the attention: exportable for any batch.

    out[b] = sum_k a[b, k] * (conv(x[b], W_k) + bias_k), which equals conv(x[b], sum_k a[b, k] W_k) +
    sum_k a[b, k] bias_k, what DynamicConv2d computes. Holds the kernels flattened to one (K * O, I, k, k)
    bank, so the exported graph has a constant convolution weight, and the conv's attention module.
    """

    def __init__(self, conv: DynamicConv2d):
        super().__init__()
        self.attention = conv.attention
        self.kernels = nn.Parameter(conv.weight.detach().flatten(0, 1).clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.num_kernels, self.out_channels = conv.num_kernels, conv.out_channels
        self.padding, self.dilation = conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = self.attention(x)  # (B, K)
        responses = F.conv2d(x, self.kernels, None, padding=self.padding, dilation=self.dilation)
        responses = responses.unflatten(1, (self.num_kernels, self.out_channels))  # (B, K, O, H, W)
        out = torch.einsum("bk,bkohw->bohw", attention, responses)
        if self.bias is not None:
            out = out + (attention @ self.bias)[:, :, None, None]
        return out


def exportable(model: nn.Module) -> nn.Module:
    """A CPU float32 NCHW copy of `model` in eval mode whose graph holds for any batch and size.

    Undoes srlab's speed options (channels_last weights, NarrowConv2d GEMMs, torch.compile), which
    only change how the same numbers are computed, and replaces every DynamicConv2d by a KernelBankConv.
    """
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.contiguous()
    for module in model.modules():
        module._compiled_call_impl = None  # nn.Module.compile: export the plain forward
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, DynamicConv2d):
                setattr(parent, name, KernelBankConv(child))
            elif isinstance(child, NarrowConv2d):
                plain = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, padding=child.padding,
                                  bias=child.bias is not None, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
    return model


@contextlib.contextmanager
def _quiet(names: tuple[str, ...]):
    """Raises the named loggers to WARNING for a while: the ONNX optimiser logs every pass at INFO."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _trace_input() -> torch.Tensor:
    return torch.rand(TRACE_SHAPE, generator=torch.Generator().manual_seed(0)) * 255


def export_onnx(model: nn.Module, path: Path, opset: int | None = None) -> None:
    """Writes `model` (already `exportable`) to `path` with batch, height and width dynamic (torch.export)."""
    batch, height, width = (torch.export.Dim(n) for n in ("batch", "height", "width"))
    with warnings.catch_warnings(), _quiet(EXPORTER_LOGGERS):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(
            model, (_trace_input(),), dynamo=True, opset_version=opset, input_names=["lr"], output_names=["sr"],
            dynamic_shapes=({0: batch, 2: height, 3: width},), verbose=False,
        )
    program.save(str(path), external_data=False)  # one file, weights inside


def export_torchscript(model: nn.Module, path: Path) -> None:
    """Traces `model` (already `exportable`: no branch on the input's shape) and saves it for torch.jit.load."""
    with torch.no_grad():
        traced = torch.jit.trace(model, (_trace_input(),), check_trace=False)
    torch.jit.save(traced, str(path))


def exported_runner(path: Path, fmt: str):
    """A function running the exported file on a float32 NCHW tensor, returning a tensor."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    scripted = torch.jit.load(str(path), map_location="cpu")
    return lambda x: scripted(x).detach()


def check_export(path: Path, fmt: str, reference: nn.Module, scale: int) -> float:
    """Largest |exported - reference| over CHECK_SIZES x CHECK_BATCHES; raises ValueError when over TOLERANCE."""
    run = exported_runner(path, fmt)
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for height, width in CHECK_SIZES:
        for batch in CHECK_BATCHES:
            lr = torch.rand(batch, 3, height, width, generator=generator) * 255
            with torch.no_grad():
                expected = reference(lr).float()
            got = run(lr)
            if got.shape != (batch, 3, scale * height, scale * width):
                raise ValueError(f"output {tuple(got.shape)} for input {tuple(lr.shape)}")
            worst = max(worst, float((got - expected).abs().max()))
    if worst > TOLERANCE:
        raise ValueError(f"outputs differ from PyTorch by up to {worst:.4g} (> {TOLERANCE:.4g} on the 0-255 range)")
    return worst


def export_model(model: nn.Module, path: Path, fmt: str, scale: int, opset: int | None = None) -> float:
    """Exports `model` to `path` in `fmt` and checks the file; returns the largest difference to PyTorch."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: choose one of {', '.join(FORMATS)}")
    model = model.to("cpu").eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        export_onnx(exportable(model), path, opset)
    else:
        export_torchscript(exportable(model), path)
    return check_export(path, fmt, model, scale)


def _reason(err: BaseException) -> str:
    """First line of the innermost cause: the exporters wrap the useful message in generic advice."""
    while err.__cause__ is not None:
        err = err.__cause__
    return (ANSI_CODE.sub("", str(err)).strip().splitlines() or [type(err).__name__])[0]


def _output_path(cfg: DictConfig, label: str, scale: int, fmt: str, several: bool) -> Path:
    """`output` as a file (its suffix is the format's; one scale only) or a folder (default: the run folder)."""
    output = Path(str(cfg.output)) if cfg.get("output") else Path(cfg.paths.output_dir)
    if output.name.endswith(FORMATS[fmt]):
        if several:
            raise EvalError(f"output={output}: one file for several scales; give a folder")
        return output
    return output / f"{label}_x{scale}{FORMATS[fmt]}"


def run_export(cfg: DictConfig) -> int:
    """`task=export`: one file per scale with weights; returns the process exit code."""
    fmt = str(cfg.get("format") or "onnx")
    if fmt not in FORMATS:
        raise EvalError(f"format={fmt}: choose one of {', '.join(FORMATS)}")
    sources = plan_sources(cfg)
    for scale, source in sources.items():
        log.info("loading %s", source.describe())
        model = load_model(source, cfg.model, torch.device("cpu"))
        label = model_label(model, cfg.get("model_name"))
        if not any(True for _ in model.parameters()):
            raise EvalError(f"task=export: {label} has no weights to deploy and its graph is not size-independent "
                            "(MATLAB bicubic builds its resize matrices from the input size in NumPy)")
        path = _output_path(cfg, label, scale, fmt, several=len(sources) > 1)
        try:
            worst = export_model(model, path, fmt, scale, cfg.get("opset"))
        except Exception as err:  # the exporters raise many kinds; one line naming the model is what helps
            path.unlink(missing_ok=True)
            raise EvalError(f"task=export format={fmt}: {label} x{scale} does not export for every image size and "
                            f"batch: {_reason(err)}") from err
        log.info("%s x%d -> %s (%s; checked on batches %s at LR %s: max |diff| %.2g of 255)", label, scale, path, fmt,
                 "/".join(map(str, CHECK_BATCHES)), ", ".join(f"{h}x{w}" for h, w in CHECK_SIZES), worst)
        print(path)
    return 0
