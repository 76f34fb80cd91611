"""SRModule on the built-in sample data: a short fit lowers the loss, checkpoints reload exactly."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from srlab.data.sample import SampleDataModule
from srlab.eval.scoring import mean_scores, score_dataset
from srlab.module import SRModule

SMALL_HDSRNET = {
    "_target_": "srlab.models.hdsrnet.HDSRNet",
    "scale": 2, "channels": 16, "num_blocks": 2, "lower_depth": 4,
}
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8}
STEP_LR = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 300000, "gamma": 0.5}


def make_trainer(tmp_path, max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path, max_steps=max_steps, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        gradient_clip_val=10.0, gradient_clip_algorithm="value", **kwargs,
    )


def test_short_fit_lowers_training_loss(tmp_path):
    L.seed_everything(0)
    datamodule = SampleDataModule(scale=2, patch_size=32, batch_size=4, steps_per_epoch=30)
    module = SRModule(model=SMALL_HDSRNET, optimizer=ADAM, scheduler=STEP_LR)
    losses: list[float] = []

    class RecordLoss(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = make_trainer(tmp_path, max_steps=30, limit_val_batches=0, callbacks=[RecordLoss()])
    trainer.fit(module, datamodule=datamodule)
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"loss did not drop enough: first {first:.2f}, last {last:.2f}"


def test_validation_logs_per_dataset_psnr_and_ssim(tmp_path):
    datamodule = SampleDataModule(scale=2, patch_size=32, batch_size=2, steps_per_epoch=1)
    module = SRModule(model=SMALL_HDSRNET, optimizer=ADAM, scheduler=None)
    trainer = make_trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    for key in ("val/Sample/psnr", "val/Sample/ssim", "val/psnr", "val/ssim"):
        assert key in metrics
    assert metrics["val/psnr"] == metrics["val/Sample/psnr"]
    # What was logged is the mean over the validation images of the protocol's per-image scores.
    (val_set,) = datamodule.eval_sets
    scores = score_dataset(module.eval(), val_set)
    assert [s.image for s in scores] == ["coffee", "rocket"]
    psnr, ssim = mean_scores(scores)
    assert float(metrics["val/Sample/psnr"]) == pytest.approx(psnr, abs=1e-4)
    assert float(metrics["val/Sample/ssim"]) == pytest.approx(ssim, abs=1e-6)


def test_checkpoint_reloads_with_identical_outputs(tmp_path):
    datamodule = SampleDataModule(scale=2, patch_size=32, batch_size=2, steps_per_epoch=2)
    module = SRModule(model=SMALL_HDSRNET, optimizer=ADAM, scheduler=STEP_LR)
    trainer = make_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = SRModule.load_from_checkpoint(path)
    x = torch.rand(2, 3, 11, 13) * 255
    module.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(module(x), reloaded(x))
    assert reloaded.hparams.model["channels"] == 16


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError, match="unknown loss 'l3'; valid names: l1, mse"):
        SRModule(model=SMALL_HDSRNET, optimizer=ADAM, loss="l3")
