"""One-time cache of decoded images as uint8 ``.npy`` files, read through a bounded set of memory maps.

Decoding a 2K PNG costs tens of milliseconds, far more than cropping a patch,
so SR training decodes each file once into ``<cache_dir>/<stem>.<path key>.<variant>.<source key>.npy``
and workers crop from read-only memory maps (the OS page cache is shared by
all workers; nothing is copied per worker). An entry is keyed by the source
file's resolved path, size and mtime_ns, so editing or replacing the source
makes a new entry and removes the stale one. Entries are written atomically
(``srlab.utils.files``), so a killed writer never leaves a partial ``.npy``
that a later run would read.

Every open memory map holds a file descriptor (Python's mmap keeps a duplicate),
so a map per image would need ~1,800 descriptors in each data worker for DIV2K,
past common per-process limits (``ulimit -n``). A process therefore keeps at most
`max_open_maps()` maps open, least recently used first out. `build_lock` lets one
process build a cache that several nodes share while the others wait, then reuse it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import logging
import math
import mmap
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from srlab.data.io import read_image
from srlab.utils.files import atomic_open

try:
    import fcntl
    import resource
except ImportError:  # not POSIX: no advisory locks, no descriptor limit to read
    fcntl = resource = None

__all__ = [
    "CACHE_DIRNAME",
    "DiskImage",
    "build_lock",
    "cache_path",
    "cached_array",
    "ensure_cached",
    "ensure_decoded",
    "max_open_maps",
    "load_npy",
    "save_npy_atomic",
]

log = logging.getLogger(__name__)

#: Folder name used for a cache next to the data when no cache_dir is given.
CACHE_DIRNAME = ".srlab_cache"
#: Lock file in the cache folder, held while a process builds entries (`build_lock`).
LOCK_NAME = ".build.lock"
#: Bounds of `max_open_maps()`; 8,192 maps keep all of DIV2K (1,800 entries, 2,700 with pre-upsampled LR) open.
MIN_OPEN_MAPS, MAX_OPEN_MAPS = 16, 8192


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_path(source: Path, cache_dir: Path, variant: str) -> Path:
    """Where the cache entry of `source` (processed as `variant`) lives for the file's current size and mtime."""
    source = Path(source).resolve()
    stat = source.stat()
    path_key = _digest(str(source))
    source_key = _digest(f"{stat.st_size}:{stat.st_mtime_ns}")
    return Path(cache_dir) / f"{source.stem}.{path_key}.{variant}.{source_key}.npy"


# np.load parses each header with ast.literal_eval, which is not thread-safe on CPython < 3.11.9 / 3.12.3
# (gh-106905: "SystemError: AST constructor recursion depth mismatch" seen here with the data modules'
# loading thread pools), so every header read goes through one lock; the data itself is read outside it.
_NPY_HEADER_LOCK = threading.Lock()


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """`np.load(path, mmap_mode)` safe to call from several threads at once."""
    if mmap_mode is not None:
        with _NPY_HEADER_LOCK:
            return np.load(path, mmap_mode=mmap_mode)
    with _NPY_HEADER_LOCK:
        header = np.load(path, mmap_mode="r")
    return np.array(header)


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
    """`build()`'s uint8 result for `source`, read into memory from its cache entry (computed on a miss).

    For small sets kept whole in memory (benchmark LR images): reading the entry holds
    no file open, where a memory map per image would hold one descriptor each.
    """
    return load_npy(ensure_cached(source, cache_dir, variant, build))


def ensure_decoded(source: Path, cache_dir: Path) -> Path:
    """Cache entry of the decoded image file `source` (read_image conventions), decoding it on a miss."""
    return ensure_cached(source, cache_dir, "img", lambda: read_image(source))


@contextlib.contextmanager
def build_lock(cache_dir: Path) -> Iterator[None]:
    """Holds `<cache_dir>/.build.lock` exclusively while the block builds cache entries.

    Several nodes preparing data on one shared file system would otherwise decode the
    same images at once; with the lock one builds and the others wait, then find every
    entry present. It is an advisory `flock`, released by the kernel if its holder dies
    (NFS, GPFS and Lustre mounted with `flock` share it between nodes). Where the folder is
    read-only or the file system has no locks, the block runs unlocked: concurrent builders
    write identical entries atomically, so only time is lost.
    """
    cache_dir = Path(cache_dir)
    lock_path = cache_dir / LOCK_NAME
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 (closed below, after the lock is released)
    except OSError as err:
        log.debug("%s: cannot open the build lock (%s); building without it", lock_path, err)
        yield
        return
    with handle:
        locked = _lock_exclusively(handle, lock_path)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_exclusively(handle, lock_path: Path) -> bool:
    """Takes the lock on the open file `handle`, waiting for its holder; False where locks are unavailable."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("%s: another process is building the decoded-image cache; waiting for it", lock_path)
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as err:  # e.g. ENOLCK on NFS without a lock daemon, ENOSYS on Lustre without `flock`
        log.warning("%s: the file system refuses locks (%s); building the cache without one", lock_path, err)
        return False
    return True


# -- memory maps: no descriptor held, at most max_open_maps() per process ---------------------------
def _load_libc() -> ctypes.CDLL | None:
    """The C library, for mmap/munmap (None without a POSIX libc, e.g. on Windows)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        size_t, c_int = ctypes.c_size_t, ctypes.c_int
        libc.mmap.argtypes = [ctypes.c_void_p, size_t, c_int, c_int, c_int, ctypes.c_int64]  # offset: 64-bit off_t
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _load_libc()
_MAP_FAILED = ctypes.c_void_p(-1).value


