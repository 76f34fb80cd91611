"""The training hot path: no host syncs between logging steps, uint8 batches, the end-of-run summary's device,
deterministic GPU settings, and temperature annealing without recompiles.

"Host sync" is counted on CPU as a call that reads a tensor's value on the host (`item`, `bool`,
`float`, `tolist`, `cpu`, `numpy`) or a Python number given to `self.log`: on a GPU each of these
waits for every queued kernel.
"""

from __future__ import annotations

import importlib
import numbers
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers.logger import Logger
from torch.utils.data import DataLoader

from srlab.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from srlab.callbacks.temperature import TemperatureAnnealing
from srlab.data.base import SRDataModule
from srlab.data.datasets import ImagePair
from srlab.data.sample import SampleDataModule
from srlab.eval.scoring import ImageScore
from srlab.models.hdsrnet import HDSRNet
from srlab.module import SRModule
from srlab.tasks.weights import ModelSource, load_model

train_task = importlib.import_module("srlab.tasks.train")  # the package exports the function `train` too
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TINY = {"channels": 8, "num_blocks": 1, "lower_depth": 2, "num_kernels": 2}
TINY_HDSRNET = {"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, **TINY}
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}
LOG_EVERY = 4

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample_data(steps_per_epoch: int = 4, **kwargs) -> SampleDataModule:
    return SampleDataModule(scale=2, patch_size=16, batch_size=2, steps_per_epoch=steps_per_epoch,
                            train_images=("chelsea.png",), val_images=("coffee.png",), **kwargs)


# -- no host syncs between logging steps ----------------------------------------------------------------
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
# Adam keeps its step counter on the host on every device: reading it waits for nothing.
HOST_SIDE_CALLERS = ("torch/optim/",)


