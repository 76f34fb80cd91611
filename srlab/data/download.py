"""Download, verify and extract the DIV2K and SR benchmark archives.

CLI::

    python -m srlab.data.download div2k      [--root DIR] [--scales S ...] [--splits SPLIT ...] [--force]
    python -m srlab.data.download benchmarks [--root DIR] [--names NAME ...] [--force]
    python -m srlab.data.download flickr2k   [--root DIR] [--force]

Function API (used by the datamodules); the defaults fetch everything::

    ensure_div2k(root, scales=SUPPORTED_SCALES, splits=DIV2K_SPLITS) -> root / "DIV2K"
    ensure_benchmarks(root, names=DOWNLOADABLE_SETS) -> root / "benchmark"
    ensure_flickr2k(root) -> root / "Flickr2K" (Flickr2K_HR: DF2K's second half, data=df2k)

Layout (the EDSR-PyTorch ``dir_data`` convention), defined here once (`DIV2K_RANGES`,
`div2k_hr_folder`, `div2k_lr_folder`) for the downloader and ``srlab.data.div2k``::

    root/DIV2K/DIV2K_train_HR/0001.png
    root/DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png
    root/benchmark/Set5/HR/baby.png
    root/benchmark/Set5/LR_bicubic/X2/babyx2.png

Each archive is downloaded next to what it extracts to (``root/DIV2K/*.zip``,
``root/benchmark.tar``) through a ``.part`` file that is resumed with an HTTP
Range request, verified (SHA-256 when known, else MD5 when known, and the size
when known), then extracted into a temporary sibling directory and moved into
place with ``os.replace``, so a dataset folder either is complete or does not
exist.  An archive that is already at its path (e.g. fetched by hand) is
verified and extracted without any network access.  Everything is idempotent:
folders that already exist are skipped (``force=True`` re-extracts them).

Mirrors: ``base_url=`` or the ``SRLAB_DATA_MIRROR`` environment variable
replace the official location; every archive is then fetched from
``{base_url}/{file name}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from srlab.data.benchmark import DOWNLOADABLE_SETS
from srlab.scales import SUPPORTED_SCALES
from srlab.utils.files import atomic_write_text

__all__ = [
    "ARCHIVES",
    "Archive",
    "ArchiveError",
    "BENCHMARK_DIR",
    "ChecksumError",
    "DIV2K_DIR",
    "DIV2K_RANGES",
    "DIV2K_SPLITS",
    "DownloadError",
    "FLICKR2K_DIR",
    "FLICKR2K_HR",
    "MAX_EXTRACT_ENV",
    "MIRROR_ENV",
    "div2k_hr_folder",
    "div2k_lr_folder",
    "ensure_archive",
    "ensure_benchmarks",
    "ensure_div2k",
    "ensure_flickr2k",
    "main",
]

MIRROR_ENV = "SRLAB_DATA_MIRROR"
# Zip-bomb guard: an archive's members may declare at most max(MIN_EXTRACT_LIMIT, MAX_EXPANSION x the
# archive's size) uncompressed bytes in total (the datasets are PNGs, which barely compress), or
# $SRLAB_MAX_EXTRACT_BYTES when set. Declared sizes bind: zipfile stops a member at its declared size.
MAX_EXTRACT_ENV = "SRLAB_MAX_EXTRACT_BYTES"
MAX_EXPANSION = 20
MIN_EXTRACT_LIMIT = 1 << 30
DIV2K_DIR = "DIV2K"
BENCHMARK_DIR = "benchmark"
FLICKR2K_DIR = "Flickr2K"
FLICKR2K_HR = f"{FLICKR2K_DIR}/Flickr2K_HR"  # relative to the data root; data=df2k trains on it
# The official DIV2K splits and the image numbers each holds (inclusive).
DIV2K_RANGES: dict[str, tuple[int, int]] = {"train": (1, 800), "valid": (801, 900)}
DIV2K_SPLITS: tuple[str, ...] = tuple(DIV2K_RANGES)


def div2k_hr_folder(split: str) -> str:
    """HR folder of a DIV2K split, relative to the DIV2K root: ``DIV2K_train_HR``."""
    return f"DIV2K_{split}_HR"


def div2k_lr_folder(split: str, scale: int) -> str:
    """Bicubic LR folder of a DIV2K split at `scale`, relative to the DIV2K root: ``DIV2K_train_LR_bicubic/X2``."""
    return f"DIV2K_{split}_LR_bicubic/X{scale}"


_CHUNK = 1 << 20
_USER_AGENT = "srlab-download/0.1 (+python urllib)"


class DownloadError(RuntimeError):
    """A dataset archive could not be obtained (network, HTTP or integrity problem)."""


class ChecksumError(DownloadError):
    """An archive's size or checksum differs from the known value."""


