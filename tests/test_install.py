"""Installing srlab: pyproject's ranges admit the environments srlab supports, constraints.txt pins a point
inside them, the wheel ships the configs without setuptools warnings; and the GPU check's dry run goes
end to end on the CPU (scripts/gpu_check.sh --dry-run)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
# What stays out when the checkout is copied for a build: environments, caches, run outputs.
NOT_SOURCE = {".venv", ".git", "outputs", "multirun", "build", "__pycache__", ".ruff_cache", ".pytest_cache",
              "gpu_check", "lightning_logs", "wandb"}


def not_source(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == REPO
    return {n for n in names if n in NOT_SOURCE or n.endswith(".egg-info") or (top and n == "data")}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def runtime_requirements() -> dict[str, Requirement]:
    return {r.name: r for r in map(Requirement, pyproject()["project"]["dependencies"])}


def dev_requirements() -> dict[str, Requirement]:
    return {r.name: r for r in map(Requirement, pyproject()["project"]["optional-dependencies"]["dev"])}


def constraint_pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        pins[req.name] = Version(spec.version)
    return pins


@pytest.mark.parametrize("python", ["3.10.0", "3.11.7", "3.12.1", "3.13.0"])
def test_requires_python_admits_3_10_to_3_13(python):
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(python)


# A CUDA image's torch (local version labels and NGC pre-releases included) and the CI's CPU wheel.
@pytest.mark.parametrize("torch_version", ["2.11.0", "2.11.0+cu128", "2.11.0a0+gitabc1234", "2.13.0", "2.13.0+cpu"])
def test_torch_range_admits_the_torch_of_cuda_images_and_ci(torch_version):
    assert runtime_requirements()["torch"].specifier.contains(torch_version, prereleases=True)


def test_dependencies_are_ranges_not_pins():
    for req in [*runtime_requirements().values(), *dev_requirements().values()]:
        operators = {spec.operator for spec in req.specifier}
        assert operators, f"{req}: no version range"
        assert not operators & {"==", "==="}, f"{req}: exact pins belong in constraints.txt"
        assert any(op in (">=", ">", "~=") for op in operators), f"{req}: no lower bound"


def test_constraints_pin_every_dependency_inside_its_range():
    pins = constraint_pins()
    requirements = {**runtime_requirements(), **dev_requirements()}
    for name, req in requirements.items():
        if req.marker is not None and not req.marker.evaluate():
            continue  # e.g. tomli, only below Python 3.11 (CI runs 3.11)
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert req.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]} outside {req}"
    assert set(pins) <= set(requirements), f"constraints.txt pins non-dependencies: {set(pins) - set(requirements)}"


def test_makefile_installs_the_pinned_torch_then_srlab_with_the_constraints():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    torch_pin = re.search(r"pip install --quiet torch==(\S+)", makefile)
    assert torch_pin and Version(torch_pin.group(1)) == constraint_pins()["torch"]
    assert '-c constraints.txt -e ".[dev]"' in makefile
    assert re.search(r"^\$\(VENV\)/\.installed: .*constraints\.txt", makefile, re.M)


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_reads_the_requirements_without_a_toml_parser():
    # On Python 3.10 without tomli the GPU check reads pyproject.toml with a regular expression.
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert load_gpu_check().requirements_by_regex(text) == pyproject()["project"]["dependencies"]


def test_gpu_check_train_summary_takes_steady_state_steps_and_gpu_use(tmp_path):
    # What the GPU run's train step leaves: raw step durations, the resolved config, nvidia-smi samples.
    profile, run_dir = tmp_path / "profile", tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("model: {scale: 2}\ndata: {patch_size: 128, batch_size: 64, "
                                                    "num_workers: 4}\ntrainer: {precision: bf16-mixed}\n")
    profile.mkdir()
    batch = [2.0] * 5 + [0.020] * 45  # cuDNN autotuning first, then 20 ms steps
    wait = [0.5] * 5 + [0.001] * 45
    (profile / "fit-step-durations.json").write_text(json.dumps({"batch": batch, "data_wait": wait}))
    smi = tmp_path / "smi.csv"
    samples = [(0, 500)] * 3 + [(90, 9000), (100, 9100)] * 4 + [(0, 500)]  # idle, training, idle
    smi.write_text("".join(f"2026/01/01 00:00:{i:02d}.000, {util}, 30, {mem}, 400.0\n"
                           for i, (util, mem) in enumerate(samples)))
    load_gpu_check().main(["--out", str(tmp_path), "train-summary", "--run-dir", str(run_dir), "--profile-dir",
                           str(profile), "--smi-csv", str(smi), "--batch", "64"])
    summary = json.loads((tmp_path / "steps" / "train.json").read_text())
    assert summary["steps"] == 50 and summary["steady_steps"] == 45
    assert summary["step_ms_median"] == pytest.approx(20.0) and summary["data_wait_ms_median"] == pytest.approx(1.0)
    assert summary["patches_per_s"] == pytest.approx(64 / 0.021)
    assert summary["data_wait_share"] == pytest.approx(1 / 21)
    assert summary["gpu"]["util_mean_pct"] == pytest.approx(95.0) and summary["gpu"]["memory_used_max_mib"] == 9100
    assert summary["config"]["num_workers"] == 4 and summary["config"]["precision"] == "bf16-mixed"


def test_gpu_check_report_sets_gpu_measurements_beside_the_targets(tmp_path):
    def bench(device, dtype, train=None, infer=None):
        return {"settings": {"device": device, "dtype": dtype, "compile": False}, "train": train, "infer": infer}

    x2 = {"scale": 2, "batch": 64, "lr_patch": 64, "srlab": {"patches_per_s": 3500.0, "median_ms": 18.3},
          "baseline": {"patches_per_s": 900.0}, "ratio": 3.9}
    x4 = {"scale": 4,
          "256x256": {"output": 256, "input": 64, "srlab": {"median_ms": 1.3}, "baseline": {"median_ms": 4}}}
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "x2_bf16.json").write_text(json.dumps(bench("cuda", "bf16", train=x2, infer=x4)))
    load_gpu_check().main(["--out", str(tmp_path), "report", "--mode", "gpu"])
    markdown = (tmp_path / "report.md").read_text()
    assert "| x2, batch 64 of LR 64² | bf16 autocast | 3,500 | 900 | 3.90x | 18.30 | >= 3,000: meets |" in markdown
    assert "| x4, LR 64² -> 256² | bf16 autocast | 1.300 | 4.000 | <= 1 ms: misses |" in markdown
    assert "Dry run" not in markdown and json.loads((tmp_path / "report.json").read_text())["mode"] == "gpu"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel and editable wheel of a copy of the checkout (setuptools' own output captured)."""
    pytest.importorskip("setuptools", reason="building needs setuptools in this environment")
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=not_source)
    result, output = {}, ""
    for kind in ("wheel", "editable"):  # one process each: setuptools keeps command state between builds
        script = f"import sys; from setuptools import build_meta; print('BUILT', build_meta.build_{kind}(sys.argv[1]))"
        done = subprocess.run([sys.executable, "-W", "default", "-c", script, str(tmp / kind)], cwd=source,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        name = next(line for line in done.stdout.splitlines() if line.startswith("BUILT ")).split()[1]
        result[kind], output = tmp / kind / name, output + done.stdout + done.stderr
    return {**result, "output": output}


def test_wheel_ships_every_config_and_the_paper_tables(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    configs = {f"srlab/configs/{path.relative_to(REPO / 'configs').as_posix()}"
               for path in (REPO / "configs").rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)
    assert {"srlab/configs/train.yaml", "srlab/configs/eval.yaml", "srlab/eval/paper_tables.yaml"} <= names


def test_wheel_metadata_states_the_ranges(built):
    with zipfile.ZipFile(built["wheel"]) as wheel:
        meta = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Python: >=3.10" in meta
    requires = [Requirement(line.split(":", 1)[1]) for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert "torch" in {r.name for r in requires}
    assert not [r for r in requires if {s.operator for s in r.specifier} & {"==", "==="}], "a pin in the metadata"


def test_build_prints_no_setuptools_warning(built):
    # e.g. the "Editable installation" notice of setuptools' import-hook finder for flat layouts.
    warnings = [line for line in built["output"].splitlines() if re.search(r"Warning\b|!!", line)]
    assert not warnings, "\n".join(warnings)


def test_editable_install_puts_the_checkout_on_sys_path(built):
    names = zipfile.ZipFile(built["editable"]).namelist()
    assert [n for n in names if n.endswith(".pth")], names
    assert not [n for n in names if n.endswith("_finder.py")], "import-hook finder instead of a .pth entry"


@pytest.mark.slow
@pytest.mark.timeout(1000)  # about 90 s of CPU time; the script's own dry-run budget is 900 s
def test_gpu_check_dry_run_goes_through_every_step(tmp_path):
    out = tmp_path / "gpu_check"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--python", sys.executable,
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=980)
    report = json.loads((out / "report.json").read_text())
    states = {step["step"]: step["state"] for step in report["steps"]}
    assert done.returncode == 0 and set(states.values()) == {"ok"}, done.stdout[-4000:]
    assert set(states) == {"setup", "data", "bench_x2_fp32", "bench_x2_bf16", "bench_x4_fp32", "bench_x4_bf16",
                           "bench_loader", "train", "train_summary", "eval_gpu", "eval_cpu", "eval_compare", "tiled",
                           "dynconv", "bench_x2_bf16_compiled", "bench_x4_bf16_compiled"}
    assert report["mode"] == "dry-run" and report["setup"]["torch_unchanged"]
    for name in ("x2_fp32", "x2_bf16", "x2_bf16_compiled", "x4_fp32", "x4_bf16", "x4_bf16_compiled"):
        assert report["bench"][name]["train"]["srlab"]["patches_per_s"] > 0, name
    assert report["bench"]["x2_bf16"]["infer"]["64x64"]["srlab"]["median_ms"] > 0
    assert report["bench"]["loader"]["loader"]["patches_per_s_per_worker"] > 0
    assert report["train"]["steps"] == 8 and 0 <= report["train"]["data_wait_share"] < 1
    assert report["train"]["last_ckpt_exists"]
    assert report["eval"]["same_to_0_01_db"] and report["eval"]["rows"][0]["dataset"] == "Set5"
    tiled = [run for run in report["tiled"]["runs"] if run["mode"] == "tiled"]
    assert len(tiled) == 2 and all(run["max_abs_diff_vs_whole"] < 1e-2 for run in tiled)
    assert len(report["dynconv"]["runs"]) == 4
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# srlab GPU check") and "Dry run on the CPU" in markdown
    assert ">= 3,000" in markdown
