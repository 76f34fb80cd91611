"""read_image on every kind of bad or unusual file: an error naming the file, or the documented conversion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from srlab.data.io import ImageReadError, list_images, read_image, write_image

RNG = np.random.default_rng(8)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def png_bytes(path: Path) -> bytes:
    write_image(path, RGB)
    return path.read_bytes()


def make_truncated_png(tmp: Path) -> Path:
    data = png_bytes(tmp / "whole.png")
    path = tmp / "truncated.png"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def make_truncated_png_tail(tmp: Path) -> Path:
    data = png_bytes(tmp / "whole.png")
    path = tmp / "no_end.png"
    path.write_bytes(data[:-2])  # only the end chunk's checksum is missing
    return path


def make_truncated_jpeg(tmp: Path) -> Path:
    ok, encoded = cv2.imencode(".jpg", RGB)
    assert ok
    path = tmp / "truncated.jpg"
    path.write_bytes(encoded.tobytes()[: encoded.size // 2])
    return path


def make_text_file(tmp: Path) -> Path:
    path = tmp / "notes.png"
    path.write_text("not an image, just text with a .png name\n")
    return path


def make_zero_byte(tmp: Path) -> Path:
    path = tmp / "empty.png"
    path.touch()
    return path


def make_folder(tmp: Path) -> Path:
    path = tmp / "folder.png"
    path.mkdir()
    return path


def make_missing(tmp: Path) -> Path:
    return tmp / "missing.png"


def make_float_tiff(tmp: Path) -> Path:
    path = tmp / "float.tiff"
    assert cv2.imwrite(str(path), RNG.random((8, 8, 3), dtype=np.float32))
    return path


UNREADABLE = "not a readable image (truncated, corrupt or not an image format)"
BAD_FILES = {
    "truncated PNG": (make_truncated_png, UNREADABLE),
    "PNG without its end": (make_truncated_png_tail, UNREADABLE),
    "truncated JPEG": (make_truncated_jpeg, UNREADABLE),
    "text named .png": (make_text_file, UNREADABLE),
    "zero bytes": (make_zero_byte, "the file is empty (0 bytes)"),
    "folder": (make_folder, "is a folder, not an image file"),
    "missing": (make_missing, "no such file"),
    "32-bit float TIFF": (make_float_tiff, "unsupported pixel type float32 (expected 8- or 16-bit unsigned)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_an_error_naming_it(tmp_path, case):
    make, reason = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(info.value) == f"{path}: {reason}"


def test_rgb_png_roundtrip(tmp_path):
    write_image(tmp_path / "rgb.png", RGB)
    out = read_image(tmp_path / "rgb.png")
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    assert np.array_equal(out, RGB)
    assert [p.name for p in tmp_path.iterdir()] == ["rgb.png"]  # the atomic write left no temp file


def test_rgba_drops_alpha_without_compositing(tmp_path):
    alpha = RNG.integers(0, 256, (12, 10, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([RGB, alpha], axis=2), mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (12, 10, 3)
    assert np.array_equal(out, RGB)


def test_grey_stays_single_channel(tmp_path):
    grey = RGB[:, :, 1].copy()
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    out = read_image(tmp_path / "grey.png")
    assert out.shape == (12, 10)
    assert np.array_equal(out, grey)


def test_grey_alpha_becomes_grey(tmp_path):
    grey_alpha = RGB[:, :, :2].copy()
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out.shape == (12, 10)  # OpenCV decodes LA as 4 channels; the file is grey
    assert np.array_equal(out, grey_alpha[:, :, 0])


def test_palette_is_expanded_to_rgb(tmp_path):
    palette = Image.fromarray(RGB).convert("P")
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "palette.png"), expected)
    palette.save(tmp_path / "palette_transparent.png", transparency=0)
    out = read_image(tmp_path / "palette_transparent.png")
    assert out.shape == (12, 10, 3)
    assert np.array_equal(out, expected)


def test_sixteen_bit_is_scaled_to_eight(tmp_path):
    values = np.array([0, 128, 129, 257, 257 * 100, 257 * 100 + 128, 65534, 65535], dtype=np.uint16)
    expected = np.array([0, 0, 1, 1, 100, 100, 255, 255], dtype=np.uint8)  # round(v / 257)
    grey16 = np.tile(values, (3, 1))
    assert cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    out = read_image(tmp_path / "grey16.png")
    assert out.dtype == np.uint8 and out.shape == (3, 8)
    assert np.array_equal(out, np.tile(expected, (3, 1)))

    rgb16 = np.stack([grey16, grey16[:, ::-1], np.full_like(grey16, 65535)], axis=2)  # R, G, B
    assert cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[:, :, ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "rgb16.png")
    assert out.shape == (3, 8, 3)
    assert np.array_equal(out[:, :, 0], np.tile(expected, (3, 1)))
    assert np.array_equal(out[:, :, 1], np.tile(expected[::-1], (3, 1)))
    assert (out[:, :, 2] == 255).all()


def test_one_bit_png_is_black_and_white_grey(tmp_path):
    bits = RNG.integers(0, 2, (6, 7)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    out = read_image(tmp_path / "bits.png")
    assert out.shape == (6, 7)
    assert np.array_equal(out, np.where(bits, 255, 0).astype(np.uint8))


def test_list_images_names_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'absent'}: image folder does not exist$"):
        list_images(tmp_path / "absent")
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path}: no image files"):
        list_images(tmp_path)
