"""srlab.data.download against a real loopback HTTP server (no external network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from srlab.data import download as dl
from srlab.data.benchmark import DOWNLOADABLE_SETS

# --------------------------------------------------------------------------- server


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1, honouring ``Range: bytes=N-``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.honour_range = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                data = outer.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and outer.honour_range:
                    assert rng.startswith("bytes=") and rng.endswith("-"), rng
                    start = int(rng[len("bytes=") : -1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch):
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


# --------------------------------------------------------------------------- archives


def _png(seed: int, size: int = 8) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _zip(members: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return bio.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return bio.getvalue()


def _div2k_hr_zip() -> bytes:
    return _zip({f"DIV2K_train_HR/{i:04d}.png": _png(i, 16) for i in (1, 2, 3)})


def _div2k_lr_zip(scale: int) -> bytes:
    return _zip(
        {f"DIV2K_train_LR_bicubic/X{scale}/{i:04d}x{scale}.png": _png(i, 16 // scale) for i in (1, 2, 3)}
    )


def _benchmark_tar() -> bytes:
    members = {}
    for k, name in enumerate(DOWNLOADABLE_SETS):
        members[f"benchmark/{name}/HR/img{k}.png"] = _png(k, 12)
        for s in (2, 3, 4):
            members[f"benchmark/{name}/LR_bicubic/X{s}/img{k}x{s}.png"] = _png(k, 12 // s)
    return _tar(members)


def _register(monkeypatch, server, key: str, data: bytes, *, sha: bool | str = True, size: bool = True):
    """Serve ``data`` as the archive ``key`` and make the table expect it."""
    arch = dl.ARCHIVES[key]
    server.files[arch.filename] = data
    sha256 = hashlib.sha256(data).hexdigest() if sha is True else (sha or None)
    monkeypatch.setitem(
        dl.ARCHIVES,
        key,
        dataclasses.replace(arch, sha256=sha256, size=len(data) if size else None, md5=None),
    )
    return dl.ARCHIVES[key]


def _leftovers(root: Path) -> list[str]:
    """Temporary extraction dirs and partial downloads anywhere under root."""
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if ".extract-" in p.name or p.name.endswith(".part")
    ]


# --------------------------------------------------------------------------- table


def test_archive_table_is_consistent():
    for key, a in dl.ARCHIVES.items():
        assert a.name == key
        assert a.url.startswith("https://")
        assert a.sha256 is None or (len(a.sha256) == 64 and int(a.sha256, 16) >= 0)
        assert a.md5 is None or len(a.md5) == 32
        assert a.size is None or a.size > 0
        assert all(p == a.archive_root or p.startswith(a.archive_root + "/") for p in a.provides)
    assert dl.ARCHIVES["div2k_train_hr"].url == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip"
    assert dl.ARCHIVES["div2k_valid_lr_bicubic_x4"].url.endswith("/DIV2K_valid_LR_bicubic_X4.zip")
    assert dl.ARCHIVES["benchmark"].url == "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
    assert len(dl.ARCHIVES) == 2 * (1 + 3) + 2  # DIV2K HR + LR x2,x3,x4 per split; benchmark.tar; Flickr2K


# --------------------------------------------------------------------------- tests


def test_div2k_download_verify_extract_and_idempotent(tmp_path, server, monkeypatch):
    hr = _register(monkeypatch, server, "div2k_train_hr", _div2k_hr_zip())
    _register(monkeypatch, server, "div2k_train_lr_bicubic_x2", _div2k_lr_zip(2))
    _register(monkeypatch, server, "div2k_train_lr_bicubic_x4", _div2k_lr_zip(4), sha=False)

    out = dl.ensure_div2k(tmp_path, scales=(2, 4), splits=("train",), base_url=server.url, progress=False)

    assert out == (tmp_path / "DIV2K").resolve()
    assert sorted(p.name for p in (out / "DIV2K_train_HR").iterdir()) == ["0001.png", "0002.png", "0003.png"]
    assert (out / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png").is_file()
    assert (out / "DIV2K_train_LR_bicubic" / "X4" / "0003x4.png").is_file()
    img = cv2.imread(str(out / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png"))
    assert img.shape == (8, 8, 3)
    assert not (out / hr.filename).exists()  # archives removed after extraction by default
    assert _leftovers(tmp_path) == []
    assert len(server.requests) == 3 and all(r is None for _, r in server.requests)

    server.requests.clear()
    assert dl.ensure_div2k(tmp_path, scales=(2, 4), splits=("train",), base_url=server.url, progress=False) == out
    assert server.requests == []  # idempotent: nothing fetched


def test_mirror_env_var_and_keep_archive(tmp_path, server, monkeypatch):
    arch = _register(monkeypatch, server, "div2k_train_hr", _div2k_hr_zip())
    monkeypatch.setenv(dl.MIRROR_ENV, server.url + "/")
    dl.ensure_archive(arch, tmp_path, keep_archive=True, progress=False)
    assert server.requests == [(f"/{arch.filename}", None)]
    assert (tmp_path / "DIV2K" / arch.filename).read_bytes() == server.files[arch.filename]
    assert (tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.png").is_file()


def test_benchmarks_tar_layout(tmp_path, server, monkeypatch):
    _register(monkeypatch, server, "benchmark", _benchmark_tar(), sha=False, size=False)
    out = dl.ensure_benchmarks(tmp_path, names=("Set5", "Urban100"), base_url=server.url, progress=False)
    assert out == (tmp_path / "benchmark").resolve()
    for name in DOWNLOADABLE_SETS:  # the whole tar is placed
        assert (out / name / "HR").is_dir()
        for s in (2, 3, 4):
            assert len(list((out / name / "LR_bicubic" / f"X{s}").glob("*.png"))) == 1
    assert _leftovers(tmp_path) == []
    server.requests.clear()
    dl.ensure_benchmarks(tmp_path, base_url=server.url, progress=False)
    assert server.requests == []


def _serve_benchmark_with_md5(monkeypatch, server, data: bytes, md5: str) -> dl.Archive:
    """Serve `data` as benchmark.tar, checked the way the real entry is: MD5 only (no size, no SHA-256)."""
    real = dl.ARCHIVES["benchmark"]
    assert (real.sha256, real.size, real.md5) == (None, None, "4ace41d33c2384b97e6b320cd0afd6ba")
    server.files[real.filename] = data
    monkeypatch.setitem(dl.ARCHIVES, "benchmark", dataclasses.replace(real, md5=md5))
    return dl.ARCHIVES["benchmark"]


def test_benchmark_tar_md5_accepts_the_published_archive(tmp_path, server, monkeypatch):
    data = _benchmark_tar()
    _serve_benchmark_with_md5(monkeypatch, server, data, hashlib.md5(data).hexdigest().upper())  # any case
    out = dl.ensure_benchmarks(tmp_path, names=("Set14",), base_url=server.url, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(DOWNLOADABLE_SETS)
    assert (out / "Set14" / "LR_bicubic" / "X3" / "img1x3.png").is_file()
    assert not (tmp_path / "benchmark.tar").exists() and _leftovers(tmp_path) == []


def test_benchmark_tar_md5_rejects_a_corrupt_archive(tmp_path, server, monkeypatch):
    good = _benchmark_tar()
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0x01  # one flipped bit, same size: only the checksum can tell
    corrupt = bytes(corrupt)
    arch = _serve_benchmark_with_md5(monkeypatch, server, corrupt, hashlib.md5(good).hexdigest())
    with pytest.raises(dl.ChecksumError, match=r"^MD5 mismatch for .*benchmark\.tar") as ei:
        dl.ensure_benchmarks(tmp_path, base_url=server.url, progress=False)
    message = str(ei.value)
    assert f"expected {hashlib.md5(good).hexdigest()}" in message
    assert f"actual   {hashlib.md5(corrupt).hexdigest()}" in message
    assert "has been removed; re-run to download it again" in message
    assert not (tmp_path / arch.filename).exists()
    assert not (tmp_path / "benchmark").exists() and _leftovers(tmp_path) == []


def test_resume_from_partial_file(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    arch = _register(monkeypatch, server, "div2k_train_hr", data)
    dest = tmp_path / "DIV2K"
    dest.mkdir()
    half = len(data) // 2
    (dest / (arch.filename + ".part")).write_bytes(data[:half])

    dl.ensure_archive(arch, tmp_path, base_url=server.url, keep_archive=True, progress=False)

    assert server.requests == [(f"/{arch.filename}", f"bytes={half}-")]
    assert (dest / arch.filename).read_bytes() == data
    assert (dest / "DIV2K_train_HR" / "0003.png").is_file()
    assert _leftovers(tmp_path) == []


def test_resume_falls_back_to_restart_when_range_ignored(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    arch = _register(monkeypatch, server, "div2k_train_hr", data)
    server.honour_range = False
    dest = tmp_path / "DIV2K"
    dest.mkdir()
    (dest / (arch.filename + ".part")).write_bytes(data[:100])

    dl.ensure_archive(arch, tmp_path, base_url=server.url, keep_archive=True, progress=False)

    assert server.requests == [(f"/{arch.filename}", "bytes=100-")]  # asked, got a full 200
    assert (dest / arch.filename).read_bytes() == data
    assert (dest / "DIV2K_train_HR" / "0001.png").is_file()


def test_complete_part_file_and_416(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    arch = _register(monkeypatch, server, "div2k_train_hr", data)
    dest = tmp_path / "DIV2K"
    dest.mkdir()
    (dest / (arch.filename + ".part")).write_bytes(data)  # fully downloaded, never renamed
    dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert server.requests == [(f"/{arch.filename}", f"bytes={len(data)}-")]
    assert (dest / "DIV2K_train_HR" / "0001.png").is_file()
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    wrong = "0" * 64
    arch = _register(monkeypatch, server, "div2k_train_hr", data, sha=wrong)
    with pytest.raises(dl.ChecksumError, match="^SHA256 mismatch for ") as ei:
        dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    msg = str(ei.value)
    assert wrong in msg and hashlib.sha256(data).hexdigest() in msg
    assert arch.filename in msg
    dest = tmp_path / "DIV2K"
    assert not (dest / "DIV2K_train_HR").exists()
    assert not (dest / arch.filename).exists()
    assert _leftovers(tmp_path) == []


def test_size_mismatch_names_expected_and_actual(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    arch = _register(monkeypatch, server, "div2k_train_hr", data, sha=False)
    monkeypatch.setitem(dl.ARCHIVES, arch.name, dataclasses.replace(arch, size=len(data) + 7))
    with pytest.raises(dl.ChecksumError, match="^Size mismatch for ") as ei:
        dl.ensure_div2k(tmp_path, scales=(), splits=("train",), base_url=server.url, progress=False)
    assert f"expected {len(data) + 7} bytes, got {len(data)} bytes" in str(ei.value)
    assert not (tmp_path / "DIV2K" / "DIV2K_train_HR").exists()
    assert not (tmp_path / "DIV2K" / arch.filename).exists()
    assert _leftovers(tmp_path) == []


def test_truncated_zip_leaves_nothing(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    arch = _register(monkeypatch, server, "div2k_train_hr", data[: len(data) * 2 // 3], sha=False, size=False)
    with pytest.raises(dl.ArchiveError, match=r"corrupt or truncated") as ei:
        dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert arch.filename in str(ei.value)
    dest = tmp_path / "DIV2K"
    assert not (dest / "DIV2K_train_HR").exists()
    assert not (dest / arch.filename).exists()
    assert _leftovers(tmp_path) == []


def test_corrupt_member_data_leaves_nothing(tmp_path, server, monkeypatch):
    """A zip whose directory is intact but whose data is damaged (CRC error mid-extraction)."""
    data = bytearray(_zip({f"DIV2K_train_HR/{i:04d}.png": bytes(range(256)) * 40 for i in (1, 2)}))
    idx = data.index(b"DIV2K_train_HR/0002.png") + 60  # inside the 2nd member's compressed data
    data[idx] ^= 0xFF
    arch = _register(monkeypatch, server, "div2k_train_hr", bytes(data), sha=False, size=False)
    with pytest.raises(dl.ArchiveError, match=r"Could not extract .*DIV2K_train_HR\.zip \(corrupt or truncated\?\)"):
        dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "DIV2K" / "DIV2K_train_HR").exists()
    assert _leftovers(tmp_path) == []


def test_missing_top_level_folder(tmp_path, server, monkeypatch):
    arch = _register(monkeypatch, server, "div2k_train_hr", _zip({"something_else/0001.png": _png(1)}))
    with pytest.raises(dl.ArchiveError, match="DIV2K_train_HR"):
        dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert list(p.name for p in (tmp_path / "DIV2K").iterdir() if not p.name.endswith(".lock")) == []


@pytest.mark.parametrize(
    "kind,member",
    [("zip", "../evil.png"), ("zip", "/tmp/srlab_evil.png"), ("zip", "DIV2K_train_HR/../../evil.png"),
     ("tar", "../evil.png"), ("tar", "/tmp/srlab_evil.png")],
)
def test_path_traversal_rejected(tmp_path, server, monkeypatch, kind, member):
    members = {"DIV2K_train_HR/0001.png": _png(1), member: b"pwned"}
    if kind == "zip":
        data = _zip(members)
    else:
        data = _tar(members)
    root = tmp_path / "root"
    arch = _register(monkeypatch, server, "div2k_train_hr", data)
    with pytest.raises(dl.ArchiveError, match="Unsafe member"):
        dl.ensure_archive(arch, root, base_url=server.url, progress=False)
    assert not any(p.name == "evil.png" for p in tmp_path.rglob("*"))
    assert not Path("/tmp/srlab_evil.png").exists()
    assert not (root / "DIV2K" / "DIV2K_train_HR").exists()
    assert _leftovers(root) == []


def test_tar_symlink_rejected(tmp_path, server, monkeypatch):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w") as tf:
        info = tarfile.TarInfo("benchmark/Set5/HR")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc"
        tf.addfile(info)
    arch = _register(monkeypatch, server, "benchmark", bio.getvalue())
    with pytest.raises(dl.ArchiveError, match="link or special file"):
        dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "benchmark").exists()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_gives_manual_instructions(tmp_path, monkeypatch):
    arch = dl.ARCHIVES["div2k_valid_lr_bicubic_x3"]
    base = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(dl.DownloadError, match=arch.filename) as ei:
        dl.ensure_div2k(tmp_path, scales=(3,), splits=("valid",), hr=False, base_url=base, timeout=5, progress=False)
    msg = str(ei.value)
    assert f"{base}/{arch.filename}" in msg
    assert arch.url in msg  # official location named too
    assert str((tmp_path / "DIV2K" / arch.filename).resolve()) in msg
    assert "re-run" in msg
    assert not (tmp_path / "DIV2K" / "DIV2K_valid_LR_bicubic").exists()


def test_http_404_is_a_download_error(tmp_path, server):
    arch = dl.ARCHIVES["div2k_train_hr"]  # nothing registered on the server
    with pytest.raises(dl.DownloadError, match="HTTP 404") as ei:
        dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert str((tmp_path / "DIV2K" / arch.filename).resolve()) in str(ei.value)


def test_archive_placed_by_hand_is_used_without_request(tmp_path, server, monkeypatch):
    data = _div2k_hr_zip()
    arch = _register(monkeypatch, server, "div2k_train_hr", data)
    dest = tmp_path / "DIV2K"
    dest.mkdir()
    (dest / arch.filename).write_bytes(data)
    dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    assert server.requests == []
    assert (dest / "DIV2K_train_HR" / "0002.png").is_file()
    # Works fully offline too (unreachable mirror): the archive is all it needs.
    (dest / arch.filename).write_bytes(data)
    dl.ensure_archive(arch, tmp_path, base_url=f"http://127.0.0.1:{_closed_port()}", force=True, progress=False)
    assert (dest / "DIV2K_train_HR" / "0001.png").is_file()
    assert _leftovers(tmp_path) == []


def test_force_reextracts_and_replaces(tmp_path, server, monkeypatch):
    arch = _register(monkeypatch, server, "div2k_train_hr", _div2k_hr_zip())
    dl.ensure_archive(arch, tmp_path, base_url=server.url, progress=False)
    stray = tmp_path / "DIV2K" / "DIV2K_train_HR" / "stray.txt"
    stray.write_text("x")
    dl.ensure_archive(arch, tmp_path, base_url=server.url, force=True, progress=False)
    assert len(server.requests) == 2
    assert not stray.exists()
    assert (tmp_path / "DIV2K" / "DIV2K_train_HR" / "0001.png").is_file()


def test_cli(tmp_path, server, monkeypatch, capsys):
    _register(monkeypatch, server, "div2k_valid_hr", _zip({"DIV2K_valid_HR/0801.png": _png(801)}))
    _register(monkeypatch, server, "div2k_valid_lr_bicubic_x2",
              _zip({"DIV2K_valid_LR_bicubic/X2/0801x2.png": _png(801, 4)}))
    argv = ["div2k", "--root", str(tmp_path), "--scales", "2", "--splits", "valid",
            "--base-url", server.url, "--no-progress"]
    assert dl.main(argv) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "DIV2K").resolve())
    assert (tmp_path / "DIV2K" / "DIV2K_valid_LR_bicubic" / "X2" / "0801x2.png").is_file()
    argv = ["benchmarks", "--root", str(tmp_path), "--base-url", f"http://127.0.0.1:{_closed_port()}",
            "--no-progress", "--timeout", "5"]
    assert dl.main(argv) == 1
    assert "benchmark.tar" in capsys.readouterr().err


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown DIV2K scale\(s\) \[8\]; choose from \[2, 3, 4\]"):
        dl.ensure_div2k(tmp_path, scales=(8,))
    with pytest.raises(ValueError, match=r"Unknown benchmark name\(s\) \['Set6'\]; choose from \['Set5', "):
        dl.ensure_benchmarks(tmp_path, names=("Set6",))