class SyncCounter:
    """Counts host reads of tensor values (the calls that would wait for a GPU), by whoever makes them.

    Also counts Python numbers given to `LightningModule.log`: Lightning makes each a tensor on the
    module's device, a blocking copy from pageable host memory.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        self.callers: list[str] = []
        for name in SYNCING:
            monkeypatch.setattr(torch.Tensor, name, self._counting(getattr(torch.Tensor, name), name))
        log = L.LightningModule.log

        def counted_log(module, name, value, *args, **kwargs):
            if isinstance(value, numbers.Number):
                self.count += 1
                self.callers.append(f"log({name!r}, {value!r})")
            return log(module, name, value, *args, **kwargs)

        monkeypatch.setattr(L.LightningModule, "log", counted_log)

    def _counting(self, original, name: str):
        def counted(tensor, *args, **kwargs):
            frame = sys._getframe(1)
            caller = frame.f_code.co_filename
            if not any(part in caller for part in HOST_SIDE_CALLERS):
                self.count += 1
                self.callers.append(f"{name} from {caller}:{frame.f_lineno}")
            return original(tensor, *args, **kwargs)

        return counted


class StepWindows(L.Callback):
    """Host syncs from one step's start to the next step's start (the step, its hooks, its logging)."""

    def __init__(self, counter: SyncCounter):
        self.counter = counter
        self.step: int | None = None
        self.starts: dict[int, int] = {}
        self.callers: dict[int, int] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step
        self.starts[self.step] = self.counter.count
        self.callers[self.step] = len(self.counter.callers)

    def syncs(self) -> dict[int, int]:
        steps = sorted(self.starts)
        return {s: self.starts[t] - self.starts[s] for s, t in zip(steps, steps[1:])}

    def callers_in(self, step: int) -> list[str]:
        return self.counter.callers[self.callers[step] : self.callers.get(step + 1)]


class RecordingLogger(Logger):
    """Remembers in which step window Lightning handed metrics to the loggers."""

    def __init__(self, windows: StepWindows):
        super().__init__()
        self.windows = windows
        self.logged_in: set[int] = set()

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.logged_in.add(self.windows.step)


def test_training_steps_between_logging_steps_do_not_sync(tmp_path, monkeypatch):
    counter = SyncCounter(monkeypatch)
    windows = StepWindows(counter)
    logger = RecordingLogger(windows)
    callbacks = [
        windows, NaNGuard(check_every_n_steps=LOG_EVERY),  # what its default is on a GPU: log_every_n_steps
        TemperatureAnnealing(start=40.0, end=1.0, epochs=None, steps=6), LearningRateMonitor(logging_interval="step"),
        RichProgressBar(), ModelCheckpoint(dirpath=tmp_path, save_last=True),
    ]
    trainer = L.Trainer(
        accelerator="cpu", max_steps=12, log_every_n_steps=LOG_EVERY, limit_val_batches=0, logger=logger,
        callbacks=callbacks, enable_model_summary=False, gradient_clip_val=10.0, gradient_clip_algorithm="value",
        default_root_dir=tmp_path,
    )
    module = SRModule(model=TINY_HDSRNET, optimizer=ADAM, channels_last=True, narrow_convs=True)  # the defaults
    trainer.fit(module, datamodule=sample_data(12))
    syncs = windows.syncs()  # steps 0-10; step 11's window runs into the end of training
    assert logger.logged_in == {3, 7, 11}
    assert syncs[3] > 0 and syncs[7] > 0  # logging reads the values: the counter sees those reads
    quiet = {s: n for s, n in syncs.items() if s not in logger.logged_in}
    assert quiet == dict.fromkeys(quiet, 0), {s: windows.callers_in(s) for s, n in quiet.items() if n}


def test_rgb_training_patches_travel_as_uint8_and_become_float32_on_the_device():
    data = sample_data()
    data.setup("fit")
    patch = data.train_set[0]
    assert patch["lr"].dtype == patch["hr"].dtype == torch.uint8
    batch = next(iter(data.train_dataloader()))
    arrived = data.on_after_batch_transfer({k: v.clone() for k, v in batch.items()}, 0)  # Lightning's hook
    for key in ("lr", "hr"):
        assert arrived[key].dtype == torch.float32
        assert torch.equal(arrived[key], batch[key].to(torch.float32))  # the same 0-255 values as before
    # Whole evaluation images are not touched: float32 in [0, 255], as eval and the summary expect.
    image = data.eval_sets[0][0]
    assert image["lr"].dtype == image["hr"].dtype == torch.float32
    assert torch.equal(data.on_after_batch_transfer({"lr": image["lr"]}, 0)["lr"], image["lr"])


def fake_trainer(accelerator) -> SimpleNamespace:
    return SimpleNamespace(accelerator=accelerator, world_size=1, global_rank=0, global_step=0, lightning_module=None)


def test_the_train_loader_pins_memory_when_training_on_cuda():
    data = sample_data()
    data.setup("fit")
    data.trainer = fake_trainer(CUDAAccelerator())
    assert data.train_dataloader().pin_memory is True
    data.trainer = fake_trainer(CPUAccelerator())
    assert data.train_dataloader().pin_memory is False
    pinned_off = sample_data(pin_memory=False)
    pinned_off.setup("fit")
    pinned_off.trainer = fake_trainer(CUDAAccelerator())
    assert pinned_off.train_dataloader().pin_memory is False  # an explicit setting wins


def test_nan_guard_checks_every_step_on_cpu_and_every_logging_step_on_an_accelerator():
    def trainer_on(device: str, log_every: int = 50) -> SimpleNamespace:
        return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), log_every_n_steps=log_every)

    assert NaNGuard().steps_between_checks(trainer_on("cpu")) == 1  # a CPU read waits for nothing
    assert NaNGuard().steps_between_checks(trainer_on("cuda")) == 50
    assert NaNGuard().steps_between_checks(trainer_on("cuda", 0)) == 50  # logging off
    assert NaNGuard(check_every_n_steps=7).steps_between_checks(trainer_on("cuda")) == 7
    assert NaNGuard(on_nonfinite="skip").steps_between_checks(trainer_on("cuda")) == 1  # skipping needs each step
    with pytest.raises(ValueError, match="^check_every_n_steps=0 must be at least 1"):
        NaNGuard(check_every_n_steps=0)


class LossPoisoned(SRModule):
    """NaN loss at the given global steps."""

    def __init__(self, nan_steps: set[int]):
        super().__init__(model=TINY_HDSRNET, optimizer=ADAM)
        self.nan_steps = set(nan_steps)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step in self.nan_steps else loss


def fit_poisoned(tmp_path: Path, nan_steps: set[int], checkpoint_every: int | None, max_steps: int = 12):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=checkpoint_every, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[checkpoint, NaNGuard(check_every_n_steps=4)],
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(LossPoisoned(nan_steps), datamodule=sample_data())
    return trainer, str(info.value)


def test_a_guard_that_checks_every_n_steps_names_the_first_bad_step(tmp_path):
    trainer, message = fit_poisoned(tmp_path, {5}, checkpoint_every=None)
    assert trainer.global_step == 7  # the check at the 8th step, before its backward pass
    assert message.startswith(
        "non-finite training loss (nan) at step 5 (epoch 1, batch 1), noticed at step 7 (checked every 4 steps): "
        f"stopped; last checkpoint {tmp_path / 'last.ckpt'} is intact. "
    )


def test_a_checkpoint_due_before_the_check_is_refused(tmp_path):
    trainer, message = fit_poisoned(tmp_path, {5}, checkpoint_every=2)
    assert trainer.global_step == 6  # the step-6 checkpoint ran the check
    assert message.startswith(
        "non-finite training loss (nan) at step 5 (epoch 1, batch 1), noticed at step 6 (checked every 4 steps): "
        f"stopped; last checkpoint {tmp_path / 'last.ckpt'} is intact. "
    )
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_a_bad_last_step_is_caught_when_training_ends(tmp_path):
    _, message = fit_poisoned(tmp_path, {9}, checkpoint_every=None, max_steps=10)
    assert message.startswith("non-finite training loss (nan) at step 9 (epoch 2, batch 1), noticed at step 10 ")


DDP_NAN_RUN = """
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from srlab.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from srlab.data.sample import SampleDataModule
from srlab.module import SRModule


