"""DF2K (`data=df2k`): the Flickr2K download against a loopback HTTP server (tests/test_download.py's), its
size/SHA-256 sidecar, the offline message, and a short training run on DIV2K + Flickr2K HR folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from srlab.data import download as dl
from srlab.data.io import write_image
from srlab.tasks.train import train
from tests import test_download as download_tests
from tests.train_runs import TINY_MODEL, checkpoint, clear_hydra, compose_train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    srv = download_tests._Server()
    yield srv
    srv.close()


def flickr2k_tar(seed: int = 0, images: int = 3) -> bytes:
    """Flickr2K.tar's layout: HR images and (unused by srlab) bicubic LR ones under Flickr2K/."""
    members = {}
    for i in range(1, images + 1):
        members[f"Flickr2K/Flickr2K_HR/{i:06d}.png"] = download_tests._png(seed + i, 32)
        members[f"Flickr2K/Flickr2K_LR_bicubic/X2/{i:06d}x2.png"] = download_tests._png(seed + i, 16)
    return download_tests._tar(members)


def test_flickr2k_downloads_its_hr_folder_and_records_size_and_checksum(server, tmp_path):
    data = flickr2k_tar()
    server.files["Flickr2K.tar"] = data
    out = dl.ensure_flickr2k(tmp_path, base_url=server.url, progress=False)
    assert out == (tmp_path / "Flickr2K").resolve()
    assert sorted(p.name for p in (out / "Flickr2K_HR").iterdir()) == ["000001.png", "000002.png", "000003.png"]
    assert sorted(p.name for p in out.iterdir()) == ["Flickr2K_HR"]  # the LR folders are not kept
    assert not (tmp_path / "Flickr2K.tar").exists()
    recorded = json.loads((tmp_path / "Flickr2K.tar.json").read_text())
    assert recorded == {"url": "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()}

    # Present: nothing is fetched again.
    requests = len(server.requests)
    dl.ensure_flickr2k(tmp_path, base_url=server.url, progress=False)
    assert len(server.requests) == requests

    # A later copy that differs from the recorded one is refused and removed.
    server.files["Flickr2K.tar"] = flickr2k_tar(seed=10)
    with pytest.raises(dl.ChecksumError, match="differs from the copy recorded in .*Flickr2K.tar.json"):
        dl.ensure_flickr2k(tmp_path, base_url=server.url, force=True, progress=False)
    assert not (tmp_path / "Flickr2K.tar").exists()
    assert json.loads((tmp_path / "Flickr2K.tar.json").read_text()) == recorded  # the record stays as it was


def test_offline_message_names_the_url_and_where_to_put_the_archive(server, tmp_path):
    with pytest.raises(dl.DownloadError) as caught:
        dl.ensure_flickr2k(tmp_path, base_url=server.url, progress=False)  # the server has no such file: 404
    message = str(caught.value)
    assert f"{server.url}/Flickr2K.tar" in message
    assert "official location: https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar" in message
    assert str((tmp_path / "Flickr2K.tar").resolve()) in message
    assert dl.main(["flickr2k", "--root", str(tmp_path), "--base-url", server.url, "--no-progress"]) == 1


def test_data_df2k_trains_on_div2k_and_flickr2k_folders(server, tmp_path):
    data_dir = tmp_path / "data"
    server.files["Flickr2K.tar"] = flickr2k_tar()
    dl.ensure_flickr2k(data_dir, base_url=server.url, progress=False)
    rng = np.random.default_rng(0)
    for i in (1, 2):
        write_image(data_dir / "DIV2K" / "DIV2K_train_HR" / f"{i:04d}.png", rng.integers(0, 256, (32, 40, 3),
                                                                                        dtype=np.uint8))
    write_image(data_dir / "benchmark" / "Set5" / "HR" / "baby.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))

    run_dir = tmp_path / "run"
    cfg = compose_train(
        ["data=df2k", f"paths.data_dir={data_dir}", *TINY_MODEL, "data.patch_size=24", "data.batch_size=2",
         "data.steps_per_epoch=2", "data.num_workers=0", "trainer.max_steps=2", "trainer.max_epochs=1",
         "+trainer.limit_val_batches=1", "summary=false", "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}"],
        run_dir,
    )
    try:
        roots = [Path(r).parts[-2:] for r in cfg.data.roots]
        assert roots == [("DIV2K", "DIV2K_train_HR"), ("Flickr2K", "Flickr2K_HR")]
        train(cfg)
    finally:
        clear_hydra()
    assert checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    # Each root's generated LR images are cached in that root: both folders were read.
    for root in (data_dir / "DIV2K" / "DIV2K_train_HR", data_dir / "Flickr2K" / "Flickr2K_HR"):
        assert list((root / ".srlab_cache").rglob("*.npy")), root
