"""EMA of the weights (`callbacks=ema`: srlab.callbacks.ema, Lightning's WeightAveraging with torch's EMA update).

Checked on real train.py runs: the EMA equals the average computed by hand from the weights after
each step, validation and the checkpoints' `state_dict` hold the EMA, a resumed run ends with the
EMA of the uninterrupted run bit for bit, and the DDP ranks keep identical copies.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from srlab.callbacks.ema import ExponentialMovingAverage
from srlab.callbacks.temperature import TemperatureAnnealing
from srlab.module import SRModule
from srlab.tasks.train import train
from tests.test_temperature import TINY_HDSRNET, random_batches
from tests.train_runs import SMOKE, checkpoint, clear_hydra, compose_train, logged, run_train

pytestmark = pytest.mark.usefixtures("single_thread")

DECAY = 0.5  # far from 1 so that every step moves the average visibly
EMA = ["callbacks=ema", f"callbacks.ema.decay={DECAY}", "module.optimizer.lr=1e-2"]


def _snapshot(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


class RecordWeights(L.Callback):
    """Saves into `dirpath` the weights after every step, the weights validation runs with, and each rank's
    final weights. Listed after the EMA callback, so it sees what the EMA callback left in the model."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.dirpath.mkdir(parents=True, exist_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.save(_snapshot(pl_module), self.dirpath / f"raw_step{trainer.global_step}.pt")

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            torch.save(_snapshot(pl_module), self.dirpath / f"val_step{trainer.global_step}.pt")

    def on_train_end(self, trainer, pl_module):
        torch.save(_snapshot(pl_module), self.dirpath / f"end_rank{trainer.global_rank}.pt")


class StopAtStep(L.Callback):
    """Ends fitting after `step` optimiser steps, as a stopped job would (its last.ckpt is that step's)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def record(dirpath: Path) -> list[str]:
    return ["+callbacks.record._target_=tests.test_ema.RecordWeights", f"+callbacks.record.dirpath={dirpath}"]


def fit(overrides: list[str], run_dir: Path):
    """train.py in this process; returns the composed config's data module (for re-validation)."""
    cfg = compose_train([*overrides, f"hydra.run.dir={run_dir}"], run_dir)
    try:
        train(cfg)
        return hydra.utils.instantiate(cfg.data)
    finally:
        clear_hydra()


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def validate(module: SRModule, datamodule) -> float:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1)
    return trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/psnr"]


def test_callbacks_ema_adds_weight_averaging_to_the_default_callbacks(tmp_path):
    cfg = compose_train(["callbacks=ema"], tmp_path)
    clear_hydra()
    assert {"model_checkpoint", "nan_guard", "metrics_file"} <= set(cfg.callbacks)
    averaging = hydra.utils.instantiate(cfg.callbacks.ema)
    assert isinstance(averaging, ExponentialMovingAverage) and averaging.decay == 0.999
    assert "ema" not in compose_train([], tmp_path).callbacks  # off by default
    clear_hydra()


def test_ema_is_the_hand_computed_average_and_validation_uses_it(tmp_path):
    run_dir, seen = tmp_path / "run", tmp_path / "seen"
    datamodule = fit([*SMOKE, *EMA, "seed=3", "data.steps_per_epoch=3", "trainer.max_steps=3", *record(seen)],
                     run_dir)
    saved = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 3

    # WeightAveraging updates after every optimiser step; the first update copies the weights.
    raw = [load(seen / f"raw_step{step}.pt") for step in (1, 2, 3)]
    expected = {name: value.double() for name, value in raw[0].items()}
    for weights in raw[1:]:
        expected = {name: DECAY * expected[name] + (1 - DECAY) * weights[name].double() for name in expected}
    assert set(saved["state_dict"]) == set(expected)
    moved = 0
    for name, value in saved["state_dict"].items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-6, atol=1e-7, msg=name)
        moved += not torch.equal(value, raw[2][name])
    assert moved > 0, "the EMA equals the last weights: the test would not tell them apart"
    # The raw weights go on under current_model_state; n_averaged counts the three updates.
    assert all(torch.equal(saved["current_model_state"][name], raw[2][name]) for name in raw[2])
    assert int(saved["averaging_state"]["n_averaged"]) == 3

    # The best checkpoint (validation at step 3) holds the EMA too: what eval.py and the summary load.
    (best,) = (run_dir / "checkpoints").glob("best-step*.ckpt")
    assert all(torch.equal(checkpoint(best)["state_dict"][name], value) for name, value in saved["state_dict"].items())
    # Validation (end of the epoch, step 3) ran on the EMA ...
    during_validation = load(seen / "val_step3.pt")
    assert all(torch.equal(during_validation[name], value) for name, value in saved["state_dict"].items())
    # ... so the logged val/psnr is the EMA's score, not the raw weights'.
    logged_psnr = logged(run_dir, "val/psnr")[2]
    ema_module = SRModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    assert validate(ema_module, datamodule) == pytest.approx(logged_psnr, rel=1e-6)
    ema_module.load_state_dict(saved["current_model_state"])
    assert validate(ema_module, datamodule) != pytest.approx(logged_psnr, rel=1e-6)


