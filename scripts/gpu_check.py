"""The Python side of scripts/gpu_check.sh: environment and install, stand-in data, the measurements
`python -m srlab.bench` does not make, and the final report.

Each subcommand is one step of the check and writes ``<out>/steps/<step>.json``; ``report`` merges
them with the benchmark JSON files and the shell's step log into ``report.json`` and ``report.md``.
Only the standard library is imported at the top: ``setup`` must run before srlab's dependencies
are known to be there.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata as metadata
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The figures the check sets its measurements against (srlab's cluster-readiness issue).
TARGET_TRAIN_PATCHES_PER_S = 3000.0  # x2, batch 64 of LR 64, bf16, one H100/H200
TARGET_INFER_MS = 1.0  # x4, 256x256 output, batch 1
TARGET_DATA_WAIT_SHARE = 0.05  # "the loader is never the bottleneck": waiting for data < 5% of a step
# Set5's HR sizes (width, height): the stand-in has the same shapes.
SET5_SIZES = {"baby": (512, 512), "bird": (288, 288), "butterfly": (256, 256), "head": (280, 280),
              "woman": (228, 344)}
BENCH_RUNS = ("x2_fp32", "x2_bf16", "x2_bf16_compiled", "x4_fp32", "x4_bf16", "x4_bf16_compiled")


# -- helpers ----------------------------------------------------------------------------------------
def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def packaging_module():
    """`packaging` (requirements, versions), or pip's vendored copy in an environment without it."""
    try:
        import packaging.requirements
        import packaging.version

        return packaging
    except ImportError:
        from pip._vendor import packaging

        return packaging


def requirements_by_regex(pyproject_text: str) -> list[str]:
    """[project].dependencies read without a TOML parser (Python 3.10 has none in its standard library)."""
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject_text, re.S | re.M).group(1)
    return re.findall(r'^\s*"([^"]+)"', block, re.M)


