"""`seed` makes training reproducible: two short CPU runs with one seed end with identical weights."""

from __future__ import annotations

import pytest
import torch

from srlab.tasks.train import train
from tests.train_runs import SMOKE, checkpoint, clear_hydra, compose_train, logged

# Three steps, data augmentation on, no periodic validation before the end.
RUN = [*SMOKE, "data.steps_per_epoch=3", "trainer.max_steps=3"]


def weights_after_training(run_dir, seed: int) -> dict[str, torch.Tensor]:
    cfg = compose_train([*RUN, f"seed={seed}"], run_dir)
    try:
        train(cfg)
    finally:
        clear_hydra()
    saved = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 3
    return saved["state_dict"]


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = weights_after_training(tmp_path / "first", seed=11)
    again = weights_after_training(tmp_path / "again", seed=11)
    other = weights_after_training(tmp_path / "other", seed=12)
    assert first.keys() == again.keys()
    for name, value in first.items():
        assert torch.equal(value, again[name]), name
    assert logged(tmp_path / "first", "train/loss_step") == logged(tmp_path / "again", "train/loss_step")
    # The seed reaches initialisation and data: another seed trains other weights.
    assert not all(torch.equal(value, other[name]) for name, value in first.items())