def test_resumed_run_restores_the_ema_exactly(tmp_path):
    # Two epochs of two steps, last.ckpt after every step: validation at step 2 swaps the EMA in and out,
    # the stopped run's last.ckpt is step 3 (mid-epoch), and the resumed run does step 4.
    base = [*SMOKE, *EMA, "seed=5", "data.steps_per_epoch=2", "trainer.max_epochs=2", "trainer.max_steps=4",
            "callbacks.model_checkpoint.every_n_train_steps=1"]
    fit(base, tmp_path / "uninterrupted")
    fit([*base, "+callbacks.stop._target_=tests.test_ema.StopAtStep", "+callbacks.stop.step=3"], tmp_path / "stopped")
    assert checkpoint(tmp_path / "stopped" / "checkpoints" / "last.ckpt")["global_step"] == 3
    fit([*base, "ckpt_path=last", f"resume_dir={tmp_path / 'stopped'}"], tmp_path / "resumed")

    expected = checkpoint(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt")
    resumed = checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == expected["global_step"] == 4
    for key in ("state_dict", "current_model_state", "averaging_state"):  # EMA, raw weights, n_averaged
        assert set(resumed[key]) == set(expected[key]), key
        for name, value in expected[key].items():
            assert torch.equal(resumed[key][name], value), f"{key}: {name}"
    assert int(resumed["averaging_state"]["n_averaged"]) == 4


def test_buffers_follow_the_trained_model_and_are_not_averaged(tmp_path):
    """An annealed temperature (a buffer) is the model's current one in the EMA, not an average of past ones."""
    module = SRModule(model=dict(TINY_HDSRNET), optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2})
    annealing = TemperatureAnnealing(start=40.0, end=1.0, epochs=None, steps=2)  # T: 40, 20.5, then 1
    trainer = L.Trainer(max_steps=3, callbacks=[ExponentialMovingAverage(decay=DECAY), annealing],
                        default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=random_batches(6))
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    saved = checkpoint(tmp_path / "end.ckpt")
    temperatures = [v for k, v in saved["state_dict"].items() if k.endswith("temperature")]
    assert len(temperatures) == 2 and all(float(t) == 1.0 for t in temperatures)  # averaged, they would be 15.625
    assert {conv.temperature for conv in module.model.dynamic_convs()} == {1.0}
    weights = [k for k, v in saved["state_dict"].items() if v.is_floating_point() and not k.endswith("temperature")]
    assert any(not torch.equal(saved["state_dict"][k], saved["current_model_state"][k]) for k in weights)


@pytest.mark.slow
def test_ddp_ranks_hold_the_same_ema(tmp_path):
    run_dir, seen = tmp_path / "run", tmp_path / "seen"
    run_train(["trainer=ddp_cpu", *SMOKE, *EMA, f"hydra.run.dir={run_dir}", *record(seen)], tmp_path, timeout=400)
    rank0, rank1 = load(seen / "end_rank0.pt"), load(seen / "end_rank1.pt")  # the EMA, copied in at the end
    saved = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert int(saved["averaging_state"]["n_averaged"]) == 2
    for name, value in saved["state_dict"].items():
        assert torch.equal(rank0[name], value) and torch.equal(rank1[name], value), name
