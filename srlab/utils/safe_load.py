"""The one place srlab reads checkpoint and weights files, without running code from them.

A ``.ckpt`` / ``.pt`` file is a pickle, and unpickling can call any function the file
names (a ``__reduce__`` returning ``os.system`` runs a shell command). Every srlab load
is therefore ``torch.load(weights_only=True)``: torch's restricted unpickler, which builds
tensors, dicts, lists, tuples, sets, str, bytes, int, float, bool, None and a few torch
types (dtypes, devices, ``OrderedDict``, ...), plus the globals in `SAFE_GLOBALS`, and
refuses anything else *before* calling it. That covers, through this module:

- `load_file`: config checks (`srlab.tasks.checks.load_checkpoint_hparams`), plain weights
  files in eval, the authors' HDSRNet weights (`srlab.models.reference`);
- `guarded_load`: `AtomicCheckpointIO.load_checkpoint` (resume through ``Trainer.fit(ckpt_path=...)``)
  and `SRModule.load_from_checkpoint` (eval, the end-of-run summary), which let Lightning read
  the file with the flag chosen here.

A refused file raises `UnsafeCheckpointError`, one line naming the file, the global it
asked for and the way out (a file the weights-only reader cannot parse at all, e.g. not a
checkpoint, raises a plain one-line `pickle.UnpicklingError`). The way out is an explicit
opt-in, ``trust_checkpoint=true`` (train.py, eval.py), which calls `trust_file` for the
files the run names: those files, and only those, are then unpickled in full, *running any
code they hold*. Python callers use the `trusting` context manager or pass
``weights_only=False`` themselves.
"""

from __future__ import annotations

import _compat_pickle
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Globals the weights-only unpickler may build besides torch's defaults. Empty, and kept so:
# a Lightning 2.6 checkpoint of SRModule holds only tensors, plain containers, str, int, float,
# bool and None -- hyper_parameters are plain containers (SRModule converts its configs), the
# loops' and callbacks' states are dicts of ints / strings / tensors (ModelCheckpoint: paths as
# str, scores as tensors; MetricsFile and NaNGuard: floats and ints), optimiser and
# CosineAnnealingLR / StepLR states are dicts of numbers, and the mixed-precision plugin's
# GradScaler state is numbers too (tests/test_safe_loading.py checks fresh, resumed and
# interrupted checkpoints). An entry belongs here only with the reason Lightning needs it.
SAFE_GLOBALS: tuple[Any, ...] = ()

TRUST_OPTION = "trust_checkpoint=true"
# torch's UnpicklingError text names the global it refused in one of these two forms.
FORBIDDEN_GLOBAL = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"GLOBAL (\S+) whose module \S+ is blocked"),
)
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

_trusted: set[str] = set()


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A file refused because loading it would run code; the one-line message names it, the global and the opt-in."""

    def __init__(self, message: str, path: str | None = None, forbidden: str | None = None):
        super().__init__(message)
        self.path, self.forbidden = path, forbidden


def _key(path: str | os.PathLike) -> str:
    text = os.fspath(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def trust_file(path: str | os.PathLike) -> None:
    """Let this one file be unpickled in full from now on (the ``trust_checkpoint=true`` opt-in; runs its code)."""
    if _key(path) not in _trusted:
        log.warning("%s: %s: loading it with full pickle, which runs any code in the file", path, TRUST_OPTION)
    _trusted.add(_key(path))


def is_trusted(path: Any) -> bool:
    """Whether `trust_file` named `path`; never for an open file object (it has no name to trust)."""
    return isinstance(path, (str, os.PathLike)) and _key(path) in _trusted


@contextmanager
def trusting(*paths: str | os.PathLike) -> Iterator[None]:
    """`trust_file` for `paths` inside the block only (Python API; the files' code runs when they are loaded)."""
    added = [_key(p) for p in paths if not is_trusted(p)]
    for path in paths:
        trust_file(path)
    try:
        yield
    finally:
        _trusted.difference_update(added)


def weights_only_for(path: Any, weights_only: bool | None = None) -> bool:
    """The ``weights_only`` flag a load of `path` uses: the caller's explicit choice, else True unless trusted."""
    if weights_only is not None:
        return weights_only
    return not is_trusted(path)


def _python3_name(name: str) -> str:
    """The callable a global names: torch.save's pickle protocol 2 writes some under Python 2 names (commands.call)."""
    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[module, attr])
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}" if module else name


def refused(path: Any, err: pickle.UnpicklingError) -> pickle.UnpicklingError:
    """The one-line error for torch's weights-only refusal `err` of `path`.

    `UnsafeCheckpointError` when torch names the global the file asked for (parsed out of its message);
    otherwise a plain UnpicklingError with torch's reason: not a checkpoint, or one written with a pickle
    protocol the weights-only reader lacks (torch.save(..., pickle_protocol=4)).
    """
    text = ANSI_ESCAPE.sub("", str(err))
    forbidden = next((m.group(1) for pattern in FORBIDDEN_GLOBAL if (m := pattern.search(text))), None)
    if forbidden is None:
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0].split())
        return pickle.UnpicklingError(
            f"weights-only unpickling failed: {reason or 'unsupported pickle content'}; if it is a checkpoint whose "
            f"maker you trust, {TRUST_OPTION} reads it with full pickle (unsafe: runs any code in the file)"
        )
    forbidden = _python3_name(forbidden)
    return UnsafeCheckpointError(
        f"{path}: refused to load: it asks the unpickler to call {forbidden}, which a file of weights never needs "
        f"(loading it would run code from the file). Only if you trust whoever made it: rerun with {TRUST_OPTION} "
        "(unsafe: runs any code in the file; Python: srlab.utils.safe_load.trusting(path))",
        str(path), forbidden,
    )


@contextmanager
def guarded_load(path: Any, weights_only: bool | None = None) -> Iterator[bool]:
    """Around one load of `path`: yields its ``weights_only`` flag (`weights_only_for`), allows `SAFE_GLOBALS`,
    and turns torch's weights-only refusal into `UnsafeCheckpointError`. For loads Lightning makes itself::

        with guarded_load(path) as weights_only:
            checkpoint = lightning_loader(path, weights_only=weights_only)
    """
    weights_only = weights_only_for(path, weights_only)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            yield weights_only
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as err:
        if weights_only:
            raise refused(path, err) from None
        raise


def load_file(
    path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False, weights_only: bool | None = None
) -> Any:
    """`torch.load(path)` with ``weights_only=True`` unless the file is trusted (or the caller passes False).

    `mmap` maps the tensors instead of reading them (only zip-format files support it; older ones
    are read). Raises `UnsafeCheckpointError` for a refused file (`refused`); other errors are torch's.
    """
    with guarded_load(path, weights_only) as weights_only:
        mmap = mmap and zipfile.is_zipfile(path)
        return torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