class ArchiveError(DownloadError):
    """An archive is unreadable, unsafe (path traversal) or lacks the expected folders."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """One downloadable archive.

    ``dest`` is the folder (relative to the data root) where the archive is
    stored and extracted; ``archive_root`` is the single top-level folder the
    archive holds; ``provides`` are the folders (relative to ``dest``) it
    extracts to: they are checked in the temporary extraction and each is moved
    into place atomically.
    """

    name: str
    url: str
    sha256: str | None
    size: int | None
    archive_root: str
    provides: tuple[str, ...]
    dest: str = "."
    md5: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"

# Sizes and SHA-256 of the DIV2K archives: tensorflow/datasets
# (tensorflow_datasets/url_checksums/div2k.txt), which TFDS checks on every
# download.  MD5s: Coloquinte/torchSR (torchsr/datasets/div2k.py and
# benchmarks.py), also checked on download there.  Nothing here is guessed: the
# size and SHA-256 of benchmark.tar are not known to us, so they are None and
# only its MD5 is verified.
_DIV2K_KNOWN: dict[str, tuple[int, str, str]] = {
    # file name: (size in bytes, sha256, md5)
    "DIV2K_train_HR.zip": (
        3530603713,
        "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
        "bdc2d9338d4e574fe81bf7d158758658",
    ),
    "DIV2K_valid_HR.zip": (
        448993893,
        "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
        "9fcdda83005c5e5997799b69f955ff88",
    ),
    "DIV2K_train_LR_bicubic_X2.zip": (
        925390592,
        "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850",
        "9a637d2ef4db0d0a81182be37fb00692",
    ),
    "DIV2K_train_LR_bicubic_X3.zip": (
        427847282,
        "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a",
        "ad80b9fe40c049a07a8a6c51bfab3b6d",
    ),
    "DIV2K_train_LR_bicubic_X4.zip": (
        246914039,
        "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a",
        "76c43ec4155851901ebbe8339846d93d",
    ),
    "DIV2K_valid_LR_bicubic_X2.zip": (
        117763600,
        "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57",
        "1512c9a3f7bde2a1a21a73044e46b9cb",
    ),
    "DIV2K_valid_LR_bicubic_X3.zip": (
        54513392,
        "04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3",
        "18b1d310f9f88c13618c287927b29898",
    ),
    "DIV2K_valid_LR_bicubic_X4.zip": (
        31505881,
        "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553",
        "21962de700c8d368c6ff83314480eff0",
    ),
}


def _div2k_archive(key: str, fname: str, archive_root: str, provides: str) -> Archive:
    size, sha, md5 = _DIV2K_KNOWN[fname]
    return Archive(
        name=key, url=_DIV2K_URL + fname, sha256=sha, size=size, md5=md5,
        archive_root=archive_root, provides=(provides,), dest=DIV2K_DIR,
    )


def _build_table() -> dict[str, Archive]:
    table: dict[str, Archive] = {}
    for split in DIV2K_SPLITS:
        hr = div2k_hr_folder(split)
        table[f"div2k_{split}_hr"] = _div2k_archive(f"div2k_{split}_hr", f"{hr}.zip", hr, hr)
        for scale in SUPPORTED_SCALES:
            key = f"div2k_{split}_lr_bicubic_x{scale}"
            lr = div2k_lr_folder(split, scale)
            lr_root = str(PurePosixPath(lr).parent)
            table[key] = _div2k_archive(key, f"{lr_root}_X{scale}.zip", lr_root, lr)
    table["benchmark"] = Archive(
        name="benchmark",
        url="https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
        sha256=None,
        size=None,
        md5="4ace41d33c2384b97e6b320cd0afd6ba",
        archive_root=BENCHMARK_DIR,
        provides=tuple(f"{BENCHMARK_DIR}/{n}" for n in DOWNLOADABLE_SETS),
        dest=".",
    )
    # Flickr2K (EDSR's DF2K = DIV2K train + Flickr2K; HR images only are used). No size or checksum that we
    # can cite is published, so none is declared: the first download records its size and SHA-256
    # in a sidecar, root/Flickr2K.tar.json, and every later copy is checked against it (_recorded).
    # Only the HR folder is placed; the archive's LR folders are dropped with the extraction.
    table["flickr2k"] = Archive(
        name="flickr2k",
        url="https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar",
        sha256=None,
        size=None,
        archive_root=FLICKR2K_DIR,
        provides=(FLICKR2K_HR,),
        dest=".",
    )
    return table


#: The archive table: key -> Archive.  Tests (and users with re-packed
#: archives) may replace entries, e.g. with ``dataclasses.replace``.
ARCHIVES: dict[str, Archive] = _build_table()


# --------------------------------------------------------------------------- helpers


def _resolve_url(archive: Archive, base_url: str | None) -> str:
    base = base_url if base_url is not None else os.environ.get(MIRROR_ENV) or None
    if not base:
        return archive.url
    return base.rstrip("/") + "/" + archive.filename


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return contextlib.nullcontext(_NullBar())
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


class _NullBar:  # pragma: no cover
    def update(self, n: int) -> None:
        pass


def _manual_hint(archive: Archive, url: str, target: Path, reason: str, part: Path | None) -> str:
    lines = [
        f"Could not download {archive.filename}: {reason}",
        "Download it by hand from:",
        f"    {url}",
    ]
    if url != archive.url:
        lines.append(f"    (official location: {archive.url})")
    lines += [
        "and save it as:",
        f"    {target}",
        "then re-run the same command: an archive already at that path is verified and "
        "extracted without downloading.",
    ]
    if part is not None and part.exists():
        lines.append(f"A partial download was kept at {part}; re-running resumes it.")
    lines.append(f"(Set {MIRROR_ENV} or pass base_url / --base-url to use a mirror.)")
    return "\n".join(lines)


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) only, see _check_scheme


def _check_scheme(url: str) -> None:
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"Refusing to download from non-HTTP(S) URL: {url}")


def _download(archive: Archive, url: str, target: Path, *, timeout: float, progress: bool) -> None:
    """Stream ``url`` to ``target`` through ``target.part`` (resumed with Range when present)."""
    _check_scheme(url)
    part = target.with_name(target.name + ".part")
    for _attempt in range(2):  # a second pass restarts from zero after a 416 on a bogus .part
        offset = part.stat().st_size if part.exists() else 0
        if archive.size is not None and offset > archive.size:
            part.unlink()
            offset = 0
        try:
            try:
                resp = _open(url, offset, timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset:
                    e.close()
                    if archive.size is not None and offset == archive.size:
                        os.replace(part, target)  # the .part was already complete
                        return
                    part.unlink()
                    continue
                raise
            with resp:
                status = getattr(resp, "status", None) or resp.getcode()
                length = resp.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                if offset and status == 206:
                    crange = resp.headers.get("Content-Range", "")
                    if not crange.startswith(f"bytes {offset}-"):
                        raise DownloadError(
                            f"Server answered the resume of {url} at byte {offset} with an "
                            f"unexpected Content-Range {crange!r}"
                        )
                    mode = "ab"
                else:
                    # No Range sent, or the server ignored it (200): start over.
                    offset = 0
                    mode = "wb"
                expected_total = offset + length if length is not None else archive.size
                received = 0
                with open(part, mode) as fh, _progress(
                    expected_total, offset, archive.filename, progress
                ) as bar:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                if length is not None and received < length:
                    raise DownloadError(
                        f"connection closed after {offset + received} of {offset + length} bytes"
                    )
        except DownloadError as e:
            raise DownloadError(_manual_hint(archive, url, target, str(e), part)) from e
        except urllib.error.HTTPError as e:
            raise DownloadError(
                _manual_hint(archive, url, target, f"HTTP {e.code} {e.reason}", part)
            ) from e
        except urllib.error.URLError as e:
            raise DownloadError(_manual_hint(archive, url, target, f"{e.reason}", part)) from e
        except (TimeoutError, ConnectionError, HTTPException, OSError) as e:
            raise DownloadError(
                _manual_hint(archive, url, target, f"{type(e).__name__}: {e}", part)
            ) from e
        os.replace(part, target)
        return
    raise DownloadError(  # pragma: no cover - only after two 416 answers in a row
        _manual_hint(archive, url, target, "server refused the byte range twice", part)
    )


def _hash_file(path: Path, algos: Sequence[str], progress: bool) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as fh, _progress(
        path.stat().st_size, 0, f"verify {path.name}", progress
    ) as bar:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {a: h.hexdigest() for a, h in hashers.items()}


def _verify(archive: Archive, path: Path, progress: bool) -> None:
    """Check size (when known) then SHA-256 (when known) else MD5 (when known)."""
    actual_size = path.stat().st_size
    if archive.size is not None and actual_size != archive.size:
        raise ChecksumError(
            f"Size mismatch for {path}: expected {archive.size} bytes, got {actual_size} bytes. "
            "The archive is incomplete or corrupt and has been removed; re-run to download it again."
        )
    algo, expected = (
        ("sha256", archive.sha256)
        if archive.sha256
        else ("md5", archive.md5)
        if archive.md5
        else (None, None)
    )
    if algo is None:
        return
    actual = _hash_file(path, [algo], progress)[algo]
    if actual.lower() != expected.lower():
        raise ChecksumError(
            f"{algo.upper()} mismatch for {path}:\n"
            f"    expected {expected}\n"
            f"    actual   {actual}\n"
            "The archive is corrupt or not the official file and has been removed; "
            "re-run to download it again."
        )


def _unsafe_member(name: str) -> bool:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return ".." in PurePosixPath(norm).parts


def extract_limit(archive_bytes: int) -> int:
    """Most uncompressed bytes an archive of ``archive_bytes`` may declare (`MAX_EXTRACT_ENV` overrides)."""
    override = os.environ.get(MAX_EXTRACT_ENV, "").strip()
    if override:
        if not override.isdigit():
            raise ValueError(f"{MAX_EXTRACT_ENV}={override!r}: give a number of bytes, e.g. {MIN_EXTRACT_LIMIT}")
        return int(override)
    return max(MIN_EXTRACT_LIMIT, MAX_EXPANSION * archive_bytes)


def _check_declared_size(path: Path, sizes: Iterable[int], limit: int) -> None:
    total = sum(sizes)
    if total > limit:
        raise ArchiveError(
            f"{path}: its members declare {total:,} bytes uncompressed, over the limit of {limit:,} bytes; "
            f"refusing to extract (a zip bomb?). If the archive is genuine, raise the limit: {MAX_EXTRACT_ENV}=<bytes> "
            f"(default: max({MIN_EXTRACT_LIMIT:,}, {MAX_EXPANSION} x the archive's size))."
        )


def _extract(archive: Archive, path: Path, into: Path) -> None:
    """Extract ``path`` into the (empty, temporary) folder ``into``, rejecting unsafe members and zip bombs."""
    limit = extract_limit(path.stat().st_size)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if _unsafe_member(info.filename):
                        raise ArchiveError(
                            f"Unsafe member {info.filename!r} in {path} (absolute path or '..'); "
                            "refusing to extract."
                        )
                _check_declared_size(path, (info.file_size for info in zf.infolist()), limit)
                zf.extractall(into)
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                members = tf.getmembers()
                for m in members:
                    if _unsafe_member(m.name):
                        raise ArchiveError(
                            f"Unsafe member {m.name!r} in {path} (absolute path or '..'); "
                            "refusing to extract."
                        )
                    if not (m.isfile() or m.isdir()):
                        raise ArchiveError(
                            f"Unsupported member {m.name!r} in {path} (link or special file); "
                            "refusing to extract."
                        )
                _check_declared_size(path, (m.size for m in members), limit)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(into, members=members)
        else:
            raise ArchiveError(f"{path} is not a readable zip or tar archive (corrupt or truncated).")
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise ArchiveError(f"Could not extract {path} (corrupt or truncated?): {e}") from e


def _place(archive: Archive, tmp: Path, dest: Path, wanted: Iterable[str], overwrite: bool) -> None:
    """Move the ``wanted`` folders from the extraction ``tmp`` into ``dest``."""
    wanted = list(wanted)
    if not (tmp / archive.archive_root).is_dir():
        raise ArchiveError(
            f"{archive.filename} does not contain the expected top-level folder "
            f"{archive.archive_root!r}; it is not the expected archive."
        )
    missing = [p for p in wanted if not (tmp / p).is_dir()]
    if missing:
        raise ArchiveError(f"{archive.filename} lacks the expected folder(s): {', '.join(missing)}")
    for i, rel in enumerate(wanted):
        target = dest / rel
        if target.exists():
            if not overwrite:
                continue
            os.replace(target, tmp / f".replaced-{i}")  # deleted with tmp
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target)


def _present(dest: Path, rel: str) -> bool:
    p = dest / rel
    return p.is_dir() and any(p.iterdir())


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise concurrent ensure_* calls on one archive (e.g. several DDP ranks)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sidecar(archive: Archive, dest: Path) -> Path:
    return dest / f"{archive.filename}.json"


def _recorded(archive: Archive, path: Path, dest: Path, progress: bool) -> dict | None:
    """For an archive declared without any checksum: its url, size and SHA-256, to record after extraction.

    When a sidecar recorded them at an earlier download, this copy must match it (ChecksumError).
    Archives with a declared checksum return None: `_verify` checked them.
    """
    if archive.sha256 or archive.md5:
        return None
    actual = {"url": archive.url, "size": path.stat().st_size,
              "sha256": _hash_file(path, ["sha256"], progress)["sha256"]}
    sidecar = _sidecar(archive, dest)
    if sidecar.is_file():
        known = json.loads(sidecar.read_text())
        if (known.get("size"), known.get("sha256")) != (actual["size"], actual["sha256"]):
            raise ChecksumError(
                f"{path} differs from the copy recorded in {sidecar} at its first download:\n"
                f"    recorded {known.get('size')} bytes, SHA-256 {known.get('sha256')}\n"
                f"    actual   {actual['size']} bytes, SHA-256 {actual['sha256']}\n"
                f"The archive has been removed; re-run to download it again (delete {sidecar} if the "
                "official file has changed)."
            )
    return actual


# --------------------------------------------------------------------------- public API


def ensure_archive(
    archive: Archive | str,
    root: Path | str,
    *,
    wanted: Sequence[str] | None = None,
    base_url: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Make sure the folders of one archive exist under ``root / archive.dest``.

    ``wanted`` (default: all of ``archive.provides``) are the folders needed; if
    they are all present nothing is done (no network access).  Otherwise the
    archive at ``root/dest/<file name>`` is used when present, else downloaded;
    it is verified and extracted atomically.  Returns ``root / archive.dest``.
    """
    if isinstance(archive, str):
        archive = ARCHIVES[archive]
    dest = (Path(root).expanduser() / archive.dest).resolve()
    wanted = tuple(archive.provides if wanted is None else wanted)
    unknown = [w for w in wanted if w not in archive.provides]
    if unknown:
        raise ValueError(f"{archive.name} does not provide {unknown}")
    if not force and all(_present(dest, w) for w in wanted):
        return dest

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / archive.filename
    url = _resolve_url(archive, base_url)
    with _locked(dest / f".{archive.filename}.lock"):
        # Another process may have finished while we waited for the lock.
        if not force and all(_present(dest, w) for w in wanted):
            return dest
        # Leftovers of a killed extraction of this archive (safe: we hold the lock).
        for stale in dest.glob(f".{archive.filename}.extract-*"):
            shutil.rmtree(stale, ignore_errors=True)

        if not target.exists():
            _download(archive, url, target, timeout=timeout, progress=progress)
        try:
            _verify(archive, target, progress)
            recorded = _recorded(archive, target, dest, progress)
        except ChecksumError:
            target.unlink(missing_ok=True)
            raise

        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.filename}.extract-", dir=dest))
        try:
            _extract(archive, target, tmp)
            # Place every folder of the archive that is missing, plus the wanted
            # ones with force; existing folders are otherwise left untouched.
            to_place = {p for p in archive.provides if not _present(dest, p)}
            if force:
                to_place |= set(wanted)
            _place(archive, tmp, dest, sorted(to_place), overwrite=True)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, ArchiveError):
                target.unlink(missing_ok=True)
                raise ArchiveError(f"{e}\nThe archive {target} has been removed.") from e
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        if recorded is not None and not _sidecar(archive, dest).is_file():
            atomic_write_text(_sidecar(archive, dest), json.dumps(recorded, indent=2) + "\n")
        if not keep_archive:
            target.unlink(missing_ok=True)
    # The (empty) lock file is left in place on purpose: unlinking it would let a
    # third process lock a fresh inode while a second still waits on the old one.
    return dest


