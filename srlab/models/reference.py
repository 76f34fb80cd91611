"""Loads the authors' released HDSRNet weights (`HDSRNet_x{2,3,4}.pt`) into srlab's HDSRNet, and back.

The reference code numbers its layers instead of nesting them (key layout: docs/architecture.md):

    Block.conv1                 upper head Conv+ReLU          -> upper.head
    Block.conv2 ... conv16      upper blocks, in order         -> upper.blocks.<b>.layers.<i>
                                (dilated, dynamic, plain per block)
    conv1 ... conv16            lower net Conv+ReLU            -> lower.layers.<j>
    conv17.0                    final Conv 64 -> 3             -> construct.to_rgb
    upsample.up.body.<n>        sub-pixel stages               -> construct.upsample.<n>
    sub_mean / add_mean         frozen 1x1 convs (DIV2K mean)  -> MeanShift buffers (checked, not loaded)

Every layer is a Sequential with the conv at index 0 in both layouts, so a layer's
parameters keep their suffix (`.0.weight`, `.0.attention.net.2.weight`, ...).
Variants use the same numbering with their own block layers (e.g. `upper` has no
lower-net keys and keeps `conv17` for the final conv), so any variant round-trips.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from srlab.models.hdsrnet import HDSRNet
from srlab.scales import SUPPORTED_SCALES
from srlab.utils.safe_load import load_file

# Nested checkpoints ({"model": sd}, Lightning's {"state_dict": sd}) and DataParallel / wrapper prefixes.
WRAPPER_KEYS = ("model", "state_dict")
KEY_PREFIXES = ("module.", "model.")
MEAN_SHIFTS = ("sub_mean", "add_mean")  # module names, the same in both layouts
# The final conv is named after the lower net's depth (conv17 for 16 layers), also in variants without it.
REFERENCE_LOWER_DEPTH = 16
# srlab's dynamic-conv temperature buffers; the reference keeps T as a plain attribute (not in its files).
TEMPERATURE_SUFFIX = ".attention.temperature"
MAX_KEYS_LISTED = 12


def reference_prefixes(model: HDSRNet) -> list[tuple[str, str]]:
    """(srlab prefix, reference prefix) for every weighted layer of `model`."""
    pairs = [("upper.head.", "Block.conv1.")]
    number = 2
    for b, block in enumerate(model.upper.blocks):
        for i in range(len(block.layers)):
            pairs.append((f"upper.blocks.{b}.layers.{i}.", f"Block.conv{number}."))
            number += 1
    lower_depth = REFERENCE_LOWER_DEPTH
    if model.lower is not None:
        lower_depth = len(model.lower.layers)
        pairs += [(f"lower.layers.{j}.", f"conv{j + 1}.") for j in range(lower_depth)]
    pairs += [
        ("construct.to_rgb.", f"conv{lower_depth + 1}.0."),
        ("construct.upsample.", "upsample.up.body."),
    ]
    return pairs


def reference_key_map(model: HDSRNet) -> dict[str, str]:
    """srlab state-dict key -> reference key, for every entry except the mean-shift and temperature buffers."""
    prefixes = reference_prefixes(model)
    mapping = {}
    for key in model.state_dict():
        if key.split(".")[0] in MEAN_SHIFTS or key.endswith(TEMPERATURE_SUFFIX):
            continue
        match = next(((src, dst) for src, dst in prefixes if key.startswith(src)), None)
        if match is None:
            raise RuntimeError(f"no reference name for srlab parameter {key!r}; extend reference_prefixes()")
        mapping[key] = match[1] + key[len(match[0]) :]
    return mapping


def mean_shift_as_conv(model: HDSRNet, name: str) -> dict[str, torch.Tensor]:
    """The reference's 1x1-conv form of a MeanShift: identity weight, bias = the shift."""
    shift = getattr(model, name).shift.detach().reshape(3)
    return {f"{name}.weight": torch.eye(3, dtype=shift.dtype).reshape(3, 3, 1, 1), f"{name}.bias": shift.clone()}


def to_reference_state_dict(model: HDSRNet) -> dict[str, torch.Tensor]:
    """`model`'s weights under the authors' key names (what `torch.save` would give from their code)."""
    state = model.state_dict()
    reference = {dst: state[src].detach().clone() for src, dst in reference_key_map(model).items()}
    for name in MEAN_SHIFTS:
        reference.update(mean_shift_as_conv(model, name))
    return reference


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """The plain state dict inside a file or mapping (wrappers and prefixes removed), and its name for messages."""
    if isinstance(path_or_state_dict, Mapping):
        obj, source = path_or_state_dict, "the given state dict"
    else:
        path = Path(path_or_state_dict)
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference checkpoint not found: {path}")
        obj = load_file(path)  # weights-only: a file whose pickle would run code raises UnsafeCheckpointError
    while isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in WRAPPER_KEYS):
        obj = next(obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping))
    if not isinstance(obj, Mapping):
        raise TypeError(f"{source}: expected a state dict, got {type(obj).__name__}")
    state = dict(obj)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    not_tensors = [k for k, v in state.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise TypeError(f"{source}: entries that are not tensors: {listing(not_tensors)}")
    return state, source


def listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_LISTED])
    return shown + (f" ... ({len(keys) - MAX_KEYS_LISTED} more)" if len(keys) > MAX_KEYS_LISTED else "")


