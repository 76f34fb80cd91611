"""SRCNN as the paper builds it (model=srcnn_paper) and trains it (experiment=srcnn_t91_x3): size, valid training
vs replicate-padded inference, the central loss region, 10:1 learning rates, Y-only output recombined with the
bicubic CbCr, pre-upsampled training crops, and a short training run on T91 that lowers the loss."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srlab.data.color import rgb_to_y
from srlab.data.datasets import ImagePair, PatchDataset
from srlab.data.imresize import bicubic_downscale, bicubic_upscale, imresize_torch
from srlab.models.bicubic import Bicubic
from srlab.models.srcnn import SRCNN
from srlab.module import SRModule, central_region, parameter_groups
from tests.conftest import require_shared_data

REPO = Path(__file__).resolve().parents[1]
T91 = REPO.parent / "shared" / "data" / "train" / "T91"

pytestmark = pytest.mark.usefixtures("single_thread")


def compose_config(name: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(name, overrides=overrides or [])


def paper_model_config() -> dict:
    """configs/model/srcnn_paper.yaml as it stands (composed alone, it still lands at `model`)."""
    return OmegaConf.to_container(compose_config("model/srcnn_paper").model)


def paper_model(**overrides) -> SRCNN:
    return hydra.utils.instantiate({**paper_model_config(), **overrides})


def cb_cr(rgb: torch.Tensor) -> torch.Tensor:
    """MATLAB rgb2ycbcr's Cb and Cr (0..255 input), written out here as an independent reference."""
    r, g, b = rgb.double().unbind(dim=1)
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return torch.stack([cb, cr], dim=1)


def test_paper_model_has_8129_parameters_and_the_paper_init():
    model = paper_model()
    # conv1 9x9, 1 -> 64 (+64); conv2 1x1, 64 -> 32 (+32); conv3 5x5, 32 -> 1 (+1).
    expected = 9 * 9 * 1 * 64 + 64 + 64 * 32 + 32 + 5 * 5 * 32 * 1 + 1
    assert expected == 8_129
    assert sum(p.numel() for p in model.parameters()) == expected
    assert (model.scale, model.luma, model.pre_upsample, model.valid_training) == (3, True, True, True)
    assert model.padding_mode == "replicate"
    weights = torch.cat([c.weight.flatten() for c in model.convs])
    assert abs(weights.std().item() - 1e-3) < 1e-4  # N(0, 1e-3^2), 8,096 draws
    assert all(torch.count_nonzero(c.bias) == 0 for c in model.convs)
    assert sum(p.numel() for p in SRCNN(3).parameters()) == 20_099  # model=srcnn: the RGB variant


def test_valid_in_training_same_size_with_replicate_padding_at_test():
    model = paper_model(init_std=None)
    x = torch.rand(2, 1, 33, 33) * 255
    model.train()
    valid = model.forward_upsampled(x)
    assert valid.shape == (2, 1, 21, 21) and model.border == 6
    model.eval()
    with torch.no_grad():
        same = model.forward_upsampled(x)
        # Reference: every layer 'same' with replicate padding, as MATLAB imfilter(..., 'same', 'replicate').
        reference = x / 255
        for i, conv in enumerate(model.convs):
            k = conv.kernel_size[0]
            padded = torch.nn.Conv2d(conv.in_channels, conv.out_channels, k, padding=k // 2, padding_mode="replicate")
            padded.load_state_dict(conv.state_dict())
            reference = padded(reference)
            reference = F.relu(reference) if i < 2 else reference
        reference = reference * 255
    assert same.shape == x.shape
    torch.testing.assert_close(same, reference, rtol=0, atol=1e-4)
    # Away from the borders padding plays no part: the same-size output's centre is the valid output.
    torch.testing.assert_close(same[..., 6:-6, 6:-6], valid.detach(), rtol=0, atol=1e-4)
    zero_padded = SRCNN(3, channels=1, padding_mode="zeros").eval()
    zero_padded.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(zero_padded.forward_upsampled(x)[..., :6, :], same[..., :6, :])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # training_step outside a Trainer
def test_loss_covers_the_central_region():
    target = torch.arange(33 * 33, dtype=torch.float32).view(1, 1, 33, 33)
    assert torch.equal(central_region(target, (21, 21)), target[..., 6:27, 6:27])
    assert central_region(target, (33, 33)) is target
    with pytest.raises(ValueError, match="cannot be centred"):
        central_region(target, (20, 20))

    module = SRModule(model=paper_model_config(),
                      optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3}, loss="mse")
    module.train()
    batch = {"lr": torch.rand(4, 1, 33, 33) * 255, "hr": torch.rand(4, 1, 33, 33) * 255}
    loss = module.training_step(batch, 0)
    expected = F.mse_loss(module.model.forward_upsampled(batch["lr"]), batch["hr"][..., 6:27, 6:27])
    torch.testing.assert_close(loss, expected)


