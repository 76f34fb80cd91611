"""Atomic file writes: a reader, a crash or a SIGKILL never leaves half a file at the target path.

Every write goes to a hidden temporary file in the target's own folder (so the
rename never crosses file systems), is flushed and fsynced, then renamed over the
target with `os.replace`, and the folder is fsynced so the rename itself is
durable. A failed write removes its temporary file and leaves the previous
target as it was. Used for checkpoints, the decoded-image cache, written
images, reports, metrics and CSV summaries.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "fsync_folder", "temp_sibling", "write_csv"]


def temp_sibling(target: str | os.PathLike) -> Path:
    """Hidden `.<name>.<pid>-<thread>.tmp` next to `target`: unique per writer, never matches `*.<suffix>` globs."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable; file systems that cannot open a folder for this are left alone."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(temp: Path) -> None:
    try:
        temp.unlink(missing_ok=True)
    except OSError:  # e.g. its folder is not a folder: then there is nothing to remove
        pass


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, temp: str | os.PathLike | None = None) -> Iterator[BinaryIO]:
    """A binary file whose content replaces `path` when the block ends without an exception.

    Creates the parent folders. `temp` is the temporary file to write (default:
    `temp_sibling(path)`); it must be in the same folder as `path`. Errors of
    the write, the fsync or the rename propagate; the temporary file is removed
    whatever happens.
    """
    target = Path(path)
    temp = temp_sibling(target) if temp is None else Path(temp)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    finally:
        _discard(temp)  # a no-op after the rename
    fsync_folder(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (module docstring); returns the path."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically (module docstring); returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: Sequence[str]) -> Path:
    """Rows as CSV with a header (a missing or None value -> empty cell), written atomically; returns the path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fieldnames})
    return atomic_write_text(path, buffer.getvalue())
