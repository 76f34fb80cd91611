"""W&B offline: the run file holds config, losses, lr, per-dataset PSNR/SSIM and images; resuming keeps the id.

wandb 0.31 writes an offline run only as `run-<id>.wandb`, a LevelDB-style log of
wandb's protobuf `Record`s, and ships no Python reader for it; `wandb_records`
reads that framing and decodes each record with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
import time
from datetime import datetime
from pathlib import Path

import pytest

from srlab.tasks.loggers import WANDB_ID_FILE, has_wandb_credentials, wandb_identity
from srlab.tasks.train import train
from tests.train_runs import SMOKE, clear_hydra, compose_train

BLOCK_SIZE = 32 * 1024  # LevelDB log blocks
HEADER = b":W&B"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """Every Record of a .wandb file, in order (fragments joined; checksums not verified)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == HEADER, f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", 7  # magic (4), key (2), version (1)
    while pos + 7 <= len(data):
        if BLOCK_SIZE - pos % BLOCK_SIZE < 7:  # a chunk header never straddles blocks: padding
            pos += BLOCK_SIZE - pos % BLOCK_SIZE
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def offline_run(run_dir: Path, timeout: float = 60) -> tuple[str, list]:
    """(run id, records) of the run's offline log, once complete: wandb-core flushes it shortly after finish()."""
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(run_file) if run_file.stat().st_size > 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return run_file.stem.removeprefix("run-"), records
        time.sleep(0.2)


def history(records: list) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR"):
        monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / f"wandb-{name.lower()}"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the runner must choose offline by itself
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    yield
    clear_hydra()


def run(overrides: list[str], run_dir: Path) -> None:
    cfg = compose_train([*SMOKE, "logger=[csv,wandb]", "logger.wandb.tags=[smoke,test]", *overrides], run_dir)
    train(cfg)


@pytest.mark.slow
def test_offline_run_holds_the_metrics_and_a_resumed_run_keeps_its_id(tmp_path, offline_wandb):
    import wandb

    first, second = tmp_path / "first", tmp_path / "second"
    # Validation every 2 steps: the first run stops (and checkpoints) mid-epoch, after validating.
    epoch = ["data.steps_per_epoch=4", "+trainer.val_check_interval=2"]
    run([*epoch, "trainer.max_steps=2"], first)
    assert wandb.run is None  # finished: the next run of a multirun starts its own

    run_id, records = offline_run(first)
    assert (first / WANDB_ID_FILE).read_text().strip() == run_id
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run_record.project, list(run_record.tags)) == ("srlab", ["smoke", "test"])
    config = {item.key: json.loads(item.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert config["model"]["channels"] == 8 and config["seed"] == 1234  # the resolved run config
    rows = history(records)
    keys = set().union(*rows)
    assert {"train/loss_step", "lr-Adam", "val/psnr", "val/ssim", "val/Sample/psnr", "val/Sample/ssim"} <= keys
    assert any(k.startswith("val/comparison") for k in keys)  # Bicubic | SR | HR strips
    losses = {row["trainer/global_step"]: row["train/loss_step"] for row in rows if "train/loss_step" in row}
    assert sorted(losses) == [0, 1] and all(v > 0 for v in losses.values())
    psnr = [row["val/Sample/psnr"] for row in rows if "val/Sample/psnr" in row]
    assert len(psnr) == 1 and 5.0 < psnr[0] < 60.0

    # Resume: same W&B id, recorded again in the new run folder; the history goes on at step 2.
    run([*epoch, "trainer.max_steps=4", "ckpt_path=last", f"resume_dir={first}"], second)
    resumed_id, resumed_records = offline_run(second)
    assert resumed_id == run_id
    assert (second / WANDB_ID_FILE).read_text().strip() == run_id
    resumed_losses = {r["trainer/global_step"] for r in history(resumed_records) if "train/loss_step" in r}
    assert resumed_losses == {2, 3}


def test_multirun_jobs_share_the_sweep_as_group(tmp_path):
    """Group = the sweep folder (relative to paths.log_dir), name = the job's folder."""
    sweep_dir = tmp_path / "logs" / "multirun" / "2026-01-31" / "12-00-00"
    job_dir = sweep_dir / "3_model.variant=upper"
    # What Hydra composes for a job of `-m`.
    cfg = compose_train(
        ["logger=wandb", f"paths.log_dir={tmp_path / 'logs'}", "hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}"],
        job_dir,
    )
    try:
        identity = wandb_identity(cfg, cfg.logger.wandb, job_dir)
    finally:
        clear_hydra()
    assert identity == {"group": "multirun/2026-01-31/12-00-00", "name": "3_model.variant=upper"}
    assert datetime.strptime(identity["group"].split("/", 1)[1], "%Y-%m-%d/%H-%M-%S")


def test_wandb_login_counts_as_credentials(tmp_path, monkeypatch):
    """`wandb login` keeps the key in ~/.netrc, not in WANDB_API_KEY: such a user stays online."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert not has_wandb_credentials()
    netrc_file = tmp_path / ".netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc_file.chmod(0o600)
    assert has_wandb_credentials()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a self-hosted server: another host
    assert not has_wandb_credentials()