class NaNOnRankOne(SRModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step == 2 and self.global_rank == 1 else loss


torch.set_num_threads(1)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo"), max_steps=8,
                    limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, callbacks=[NaNGuard(check_every_n_steps=4)])
model = {"_target_": "srlab.models.hdsrnet.HDSRNet", "scale": 2, "channels": 8, "num_blocks": 1, "lower_depth": 2}
data = SampleDataModule(scale=2, patch_size=16, batch_size=2, steps_per_epoch=4, train_images=("chelsea.png",),
                        val_images=("coffee.png",))
try:
    trainer.fit(NaNOnRankOne(model=model, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3}), datamodule=data)
    outcome = f"finished at step {trainer.global_step}"
except NonFiniteLossError as err:
    outcome = str(err)
Path(sys.argv[1], f"rank{trainer.global_rank}.txt").write_text(outcome)
# Close the group together: a rank exiting with it open while its peer has gone aborts in gloo's
# destructor ("terminate called without an active exception", exit -6), seen once in CI.
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_under_ddp_every_rank_stops_at_the_same_check(tmp_path):
    script = tmp_path / "ddp_nan.py"
    script.write_text(DDP_NAN_RUN)
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    noticed = "at step 2 (epoch 0, batch 2), noticed at step 3 (checked every 4 steps): stopped"
    assert (tmp_path / "rank1.txt").read_text().startswith(f"non-finite training loss (nan) {noticed}")
    # Rank 0's own loss was finite; the all-reduced decision stops it at the same step, naming the same one.
    assert (tmp_path / "rank0.txt").read_text().startswith(f"non-finite training loss (on another rank) {noticed}")


# -- the end-of-run summary runs on the training device, on the trained model ---------------------------
class TinyEvalData(SRDataModule):
    """One 8x8 LR evaluation image and no training data: enough for the summary."""

    def __init__(self):
        super().__init__(scale=2, patch_size=8, batch_size=1, steps_per_epoch=1)

    def load_train_pairs(self) -> list[ImagePair]:
        raise AssertionError("the summary reads no training data")

    def load_eval_sets(self) -> dict[str, list[ImagePair]]:
        rng = np.random.default_rng(0)
        hr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        return {"Tiny": [ImagePair("tiny", hr[::2, ::2].copy(), hr)]}


def best_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    best = SRModule(model=TINY_HDSRNET, optimizer=ADAM)
    state = {k: v.clone() for k, v in best.state_dict().items()}
    path = tmp_path / "best.ckpt"
    saved = {"state_dict": state, "hyper_parameters": dict(best.hparams), "pytorch-lightning_version": L.__version__}
    torch.save(saved, path)
    return path, state


def summary_trainer(best: Path, device: str) -> SimpleNamespace:
    """What summarise_best reads of the Trainer after fit (which left the module on the CPU)."""
    return SimpleNamespace(checkpoint_callback=SimpleNamespace(best_model_path=str(best)),
                           strategy=SimpleNamespace(root_device=torch.device(device)))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_summary_scores_the_trained_module_with_the_best_weights_on_the_training_device(tmp_path, monkeypatch, device):
    path, best_state = best_checkpoint(tmp_path)
    module = SRModule(model=TINY_HDSRNET, optimizer=ADAM)  # the trained module: other weights than the best
    scored = []

    def record_score(model, dataset, score_device, on_image=None):
        weights = next(model.parameters(), None)
        if weights is not None:  # not bicubic
            state = {k: v.clone() for k, v in model.state_dict().items()} if weights.device.type != "meta" else None
            scored.append((model, torch.device(score_device), weights.device, state))
        if on_image is not None:  # the summary keeps the first image's output for its comparison picture
            on_image(0, dataset[0]["hr"])
        return [ImageScore(dataset.name, "tiny", 30.0, 0.9)]

    def no_new_module(*args, **kwargs):
        raise AssertionError("the summary built a second SRModule (a compiled one would compile again)")

    monkeypatch.setattr(train_task, "score_dataset", record_score)
    monkeypatch.setattr(SRModule, "load_from_checkpoint", no_new_module)
    rows = train_task.summarise_best(summary_trainer(path, device), module, TinyEvalData(), tmp_path)
    assert [r["dataset"] for r in rows] == ["Tiny"]
    model, score_device, weights_device, state = scored[0]
    assert model is module.model
    assert score_device == weights_device == torch.device(device)
    if device == "cpu":
        assert all(torch.equal(state[k], best_state[f"model.{k}"]) for k in state)


