"""SR inference in one function with modes: whole image, tiled with overlap, x8 self-ensemble, tiled + x8.

KAIR's ``test_mode`` idea, made exact:

- **Tiled**: the LR image is cut into ``tile`` x ``tile`` cores; each core is run
  with ``tile_overlap`` LR pixels of real context on every side (clipped at the
  image border) and only the core's output is kept. Every output pixel then
  sees the same input as in whole-image inference, provided
  ``tile_overlap >= receptive radius`` of the network (the rule; see
  :func:`receptive_radius`; HDSRNet's is 23 LR px, so the default 32 is safe).
  Image borders need no overlap: a tile touching the border zero-pads exactly
  where the whole image does.
- **Global statistics**: HDSRNet's dynamic convolutions weight their kernels by
  an attention computed from the *global* average of their input, which no tile
  can see. Tiling therefore runs in passes: pass k runs every tile up to the
  k-th global-pool call and sums that call's input over the tile cores; the
  image-wide mean is then frozen and fed to the module in later passes (the
  module sees a 1x1 map whose mean is the whole image's mean). With P such
  calls the image is processed P + 1 times, in bounded memory; pass k stops at
  the k-th call, so for HDSRNet (P = 5, upper net first) tiling costs about
  2.3x the whole-image compute, times the overlap's share ((T + 2 O)^2 / T^2 at
  most). Modules of the kinds in ``GLOBAL_POOL_MODULES`` are handled so.
- **Self-ensemble x8**: the 8 flips/transposes of the input are run one after
  another on the input's device (memory of one forward, not eight), mapped
  back and averaged. Combined with tiling each of the 8 runs is tiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from srlab.models.dynamic_conv import KernelAttention

__all__ = [
    "GLOBAL_POOL_MODULES",
    "dihedral",
    "dihedral_inverse",
    "make_inference",
    "receptive_radius",
    "super_resolve",
    "tile_spans",
]

# Modules whose output depends on their input only through its spatial mean.
GLOBAL_POOL_MODULES: tuple[type[nn.Module], ...] = (KernelAttention,)

Model = nn.Module | Callable[[torch.Tensor], torch.Tensor]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0..7) of the 8 flips/transposes of (N, C, H, W): bit 0 flips W, bit 1 flips H, bit 2 transposes."""
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-2, -1)
    return x


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undoes :func:`dihedral` (the same steps in reverse order; each one is its own inverse)."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    return x


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(in_start, in_end, core_start, core_end) along one axis: cores of `tile` px cover [0, length) once.

    The last core is shorter when `length` is not a multiple of `tile`; each input
    span is its core widened by `overlap` on both sides, clipped to the image.
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and tile_overlap >= 0, got tile={tile}, tile_overlap={overlap}")
    spans = []
    for core_start in range(0, length, tile):
        core_end = min(core_start + tile, length)
        spans.append((max(core_start - overlap, 0), min(core_end + overlap, length), core_start, core_end))
    return spans


class _StopForward(Exception):
    """Raised from a hook to end a forward pass once the statistic it needed has been read."""


class _GlobalStatistics:
    """Hooks on global-pool modules that freeze their input's image-wide mean across tiles (see module doc)."""

    def __init__(self, model: Model):
        modules = model.modules() if isinstance(model, nn.Module) else ()
        self.modules = [m for m in modules if isinstance(m, GLOBAL_POOL_MODULES)]
        self.frozen: list[torch.Tensor] = []  # (N, C, 1, 1) mean of the k-th call's input
        self.calls = 0
        self.core: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1) of the core in the tile input
        self.tile_size: tuple[int, int] = (0, 0)
        self.sum: torch.Tensor | None = None
        self.pixels = 0

    @contextmanager
    def attached(self) -> Iterator[None]:
        handles = [m.register_forward_pre_hook(self._pre_hook) for m in self.modules]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def start_tile(self, core: tuple[int, int, int, int], tile_size: tuple[int, int]) -> None:
        self.calls = 0
        self.core = core
        self.tile_size = tile_size

    def _pre_hook(self, module: nn.Module, args: tuple) -> tuple | None:
        index = self.calls
        self.calls += 1
        features = args[0]
        if index < len(self.frozen):
            return (self.frozen[index].to(features.dtype),)
        # The first call without a frozen mean: everything before it is exact, so its input
        # is exact on the core. Sum it there, then skip the rest of this tile's forward.
        y0, y1, x0, x1 = self._core_in(features)
        part = features[..., y0:y1, x0:x1].to(torch.float64).sum(dim=(2, 3), keepdim=True)
        self.sum = part if self.sum is None else self.sum + part
        self.pixels += (y1 - y0) * (x1 - x0)
        raise _StopForward

    def _core_in(self, features: torch.Tensor) -> tuple[int, int, int, int]:
        # The pooled features may live at another resolution than the tile (e.g. after an upsampler).
        (th, tw), (fh, fw) = self.tile_size, features.shape[-2:]
        if fh * tw != fw * th:
            raise RuntimeError(f"global-pool input {fw}x{fh} is not a rescaled {tw}x{th} tile; cannot tile this model")
        y0, y1, x0, x1 = self.core
        ry, rx = fh / th, fw / tw
        return round(y0 * ry), round(y1 * ry), round(x0 * rx), round(x1 * rx)

    def freeze_collected(self) -> None:
        self.frozen.append(self.sum / self.pixels)
        self.sum, self.pixels = None, 0


