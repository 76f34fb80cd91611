"""Nothing srlab reads from outside runs code from it or exhausts memory or disk.

- Checkpoints and weights: a crafted ``.ckpt`` (shaped like a Lightning checkpoint) and a crafted
  ``.pt`` whose pickle runs ``touch MARKER`` are refused by every loader, eval.py and train.py
  with one line naming the file, the forbidden global and ``trust_checkpoint=true``; the
  marker never appears. srlab's own checkpoints (fresh, resumed, interrupted) hold nothing
  beyond torch's weights-only set and load everywhere, every load weights-only.
  ``trust_checkpoint=true`` (the documented unsafe opt-in) loads the crafted files: the marker appears.
- Archives: zip bombs by declared size, hard links and special files in tars (path traversal
  and tar symlinks: tests/test_download.py).
- Images: a header declaring more pixels than the limit is refused before decoding.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shlex
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image
from torch.serialization import get_unsafe_globals_in_checkpoint

import srlab.data.download as dl
import srlab.data.io as image_io
from srlab.data.io import ImageReadError, declared_size, read_image, write_image
from srlab.models.hdsrnet import HDSRNet
from srlab.models.reference import from_reference_checkpoint, to_reference_state_dict
from srlab.module import SRModule
from srlab.tasks import evaluate, validate_config
from srlab.tasks.checks import CheckpointRefusedError, ConfigError, load_checkpoint_hparams
from srlab.tasks.train import train
from srlab.utils import safe_load
from srlab.utils.checkpoint_io import AtomicCheckpointIO
from srlab.utils.safe_load import UnsafeCheckpointError
from tests.train_runs import REPO, SMOKE, TINY_MODEL, clear_hydra, compose_train, train_env

TINY_MODEL_CONFIG = {"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "channels": 8, "num_blocks": 1,
                     "lower_depth": 2}
SHELL_GLOBAL = f"{os.system.__module__}.system"  # how pickle names os.system (posix.system on Linux)


class ShellPayload:
    """Unpickled, runs `touch <marker>` through os.system (the issue's reproduction)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class SubprocessPayload(ShellPayload):
    """Unpickled, runs `touch <marker>` through subprocess.call."""

    def __reduce__(self):
        return subprocess.call, (["touch", self.marker],)


class SigtermAtStep(L.Callback):
    """Stops training after `step` steps the way Lightning reports a SIGTERM (InterruptCheckpoint then saves)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise SIGTERMException()


def crafted_ckpt(path: Path, marker: Path) -> Path:
    """A Lightning checkpoint of a tiny SRModule (loadable as one) that also carries a ShellPayload."""
    module = SRModule(model=TINY_MODEL_CONFIG, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    torch.save({
        "epoch": 0, "global_step": 0, "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(), "hparams_name": "kwargs", "hyper_parameters": dict(module.hparams),
        "callbacks": {"Payload": ShellPayload(marker)},
    }, path)
    return path


def crafted_pt(path: Path, marker: Path) -> Path:
    """HDSRNet x2 weights in the authors' layout, wrapped as {"model": ...}, next to a SubprocessPayload."""
    torch.save({"model": to_reference_state_dict(HDSRNet(2)), "meta": SubprocessPayload(marker)}, path)
    return path


@pytest.fixture(autouse=True)
def nothing_trusted(monkeypatch):
    """Each test starts with no trusted file; what it trusts is forgotten afterwards."""
    monkeypatch.setattr(safe_load, "_trusted", set())


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path, Path]:
    marker = tmp_path / "MARKER"
    return crafted_ckpt(tmp_path / "evil.ckpt", marker), crafted_pt(tmp_path / "evil.pt", marker), marker


def assert_refusal(message: str, path: Path, forbidden: str) -> None:
    assert "\n" not in message, message
    assert f"{path}: refused to load: it asks the unpickler to call {forbidden}," in message
    assert "rerun with trust_checkpoint=true (unsafe: runs any code in the file" in message


def compose_eval(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=[*overrides, f"paths.output_dir={output_dir}", "device=cpu"])


