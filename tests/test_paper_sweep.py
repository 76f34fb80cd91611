"""The whole paper in one command (experiment=paper): its 11 runs as composed, Table I at x4 with failed runs named,
the sweep summary's job records, a finished run skipped, the released code's schedule, and the sweep end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import MultiStepLR

from srlab.callbacks.sweep_summary import SUMMARY_FILE, write_job_status, write_sweep_summary
from srlab.data.io import read_image, write_image
from srlab.data.sample import skimage_data_dir
from srlab.eval.report import collect_table1, table1, to_markdown
from srlab.models.hdsrnet import VARIANTS
from srlab.schedulers import ReferenceCodeLR
from srlab.tasks.train import finished_run_metrics
from tests.train_runs import REPO, TINY_MODEL, checkpoint, read_csv

PAPER_RUNS = ["x2", "x3", "x4", *(v for v in VARIANTS if v != "full")]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


# -- the experiment ---------------------------------------------------------------------------------
def test_paper_sweeps_eleven_runs_with_their_scale_variant_and_patch():
    cfg = compose_train(["experiment=paper"])
    runs = [name.strip() for name in cfg.hydra.sweeper.params.run.split(",")]
    assert runs == PAPER_RUNS == list(cfg.paper_runs)
    sweep = OmegaConf.to_container(cfg.hydra.sweep)  # unresolved: ${paths.log_dir} needs a running Hydra
    assert sweep == {"dir": "${paths.log_dir}/paper", "subdir": "${hydra.job.override_dirname}"}
    assert cfg.hydra.callbacks.sweep_summary._target_ == "srlab.tasks.paper.PaperReport"
    x3_recipe = compose_train(["experiment=paper_x3"])
    seen = {}
    for run in runs:
        job = compose_train(["experiment=paper", f"run={run}"])
        seen[run] = (job.model.scale, job.model.variant, job.data.patch_size)
        assert (job.data.scale, job.data.val_sets[0], job.module.scheduler.step_size) == (job.model.scale, "Urban100",
                                                                                         300000)
    assert seen["x2"] == (2, "full", 128) and seen["x4"] == (4, "full", 128)
    assert seen["x3"] == (3, "full", x3_recipe.data.patch_size) == (3, "full", 126)
    assert sorted(v for s, v, _ in seen.values() if s == 4) == sorted(VARIANTS)  # Table I: all nine at x4
    smoke = compose_train(["experiment=paper", "run=x3", "debug=smoke"])
    assert (smoke.model.scale, smoke.data.patch_size, smoke.trainer.max_steps) == (3, 24, 2)


# -- Table I and the sweep summary over job folders as the sweep leaves them -------------------------------------
def fake_job(sweep: Path, name: str, scale: int, variant: str, psnr: float | None, status: str | None,
             error: str | None = None) -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml({"model": {"scale": scale, "variant": variant}}))
    job_number = len(list(sweep.iterdir()))
    (job / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"job": {"num": job_number}}}))
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml([f"run={name.removeprefix('run=')}"]))
    if psnr is not None:
        (job / "csv").mkdir()
        (job / "csv" / "metrics.csv").write_text(
            f"epoch,step,val/Urban100/psnr,val/psnr,val/ssim\n0,9,{psnr - 1},{psnr - 1},0.7\n0,19,{psnr},{psnr},0.75\n")
        record = {"step": 19, "epoch": 0, "val/psnr": psnr}
        (job / "metrics.json").write_text(json.dumps({"best": record, "last": record}))
    if status is not None:
        write_job_status(job, status, error)
    return job


def test_table1_uses_the_x4_runs_and_names_the_failed_ones(tmp_path):
    fake_job(tmp_path, "run=x2", 2, "full", 37.0, "completed")  # HDSRNet x2 beats every x4 score: must stay out
    fake_job(tmp_path, "run=x4", 4, "full", 26.0, "completed")
    fake_job(tmp_path, "run=upper", 4, "upper", 25.5, None)  # a sweep from before job records: still counted
    fake_job(tmp_path, "run=six_conv", 4, "six_conv", None, "failed", "ValueError: bad patch")
    fake_job(tmp_path, "run=upper_plain", 4, "upper_plain", 24.0, "running")  # killed: not a finished score
    entries = collect_table1(tmp_path)
    assert [(e["variant"], e["scale"], e["psnr"]) for e in entries] == [("upper", 4, 25.5), ("full", 4, 26.0)]
    markdown = to_markdown(table1(tmp_path))
    assert "run=six_conv (failed: ValueError: bad patch)" in markdown
    assert "run=upper_plain (not finished" in markdown
    assert "Runs at other scales, not Table I rows: run=x2 (x2)" in markdown
    assert "| HDSRNet | full | 26.01/0.7827 | 26.00/0.7500 |" in markdown
    not_in_sweep = next(line for line in markdown.splitlines() if line.startswith("- Not in the sweep"))
    assert "six_conv" not in not_in_sweep and "upper_no_dynamic" in not_in_sweep  # tried-and-failed is not missing
    # A smoke sweep at one other scale still gets its Table I; mixed scales without x4 are refused.
    only_x2 = tmp_path / "x2_only"
    fake_job(only_x2, "a", 2, "six_conv", 20.0, "completed")
    assert [e["scale"] for e in collect_table1(only_x2)] == [2]
    fake_job(only_x2, "b", 3, "full", 20.0, "completed")
    with pytest.raises(ValueError, match="none at x4"):
        collect_table1(only_x2)


def test_sweep_summary_names_failed_and_unfinished_jobs(tmp_path):
    fake_job(tmp_path, "run=x2", 2, "full", 30.0, "completed")
    fake_job(tmp_path, "run=x3", 3, "full", None, "failed", "RuntimeError: out of memory")
    fake_job(tmp_path, "run=x4", 4, "full", 25.0, "running")
    rows = {row["run"]: row["status"] for row in read_csv(write_sweep_summary(tmp_path))}
    assert rows == {"x2": "ok", "x3": "failed: RuntimeError: out of memory", "x4": "not finished"}


def test_a_finished_run_is_not_trained_again(tmp_path):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}, "trainer": {"max_steps": -1, "max_epochs": 3},
                            "data": {"steps_per_epoch": 10}, "ckpt_path": None})
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    (tmp_path / "metrics.json").write_text(json.dumps({"last": {"step": 30, "epoch": 2, "val/psnr": 31.5}}))
    torch.save({"global_step": 29}, last)
    assert finished_run_metrics(cfg, str(last)) is None  # one step short: resumed
    torch.save({"global_step": 30}, last)
    assert finished_run_metrics(cfg, str(last)) == {"val/psnr": 31.5}
    cfg.trainer.max_steps = 40  # max_steps and max_epochs: the first bound reached ends the run
    assert finished_run_metrics(cfg, str(last)) == {"val/psnr": 31.5}
    cfg.trainer.max_epochs = 5
    assert finished_run_metrics(cfg, str(last)) is None  # a longer run asked for: it continues
    assert finished_run_metrics(cfg, None) is None


# -- the released code's learning-rate schedule -------------------------------------------------------------------
def released_code_rates(epochs: int, base: float = 1e-4) -> list[float]:
    """Per epoch, the rate the authors' trainer.py trains with: EDSR's MultiStepLR(milestones=[200], gamma=0.5)
    stepped at the end of each epoch, right after `lr = args.lr * 0.5 ** (epoch // 300)` is set on every group."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = MultiStepLR(optimizer, milestones=[200], gamma=0.5)
    rates = []
    for epoch in range(1, epochs + 1):  # EDSR's `epoch = scheduler.last_epoch + 1`
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = base * 0.5 ** (epoch // 300)
        scheduler.step()
    return rates


def test_reference_code_schedule_is_the_released_code_step_by_step():
    per_epoch = released_code_rates(1200)
    # Every optimiser step of a 1,200-epoch run, with 3-step epochs (the epoch length is a parameter).
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = ReferenceCodeLR(optimizer, epoch_length=3)
    for step in range(1200 * 3):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(per_epoch[step // 3], rel=1e-12), step
        optimizer.step()
        scheduler.step()
    # The released code's 999-step epochs, at every epoch's first and last step.
    released = ReferenceCodeLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4))
    for epoch, rate in enumerate(per_epoch):
        for step in (epoch * 999, epoch * 999 + 998):
            assert 1e-4 * released.factor(step) == pytest.approx(rate, rel=1e-12)
    assert [1e-4 * released.factor(s) for s in (199_799, 199_800, 200_798, 200_799, 299_699, 299_700)] == \
        pytest.approx([1e-4, 5e-5, 5e-5, 1e-4, 1e-4, 5e-5])


def test_reference_code_scheduler_config_builds_it():
    cfg = compose_train(["experiment=paper_x2", "module/scheduler=reference_code"])
    assert OmegaConf.to_container(cfg.module.scheduler) == {
        "_target_": "srlab.schedulers.ReferenceCodeLR", "epoch_length": 999, "reset_every": 300, "reset_gamma": 0.5,
        "milestones": [200], "gamma": 0.5}
    assert cfg.module.scheduler_interval == "step"


# -- end to end -----------------------------------------------------------------------------------------------------
def benchmark_root_for_the_report(root: Path, shared: Path) -> Path:
    """Set5 and three Set14 images from ../shared, and one-image stand-ins for B100 and Urban100."""
    root.mkdir(parents=True)
    (root / "Set5").symlink_to(shared / "Set5")
    (root / "Set14" / "HR").mkdir(parents=True)
    for name in ("baboon", "comic", "zebra"):
        shutil.copy(shared / "Set14" / "HR" / f"{name}.png", root / "Set14" / "HR")
    for name, photo in (("B100", "chelsea.png"), ("Urban100", "camera.png")):
        write_image(root / name / "HR" / f"{Path(photo).stem}.png", read_image(skimage_data_dir() / photo)[:96, :120])
    return root


def job_folder(run: str, overrides: list[str]) -> str:
    """The job folder Hydra names from a job's overrides (hydra.job.override_dirname: sorted key=value, by ',')."""
    kept = sorted([o for o in overrides if not o.startswith(("debug=", "paths.", "hydra."))] + [f"run={run}"])
    return ",".join(kept)


@pytest.mark.slow
def test_paper_sweep_end_to_end_renders_every_table_skips_finished_runs_and_names_a_failed_one(tmp_path,
                                                                                             benchmark_root):
    sweep = tmp_path / "paper"
    data = tmp_path / "data"
    benchmark_root_for_the_report(data / "benchmark", benchmark_root)
    overrides = ["debug=smoke", *TINY_MODEL, "callbacks.progress_bar=null", "callbacks.comparison_images=null",
                 f"paths.data_dir={data}"]
    command = [sys.executable, "train.py", "-m", "experiment=paper", *overrides, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}

    # 1. six_conv's folder holds a corrupt last.ckpt: that job fails, the ten others train, the report names it.
    broken = sweep / job_folder("six_conv", overrides) / "checkpoints" / "last.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    report = sweep / "report"
    for name in ("table1", "table2", "table3", "table4", "table5", "table6", "table7"):
        assert all((report / "tables" / f"{name}.{suffix}").stat().st_size > 0 for suffix in ("md", "csv", "tex"))
    results = read_csv(report / "results.csv")
    assert sorted((r["dataset"], r["scale"]) for r in results if r["model"] == "HDSRNet") == sorted(
        (d, s) for d in ("Set5", "Set14", "B100", "Urban100") for s in "234")
    eval_command = (report / "command.txt").read_text()
    for run in ("x2", "x3", "x4"):  # Tables II-V come from the best checkpoints of this sweep's runs
        best = json.loads((sweep / job_folder(run, overrides) / "metrics.json").read_text())["best"]["step"]
        assert f"{sweep / job_folder(run, overrides)}/checkpoints/best-step{best}.ckpt" in eval_command
    table1_md = (report / "tables" / "table1.md").read_text()
    upper = json.loads((sweep / job_folder("upper", overrides) / "metrics.json").read_text())["best"]
    upper_row = next(line for line in table1_md.splitlines() if "| upper |" in line)
    assert f"{upper['val/psnr']:.2f}/{upper['val/ssim']:.4f}" in upper_row
    for named_in in (report / "paper_report.md", report / "runs.md", report / "tables" / "table1.md",
                     sweep / SUMMARY_FILE):
        text = named_in.read_text()
        assert "six_conv" in text and "failed: ConfigError" in text, named_in
    assert len(list(report.glob("figures/*_x[234]_*.png"))) == 12

    # 2. The same command again, the corrupt file gone: ten finished runs skipped, six_conv trained, report redone.
    broken.unlink()
    finished = {p: (p.stat().st_mtime_ns, checkpoint(p)["global_step"]) for p in sweep.glob("*/checkpoints/last.ckpt")}
    assert len(finished) == 10
    rendered = (report / "paper_report.md").stat().st_mtime_ns
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert {p: (p.stat().st_mtime_ns, checkpoint(p)["global_step"]) for p in finished} == finished
    assert (second.stdout + second.stderr).count("nothing to train") == 10
    assert checkpoint(broken)["global_step"] == 2
    assert (report / "paper_report.md").stat().st_mtime_ns > rendered
    assert {row["status"] for row in read_csv(report / "runs.csv")} == {"ok"}
    table1_md = (report / "tables" / "table1.md").read_text()
    six_conv = next(line for line in table1_md.splitlines() if "| six_conv |" in line)
    assert six_conv.split("|")[4].strip() != "-"  # its srlab score is in Table I now