def _check_choice(values: Iterable, allowed: Sequence, what: str) -> tuple:
    values = tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"Unknown {what} {bad}; choose from {list(allowed)}")
    return values


def ensure_div2k(
    root: Path | str,
    scales: Sequence[int] = SUPPORTED_SCALES,
    splits: Sequence[str] = DIV2K_SPLITS,
    *,
    hr: bool = True,
    base_url: str | None = None,
    force: bool = False,
    keep_archives: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download/verify/extract DIV2K HR and bicubic LR; returns ``root / "DIV2K"``.

    ``root/DIV2K/DIV2K_{split}_HR`` and ``root/DIV2K/DIV2K_{split}_LR_bicubic/X{s}``.
    """
    scales = _check_choice((int(s) for s in scales), SUPPORTED_SCALES, "DIV2K scale(s)")
    splits = _check_choice(splits, DIV2K_SPLITS, "DIV2K split(s)")
    keys = []
    for split in splits:
        if hr:
            keys.append(f"div2k_{split}_hr")
        keys += [f"div2k_{split}_lr_bicubic_x{s}" for s in scales]
    kw = dict(
        base_url=base_url, force=force, keep_archive=keep_archives, timeout=timeout, progress=progress
    )
    for key in keys:
        ensure_archive(ARCHIVES[key], root, **kw)
    return (Path(root).expanduser() / DIV2K_DIR).resolve()


def ensure_flickr2k(
    root: Path | str,
    *,
    base_url: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download/extract Flickr2K's HR images; returns ``root / "Flickr2K"`` (holding ``Flickr2K_HR``).

    Its size and SHA-256 are recorded in ``root/Flickr2K.tar.json`` at the first download and
    checked at every later one (no official checksum is published).
    """
    ensure_archive(ARCHIVES["flickr2k"], root, base_url=base_url, force=force, keep_archive=keep_archive,
                   timeout=timeout, progress=progress)
    return (Path(root).expanduser() / FLICKR2K_DIR).resolve()


def ensure_benchmarks(
    root: Path | str,
    names: Sequence[str] = DOWNLOADABLE_SETS,
    *,
    base_url: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download/verify/extract EDSR's benchmark.tar; returns ``root / "benchmark"``.

    ``root/benchmark/{name}/HR`` and ``root/benchmark/{name}/LR_bicubic/X{s}``.
    """
    names = _check_choice(names, DOWNLOADABLE_SETS, "benchmark name(s)")
    ensure_archive(
        ARCHIVES["benchmark"],
        root,
        wanted=[f"{BENCHMARK_DIR}/{n}" for n in names],
        base_url=base_url,
        force=force,
        keep_archive=keep_archive,
        timeout=timeout,
        progress=progress,
    )
    return (Path(root).expanduser() / BENCHMARK_DIR).resolve()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m srlab.data.download",
        description="Download, verify and extract DIV2K, the SR benchmark sets or Flickr2K.",
    )
    parser.add_argument("dataset", choices=("div2k", "benchmarks", "flickr2k"))
    parser.add_argument("--root", type=Path, default=Path("data"), help="data root (default: ./data)")
    parser.add_argument("--scales", type=int, nargs="+", default=list(SUPPORTED_SCALES), choices=SUPPORTED_SCALES)
    parser.add_argument("--splits", nargs="+", default=list(DIV2K_SPLITS), choices=DIV2K_SPLITS)
    parser.add_argument("--names", nargs="+", default=list(DOWNLOADABLE_SETS), choices=DOWNLOADABLE_SETS)
    parser.add_argument("--force", action="store_true", help="re-extract even if already present")
    parser.add_argument("--keep-archives", action="store_true", help="keep the archives after extraction")
    parser.add_argument(
        "--base-url", default=None, help=f"mirror serving the archive files (or set {MIRROR_ENV})"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    common = dict(
        base_url=args.base_url, force=args.force, timeout=args.timeout, progress=not args.no_progress
    )
    try:
        if args.dataset == "div2k":
            out = ensure_div2k(
                args.root, args.scales, args.splits, keep_archives=args.keep_archives, **common
            )
        elif args.dataset == "flickr2k":
            out = ensure_flickr2k(args.root, keep_archive=args.keep_archives, **common)
        else:
            out = ensure_benchmarks(args.root, args.names, keep_archive=args.keep_archives, **common)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
