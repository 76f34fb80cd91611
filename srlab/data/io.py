"""Reading and writing images as uint8 RGB (or single-channel grey) arrays, with errors that name the file.

Documented conversions (what `read_image` returns):

- RGB -> HxWx3 RGB; RGBA -> RGB (alpha dropped, colour kept as stored, not composited);
- grey -> HxW; grey + alpha (PNG "LA") -> HxW grey (alpha dropped);
- palette -> RGB (expanded by the decoder; a palette with transparency -> RGB too);
- 16-bit (any of the above) -> 8-bit as round(v / 257), so 65535 -> 255 and 257 * k -> k.

A file stored with one grey channel stays 2-D, because the metric scores it on
that channel. Anything else (missing, empty, truncated, not an image, float or
signed pixels) raises `ImageReadError` naming the file and the reason.

Decompression bombs: a few kB of PNG can declare a 20000 x 20000 image, which the decoder
would allocate before finding the data missing. The size the header declares is read first
(`declared_size`: PNG, JPEG, BMP, WebP, TIFF, the formats of `IMAGE_SUFFIXES`; a file in
any other format is not read), and an image of more than `max_image_pixels()` pixels is
refused, naming the file and the limit: OpenCV's own ``OPENCV_IO_MAX_IMAGE_PIXELS``
variable when set (raise it for a genuine larger image), else `DEFAULT_MAX_IMAGE_PIXELS`.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from srlab.utils.files import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file that cannot be used as an image; the message names the file and the reason."""


NOT_READABLE = "not a readable image (truncated, corrupt or not an image format)"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GREY_ALPHA = 4  # IHDR colour type of a grey + alpha PNG


def is_grey_alpha_png(data: np.ndarray) -> bool:
    """OpenCV expands grey + alpha PNGs to BGRA; the IHDR colour type (byte 25) says the file is grey."""
    return len(data) > 25 and data[:8].tobytes() == PNG_SIGNATURE and int(data[25]) == PNG_GREY_ALPHA


MAX_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"  # OpenCV's own limit (read once, when cv2 loads); srlab reads it per file
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # 100 megapixels: 300 MB as 8-bit RGB


def max_image_pixels() -> int:
    """The most pixels an image may declare: $OPENCV_IO_MAX_IMAGE_PIXELS, else `DEFAULT_MAX_IMAGE_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not value.isdigit():
        raise ValueError(f"{MAX_PIXELS_ENV}={value!r}: give a number of pixels, e.g. {DEFAULT_MAX_IMAGE_PIXELS}")
    return int(value)


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first start-of-frame segment, walking the segments before it."""
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers carry no length
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15, not DHT/JPG/DAC
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None


def _tiff_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) of a TIFF's first image (the one OpenCV decodes), classic or BigTIFF."""
    order = "<" if bytes(data[:2]) == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    head, count_fmt, entry_size, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    offset = struct.unpack_from(order + head, data, 8 if big else 4)[0]
    if offset + 8 > len(data):
        return None
    count = struct.unpack_from(order + count_fmt, data, offset)[0]
    first = offset + struct.calcsize(count_fmt)
    found = {}
    for i in range(min(count, (len(data) - first) // entry_size)):
        tag, kind = struct.unpack_from(order + "HH", data, first + i * entry_size)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3), LONG (4) or LONG8 (16)
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                return None
            found[tag] = struct.unpack_from(order + fmt, data, first + i * entry_size + value_at)[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _webp_size(data: memoryview) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas width - 1 and height - 1
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":  # lossless: 14-bit width - 1 and height - 1 after the 0x2f signature
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        return (int.from_bytes(data[26:28], "little") & 0x3FFF), (int.from_bytes(data[28:30], "little") & 0x3FFF)
    return None


def declared_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """(width, height) a PNG, JPEG, BMP, WebP or TIFF header declares, without decoding; None for other formats."""
    buf = memoryview(data)  # no copy: headers are read in place
    try:
        if buf[:8] == PNG_SIGNATURE and buf[12:16] == b"IHDR":
            return struct.unpack_from(">II", buf, 16)
        if buf[:2] == b"\xff\xd8":
            return _jpeg_size(buf)
        if buf[:2] == b"BM":
            if struct.unpack_from("<I", buf, 14)[0] == 12:  # OS/2 core header: 16-bit sizes
                return struct.unpack_from("<HH", buf, 18)
            width, height = struct.unpack_from("<ii", buf, 18)
            return abs(width), abs(height)  # a negative height means rows stored top-down
        if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
            return _webp_size(buf)
        if bytes(buf[:4]) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_size(buf)
    except struct.error:  # a header cut short: the decoder reports the file as truncated
        return None
    return None


def check_pixel_count(path: Path, data: np.ndarray) -> None:
    """Refuse a file whose header declares more pixels than `max_image_pixels()`, or declares no size we can read."""
    size = declared_size(data)
    if size is None:
        raise ImageReadError(f"{path}: {NOT_READABLE}")
    limit = max_image_pixels()
    if size[0] * size[1] > limit:
        width, height = size
        raise ImageReadError(
            f"{path}: declares {width} x {height} = {width * height:,} pixels, over the limit of {limit:,} "
            f"(a decompression-bomb guard); if the image is genuine, raise it: {MAX_PIXELS_ENV}=<pixels>"
        )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 HxWx3 RGB, or HxW for a grey file (conversions: module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({err.strerror or err})") from err
    if data.size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    check_pixel_count(path, data)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # OpenCV's own limits (e.g. a side over OPENCV_IO_MAX_IMAGE_WIDTH)
        reason = str(err).strip().splitlines()[-1]
        raise ImageReadError(f"{path}: OpenCV refused to decode it ({reason}); "
                             f"if it is a genuine large image, raise {MAX_PIXELS_ENV}") from err
    if img is None:
        raise ImageReadError(f"{path}: {NOT_READABLE}")
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"{path}: unsupported pixel type {img.dtype} (expected 8- or 16-bit unsigned)")
    if img.ndim == 3:
        channels = img.shape[2]
        if channels in (1, 2) or (channels == 4 and is_grey_alpha_png(data)):
            img = img[:, :, 0]  # grey, or grey + alpha: keep the grey channel
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageReadError(f"{path}: unsupported channel count {channels} (expected 1 to 4)")
    return np.ascontiguousarray(img)


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write a uint8 RGB/grey array as PNG (or the suffix's format) atomically (srlab.utils.files)."""
    path = Path(path)
    if img.dtype != np.uint8:
        raise ValueError(f"{path}: write_image expects uint8, got {img.dtype}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, encoded = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise OSError(f"{path}: could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted by name; a missing or image-less folder is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def tensor_to_uint8(img) -> np.ndarray:
    """(3, H, W) float tensor in [0, 255] -> HxWx3 uint8 (clamped and rounded, as it is scored)."""
    from srlab.metrics.sr_metrics import quantize

    arr = quantize(img.detach().float()).to("cpu").numpy().astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))