def _run_tiles(model: Model, lr: torch.Tensor, scale: int, tile: int, overlap: int,
               stats: _GlobalStatistics, out: torch.Tensor) -> bool:
    """One pass over the tiles; returns False if a statistic was collected (the pass ended early)."""
    height, width = lr.shape[-2:]
    complete = True
    for y_in0, y_in1, y0, y1 in tile_spans(height, tile, overlap):
        for x_in0, x_in1, x0, x1 in tile_spans(width, tile, overlap):
            patch = lr[..., y_in0:y_in1, x_in0:x_in1]
            core = (y0 - y_in0, y1 - y_in0, x0 - x_in0, x1 - x_in0)
            stats.start_tile(core, (y_in1 - y_in0, x_in1 - x_in0))
            try:
                sr = model(patch)
            except _StopForward:
                complete = False
                continue
            cy0, cy1, cx0, cx1 = (v * scale for v in core)
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[..., cy0:cy1, cx0:cx1]
    return complete


def _tiled_forward(model: Model, lr: torch.Tensor, scale: int, tile: int, overlap: int) -> torch.Tensor:
    stats = _GlobalStatistics(model)
    out = lr.new_zeros(*lr.shape[:-2], lr.shape[-2] * scale, lr.shape[-1] * scale)
    with stats.attached():
        # Each incomplete pass freezes one more global statistic; the pass that completes fills `out`.
        while not _run_tiles(model, lr, scale, tile, overlap, stats, out):
            stats.freeze_collected()
    return out


def super_resolve(
    model: Model,
    lr: torch.Tensor,
    scale: int,
    tile: int | None = None,
    tile_overlap: int = 32,
    self_ensemble: bool = False,
) -> torch.Tensor:
    """SR of an (N, C, H, W) batch in one of four modes: whole, tiled (`tile` LR px), x8, tiled + x8.

    Whole-image and tiled outputs are equal up to float rounding when
    `tile_overlap` covers the model's receptive radius (module docstring).
    """
    forward = partial(_tiled_forward, model, scale=scale, tile=int(tile), overlap=int(tile_overlap)) if tile else model
    if not self_ensemble:
        return forward(lr)
    total = None
    for k in range(8):
        sr = dihedral_inverse(forward(dihedral(lr, k)), k)
        total = sr.clone() if total is None else total.add_(sr)
    return total.div_(8)


def make_inference(model: Model, scale: int, tile: int | None = None, tile_overlap: int = 32,
                   self_ensemble: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """`super_resolve` with the mode fixed: a callable LR -> SR for `score_dataset` and the upscaler."""
    return partial(super_resolve, model, scale=scale, tile=tile, tile_overlap=tile_overlap, self_ensemble=self_ensemble)


def receptive_radius(model: nn.Module, scale: int, size: int = 96, channels: int = 3) -> int | None:
    """How many LR pixels away an output pixel still depends on the input (the tile overlap rule).

    Measured by back-propagating one output pixel block of a random `size` x `size`
    input, with global-pool modules fed their detached mean (tiling reproduces
    those exactly). Returns None when the dependence reaches the probe's border:
    the model is not local (then tiling is approximate). ReLUs that happen to be
    off can hide a path, so treat the result as a lower bound and keep margin.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    detach_means = [
        m.register_forward_pre_hook(lambda _m, args: (args[0].mean(dim=(2, 3), keepdim=True).detach(),))
        for m in model.modules()
        if isinstance(m, GLOBAL_POOL_MODULES)
    ]
    try:
        with torch.enable_grad(), torch.inference_mode(False):
            x = (torch.rand(1, channels, size, size, device=device) * 255).requires_grad_(True)
            centre = size // 2
            sr = model(x)
            sr[..., centre * scale : (centre + 1) * scale, centre * scale : (centre + 1) * scale].sum().backward()
    finally:
        for handle in detach_means:
            handle.remove()
    reach = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = torch.nonzero(reach.any(dim=1)).flatten()
    cols = torch.nonzero(reach.any(dim=0)).flatten()
    if rows.numel() == 0:
        return 0
    if rows.min() == 0 or cols.min() == 0 or rows.max() == size - 1 or cols.max() == size - 1:
        return None
    return int(max(centre - rows.min(), rows.max() - centre, centre - cols.min(), cols.max() - centre))
