"""Cluster limits: open-file limits with many cached images, more DDP ranks than validation images, DDP multiruns.

Each end-to-end test reproduces a failure seen when scaling out: a data worker needing a
descriptor per cached image (`OSError: [Errno 24] Too many open files` under ``ulimit -n 256``),
Lightning's sampler asserting on a rank without a validation image, and the second job of a
DDP multirun reusing the first job's dead process group.
"""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

import srlab.data.cache as cache
from srlab.data.cache import DiskImage, max_open_maps, save_npy_atomic
from srlab.data.div2k import DIV2KDataModule
from srlab.data.sample import SampleDataModule
from srlab.data.sampler import EvalShardSampler
from srlab.models.hdsrnet import HDSRNet
from srlab.module import SRModule
from srlab.tasks.train import LAUNCHER_ENV, end_ddp_job, launcher_env
from tests.train_runs import REPO, SMOKE, checkpoint, logged, read_csv, run_train

needs_proc_fd = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def mapped(paths: list[Path]) -> int:
    """How many of `paths` this process has memory-mapped now."""
    maps = Path("/proc/self/maps").read_text()
    return sum(str(p) in maps for p in paths)


def cache_entries(folder: Path, count: int) -> list[Path]:
    """`count` small uint8 entries; pixel values = the entry's number (count <= 256)."""
    paths = [folder / f"{i:04d}.npy" for i in range(count)]
    for i, path in enumerate(paths):
        save_npy_atomic(path, np.full((6, 8, 3), i, np.uint8))
    return paths


@pytest.fixture
def fresh_maps(monkeypatch):
    """This process's open maps, emptied before and after the test (other tests' maps stay out of the counts)."""
    cache._OPEN_MAPS.clear()
    yield cache._OPEN_MAPS
    cache._OPEN_MAPS.clear()
    gc.collect()


# -- 1. open-file limit ---------------------------------------------------------------------------------------


@needs_proc_fd
def test_memory_maps_hold_no_descriptor_and_evicted_ones_are_unmapped(tmp_path, fresh_maps, monkeypatch):
    if cache._LIBC is None:
        pytest.skip("no C library: maps fall back to Python's mmap (tested below)")
    paths = cache_entries(tmp_path, 100)
    before = open_descriptors()
    images = [DiskImage(p, (6, 8, 3)) for p in paths]  # held like a dataset's pairs
    assert [int(image[0, 0, 0]) for image in images] == list(range(100))
    assert open_descriptors() <= before + 2, "a memory map must not keep its file open"
    assert mapped(paths) == 100  # below max_open_maps(): every image stays mapped, as before

    fresh_maps.clear()
    monkeypatch.setattr(fresh_maps, "capacity", 8)
    for image in images:
        np.asarray(image).sum()
    gc.collect()
    assert len(fresh_maps) == 8 and mapped(paths) == 8, "maps beyond the capacity are unmapped"


@needs_proc_fd
def test_python_mmap_fallback_keeps_descriptors_bounded(tmp_path, fresh_maps, monkeypatch):
    monkeypatch.setattr(cache, "_LIBC", None)  # Python's mmap: one descriptor per open map
    monkeypatch.setattr(fresh_maps, "capacity", 8)
    paths = cache_entries(tmp_path, 40)
    before = open_descriptors()
    images = [DiskImage(p, (6, 8, 3)) for p in paths]
    crops = [image[1:3, 2:4].copy() for image in images]
    assert [int(c[0, 0, 0]) for c in crops] == list(range(40))
    gc.collect()
    assert open_descriptors() - before <= 8 and mapped(paths) <= 8
    fresh_maps.clear()
    gc.collect()
    assert open_descriptors() <= before and mapped(paths) == 0, "dropped maps must close their descriptor"