def project_requirements() -> list[str]:
    """[project].dependencies of pyproject.toml, as written."""
    text = (REPO / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            return requirements_by_regex(text)
    return list(tomllib.loads(text)["project"]["dependencies"])


def unmet_requirements(skip: tuple[str, ...] = ("torch",)) -> list[dict]:
    """Requirements of srlab that this environment lacks or holds in a version outside the range."""
    pkg = packaging_module()
    unmet = []
    for line in project_requirements():
        req = pkg.requirements.Requirement(line)
        if req.name in skip or (req.marker is not None and not req.marker.evaluate()):
            continue
        installed = dist_version(req.name)
        # An installed pre-release (e.g. an NGC torch 2.11.0a0) counts, as pip counts it.
        if installed is None or not req.specifier.contains(installed, prereleases=True):
            unmet.append({"requirement": line, "installed": installed})
    return unmet


def run(cmd: list[str], timeout: float | None = None, cwd: str | None = None) -> tuple[int, str]:
    """Exit status and the last 3,000 characters of a command's output."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout} s: {err}"
    except OSError as err:
        return 127, str(err)
    return done.returncode, (done.stdout + done.stderr)[-3000:]


def pip(*args: str, timeout: float | None = None) -> dict:
    cmd = [sys.executable, "-m", "pip", *args]
    rc, tail = run(cmd, timeout)
    return {"command": " ".join(cmd), "ok": rc == 0, "returncode": rc, "output_tail": tail}


def nvidia_smi() -> dict | None:
    if shutil.which("nvidia-smi") is None:
        return None
    fields = "name,driver_version,memory.total,power.limit"
    rc, out = run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], timeout=20)
    return {"query": fields, "returncode": rc, "output": out.strip()}


# -- setup: versions, install ---------------------------------------------------------------------------
def torch_details() -> dict:
    try:
        import torch
    except Exception as err:  # a missing or broken torch is what this step reports
        return {"error": f"import torch failed: {err}"}
    details = {"version": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
               "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        details.update(device_count=torch.cuda.device_count(), device=props.name,
                       capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                       bf16_supported=torch.cuda.is_bf16_supported())
    return details


def srlab_location() -> str | None:
    """Where `import srlab` resolves from a neutral folder (the install, not this checkout's cwd)."""
    rc, out = run([sys.executable, "-c", "import srlab, sys; sys.stdout.write(srlab.__file__)"], timeout=120,
                  cwd=tempfile.gettempdir())
    return out.strip() if rc == 0 else None


def installed_pins() -> str:
    """Constraints holding every installed distribution at its version, so adding the missing
    requirements never upgrades or replaces what the environment has (pip fails instead, naming the clash)."""
    pins = {}
    for dist in metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        if name and version and name.lower() != "srlab":
            pins[name.lower()] = f"{name}=={version}"
    return "".join(f"{line}\n" for line in sorted(pins.values()))


def step_setup(args: argparse.Namespace) -> dict:
    result = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
              "torch_before": dist_version("torch"), "install_requested": args.install}
    if args.install:
        # --no-build-isolation: the machine may be offline, so setuptools comes from this environment.
        result["srlab_install"] = pip("install", "--no-deps", "--no-build-isolation", "-e", str(REPO), timeout=300)
    result["unmet_before"] = unmet_requirements()
    if args.install and result["unmet_before"]:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pin:
            pin.write(installed_pins())  # what the machine has, torch above all, stays as it is
        source = ["--no-index", "--find-links", args.wheelhouse] if args.wheelhouse else ["--retries", "1",
                                                                                          "--timeout", "15"]
        result["deps_install"] = pip("install", "-c", pin.name, *source,
                                     *(u["requirement"] for u in result["unmet_before"]), timeout=600)
        Path(pin.name).unlink()
    result["unmet_after"] = unmet_requirements()
    result["torch_after"] = dist_version("torch")
    result["torch_unchanged"] = result["torch_before"] == result["torch_after"]
    pkg = packaging_module()
    names = [pkg.requirements.Requirement(r).name for r in project_requirements()]
    result["versions"] = {name: dist_version(name) for name in ["srlab", *names]}
    result["srlab_imported_from"] = srlab_location()
    result["torch"] = torch_details()
    result["nvidia_smi"] = nvidia_smi()
    return result


# -- stand-in data ----------------------------------------------------------------------------------------
def square_crop(image, size: int, rng):
    import numpy as np

    size = min(size, *image.shape[:2])
    y = int(rng.integers(0, image.shape[0] - size + 1))
    x = int(rng.integers(0, image.shape[1] - size + 1))
    crop = np.rot90(image[y : y + size, x : x + size], k=int(rng.integers(0, 4)))
    return np.ascontiguousarray(crop[:, ::-1] if rng.integers(0, 2) else crop)


def step_data(args: argparse.Namespace) -> dict:
    """A DIV2K-layout folder of photo crops and, unless Set5 is found, a Set5 of the same shapes."""
    import numpy as np

    from srlab.data.io import read_image, write_image
    from srlab.data.sample import SAMPLE_TRAIN, SAMPLE_VAL, skimage_data_dir

    rng = np.random.default_rng(0)
    photos = [read_image(skimage_data_dir() / name) for name in (*SAMPLE_TRAIN, *SAMPLE_VAL)]
    root = Path(args.out) / "data"
    div2k_hr = root / "DIV2K" / "DIV2K_train_HR"
    div2k_hr.mkdir(parents=True, exist_ok=True)
    for number in range(1, args.images + 1):
        write_image(div2k_hr / f"{number:04d}.png", square_crop(photos[number % len(photos)], args.hr_size, rng))
    result = {"div2k_root": str(root / "DIV2K"), "div2k_images": args.images, "div2k_hr_size": args.hr_size}
    candidates = [Path(args.benchmark_root)] if args.benchmark_root else [REPO / "data" / "benchmark"]
    found = next((c for c in candidates if (c / "Set5").is_dir()), None)
    if found is not None:
        result.update(benchmark_root=str(found.resolve()), set5="found on disk")
        return result
    if args.benchmark_root:
        raise SystemExit(f"--benchmark-root {args.benchmark_root}: no Set5 folder in it")
    set5 = root / "benchmark" / "Set5" / "HR"
    set5.mkdir(parents=True, exist_ok=True)
    for i, (name, (width, height)) in enumerate(SET5_SIZES.items()):
        width, height = width // args.set5_shrink, height // args.set5_shrink
        photo = photos[(i + 3) % len(photos)]
        y, x = (int(rng.integers(0, photo.shape[k] - (height, width)[k] + 1)) for k in (0, 1))
        write_image(set5 / f"{name}.png", np.ascontiguousarray(photo[y : y + height, x : x + width]))
    result.update(benchmark_root=str(root / "benchmark"),
                  set5=f"stand-in: photo crops in Set5's shapes (divided by {args.set5_shrink})")
    return result


# -- training run: steady-state step time, data wait, GPU utilisation ---------------------------------------
def steady(values: list[float]) -> list[float]:
    """Drops the first 10% of steps (at least 5): cuDNN autotuning and worker start-up."""
    skip = max(5, len(values) // 10)
    return values[skip:] if len(values) > skip + 2 else values


def gpu_utilisation(smi_csv: Path) -> dict | None:
    """From `nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw -lms N`."""
    if not smi_csv.is_file():
        return None
    rows = []
    for line in smi_csv.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            rows.append((float(parts[1]), float(parts[3]), float(parts[4])))
        except (IndexError, ValueError):
            continue
    if not rows:
        return None
    busy = [i for i, row in enumerate(rows) if row[0] > 0]
    window = rows[busy[0] : busy[-1] + 1] if busy else rows
    util = [row[0] for row in window]
    return {"samples": len(rows), "busy_window_samples": len(window), "util_mean_pct": statistics.fmean(util),
            "util_median_pct": statistics.median(util),
            "share_of_samples_at_90pct_or_more": sum(u >= 90 for u in util) / len(util),
            "memory_used_max_mib": max(row[1] for row in rows), "power_max_w": max(row[2] for row in rows)}


def run_settings(run_dir: Path) -> dict | None:
    """The settings of the run that bear on its speed, from its resolved Hydra config."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    data, trainer, module = cfg.get("data", {}), cfg.get("trainer", {}), cfg.get("module", {})
    return {"scale": cfg.get("model", {}).get("scale"), "hr_patch": data.get("patch_size"),
            "batch": data.get("batch_size"), "num_workers": data.get("num_workers"), "cache": data.get("cache"),
            "precision": trainer.get("precision"), "channels_last": module.get("channels_last"),
            "compile": module.get("compile")}


def step_train_summary(args: argparse.Namespace) -> dict:
    run_dir, profile_dir = Path(args.run_dir), Path(args.profile_dir)
    durations = read_json(profile_dir / "fit-step-durations.json")
    config = run_settings(run_dir) or {}
    batch = args.batch or config.get("batch")
    result = {"run_dir": str(run_dir), "batch": batch, "profiler_report": str(profile_dir / "fit-profile.txt")}
    if not batch:
        raise SystemExit(f"{run_dir}: no .hydra/config.yaml with data.batch_size; pass --batch")
    if not durations or not durations.get("batch"):
        raise SystemExit(f"{profile_dir / 'fit-step-durations.json'}: no training-step durations (did the run train?)")
    batch_s, wait_s = durations["batch"], durations["data_wait"]
    steps = min(len(batch_s), len(wait_s))
    batch_ss, wait_ss = steady(batch_s[:steps]), steady(wait_s[:steps])
    periods = [b + w for b, w in zip(batch_ss, wait_ss)]
    result.update(
        steps=steps, steady_steps=len(periods),
        step_ms_median=statistics.median(batch_ss) * 1e3, data_wait_ms_median=statistics.median(wait_ss) * 1e3,
        data_wait_ms_max=max(wait_ss) * 1e3, data_wait_share=sum(wait_ss) / sum(periods),
        patches_per_s=batch / statistics.fmean(periods),
        first_step_s=batch_s[0] + wait_s[0],
    )
    result["gpu"] = gpu_utilisation(Path(args.smi_csv)) if args.smi_csv else None
    result["config"] = config or None
    metrics = read_json(run_dir / "metrics.json")
    result["metrics"] = metrics
    result["last_ckpt"] = str(run_dir / "checkpoints" / "last.ckpt")
    result["last_ckpt_exists"] = (run_dir / "checkpoints" / "last.ckpt").is_file()
    return result


# -- eval on GPU vs CPU ------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def step_eval_compare(args: argparse.Namespace) -> dict:
    dirs = {"gpu": Path(args.gpu_dir), "cpu": Path(args.cpu_dir)}
    results = {k: {(r["dataset"], r["scale"]): r for r in read_rows(d / "results.csv")} for k, d in dirs.items()}
    images = {k: {(r["dataset"], r["scale"], r["image"]): r for r in read_rows(d / "per_image.csv")}
              for k, d in dirs.items()}
    if not results["gpu"] or results["gpu"].keys() != results["cpu"].keys():
        raise SystemExit(f"results.csv rows differ: {sorted(results['gpu'])} vs {sorted(results['cpu'])}")
    rows = []
    for key, gpu in results["gpu"].items():
        cpu = results["cpu"][key]
        rows.append({"dataset": key[0], "scale": int(key[1]), "psnr_gpu": float(gpu["psnr"]),
                     "psnr_cpu": float(cpu["psnr"]), "ssim_gpu": float(gpu["ssim"]), "ssim_cpu": float(cpu["ssim"]),
                     "psnr_diff": abs(float(gpu["psnr"]) - float(cpu["psnr"]))})
    image_diffs = [abs(float(images["gpu"][k]["psnr"]) - float(images["cpu"][k]["psnr"])) for k in images["gpu"]
                   if k in images["cpu"]]
    worst = max(r["psnr_diff"] for r in rows)
    return {"rows": rows, "images": len(image_diffs), "max_image_psnr_diff": max(image_diffs, default=None),
            "max_psnr_diff": worst, "tolerance_db": 0.01, "same_to_0_01_db": worst <= 0.01}


# -- whole vs tiled inference memory -----------------------------------------------------------------------------
def step_tiled(args: argparse.Namespace) -> dict:
    import torch

    from srlab.eval.complexity import synchronize
    from srlab.eval.inference import super_resolve
    from srlab.models.hdsrnet import HDSRNet

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = HDSRNet(args.scale).to(device).eval()
    results = []
    for size in args.sizes:
        lr = torch.rand(1, 3, size, size, device=device) * 255
        outputs = {}
        for mode, tile in (("whole", None), ("tiled", args.tile)):
            entry = {"lr_size": size, "mode": mode, "tile": tile, "tile_overlap": args.tile_overlap}
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            try:
                with torch.inference_mode():
                    outputs[mode] = super_resolve(model, lr, args.scale, tile=tile, tile_overlap=args.tile_overlap)
                synchronize(device)
            except torch.cuda.OutOfMemoryError as err:
                entry["error"] = f"out of memory: {str(err).splitlines()[0]}"
                results.append(entry)
                continue
            entry["seconds"] = time.perf_counter() - start
            entry["peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if cuda else None
            results.append(entry)
        if len(outputs) == 2:
            diff = float((outputs["whole"] - outputs["tiled"]).abs().max())
            results[-1]["max_abs_diff_vs_whole"] = diff
        del outputs
    return {"device": str(device), "scale": args.scale, "dtype": "fp32", "runs": results,
            "peak_unit": "MiB above the model and input (torch.cuda.max_memory_allocated)" if cuda else None}


# -- dynamic vs dense convolution ------------------------------------------------------------------------------
def step_dynconv(args: argparse.Namespace) -> dict:
    import torch
    from torch import nn

    from srlab.eval.complexity import measure_latency
    from srlab.models.dynamic_conv import DynamicConv2d
    from srlab.utils.perf import autocast, channels_last_input, to_channels_last

    device = torch.device(args.device)
    torch.manual_seed(0)
    convs = {"dynamic": DynamicConv2d(64, 64, 3, num_kernels=4), "dense": nn.Conv2d(64, 64, 3, padding=1)}
    convs = {name: to_channels_last(conv.to(device)) for name, conv in convs.items()}
    shapes = {"train": (args.batch, args.train_size), "infer": (1, args.infer_size)}
    results = []
    for dtype in ("fp32", "bf16"):
        for task, (batch, size) in shapes.items():
            x = channels_last_input(torch.randn(batch, 64, size, size, device=device))
            entry = {"dtype": dtype, "task": task, "batch": batch, "size": size}
            for name, conv in convs.items():
                if task == "train":
                    inputs = x.detach().requires_grad_(True)

                    def call(conv=conv, inputs=inputs, dtype=dtype):
                        with autocast(device, dtype):
                            out = conv(inputs)
                        out.float().sum().backward()
                else:
                    def call(conv=conv, inputs=x, dtype=dtype):
                        with torch.inference_mode(), autocast(device, dtype):
                            conv(inputs)
                entry[f"{name}_ms"] = measure_latency(call, (), warmup=args.warmup, repeats=args.repeats,
                                                      device=device)["median_ms"]
            entry["dynamic_over_dense"] = entry["dynamic_ms"] / entry["dense_ms"]
            results.append(entry)
    return {"device": str(device), "channels": 64, "num_kernels": 4, "layout": "channels_last",
            "pass": "train: forward + backward; infer: forward", "runs": results}


# -- report --------------------------------------------------------------------------------------------------------
def read_status(out: Path) -> list[dict]:
    rows = []
    path = out / "status.tsv"
    if path.is_file():
        for line in path.read_text().splitlines():
            name, state, rc, seconds, cap, command = (line.split("\t") + [""] * 6)[:6]
            rows.append({"step": name, "state": state, "returncode": int(rc) if rc.lstrip("-").isdigit() else None,
                         "seconds": int(seconds) if seconds.isdigit() else None, "timeout_s": cap,
                         "command": command})
    return rows


def fmt(value, spec: str = ".1f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("meets" if ok else "misses")


def bench_mode(settings: dict) -> str:
    """How srlab ran: fp32 (TF32 convolutions on CUDA, cuDNN's default), bf16 autocast, + torch.compile."""
    precision = {"fp32": "fp32/TF32" if settings["device"].startswith("cuda") else "fp32",
                 "bf16": "bf16 autocast"}.get(settings["dtype"], settings["dtype"])
    return precision + (" + compile" if settings["compile"] else "")


def target_text(bound: str, ok: bool, on_target_shape: bool) -> str:
    """The target beside a measurement; the verdict only where the measurement is the target's own."""
    return f"{bound}: {verdict(ok)}" if on_target_shape else f"{bound} (for batch 64 of LR 64 on a GPU)"


def bench_rows(bench: dict) -> tuple[list[list[str]], list[list[str]]]:
    """Table rows from the benchmark JSON files: training (patches/s) and inference (ms)."""
    train, infer = [], []
    for name in BENCH_RUNS:
        report = bench.get(name)
        if not report:
            continue
        settings, mode = report["settings"], bench_mode(report["settings"])
        on_gpu = settings["device"].startswith("cuda")
        if report.get("train"):
            t, target = report["train"], ""
            if t["scale"] == 2 and settings["dtype"] == "bf16":
                target = target_text(f">= {TARGET_TRAIN_PATCHES_PER_S:,.0f}",
                                     t["srlab"]["patches_per_s"] >= TARGET_TRAIN_PATCHES_PER_S,
                                     on_gpu and t["batch"] == 64 and t["lr_patch"] == 64)
            train.append([f"x{t['scale']}, batch {t['batch']} of LR {t['lr_patch']}²", mode,
                          fmt(t["srlab"]["patches_per_s"], ",.0f"), fmt(t["baseline"]["patches_per_s"], ",.0f"),
                          f"{t['ratio']:.2f}x", fmt(t["srlab"]["median_ms"], ".2f"), target])
        infer_report = report.get("infer") or {}
        scale = infer_report.get("scale")
        for e in (e for e in infer_report.values() if isinstance(e, dict)):
            target = ""
            if e["output"] == 256 and scale == 4:
                target = f"<= {TARGET_INFER_MS:g} ms: {verdict(e['srlab']['median_ms'] <= TARGET_INFER_MS)}"
            infer.append([f"x{scale}, LR {e['input']}² -> {e['output']}²", mode, fmt(e["srlab"]["median_ms"], ".3f"),
                          fmt(e["baseline"]["median_ms"], ".3f"), target])
    return train, infer


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def install_section(setup: dict) -> list[str]:
    install = setup.get("srlab_install")
    state = "not run" if not install else ("ok" if install["ok"] else "failed (see logs/setup.log)")
    unmet = {k: [u["requirement"] for u in setup.get(k, [])] or "none" for k in ("unmet_before", "unmet_after")}
    torch_state = "unchanged" if setup.get("torch_unchanged") else "CHANGED"
    versions = ", ".join(f"{k} {v}" for k, v in (setup.get("versions") or {}).items())
    return [f"- `pip install --no-deps -e .`: {state}; srlab imported from {setup.get('srlab_imported_from')}",
            f"- torch before / after: {setup.get('torch_before')} / {setup.get('torch_after')} ({torch_state})",
            f"- requirements missing before: {unmet['unmet_before']}; after: {unmet['unmet_after']}",
            f"- versions: {versions}"]


def train_section(train: dict | None, loader: dict | None) -> list[str]:
    if not train:
        return ["no result"]
    gpu, cfg, share = train.get("gpu") or {}, train.get("config") or {}, train["data_wait_share"]
    lines = [f"- settings: x{cfg.get('scale')}, HR patch {cfg.get('hr_patch')}, batch {cfg.get('batch')}, "
             f"{cfg.get('num_workers')} loader workers, precision {cfg.get('precision')}, "
             f"channels_last {cfg.get('channels_last')}, compile {cfg.get('compile')}",
             f"- {train['steps']} steps ({train['steady_steps']} after warm-up), batch {train['batch']}: "
             f"step {train['step_ms_median']:.2f} ms median, data wait {train['data_wait_ms_median']:.3f} ms "
             f"median ({train['data_wait_ms_max']:.1f} ms at most), {train['patches_per_s']:,.0f} patches/s",
             f"- waiting for data: {share:.1%} of the steady-state time; target < {TARGET_DATA_WAIT_SHARE:.0%}: "
             f"{verdict(share < TARGET_DATA_WAIT_SHARE)}",
             f"- GPU utilisation (nvidia-smi while training): mean {fmt(gpu.get('util_mean_pct'))}%, median "
             f"{fmt(gpu.get('util_median_pct'))}%; memory used at most "
             f"{fmt(gpu.get('memory_used_max_mib'), '.0f')} MiB" if gpu else "- GPU utilisation: not sampled (no GPU)"]
    if loader:
        rate, workers = loader["patches_per_s_per_worker"], cfg.get("num_workers")
        lines.append(f"- loader alone (`srlab.bench --parts loader`, {loader['dataset']}, HR patch "
                     f"{loader['hr_patch']}): {rate:,.0f} patches/s from one worker")
        if workers:
            lines.append(f"- {workers} workers at that rate: {workers * rate:,.0f} patches/s, against the "
                         f"{train['patches_per_s']:,.0f} the training run consumed")
    return lines


def eval_section(ev: dict | None, set5: str | None, dry_run: bool) -> list[str]:
    if not ev:
        return ["no result"]
    lines = ["(Dry run: both runs on the CPU.)", ""] if dry_run else []
    same = "yes" if ev["same_to_0_01_db"] else "NO"
    lines += [f"Set5: {set5}. Same PSNR to 0.01 dB: {same} (largest difference {ev['max_psnr_diff']:.4f} dB; "
              f"per image {fmt(ev['max_image_psnr_diff'], '.4f')} dB).", ""]
    return lines + table(["set", "scale", "PSNR GPU", "PSNR CPU", "SSIM GPU", "SSIM CPU"],
                         [[r["dataset"], r["scale"], f"{r['psnr_gpu']:.4f}", f"{r['psnr_cpu']:.4f}",
                           f"{r['ssim_gpu']:.5f}", f"{r['ssim_cpu']:.5f}"] for r in ev["rows"]])


def tiled_section(tiled: dict | None) -> list[str]:
    if not tiled:
        return ["no result"]
    rows = []
    for r in tiled["runs"]:
        mode = r["mode"] + (f" (tile {r['tile']}, overlap {r['tile_overlap']})" if r["tile"] else "")
        seconds = r["error"] if "error" in r else fmt(r.get("seconds"), ".2f")
        rows.append([f"{r['lr_size']}²", mode, fmt(r.get("peak_mib"), ",.0f"), seconds,
                     fmt(r.get("max_abs_diff_vs_whole"), ".2e", "")])
    unit = tiled["peak_unit"] or "not measured on the CPU"
    return [f"HDSRNet x{tiled['scale']}, fp32, {tiled['device']}; peak: {unit}.", ""] + table(
        ["LR size", "mode", "peak MiB", "seconds", "largest difference from whole (0-255)"], rows)


def dynconv_section(dyn: dict | None) -> list[str]:
    if not dyn:
        return ["no result"]
    return table(["precision", "pass", "batch x size", "dynamic ms", "dense ms", "dynamic / dense"],
                 [[r["dtype"], r["task"], f"{r['batch']} x {r['size']}²", f"{r['dynamic_ms']:.3f}",
                   f"{r['dense_ms']:.3f}", f"{r['dynamic_over_dense']:.2f}"] for r in dyn["runs"]])


def render_markdown(report: dict) -> str:
    setup, data = report.get("setup") or {}, report.get("data") or {}
    torch_info = setup.get("torch", {})
    dry_run = report["mode"] != "gpu"
    lines = ["# srlab GPU check", ""]
    if dry_run:
        lines += ["**Dry run on the CPU with tiny sizes: it shows that every step runs; its timings measure "
                  "nothing.**", ""]
    lines += [f"Started {report['started']}, {report['seconds']} s in all. Device: {torch_info.get('device', 'CPU')}; "
              f"Python {setup.get('python')}; torch {torch_info.get('version')} (CUDA {torch_info.get('cuda')}, "
              f"cuDNN {torch_info.get('cudnn')}, cuDNN TF32 {torch_info.get('cudnn_allow_tf32')}).", ""]
    lines += ["## Steps", ""] + table(
        ["step", "state", "seconds", "timeout (s)"],
        [[s["step"], s["state"], fmt(s["seconds"], "d"), s["timeout_s"]] for s in report["steps"]])
    lines += ["", "## Install", ""] + install_section(setup)
    train_rows, infer_rows = bench_rows(report.get("bench", {}))
    lines += ["", "## Training throughput (`python -m srlab.bench`)", ""]
    if dry_run:
        lines += ["(Dry run: the compiled steps run with TORCH_COMPILE_DISABLE=1, i.e. eagerly.)", ""]
    lines += table(["shape", "srlab precision", "srlab patches/s", "authors' fp32 patches/s", "ratio",
                    "srlab ms/step", "target"], train_rows) if train_rows else ["no result"]
    lines += ["", "## Inference latency, batch 1 (`python -m srlab.bench`)", ""]
    lines += table(["shape", "srlab precision", "srlab ms", "authors' fp32 ms", "target"], infer_rows) \
        if infer_rows else ["no result"]
    loader = (report.get("bench", {}).get("loader") or {}).get("loader")
    lines += ["", "## Training run (`train.py`, Lightning's simple profiler)", ""]
    lines += train_section(report.get("train"), loader)
    lines += ["", "## Eval on GPU vs CPU (`eval.py`, Set5)", ""]
    lines += eval_section(report.get("eval"), data.get("set5"), dry_run)
    lines += ["", "## Whole vs tiled inference memory (`srlab.eval.inference.super_resolve`)", ""]
    lines += tiled_section(report.get("tiled"))
    lines += ["", "## Dynamic vs dense 3x3 convolution, 64 channels (`srlab.models.dynamic_conv`)", ""]
    lines += dynconv_section(report.get("dynconv"))
    return "\n".join(lines) + "\n"


def step_report(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    steps_dir = out / "steps"
    report = {"mode": args.mode, "started": args.started, "seconds": args.seconds, "steps": read_status(out),
              "targets": {"train_patches_per_s_x2_bf16": TARGET_TRAIN_PATCHES_PER_S, "infer_ms_x4_256": TARGET_INFER_MS,
                          "data_wait_share": TARGET_DATA_WAIT_SHARE}}
    for key in ("setup", "data", "train", "eval", "tiled", "dynconv"):
        report[key] = read_json(steps_dir / f"{key}.json")
    report["bench"] = {name: read_json(out / "bench" / f"{name}.json") for name in (*BENCH_RUNS, "loader")}
    write_json(out / "report.json", report)
    (out / "report.md").write_text(render_markdown(report))
    print(f"report: {out / 'report.md'} and {out / 'report.json'}")
    return {"written": [str(out / "report.json"), str(out / "report.md")]}


# -- command line ------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the check's output folder")
    sub = parser.add_subparsers(dest="step", required=True)
    setup = sub.add_parser("setup", help="versions; pip install --no-deps -e . and the missing non-torch deps")
    setup.add_argument("--install", action=argparse.BooleanOptionalAction, default=True)
    setup.add_argument("--wheelhouse", default=None, help="install missing deps offline from this folder of wheels")
    data = sub.add_parser("data", help="a DIV2K-layout stand-in and, unless found, a Set5 stand-in")
    data.add_argument("--images", type=int, default=32)
    data.add_argument("--hr-size", type=int, default=400)
    data.add_argument("--set5-shrink", type=int, default=1, help="divide Set5's sizes by this (dry run)")
    data.add_argument("--benchmark-root", default=None, help="a folder holding Set5/ (default: data/benchmark)")
    train = sub.add_parser("train-summary", help="step time, data wait and GPU use of the train.py run")
    train.add_argument("--run-dir", required=True)
    train.add_argument("--profile-dir", required=True)
    train.add_argument("--smi-csv", default=None)
    train.add_argument("--batch", type=int, default=None, help="default: the run's data.batch_size")
    ev = sub.add_parser("eval-compare", help="eval.py results on GPU vs CPU")
    ev.add_argument("--gpu-dir", required=True)
    ev.add_argument("--cpu-dir", required=True)
    tiled = sub.add_parser("tiled", help="peak memory of whole vs tiled inference")
    tiled.add_argument("--device", default="cuda")
    tiled.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    tiled.add_argument("--tile", type=int, default=200)
    tiled.add_argument("--tile-overlap", type=int, default=32)
    tiled.add_argument("--scale", type=int, default=2)
    dyn = sub.add_parser("dynconv", help="dynamic vs dense 3x3 convolution time")
    dyn.add_argument("--device", default="cuda")
    dyn.add_argument("--batch", type=int, default=64)
    dyn.add_argument("--train-size", type=int, default=64)
    dyn.add_argument("--infer-size", type=int, default=64)
    dyn.add_argument("--warmup", type=int, default=3)
    dyn.add_argument("--repeats", type=int, default=20)
    report = sub.add_parser("report", help="report.json and report.md from the steps' results")
    report.add_argument("--mode", choices=["gpu", "dry-run"], default="gpu")
    report.add_argument("--started", default="")
    report.add_argument("--seconds", type=int, default=0)
    return parser.parse_args(argv)


STEPS = {"setup": step_setup, "data": step_data, "train-summary": step_train_summary, "eval-compare": step_eval_compare,
         "tiled": step_tiled, "dynconv": step_dynconv, "report": step_report}
RESULT_NAMES = {"train-summary": "train", "eval-compare": "eval"}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = STEPS[args.step](args)
    if args.step != "report":
        write_json(Path(args.out) / "steps" / f"{RESULT_NAMES.get(args.step, args.step)}.json", result)
        print(json.dumps(result, indent=2, default=str)[-4000:])


if __name__ == "__main__":
    main()
