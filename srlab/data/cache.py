"""One-time cache of decoded images as memory-mapped uint8 ``.npy`` files, and images read lazily from disk.

Decoding a 2K PNG costs tens of milliseconds, far more than cropping a patch,
so SR training decodes each file once into ``<cache_dir>/<stem>.<path key>.<variant>.<source key>.npy``
and workers crop from a read-only memory map (the OS page cache is shared by
all workers; nothing is copied per worker). An entry is keyed by the source
file's resolved path, size and mtime_ns, so editing or replacing the source
makes a new entry and removes the stale one. Entries are written atomically
(``srlab.utils.files``), so a killed writer never leaves a partial ``.npy``
that a later run would read.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srlab.data.io import read_image
from srlab.utils.files import atomic_open

__all__ = [
    "CACHE_DIRNAME",
    "DiskImage",
    "cache_path",
    "cached_array",
    "ensure_cached",
    "ensure_decoded",
    "save_npy_atomic",
]

#: Folder name used for a cache next to the data when no cache_dir is given.
CACHE_DIRNAME = ".srlab_cache"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_path(source: Path, cache_dir: Path, variant: str) -> Path:
    """Where the cache entry of `source` (processed as `variant`) lives for the file's current size and mtime."""
    source = Path(source).resolve()
    stat = source.stat()
    path_key = _digest(str(source))
    source_key = _digest(f"{stat.st_size}:{stat.st_mtime_ns}")
    return Path(cache_dir) / f"{source.stem}.{path_key}.{variant}.{source_key}.npy"


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write `array` as `path` (.npy) atomically (srlab.utils.files: temporary file, fsync, rename)."""
    with atomic_open(path) as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _remove_stale(entry: Path) -> None:
    # Same source path and variant, older size/mtime: the source changed, the entry is dead.
    stem, path_key, variant, _, _ = entry.name.rsplit(".", 4)
    for old in entry.parent.glob(glob.escape(f"{stem}.{path_key}.{variant}.") + "*.npy"):
        if old != entry:
            old.unlink(missing_ok=True)


def ensure_cached(source: Path, cache_dir: Path, variant: str, build: Callable[[], np.ndarray]) -> Path:
    """Path of the cache entry of `source` as `variant`, computing it with `build()` (uint8 array) on a miss."""
    entry = cache_path(source, cache_dir, variant)
    if entry.is_file():
        return entry
    array = build()
    if array.dtype != np.uint8:
        raise ValueError(f"{source}: cache entries are uint8 images, got {array.dtype} for {variant!r}")
    try:
        save_npy_atomic(entry, array)
    except OSError as err:
        raise OSError(
            f"{source}: cannot write the decoded-image cache {entry} ({err}); "
            "point cache_dir to a writable folder or set cache=false"
        ) from err
    _remove_stale(entry)
    return entry


def cached_array(source: Path, cache_dir: Path, variant: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """Read-only memory map of `build()`'s uint8 result for `source`, computing and caching it on a miss."""
    return np.load(ensure_cached(source, cache_dir, variant, build), mmap_mode="r")


def ensure_decoded(source: Path, cache_dir: Path) -> Path:
    """Cache entry of the decoded image file `source` (read_image conventions), decoding it on a miss."""
    return ensure_cached(source, cache_dir, "img", lambda: read_image(source))


class DiskImage:
    """A uint8 image whose pixels stay on disk until sliced, used where an ndarray is expected in an ImagePair.

    `path` is either a cache ``.npy`` (memory-mapped once per process) or an image
    file decoded on every access (the uncached mode). `shape` is the image's
    shape after the top-left crop applied on access (mod-crop), so callers see
    the same sizes as the cropped array. Pickling (to spawn-started workers)
    sends the path, never the pixels.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self._mmap: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def load(self) -> np.ndarray:
        if self.path.suffix == ".npy":
            if self._mmap is None:
                try:
                    self._mmap = np.load(self.path, mmap_mode="r")
                except (OSError, ValueError) as err:  # numpy's messages do not name the file
                    raise ValueError(f"{self.path}: unreadable cached image ({err}); delete it to rebuild") from err
            full = self._mmap
        else:
            full = read_image(self.path)
        if full.ndim != self.ndim or any(f < s for f, s in zip(full.shape, self.shape)):
            raise ValueError(
                f"{self.path}: image is {full.shape} now but was {self.shape} when the dataset was built; "
                "the file changed during training"
            )
        return full[: self.shape[0], : self.shape[1]]

    def __getitem__(self, key) -> np.ndarray:
        return self.load()[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = np.asarray(self.load())
        return array.astype(dtype) if dtype is not None else array

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "_mmap": None}

    def __repr__(self) -> str:
        return f"DiskImage({str(self.path)!r}, shape={self.shape})"
