"""Dynamic-conv temperature annealing: the schedule reaches the model in a real Trainer run, and is off by default."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from srlab.callbacks.temperature import TemperatureAnnealing
from srlab.module import SRModule

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TINY_HDSRNET = {
    "_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "channels": 8, "num_blocks": 2, "lower_depth": 2,
    "temperature": 40.0,
}


class RecordTemperatures(L.Callback):
    """Every dynamic conv's temperature as the training step runs (after the annealing hook)."""

    def __init__(self):
        self.seen: list[set[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append({conv.temperature for conv in pl_module.model.dynamic_convs()})


def random_batches(n: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = [{"lr": torch.rand(3, 6, 6, generator=generator) * 255,
              "hr": torch.rand(3, 12, 12, generator=generator) * 255} for _ in range(n)]
    return DataLoader(items, batch_size=2)


def fit(callbacks: list[L.Callback], max_epochs: int, batches_per_epoch: int, tmp_path: Path) -> SRModule:
    module = SRModule(model=dict(TINY_HDSRNET), optimizer={"_target_": "torch.optim.Adam", "lr": 1e-4})
    trainer = L.Trainer(
        max_epochs=max_epochs, callbacks=callbacks, default_root_dir=tmp_path, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=random_batches(2 * batches_per_epoch))
    trainer.save_checkpoint(tmp_path / "annealed.ckpt")
    return module


pytestmark = pytest.mark.usefixtures("single_thread")


def test_temperature_falls_linearly_over_the_first_epochs_then_stays(tmp_path):
    record = RecordTemperatures()
    # 2 epochs of 2 steps = 4 annealing steps: 40 -> 1 in steps of 9.75, then 1.
    module = fit([TemperatureAnnealing(start=40.0, end=1.0, epochs=2), record], 3, 2, tmp_path)
    assert record.seen == [{40.0}, {30.25}, {20.5}, {10.75}, {1.0}, {1.0}]
    assert len(module.model.dynamic_convs()) == 2

    # The temperature is not in the state dict; the checkpoint's model config carries it instead.
    restored = SRModule.load_from_checkpoint(tmp_path / "annealed.ckpt")
    assert {conv.temperature for conv in restored.model.dynamic_convs()} == {1.0}
    assert module.hparams.model["temperature"] == 40.0  # the live module's config is left alone


def test_a_step_schedule_and_no_callback(tmp_path):
    record = RecordTemperatures()
    fit([TemperatureAnnealing(start=30.0, end=2.0, epochs=None, steps=2), record], 1, 3, tmp_path)
    assert record.seen == [{30.0}, {16.0}, {2.0}]

    record = RecordTemperatures()
    fit([record], 1, 3, tmp_path)
    assert record.seen == [{40.0}] * 3


@pytest.mark.parametrize(
    "kwargs, message",
    [({"epochs": 10, "steps": 100}, "exactly one of epochs / steps"), ({"epochs": 0}, "must be positive"),
     ({"end": 0.0}, "temperatures must be positive")],
)
def test_bad_settings_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemperatureAnnealing(**kwargs)


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_off_by_default_and_added_by_the_callbacks_option():
    default = compose_train([])
    targets = [c["_target_"] for c in default.callbacks.values() if c]
    assert not any("TemperatureAnnealing" in t for t in targets)
    model = hydra.utils.instantiate(default.model)
    assert {conv.temperature for conv in model.dynamic_convs()} == {40.0}

    annealed = compose_train(["callbacks=temperature"])
    assert set(annealed.callbacks) == set(default.callbacks) | {"temperature"}
    callback = hydra.utils.instantiate(annealed.callbacks.temperature)
    assert isinstance(callback, TemperatureAnnealing)
    assert (callback.start, callback.end, callback.epochs, callback.steps) == (40.0, 1.0, 10, None)