def guess_scale(state: Mapping[str, torch.Tensor], channels: int) -> int | None:
    """The scale a reference upsampler was built for: one 9C stage is x3, n stages of 4C are x2**n."""
    stages = sorted(k for k in state if k.startswith("upsample.up.body.") and k.endswith(".weight"))
    if not stages:
        return None
    if len(stages) == 1 and state[stages[0]].shape[0] == 9 * channels:
        return 3
    if all(state[k].shape[0] == 4 * channels for k in stages):
        return 2 ** len(stages)
    return None


def check_key_layout(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    header: str,
    scale: int,
    file_scale: int | None,
    upsampler_keys: str,
    optional_suffix: str | None = None,
) -> None:
    """Raises ValueError under `header` naming missing, unexpected and mis-shaped keys, and the file's scale
    (`file_scale`, read from its upsampler `upsampler_keys`) when it differs; keys ending in `optional_suffix`
    may be absent from the file."""
    missing = [k for k in expected if k not in state and not (optional_suffix and k.endswith(optional_suffix))]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [header]
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if keys:
            lines.append(f"  {label}: {listing(keys)}")
    if file_scale is not None and file_scale != scale:
        lines.append(
            f"  its upsampler ({upsampler_keys}) is an x{file_scale} one but scale={scale} was requested;"
            f" load it with scale={file_scale}"
            + ("" if file_scale in SUPPORTED_SCALES else f" (srlab supports {list(SUPPORTED_SCALES)})")
        )
    raise ValueError("\n".join(lines))


def check_layout(state: Mapping[str, torch.Tensor], model: HDSRNet, source: str) -> None:
    """Raises ValueError naming missing, unexpected and mis-shaped keys (and the file's likely scale)."""
    check_key_layout(
        state, to_reference_state_dict(model),
        f"{source} does not fit HDSRNet(scale={model.scale}, variant={model.variant!r}) in the reference layout:",
        model.scale, guess_scale(state, model.construct.to_rgb.in_channels), "upsample.up.body.*",
    )


def rounded(tensor: torch.Tensor) -> list[float]:
    return [round(v, 4) for v in tensor.flatten().tolist()]


def check_mean_shift(state: Mapping[str, torch.Tensor], model: HDSRNet, source: str) -> None:
    """The reference's sub_mean/add_mean must encode srlab's frozen DIV2K mean shift (they are not loaded)."""
    for name in MEAN_SHIFTS:
        expected = mean_shift_as_conv(model, name)
        for key, want in expected.items():
            got = state[key].to(want.dtype)
            if not torch.allclose(got, want, atol=1e-3):
                raise ValueError(
                    f"{source}: {key} = {rounded(got)} differs from srlab's frozen DIV2K mean shift"
                    f" {rounded(want)} (mean (0.4488, 0.4371, 0.4040) x rgb_range 255, std 1);"
                    " these weights were trained with another normalisation and would give wrong outputs"
                )


def from_reference_checkpoint(
    path_or_state_dict: str | os.PathLike | Mapping, scale: int, variant: str = "full", **model_kwargs
) -> HDSRNet:
    """An srlab HDSRNet holding the authors' weights.

    Accepts a path or a state dict, also wrapped as `{"model": ...}` / `{"state_dict": ...}`
    or with `module.` / `model.` key prefixes. `model_kwargs` go to `HDSRNet` (width, depths).
    """
    state, source = read_state_dict(path_or_state_dict)
    model = HDSRNet(scale, variant, **model_kwargs)
    check_layout(state, model, source)
    check_mean_shift(state, model, source)
    own = model.state_dict()
    loaded = {src: state[dst] for src, dst in reference_key_map(model).items()}
    loaded.update({k: v for k, v in own.items() if k.split(".")[0] in MEAN_SHIFTS})
    model.load_state_dict(loaded, strict=True)
    return model


def load_reference_hdsrnet(path: str, scale: int, variant: str = "full", **model_kwargs) -> HDSRNet:
    """Hydra target (configs/model/hdsrnet_reference.yaml): the authors' file at `path` as an srlab model."""
    return from_reference_checkpoint(path, scale, variant, **model_kwargs)
