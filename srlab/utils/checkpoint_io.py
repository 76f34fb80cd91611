"""Checkpoint writes that a crash, a SIGKILL or a full disk can never turn into a corrupt checkpoint.

`AtomicCheckpointIO` is Lightning's `TorchCheckpointIO` with a safer save
(`srlab.utils.files.atomic_open`): serialise into a hidden temporary file in the
checkpoint's own folder, flush and fsync it, then `os.replace` it over the
target and fsync the folder. A reader therefore sees either the previous
complete file or the new complete file, never a partial one. (Lightning's own atomic save stages the file in the
system temp folder and moves it without fsync; a move across file systems is a
plain copy, so a kill mid-copy leaves a truncated checkpoint.)

Temporary files are named ``.<target name>.<host>.<pid>.partial``: hidden, and
without the ``.ckpt`` suffix, so neither Lightning's ``last`` lookup nor a
``*.ckpt`` glob ever takes one for a checkpoint. Ones left by a killed writer on
this host are removed by the next successful save into the same folder.

A failed write (disk full, read-only or missing folder, target is a folder...)
raises `CheckpointWriteError` naming the path, removes its temporary file and
leaves every earlier checkpoint as it was.

Loads (resume through ``Trainer.fit(ckpt_path=...)``) are weights-only: a file whose pickle would
run code is refused, naming the file and the global it asked for (`srlab.utils.safe_load`).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from srlab.utils.files import atomic_open
from srlab.utils.safe_load import guarded_load

TEMP_SUFFIX = ".partial"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the file and says earlier ones are intact."""


def temp_path_for(target: Path) -> Path:
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}{TEMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files left in `folder` by killed writers of this host; returns what was removed."""
    host = socket.gethostname()
    removed = []
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        # .<target name>.<host>.<pid>.partial: host and pid are the last two dot-separated fields
        # (host names may hold dots, so split from the right on the part before the pid).
        stem = temp.name[: -len(TEMP_SUFFIX)]
        head, _, pid = stem.rpartition(".")
        if not pid.isdigit() or not head.endswith(f".{host}"):
            continue
        if int(pid) != os.getpid() and not _pid_alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


def _reason(err: OSError, target: Path) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the folder is not writable ({err.strerror})"
    if err.errno in (errno.EEXIST, errno.ENOTDIR) and not target.parent.is_dir():
        return f"{target.parent} exists but is not a folder"
    if err.errno == errno.EISDIR:
        return "a folder of that name is in the way"
    return err.strerror or str(err)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj, path)` through a temp file in the same folder, fsync and `os.replace` (srlab.utils.files).

    Any failure (also a serialisation error or KeyboardInterrupt) removes the temporary file.
    """
    target = Path(path)
    try:
        with atomic_open(target, temp=temp_path_for(target)) as fh:
            torch.save(obj, fh)
    except OSError as err:
        raise CheckpointWriteError(
            err.errno,
            f"could not save checkpoint {target}: {_reason(err, target)}; "
            f"earlier checkpoints in {target.parent} were left as they were",
        ) from err
    remove_stale_temp_files(target.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO plugin: `TorchCheckpointIO` whose saves are atomic and durable, loads weights-only."""

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        """Lightning's load with ``weights_only=True`` unless the caller passes False or the file is trusted."""
        kwargs = {} if map_location is None else {"map_location": map_location}
        with guarded_load(path, weights_only) as weights_only:
            return super().load_checkpoint(path, weights_only=weights_only, **kwargs)

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options (got {storage_options!r})")
        if "://" in str(path):
            # Remote URLs (s3://, gs://...) have no local rename; Lightning's fsspec path handles them.
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)