def test_descriptor_limit_is_reported_as_such_not_as_a_broken_cache(tmp_path, fresh_maps, monkeypatch):
    (good, damaged) = cache_entries(tmp_path, 2)
    damaged.write_bytes(damaged.read_bytes()[:100])

    def no_descriptor_left(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    with monkeypatch.context() as patch:
        patch.setattr(np, "load", no_descriptor_left)
        with pytest.raises(OSError, match=r"0000\.npy: cannot open the cached image, too many open files") as info:
            DiskImage(good, (6, 8, 3))[0]
    message = str(info.value)
    assert "ulimit -n" in message and "delete" not in message, message
    with pytest.raises(ValueError, match=r"0001\.npy: unreadable cached image, damaged .*delete it to rebuild"):
        DiskImage(damaged, (6, 8, 3))[0]


def test_max_open_maps_follows_the_descriptor_limit_without_libc(monkeypatch):
    assert max_open_maps() == (cache.MAX_OPEN_MAPS if cache._LIBC is not None else max_open_maps())
    if cache.resource is None:
        pytest.skip("no resource module")
    monkeypatch.setattr(cache, "_LIBC", None)
    monkeypatch.setattr(cache.resource, "getrlimit", lambda kind: (256, 4096))
    assert max_open_maps() == 64  # a quarter of 256
    monkeypatch.setattr(cache.resource, "getrlimit", lambda kind: (20, 4096))
    assert max_open_maps() == cache.MIN_OPEN_MAPS


def write_div2k_files(root: Path, count: int, hr_size: int = 48) -> Path:
    """DIV2K layout with `count` tiny numbered images (one encoded PNG reused: the files' paths are what count)."""
    rng = np.random.default_rng(0)
    hr_png = cv2.imencode(".png", rng.integers(0, 256, (hr_size, hr_size, 3), dtype=np.uint8))[1].tobytes()
    lr_png = cv2.imencode(".png", rng.integers(0, 256, (hr_size // 2, hr_size // 2, 3), dtype=np.uint8))[1].tobytes()
    (root / "DIV2K_train_HR").mkdir(parents=True)
    (root / "DIV2K_train_LR_bicubic" / "X2").mkdir(parents=True)
    for number in range(1, count + 1):
        (root / "DIV2K_train_HR" / f"{number:04d}.png").write_bytes(hr_png)
        (root / "DIV2K_train_LR_bicubic" / "X2" / f"{number:04d}x2.png").write_bytes(lr_png)
    return root


# Trains a tiny HDSRNet for 24 steps of 32 patches on 900 DIV2K-layout images with 4 workers, in a
# process limited to 256 descriptors: each worker crops from ~190 images (~380 cache entries).
TRAIN_UNDER_LIMIT = """
import resource, sys
import lightning as L
from srlab.data.div2k import DIV2KDataModule
from srlab.models.hdsrnet import HDSRNet
from srlab.module import SRModule

resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
datamodule = DIV2KDataModule(sys.argv[1], scale=2, patch_size=8, batch_size=32, steps_per_epoch=24,
                             data_range=[1, 900], val_sets=[], num_workers=4)
module = SRModule(model={"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "channels": 8,
                         "num_blocks": 1, "lower_depth": 2},
                  optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
trainer = L.Trainer(accelerator="cpu", max_steps=24, limit_val_batches=0, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(module, datamodule=datamodule)
print("trained steps:", trainer.global_step)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_training_on_900_cached_images_under_a_256_descriptor_limit(tmp_path):
    root = write_div2k_files(tmp_path / "DIV2K", 900)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", TRAIN_UNDER_LIMIT, str(root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "trained steps: 24" in proc.stdout and "Too many open files" not in output


def test_nodes_sharing_a_cache_folder_build_it_once(tmp_path, monkeypatch):
    # Two nodes' local rank 0 preparing data on one shared folder at the same moment: one builds, one waits.
    root = write_div2k_files(tmp_path / "DIV2K", 4)
    decoded = []
    real_read_image = cache.read_image

    def slow_read_image(path):
        decoded.append(Path(path).name)
        threading.Event().wait(0.05)  # decoding a 2K PNG takes this long: both nodes would be at it
        return real_read_image(path)

    monkeypatch.setattr(cache, "read_image", slow_read_image)
    modules = [DIV2KDataModule(root, scale=2, patch_size=8, batch_size=2, data_range=[1, 4], val_sets=[])
               for _ in range(2)]
    start = threading.Barrier(2)
    errors = []

    def prepare(datamodule):
        start.wait()
        try:
            datamodule.prepare_data()
        except Exception as err:  # noqa: BLE001 (re-raised in the test thread below)
            errors.append(err)

    threads = [threading.Thread(target=prepare, args=(m,)) for m in modules]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(decoded) == sorted([f"{n:04d}.png" for n in range(1, 5)] + [f"{n:04d}x2.png" for n in range(1, 5)])
    assert len(list((root / ".srlab_cache").glob("*.npy"))) == 8


# -- 2. more DDP ranks than validation images ------------------------------------------------------------------


@pytest.mark.parametrize("images", [1, 2, 3, 5])
def test_eval_shards_score_each_image_once_on_any_number_of_ranks(images):
    dataset = list(range(images))
    for world_size in range(1, 9):
        shards = [list(EvalShardSampler(dataset, world_size, rank)) for rank in range(world_size)]
        assert sorted(i for shard in shards for i in shard) == dataset, (images, world_size)
        # An empty rank still reports one (empty) batch, so Lightning runs its epoch-end hooks with the others.
        assert [len(EvalShardSampler(dataset, world_size, rank)) for rank in range(world_size)] == [
            max(1, len(shard)) for shard in shards
        ]


@pytest.fixture
def one_process_group():
    """A one-process gloo group in this process, so a real DistributedDataParallel can be built."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore:`broadcast_buffers` is deprecated:FutureWarning")  # torch >= 2.13
def test_empty_rank_with_buffer_broadcast_fails_clearly_instead_of_hanging(one_process_group):
    # The 4-rank run below, seen from one rank: 2 images, 4 ranks, a model with (constant) buffers.
    model = HDSRNet(scale=2, channels=8, num_blocks=1, lower_depth=2)  # its mean shift is a buffer
    datamodule = SampleDataModule(scale=2, patch_size=24, batch_size=2, steps_per_epoch=2)
    datamodule.setup("validate")
    for broadcast_buffers in (True, False):
        wrapper = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=broadcast_buffers)
        datamodule.trainer = SimpleNamespace(world_size=4, global_rank=3, strategy=SimpleNamespace(model=wrapper))
        if broadcast_buffers:
            with pytest.raises(ValueError, match=r"Sample has 2 image\(s\) for 4 processes, so ranks 2-3 score none.*"
                               r"trainer\.strategy\.broadcast_buffers=false"):
                datamodule.val_dataloader()
        else:
            (loader,) = datamodule.val_dataloader()
            assert isinstance(loader.sampler, EvalShardSampler) and list(loader) == [] and len(loader) == 1


def validate_in_one_process(ckpt: Path) -> dict[str, float]:
    """The checkpoint's validation on the default sample images by a single process."""
    datamodule = SampleDataModule(scale=2, patch_size=24, batch_size=2, steps_per_epoch=2)
    module = SRModule.load_from_checkpoint(ckpt, map_location="cpu")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    (scores,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return scores


@pytest.mark.slow
def test_four_processes_validate_two_images_like_one(tmp_path):
    # `python train.py trainer=ddp_cpu trainer.devices=4 debug=smoke`: 2 validation photos, so ranks 2 and 3 get none.
    log_root = tmp_path / "logs"
    run_train(["trainer=ddp_cpu", "trainer.devices=4", *SMOKE, f"paths.log_dir={log_root}"], tmp_path, timeout=400)
    (run_dir,) = [p for p in log_root.glob("*/*") if p.is_dir()]
    assert checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2
    single = validate_in_one_process(run_dir / "checkpoints" / "last.ckpt")
    for key in ("val/psnr", "val/ssim", "val/Sample/psnr", "val/Sample/ssim"):
        (four_ranks,) = logged(run_dir, key).values()
        assert np.isfinite(four_ranks) and four_ranks == pytest.approx(single[key], abs=1e-6), key


# -- 3. a multirun of DDP jobs ----------------------------------------------------------------------------------


def test_end_ddp_job_closes_the_group_and_restores_the_launcher_variables(one_process_group, monkeypatch):
    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # set by the user before the job: kept
    before = launcher_env()
    launcher = _SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    launcher.procs = [subprocess.Popen([sys.executable, "-c", "pass"])]  # rank 1 of the job, exiting
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29511", NODE_RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")
    end_ddp_job(SimpleNamespace(strategy=SimpleNamespace(launcher=launcher)), before, failed=False)
    assert launcher.procs[0].returncode == 0, "the job's ranks have exited before the next job starts"
    assert not dist.is_initialized()
    assert {k: os.environ.get(k) for k in LAUNCHER_ENV} == {**dict.fromkeys(LAUNCHER_ENV), "MASTER_ADDR": "10.0.0.1"}
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # for the fixture's teardown


@pytest.mark.slow
def test_every_job_of_a_ddp_multirun_runs(tmp_path):
    # `python train.py -m trainer=ddp_cpu debug=smoke seed=1,2`: job 1 used to leave LOCAL_RANK and its process
    # group behind, and job 2 died on "Connection closed by peer".
    log_root = tmp_path / "logs"
    run_train(["-m", "trainer=ddp_cpu", *SMOKE, "seed=1,2", f"paths.log_dir={log_root}"], tmp_path, timeout=400)
    (sweep_dir,) = [p for p in log_root.glob("multirun/*/*") if p.is_dir()]
    job_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name[:2] for p in job_dirs] == ["0_", "1_"]
    for job_dir in job_dirs:
        assert checkpoint(job_dir / "checkpoints" / "last.ckpt")["global_step"] == 2, job_dir.name
        assert (job_dir / "train_ddp_process_1.log").is_file(), "each job started its own rank 1"
    rows = read_csv(sweep_dir / "sweep_summary.csv")
    assert [(r["job"], r["seed"], r["status"]) for r in rows] == [("0", "1", "ok"), ("1", "2", "ok")]