def test_summary_does_not_compile_a_compiled_model_again(tmp_path):
    path, _ = best_checkpoint(tmp_path)
    module = SRModule(model=TINY_HDSRNET, optimizer=ADAM)
    compiles = []
    torch._dynamo.reset()
    module.model.compile(backend=lambda graph, inputs: compiles.append(graph) or graph.forward)
    try:
        train_task.summarise_best(summary_trainer(path, "cpu"), module, TinyEvalData(), tmp_path)
    finally:
        torch._dynamo.reset()
    assert compiles == []
    assert (tmp_path / "summary.csv").is_file()


def test_eval_builds_a_compile_trained_checkpoint_uncompiled(tmp_path):
    module = SRModule(model=TINY_HDSRNET, optimizer=ADAM, compile=True)  # compiles lazily: nothing runs here
    path = tmp_path / "compiled.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": L.__version__}, path)
    model = load_model(ModelSource(2, lightning_ckpt=path), None, torch.device("cpu"))
    assert model._compiled_call_impl is None  # eval meets many image sizes: each would be a compile
    assert not model.training


# -- deterministic GPU training -------------------------------------------------------------------------
def compose_trainer(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides).trainer


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_configs_benchmark_cudnn_unless_deterministic(trainer):
    assert compose_trainer([f"trainer={trainer}"]).benchmark is True
    deterministic = compose_trainer([f"trainer={trainer}", "trainer.deterministic=true"])
    assert deterministic.deterministic is True and deterministic.benchmark is False
    assert compose_trainer([]).benchmark is False and compose_trainer([]).deterministic is False


@pytest.fixture
def restore_torch_flags(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # the Trainer must set it; removed again afterwards
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    yield
    torch.backends.cudnn.benchmark = benchmark
    torch.use_deterministic_algorithms(deterministic)


def test_trainer_deterministic_sets_every_torch_flag(restore_torch_flags):
    cfg = compose_trainer(["trainer=gpu", "trainer.deterministic=true"])
    torch.backends.cudnn.benchmark = True  # as an earlier trainer=gpu run in this process left it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(accelerator="cpu", deterministic=cfg.deterministic, benchmark=cfg.benchmark, logger=False)
    assert not [w for w in caught if "benchmark=True" in str(w.message)]
    assert torch.backends.cudnn.benchmark is False
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set by the Trainer, before fit does any CUDA work


# -- temperature annealing does not recompile -----------------------------------------------------------
def random_batches(n: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = [{"lr": torch.rand(3, 6, 6, generator=generator) * 255,
              "hr": torch.rand(3, 12, 12, generator=generator) * 255} for _ in range(n)]
    return DataLoader(items, batch_size=2)


class RecordTemperatures(L.Callback):
    def __init__(self):
        self.seen: list[set[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append({conv.temperature for conv in pl_module.model.dynamic_convs()})


def test_annealing_compiles_the_model_once(tmp_path):
    compiles = []
    module = SRModule(model=TINY_HDSRNET, optimizer=ADAM)
    torch._dynamo.reset()
    module.model.compile(backend=lambda graph, inputs: compiles.append(graph) or graph.forward)
    record = RecordTemperatures()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        callbacks=[TemperatureAnnealing(start=40.0, end=1.0, epochs=None, steps=4), record],
    )
    try:
        trainer.fit(module, train_dataloaders=random_batches(10))
    finally:
        torch._dynamo.reset()
    assert record.seen == [{40.0}, {30.25}, {20.5}, {10.75}, {1.0}]
    assert len(compiles) == 1


def test_checkpoints_keep_the_temperature_and_old_ones_still_load(tmp_path):
    model = HDSRNet(2, **TINY)
    model.set_temperature(2.5)
    state = model.state_dict()
    keys = [k for k in state if k.endswith("attention.temperature")]
    assert len(keys) == len(model.dynamic_convs()) and all(float(state[k]) == 2.5 for k in keys)

    fresh = HDSRNet(2, **TINY)
    fresh.load_state_dict(state)
    assert {conv.temperature for conv in fresh.dynamic_convs()} == {2.5}

    # A state dict written before the temperature was a buffer: the model keeps the temperature it was built with.
    old = {k: v for k, v in state.items() if k not in keys}
    built_at_8 = HDSRNet(2, temperature=8.0, **TINY)
    built_at_8.load_state_dict(old)  # strict
    assert {conv.temperature for conv in built_at_8.dynamic_convs()} == {8.0}
