"""Every config mistake fails before any work starts, with one line naming the key and the value.

In-process: `validate_config` on configs composed by Hydra exactly as train.py
composes them. End to end: `python train.py ...` prints the line on stderr and
leaves no checkpoint; a Hydra override typo gets Hydra's own error naming the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, open_dict

from srlab.module import SRModule
from srlab.tasks.checks import ConfigError, validate_config
from srlab.utils.checkpoint_io import AtomicCheckpointIO

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def validation_error(*overrides: str) -> ConfigError | None:
    """validate_config's error for the config train.py would run with these overrides (None: it passed)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg: DictConfig = compose("train", overrides=["debug=smoke", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # as @hydra.main does: ${hydra:...} resolves, the node moves out
        with open_dict(cfg):
            del cfg["hydra"]
        # validate_config lists model configs through Hydra's config loader, which lives only inside this block.
        try:
            validate_config(cfg)
        except ConfigError as err:
            return err
    return None


def config_error(*overrides: str) -> str:
    error = validation_error(*overrides)
    assert isinstance(error, ConfigError), f"{overrides} passed validate_config"
    message = str(error)
    assert "\n" not in message, message
    return message


def save_checkpoint(path: Path, *model_overrides: str) -> Path:
    """A real Lightning checkpoint of SRModule for the composed model config with `model_overrides`."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["debug=smoke", *model_overrides])
    module = SRModule(model=cfg.model, optimizer=cfg.module.optimizer)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, plugins=[AtomicCheckpointIO()],
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


# (overrides, the exact one-line message)
MODEL_AND_DATA_CASES = {
    "unknown variant": (
        ["model.variant=six_convs"],
        "model (srlab.models.hdsrnet.HDSRNet): unknown HDSRNet variant 'six_convs'; valid names: six_conv, "
        "upper_plain, upper_no_dynamic, upper_no_dilated, upper_conv_for_dilated, upper_conv_for_dynamic, upper, "
        "no_lower_residual, full",
    ),
    "unsupported scale": (
        ["model=hrn", "model.scale=8"],
        "model (srlab.models.hrn.HRN): scale=8 is not supported; choose one of [2, 3, 4]",
    ),
    "scale below 2": (
        ["model=srcnn", "model.scale=1"],
        "model.scale=1 must be an integer upscaling factor of at least 2 (2, 3 or 4)",
    ),
    "unknown model argument": (
        ["+model.width=32"],
        "model (srlab.models.hdsrnet.HDSRNet): HDSRNet.__init__() got an unexpected keyword argument 'width'",
    ),
    "patch not divisible": (
        ["model.scale=3", "data.patch_size=32"],
        "data.patch_size=32 (HR) is not divisible by scale=3; use 30 or 33",
    ),
    "data scale differs": (
        ["data.scale=4"],
        "data.scale=4 but model.scale=2; they must match (data.scale defaults to ${model.scale})",
    ),
    "empty batch": (["data.batch_size=0"], "data.batch_size=0 must be an integer of at least 1"),
    "empty epoch": (["data.steps_per_epoch=0"], "data.steps_per_epoch=0 must be an integer of at least 1"),
    "unknown benchmark set": (
        ["data=div2k", "data.val_sets=[Set5,Set6]"],
        "data (srlab.data.div2k.DIV2KDataModule): unknown benchmark set 'Set6'; valid: Set5, Set14, B100, "
        "Urban100 (aliases: BSD100/BSDS100 for B100, U100 for Urban100)",
    ),
    "unknown loss": (["module.loss=l3"], "module.loss='l3' is unknown; valid names: l1, mse"),
}


@pytest.mark.parametrize("case", list(MODEL_AND_DATA_CASES))
def test_bad_model_or_data_config(case):
    overrides, expected = MODEL_AND_DATA_CASES[case]
    assert config_error(*overrides) == expected


def test_unimportable_model_target_lists_model_configs():
    message = config_error("model._target_=srlab.models.hdsrnett.HDSRNet")
    assert message.startswith("model._target_='srlab.models.hdsrnett.HDSRNet' cannot be imported (")
    assert "No module named 'srlab.models.hdsrnett'" in message
    options = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
    assert message.endswith(f"; model configs: {', '.join(options)} (choose with model=<name>)")


def test_unimportable_callback_target():
    message = config_error("callbacks.nan_guard._target_=srlab.callbacks.nan_guard.NanGuard")
    assert message.startswith("callbacks.nan_guard._target_='srlab.callbacks.nan_guard.NanGuard' cannot be imported")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_shipped_experiments_pass(experiment):
    """No false alarms: every experiment config (and debug=smoke on its own) validates."""
    assert validation_error(f"experiment={experiment}") is None


class TestCheckpointPath:
    def test_missing_file(self, tmp_path):
        missing = tmp_path / "nope.ckpt"
        assert config_error(f"ckpt_path={missing}") == f"ckpt_path={missing}: no such checkpoint file {missing}"

    def test_folder_instead_of_file(self, tmp_path):
        assert config_error(f"ckpt_path={tmp_path}") == (
            f"ckpt_path={tmp_path}: {tmp_path} is a folder; give the .ckpt file (e.g. checkpoints/last.ckpt)"
        )

    def test_not_a_checkpoint(self, tmp_path):
        junk = tmp_path / "junk.ckpt"
        junk.write_bytes(b"definitely not a zip archive")
        assert config_error(f"ckpt_path={junk}").startswith(f"ckpt_path={junk}: not a readable checkpoint (")

    def test_last_without_resume_dir(self):
        assert config_error("ckpt_path=last") == (
            "ckpt_path=last needs resume_dir=<the run folder to continue> (its checkpoints/last.ckpt is loaded)"
        )

    def test_last_with_missing_resume_dir(self, tmp_path):
        assert config_error("ckpt_path=last", f"resume_dir={tmp_path / 'gone'}") == (
            f"resume_dir={tmp_path / 'gone'}: no such folder (ckpt_path=last resumes from it)"
        )

    def test_last_with_run_folder_without_checkpoint(self, tmp_path):
        last = tmp_path / "checkpoints" / "last.ckpt"
        assert config_error("ckpt_path=last", f"resume_dir={tmp_path}") == (
            f"resume_dir={tmp_path}: no such checkpoint file {last}"
        )

    @pytest.fixture(scope="class")
    def x4_checkpoint(self, tmp_path_factory) -> Path:
        """<run folder>/checkpoints/last.ckpt of an HDSRNet x4 run."""
        return save_checkpoint(tmp_path_factory.mktemp("x4_run") / "checkpoints" / "last.ckpt", "model.scale=4")

    def test_matching_checkpoint_passes(self, x4_checkpoint):
        assert validation_error(f"ckpt_path={x4_checkpoint}", "model.scale=4") is None

    def test_other_scale(self, x4_checkpoint):
        assert config_error(f"ckpt_path={x4_checkpoint}") == (
            f"ckpt_path={x4_checkpoint} is for another model: model.scale=4 in the checkpoint vs 2 here "
            "(override model.* to match it)"
        )

    def test_other_variant_and_width(self, x4_checkpoint):
        overrides = ("model.scale=4", "model.variant=upper", "model.channels=48")
        assert config_error(f"ckpt_path={x4_checkpoint}", *overrides) == (
            f"ckpt_path={x4_checkpoint} is for another model: model.variant='full' in the checkpoint vs 'upper' here; "
            "model.channels=32 in the checkpoint vs 48 here (override model.* to match it)"
        )

    def test_other_model(self, x4_checkpoint):
        assert config_error(f"ckpt_path={x4_checkpoint}", "model=hrn", "model.scale=4") == (
            f"ckpt_path={x4_checkpoint} is for another model: model._target_=srlab.models.hdsrnet.HDSRNet in the "
            "checkpoint vs srlab.models.hrn.HRN here (override model.* to match it)"
        )

    def test_last_resolves_through_resume_dir(self, x4_checkpoint):
        run_dir = x4_checkpoint.parents[1]
        assert config_error("ckpt_path=last", f"resume_dir={run_dir}") == (
            f"ckpt_path={x4_checkpoint} is for another model: model.scale=4 in the checkpoint vs 2 here "
            "(override model.* to match it)"
        )


def test_hydra_reports_override_typos_and_unknown_options():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match=r"Could not override 'trainer\.max_epoch'"):
            compose("train", overrides=["trainer.max_epoch=3"])
        with pytest.raises(MissingConfigException) as info:
            compose("train", overrides=["model=hdsrnett"])
    assert "Could not find 'model/hdsrnett'" in str(info.value)
    assert "hdsrnet" in str(info.value).split("Available options in 'model':")[1]


def run_train(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", "debug=smoke", f"hydra.run.dir={run_dir}", *overrides],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


@pytest.mark.slow
def test_train_py_fails_fast_with_one_line(tmp_path):
    # Started together: each costs mostly interpreter and import time.
    cases = {
        "variant": (
            ["model.variant=upper_plane"],
            "srlab.tasks.checks.ConfigError: model (srlab.models.hdsrnet.HDSRNet): unknown HDSRNet variant "
            "'upper_plane'; valid names: ",
        ),
        "ckpt": (
            [f"ckpt_path={tmp_path / 'missing.ckpt'}"],
            f"srlab.tasks.checks.ConfigError: ckpt_path={tmp_path / 'missing.ckpt'}: no such checkpoint file",
        ),
        "typo": (["trainer.max_epoch=3"], "Could not override 'trainer.max_epoch'."),
    }
    runs = {name: run_train(tmp_path / name, *overrides) for name, (overrides, _) in cases.items()}
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        expected = cases[name][1]
        assert process.returncode != 0, stderr
        assert any(line.startswith(expected) for line in stderr.splitlines()), stderr
        assert not (tmp_path / name / "checkpoints").exists()
        assert not list((tmp_path / name).rglob("*.ckpt"))