def max_open_maps() -> int:
    """How many cache memory maps one process keeps open at most.

    Maps made through libc hold no descriptor, so the bound is only there to stay far below
    the kernel's map count limit (vm.max_map_count, 65,530 by default). Python's mmap (the
    fallback without libc) holds one descriptor per map: then a quarter of the process's
    limit, leaving the rest to what it already holds (libraries, DataLoader pipes, logs).
    """
    if _LIBC is not None:
        return MAX_OPEN_MAPS
    if resource is None:
        return MIN_OPEN_MAPS * 4
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_MAPS
    return max(MIN_OPEN_MAPS, min(MAX_OPEN_MAPS, soft // 4))


def _map_file(path: Path) -> memoryview | mmap.mmap:
    """All of `path`, read-only and memory-mapped, holding no file descriptor where libc is at hand.

    Python's mmap module keeps a duplicate descriptor for every map (until Python 3.13's
    ``trackfd=False``); a POSIX mapping stays valid after its descriptor is closed, so it is
    made with libc's mmap and the descriptor closed at once. The mapping is unmapped when the
    last array viewing it goes.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if _LIBC is None:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        if size == 0:
            raise ValueError("empty file")
        address = _LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            code = ctypes.get_errno()
            raise OSError(code, f"mmap failed: {os.strerror(code)}")
    finally:
        os.close(fd)
    pages = (ctypes.c_ubyte * size).from_address(address)
    unmap = weakref.finalize(pages, _LIBC.munmap, address, size)
    unmap.atexit = False  # the OS unmaps at exit; doing it earlier could pull pages from under live arrays
    return memoryview(pages).toreadonly()


def _open_files_hint() -> str:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if resource is not None else "unknown"
    return (
        f"this process may hold {limit} open files (`ulimit -n`) and the cache keeps at most {max_open_maps()} "
        f"images open ({'no descriptor each' if _LIBC is not None else 'one descriptor each'}), so something "
        "else holds the descriptors; raise the limit (e.g. `ulimit -n 4096` in the job script)"
    )


def _unreadable(path: Path, err: Exception) -> Exception:
    """The error to raise for a cache entry that could not be opened, with the advice that fits the cause."""
    if isinstance(err, OSError) and err.errno in (errno.EMFILE, errno.ENFILE):
        return OSError(err.errno, f"{path}: cannot open the cached image, too many open files ({err}); "
                       + _open_files_hint())
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(
            err.errno, f"{path}: cached image is gone (was the cache folder cleaned during training?); "
            "rerun to rebuild it"
        )
    if isinstance(err, OSError):
        return OSError(err.errno, f"{path}: unreadable cached image ({err})")
    # numpy's header and size checks failed: the file itself is damaged, and a rebuild replaces it
    return ValueError(f"{path}: unreadable cached image, damaged ({err}); delete it to rebuild")


class _OpenMaps:
    """This process's memory maps of cache entries, the least recently used dropped beyond `capacity`.

    A dropped map is only forgotten here: it is unmapped (and a Python mmap's descriptor
    closed) when the last array viewing it goes, at once in practice since crops are copied.
    Each entry's header is read once (`np.load`); the data is then mapped by `_map_file`.
    """

    def __init__(self):
        self._maps: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._layouts: dict[Path, tuple[int, tuple[int, ...]]] = {}  # data offset and shape of each entry
        self._lock = threading.Lock()
        self.capacity: int | None = None  # read on first use, in the process that uses it

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self.capacity = None

    def __len__(self) -> int:
        return len(self._maps)

    def get(self, path: Path) -> np.ndarray:
        with self._lock:
            array = self._maps.get(path)
            if array is not None:
                self._maps.move_to_end(path)
                return array
            try:
                array = self._open(path)
            except (OSError, ValueError, TypeError) as err:
                self._layouts.pop(path, None)
                raise _unreadable(path, err) from err
            self._maps[path] = array
            if self.capacity is None:
                self.capacity = max_open_maps()
            while len(self._maps) > self.capacity:
                self._maps.popitem(last=False)
            return array

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()
            self._layouts.clear()

    def _open(self, path: Path) -> np.ndarray:
        if path not in self._layouts:
            header = load_npy(path, mmap_mode="r")  # checks the header and the file's length
            if header.dtype != np.uint8 or not header.flags.c_contiguous:
                raise ValueError(f"{header.dtype} array, expected C-ordered uint8 (save_npy_atomic)")
            self._layouts[path] = (header.offset, header.shape)
            del header  # its map (and descriptor) closes here
        offset, shape = self._layouts[path]
        count = math.prod(shape)
        return np.frombuffer(_map_file(path), np.uint8, count=count, offset=offset).reshape(shape)


_OPEN_MAPS = _OpenMaps()
if hasattr(os, "register_at_fork"):
    # A worker forked while another thread held the lock would wait on it forever.
    os.register_at_fork(after_in_child=_OPEN_MAPS.reset_after_fork)


class DiskImage:
    """A uint8 image whose pixels stay on disk until sliced, used where an ndarray is expected in an ImagePair.

    `path` is either a cache ``.npy`` (memory-mapped through this process's bounded set of
    open maps) or an image file decoded on every access (the uncached mode). `shape` is the
    image's shape after the top-left crop applied on access (mod-crop), so callers see
    the same sizes as the cropped array. Pickling (to spawn-started workers)
    sends the path, never the pixels.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def load(self) -> np.ndarray:
        full = _OPEN_MAPS.get(self.path) if self.path.suffix == ".npy" else read_image(self.path)
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
        return {"path": self.path, "shape": self.shape}

    def __repr__(self) -> str:
        return f"DiskImage({str(self.path)!r}, shape={self.shape})"