def test_experiment_gives_the_last_layer_a_tenth_of_the_learning_rate():
    cfg = compose_config("train", ["experiment=srcnn_t91_x3"])
    assert (cfg.model.scale, cfg.module.loss, cfg.model._target_, cfg.model.channels, cfg.data.patch_size) == (
        3, "mse", "srlab.models.srcnn.SRCNN", 1, 33)
    assert cfg.trainer.max_epochs * cfg.data.steps_per_epoch == cfg.module.scheduler.T_max
    module = hydra.utils.instantiate(cfg.module)
    optimizer = module.configure_optimizers()["optimizer"]
    first, last = optimizer.param_groups
    assert first["lr"] == pytest.approx(10 * last["lr"]) and first["lr"] == pytest.approx(1e-3)
    model = module.model
    assert {id(p) for p in last["params"]} == {id(model.convs[2].weight), id(model.convs[2].bias)}
    assert len(first["params"]) == 4
    with pytest.raises(ValueError, match=r"matches no parameter of SRCNN; its parameters: convs\.0\.weight"):
        parameter_groups(model, [{"params": "conv3.*", "lr_scale": 0.1}], 1e-3)


def test_y_model_output_is_its_y_with_the_bicubic_cbcr():
    model = paper_model(init_std=None).eval()
    torch.manual_seed(1)
    lr = torch.randint(0, 256, (2, 3, 12, 14)).float()
    with torch.no_grad():
        sr = model(lr)
        bicubic = Bicubic(3)(lr)
        y = model.forward_upsampled(rgb_to_y(bicubic))
    assert sr.shape == (2, 3, 36, 42)
    torch.testing.assert_close(cb_cr(sr), cb_cr(bicubic), rtol=0, atol=1e-4)
    torch.testing.assert_close(rgb_to_y(sr), y, rtol=0, atol=1e-4)
    # The luminance is the metric's (MATLAB rgb2ycbcr): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
    r, g, b = bicubic.unbind(dim=1)
    torch.testing.assert_close(rgb_to_y(bicubic)[:, 0], 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255,
                               rtol=0, atol=1e-3)
    grey = lr[:, :1].expand(-1, 3, -1, -1)
    with torch.no_grad():
        out = model(grey)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # a grey image stays grey


def test_pre_upsampled_crops_come_from_the_upscaled_whole_image_and_collate_to_y():
    hr = imresize_torch(torch.rand(1, 3, 10, 12) * 255, 6.0, quantize=True)[0].permute(1, 2, 0).numpy()
    hr = hr.astype(np.uint8)  # 60x72, smooth
    lr = bicubic_downscale(hr, 3)
    upscaled = bicubic_upscale(lr, 3)
    dataset = PatchDataset([ImagePair("smooth", lr, hr, upscaled)], 3, 33, 8, augment=False, pre_upsample=True,
                           luma=True)
    for index in range(8):
        sample = dataset[index]
        inp, target = sample["lr"].permute(1, 2, 0).numpy(), sample["hr"].permute(1, 2, 0).numpy()
        matches = [(y, x) for y in range(60 - 32) for x in range(72 - 32)
                   if np.array_equal(hr[y : y + 33, x : x + 33], target)]
        assert any(np.array_equal(upscaled[y : y + 33, x : x + 33], inp) for y, x in matches)
    batch = dataset.collate([dataset[i] for i in range(4)])
    assert batch["lr"].shape == batch["hr"].shape == (4, 1, 33, 33)
    # Without luma the same samples collate to RGB; with it, to the Y of exactly those.
    rgb_batch = PatchDataset([ImagePair("s", lr, hr, upscaled)], 3, 33, 8, augment=False,
                             pre_upsample=True).collate([dataset[i] for i in range(4)])
    assert rgb_batch["hr"].shape == (4, 3, 33, 33)
    torch.testing.assert_close(batch["hr"], rgb_to_y(rgb_batch["hr"]))


def test_short_t91_training_lowers_the_loss(tmp_path):
    require_shared_data("train/T91/HR")
    from srlab.data.folder import FolderDataModule

    L.seed_everything(0)
    cfg = compose_config("train", ["experiment=srcnn_t91_x3"])
    module = hydra.utils.instantiate(cfg.module)
    datamodule = FolderDataModule(roots=[T91], scale=3, patch_size=33, batch_size=16, steps_per_epoch=60,
                                  val_sets=[], cache_dir=tmp_path / "cache")
    losses: list[float] = []

    class RecordLoss(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            assert batch["lr"].shape == (16, 1, 33, 33)  # Y of the bicubic-upscaled image, from the data module
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=60, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        limit_val_batches=0, callbacks=[RecordLoss()])
    trainer.fit(module, datamodule=datamodule)
    assert len(losses) == 60
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"MSE did not drop enough: first {first:.1f}, last {last:.1f}"