def validate_train_config(overrides: list[str], run_dir: Path) -> None:
    cfg = compose_train([*SMOKE, *overrides], run_dir)
    try:
        validate_config(cfg)
    finally:
        clear_hydra()


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "in" / "photo.png"
    write_image(path, np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    return path


# -- crafted checkpoints: refused everywhere ---------------------------------------------------------
def test_every_python_loader_refuses_the_crafted_files(crafted):
    ckpt, pt, marker = crafted
    loaders = {
        "load_file": (lambda: safe_load.load_file(ckpt), ckpt, SHELL_GLOBAL),
        "SRModule.load_from_checkpoint": (lambda: SRModule.load_from_checkpoint(ckpt), ckpt, SHELL_GLOBAL),
        "AtomicCheckpointIO (resume)": (lambda: AtomicCheckpointIO().load_checkpoint(ckpt), ckpt, SHELL_GLOBAL),
        "reference loader": (lambda: from_reference_checkpoint(pt, 2), pt, "subprocess.call"),
    }
    for name, (load, path, forbidden) in loaders.items():
        with pytest.raises(UnsafeCheckpointError) as info:
            load()
        assert_refusal(str(info.value), path, forbidden)
        assert info.value.forbidden == forbidden, name
    with pytest.raises(CheckpointRefusedError) as info:
        load_checkpoint_hparams(ckpt)
    assert str(info.value).startswith(f"ckpt_path={ckpt}: refused")
    assert_refusal(str(info.value), ckpt, SHELL_GLOBAL)
    assert not marker.exists()


def test_train_config_check_refuses_the_crafted_checkpoint(crafted, tmp_path):
    ckpt, _, marker = crafted
    with pytest.raises(CheckpointRefusedError) as info:
        validate_train_config([*TINY_MODEL, f"ckpt_path={ckpt}"], tmp_path / "run")
    assert_refusal(str(info.value), ckpt, SHELL_GLOBAL)
    assert not marker.exists()


def test_eval_refuses_the_crafted_files_whatever_they_claim_to_be(crafted, photo, tmp_path):
    ckpt, pt, marker = crafted
    upscale = ["task=upscale", f"input={photo}", f"output={tmp_path / 'out'}"]
    cases = [
        (["model=hdsrnet", f"ckpt_path={ckpt}"], f"ckpt_path={ckpt}", SHELL_GLOBAL),
        (["model=hdsrnet_reference", "model.scale=2", f"ckpt_path={pt}"], f"ckpt_path={pt}", "subprocess.call"),
        (["model=hdsrnet_reference", "model.scale=2", f"model.path={pt}"], f"model.path={pt}", "subprocess.call"),
    ]
    for overrides, start, forbidden in cases:
        with pytest.raises(ConfigError) as info:
            evaluate(compose_eval([*upscale, *overrides], tmp_path / "run"))
        assert str(info.value).startswith(f"{start}: refused"), str(info.value)
        assert_refusal(str(info.value), Path(start.split("=", 1)[1]), forbidden)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_file_the_weights_only_reader_cannot_parse(tmp_path):
    raw = tmp_path / "raw.ckpt"  # a plain pickle (not torch's format): full pickle would run its payload
    raw.write_bytes(pickle.dumps({"x": ShellPayload(tmp_path / "MARKER")}, protocol=4))
    with pytest.raises(pickle.UnpicklingError) as info:
        safe_load.load_file(raw)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(info.value).startswith("weights-only unpickling failed: Unsupported operand 149; if it is a checkpoint")
    assert "trust_checkpoint=true reads it with full pickle (unsafe" in str(info.value)
    with pytest.raises(ConfigError, match=rf"^ckpt_path={raw}: not a readable checkpoint \(weights-only unpickling"):
        load_checkpoint_hparams(raw)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.slow
def test_eval_py_and_train_py_refuse_the_crafted_files(crafted, tmp_path):
    ckpt, pt, marker = crafted
    env = {**train_env(tmp_path), "HYDRA_FULL_ERROR": "0"}
    commands = {
        "eval ckpt": (["eval.py", f"ckpt_path={ckpt}", "datasets=[Set5]"],
                      f"eval.py: error: ckpt_path={ckpt}: refused", ckpt, SHELL_GLOBAL),
        "eval reference": (["eval.py", "model=hdsrnet_reference", "model.scale=2", f"ckpt_path={pt}",
                            "datasets=[Set5]"], f"eval.py: error: ckpt_path={pt}: refused", pt, "subprocess.call"),
        "train": (["train.py", "debug=smoke", *TINY_MODEL, f"ckpt_path={ckpt}"],
                  f"srlab.tasks.checks.CheckpointRefusedError: ckpt_path={ckpt}: refused", ckpt, SHELL_GLOBAL),
    }
    runs = {
        name: subprocess.Popen([sys.executable, *args, f"hydra.run.dir={tmp_path / name}"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, *_) in commands.items()
    }
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        _, start, path, forbidden = commands[name]
        assert process.returncode != 0, stderr
        line = next((line for line in stderr.splitlines() if line.startswith(start)), None)
        assert line is not None, stderr[-3000:]
        assert_refusal(line, path, forbidden)
        assert not list((tmp_path / name).rglob("*.ckpt")), name
    assert not marker.exists()


# -- the opt-in ---------------------------------------------------------------------------------------
def test_trust_checkpoint_true_loads_the_crafted_checkpoint_in_eval(crafted, photo, tmp_path):
    ckpt, _, marker = crafted
    cfg = compose_eval(["task=upscale", f"input={photo}", f"output={tmp_path / 'out'}", f"ckpt_path={ckpt}",
                        "trust_checkpoint=true"], tmp_path / "run")
    assert evaluate(cfg) == 0
    assert marker.exists()  # its code ran: that is what the opt-in means
    assert read_image(tmp_path / "out" / "photo_x2.png").shape == (24, 20, 3)


def test_trust_checkpoint_true_in_train_trusts_that_file_only(crafted, tmp_path):
    ckpt, _, marker = crafted
    validate_train_config([*TINY_MODEL, f"ckpt_path={ckpt}", "trust_checkpoint=true"], tmp_path / "run")
    assert marker.exists()
    marker.unlink()
    # The resume (Trainer.fit -> AtomicCheckpointIO) reads the same trusted file in full ...
    assert AtomicCheckpointIO().load_checkpoint(ckpt)["callbacks"]["Payload"] == 0  # os.system's exit status
    assert marker.exists()
    # ... and nothing else: a copy of it elsewhere is still refused.
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    with pytest.raises(UnsafeCheckpointError):
        AtomicCheckpointIO().load_checkpoint(copy)


def test_python_api_opt_in_is_scoped(crafted):
    _, pt, marker = crafted
    with safe_load.trusting(pt):
        model = from_reference_checkpoint(pt, 2)
    assert isinstance(model, HDSRNet)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeCheckpointError):
        from_reference_checkpoint(pt, 2)
    assert not marker.exists()


# -- srlab's own checkpoints ---------------------------------------------------------------------------
def run_in_process(overrides: list[str], run_dir: Path) -> Path:
    cfg = compose_train([*SMOKE, *overrides], run_dir)
    try:
        train(cfg)
    finally:
        clear_hydra()
    return run_dir / "checkpoints"


@pytest.fixture(scope="module")
def own_checkpoints(tmp_path_factory):
    """{fresh, interrupted, resumed: checkpoints folder}, and the weights_only flag of every torch.load meanwhile.

    fresh: two steps, then the end-of-run summary loads its best checkpoint; interrupted: SIGTERM after
    one of four steps (InterruptCheckpoint); resumed: the other three from there (Trainer.fit(ckpt_path)).
    """
    root = tmp_path_factory.mktemp("own")
    flags = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        flags.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    four_steps = ["data.steps_per_epoch=4", "trainer.max_steps=4"]
    folders = {name: root / name / "checkpoints" for name in ("fresh", "interrupted", "resumed")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "load", recording_load)
        run_in_process(["summary=true"], root / "fresh")
        with pytest.raises(SystemExit):
            run_in_process([*four_steps, "+callbacks.stop._target_=tests.test_safe_loading.SigtermAtStep",
                            "+callbacks.stop.step=1"], root / "interrupted")
        run_in_process([*four_steps, f"ckpt_path={folders['interrupted'] / 'last.ckpt'}"], root / "resumed")
    return folders, flags


def test_own_runs_load_everything_weights_only(own_checkpoints):
    folders, flags = own_checkpoints
    # The summary's best checkpoint in the fresh run; the config check and the resume in the resumed one.
    assert len(flags) >= 3 and all(flag is True for flag in flags), flags
    assert torch.load(folders["resumed"] / "last.ckpt", weights_only=True)["global_step"] == 4
    assert torch.load(folders["interrupted"] / "last.ckpt", weights_only=True)["global_step"] == 1


@pytest.mark.parametrize("run", ["fresh", "interrupted", "resumed"])
def test_own_checkpoints_hold_only_weights_only_types_and_load_everywhere(own_checkpoints, run, photo, tmp_path):
    folder = own_checkpoints[0][run]
    files = sorted(folder.glob("*.ckpt"))
    assert files, folder
    for path in files:
        assert get_unsafe_globals_in_checkpoint(path) == [], path  # so SAFE_GLOBALS can stay empty
        assert load_checkpoint_hparams(path)["model"]["channels"] == 8
        assert AtomicCheckpointIO().load_checkpoint(path)["optimizer_states"]
        assert isinstance(SRModule.load_from_checkpoint(path, map_location="cpu").model, HDSRNet)
    validate_train_config([*TINY_MODEL, f"ckpt_path={files[0]}"], tmp_path / "check")
    cfg = compose_eval(["task=upscale", f"input={photo}", f"output={tmp_path / 'out'}", f"ckpt_path={files[0]}"],
                       tmp_path / "run")
    assert evaluate(cfg) == 0


def test_safe_globals_stay_empty():
    # An entry here must come with the reason Lightning needs it (srlab/utils/safe_load.py).
    assert safe_load.SAFE_GLOBALS == ()


# -- archives -----------------------------------------------------------------------------------------
def hand_placed(tmp_path: Path, data: bytes, key: str = "div2k_train_hr") -> tuple[dl.Archive, Path]:
    """The archive `key` as if fetched by hand (no checksum known): ensure_archive extracts it without a request."""
    archive = dataclasses.replace(dl.ARCHIVES[key], sha256=None, size=None, md5=None)
    root = tmp_path / "root"
    (root / archive.dest).mkdir(parents=True, exist_ok=True)
    (root / archive.dest / archive.filename).write_bytes(data)
    return archive, root


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tarred(members: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def extracted_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"]


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_declaring_too_many_bytes_is_refused(tmp_path, monkeypatch, kind):
    zeros = {"DIV2K_train_HR/0001.png": bytes(3 << 20)}  # 3 MiB that compress to a few kB
    data = zipped(zeros) if kind == "zip" else tarred(zeros, "w:gz")
    monkeypatch.setattr(dl, "MIN_EXTRACT_LIMIT", 1 << 20)
    archive, root = hand_placed(tmp_path, data)
    assert dl.extract_limit(len(data)) == 1 << 20  # the floor: 20x a few kB is less
    with pytest.raises(dl.ArchiveError) as info:
        dl.ensure_archive(archive, root, base_url="http://127.0.0.1:9", progress=False)
    message = str(info.value)
    assert "declare 3,145,728 bytes uncompressed, over the limit of 1,048,576 bytes" in message
    assert archive.filename in message and f"{dl.MAX_EXTRACT_ENV}=<bytes>" in message
    assert extracted_files(root) == []
    # A genuine archive that large goes through once the limit is raised.
    monkeypatch.setenv(dl.MAX_EXTRACT_ENV, str(4 << 20))
    archive, root = hand_placed(tmp_path, data)
    dl.ensure_archive(archive, root, base_url="http://127.0.0.1:9", progress=False)
    assert (root / "DIV2K" / "DIV2K_train_HR" / "0001.png").stat().st_size == 3 << 20


def with_declared_size(data: bytes, size: int) -> bytes:
    """A one-member zip whose local and central headers declare `size` uncompressed bytes."""
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    forged = bytearray(data)
    struct.pack_into("<I", forged, local + 22, size)
    struct.pack_into("<I", forged, central + 24, size)
    return bytes(forged)


def test_zip_member_larger_than_declared_never_writes_more(tmp_path):
    data = with_declared_size(zipped({"DIV2K_train_HR/0001.png": bytes(1 << 20)}), 1000)
    archive, root = hand_placed(tmp_path, data)
    with pytest.raises(dl.ArchiveError, match="corrupt or truncated"):
        dl.ensure_archive(archive, root, base_url="http://127.0.0.1:9", progress=False)
    assert extracted_files(root) == []


@pytest.mark.parametrize("with_data_filter", [True, False], ids=["data_filter", "own_check_only"])
@pytest.mark.parametrize(
    "member_type, link_target",
    [(tarfile.LNKTYPE, "../../outside.txt"), (tarfile.LNKTYPE, "/etc/passwd"), (tarfile.FIFOTYPE, ""),
     (tarfile.CHRTYPE, "")],
    ids=["hardlink_up", "hardlink_absolute", "fifo", "char_device"],
)
def test_tar_hard_links_and_special_files_are_refused(tmp_path, monkeypatch, member_type, link_target,
                                                      with_data_filter):
    if not with_data_filter:  # Python < 3.11.4 has no tarfile.data_filter: srlab's own check alone must hold
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("benchmark/Set5/HR/baby.png")
        info.type, info.linkname = member_type, link_target
        archive.addfile(info)
    archive, root = hand_placed(tmp_path, buffer.getvalue(), "benchmark")
    with pytest.raises(dl.ArchiveError, match=r"'benchmark/Set5/HR/baby.png' .* \(link or special file\)"):
        dl.ensure_archive(archive, root, base_url="http://127.0.0.1:9", progress=False)
    assert extracted_files(root) == []
    assert not (root / "benchmark").exists()


def test_zip_symlink_member_is_extracted_as_a_plain_file(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("DIV2K_train_HR/0001.png", b"png")
        link = zipfile.ZipInfo("DIV2K_train_HR/0002.png")
        link.external_attr = 0o120777 << 16  # a symlink in Unix zip tools' convention
        archive.writestr(link, "/etc/passwd")
    archive, root = hand_placed(tmp_path, buffer.getvalue())
    dl.ensure_archive(archive, root, base_url="http://127.0.0.1:9", progress=False)
    extracted = root / "DIV2K" / "DIV2K_train_HR" / "0002.png"
    assert not extracted.is_symlink() and extracted.read_text() == "/etc/passwd"


# -- images -------------------------------------------------------------------------------------------
def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header for a width x height grey image, with one row of data (a few dozen bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (image_io.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
            + chunk(b"IEND", b""))


def test_decompression_bomb_png_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    assert bomb.stat().st_size < 200

    def no_decoding(*args):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(image_io.cv2, "imdecode", no_decoding)
    monkeypatch.delenv(image_io.MAX_PIXELS_ENV, raising=False)
    with pytest.raises(ImageReadError) as info:
        read_image(bomb)
    assert str(info.value) == (
        f"{bomb}: declares 20000 x 20000 = 400,000,000 pixels, over the limit of 100,000,000 (a decompression-bomb "
        "guard); if the image is genuine, raise it: OPENCV_IO_MAX_IMAGE_PIXELS=<pixels>"
    )


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
def test_pixel_limit_applies_to_every_format_and_can_be_raised(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"photo{suffix}"
    write_image(path, np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "1199")
    with pytest.raises(ImageReadError, match=r"declares 40 x 30 = 1,200 pixels, over the limit of 1,199 "):
        read_image(path)
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "1200")
    assert read_image(path).shape == (30, 40, 3)


@pytest.mark.parametrize(
    "fmt, options",
    [("PNG", {}), ("JPEG", {"progressive": True}), ("JPEG", {"icc_profile": bytes(100_000)}),
     ("BMP", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80}), ("WEBP", {"exif": b"Exif\x00\x00"}),
     ("TIFF", {"compression": "tiff_lzw"}), ("TIFF", {"big_tiff": True})],
    ids=["png", "jpeg_progressive", "jpeg_frame_after_64k", "bmp", "webp_lossless", "webp_lossy", "webp_extended",
         "tiff", "bigtiff"],
)
def test_declared_size_matches_the_image(fmt, options):
    buffer = io.BytesIO()
    Image.new("RGB", (53, 37)).save(buffer, fmt, **options)
    assert declared_size(buffer.getvalue()) == (53, 37)
    assert cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (37, 53)


def test_other_formats_are_not_decoded(tmp_path):
    ppm = tmp_path / "big.png"
    ppm.write_bytes(b"P6\n30000 30000\n255\n" + bytes(64))  # 2.7 GB for OpenCV's PPM decoder to allocate
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(ppm)
