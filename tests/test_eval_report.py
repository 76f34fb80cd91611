"""report=paper renders the paper's tables from real runs; Table I, VI and VII pieces on their own."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch.utils.data import DataLoader

from srlab.eval.complexity import complexity_table, count_flops, measure_latency, runtime_table
from srlab.eval.paper import paper_value, table1_rows
from srlab.eval.report import Table, collect_table1, to_latex
from srlab.models.bicubic import Bicubic
from srlab.models.hdsrnet import VARIANTS, HDSRNet
from srlab.module import SRModule
from srlab.tasks.evaluate import evaluate
from tests.train_runs import write_hr_set

REPO = Path(__file__).resolve().parents[1]
TINY_HDSRNET = {"_target_": "srlab.models.hdsrnet.HDSRNet", "channels": 4, "num_blocks": 1, "lower_depth": 2}


def tiny_checkpoint(path: Path, scale: int) -> Path:
    """A real SRModule checkpoint after one optimiser step (tiny HDSRNet: the pipeline is under test)."""
    module = SRModule(model={**TINY_HDSRNET, "scale": scale}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    batch = {"lr": torch.rand(3, 8, 8) * 255, "hr": torch.rand(3, 8 * scale, 8 * scale) * 255}
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=1))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    return {s: tiny_checkpoint(folder / f"x{s}.ckpt", s) for s in (2, 3, 4)}


@pytest.fixture(scope="module")
def four_set_root(tmp_path_factory, benchmark_root) -> Path:
    """The real Set5 and Set14 (benchmark_root); B100 and Urban100 as two generated HR images each (LR by srlab)."""
    root = tmp_path_factory.mktemp("benchmark")
    for name in ("Set5", "Set14"):
        (root / name).symlink_to(benchmark_root / name, target_is_directory=True)
    write_hr_set(root / "B100", ("a", "b"), size=(36, 48), seed=0)
    write_hr_set(root / "Urban100", ("a", "b"), size=(60, 48), seed=1)
    return root


def compose_eval(overrides: list[str], output_dir: Path):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=[*overrides, f"paths.output_dir={output_dir}", "device=cpu"])


def best_from_metrics(run_dir: Path) -> tuple[float, float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/psnr")]
    best = max(rows, key=lambda r: float(r["val/psnr"]))
    return float(best["val/psnr"]), float(best["val/ssim"])


# Tables II-V: each set's paper table (paper facts: Set5 is Table II, ..., Urban100 Table V).
SET_TABLES = {"Set5": "table2", "Set14": "table3", "B100": "table4", "Urban100": "table5"}
SRLAB_ROWS = ("HDSRNet (srlab, measured)", "Bicubic (srlab, measured)", "Δ HDSRNet (srlab) − HDSRNet (paper)")


def read_table_csv(path: Path) -> dict[str, list[str]]:
    """{method cell: the ×2, ×3, ×4 cells} of a rendered Table II-V CSV."""
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["Dataset", "Methods", "×2", "×3", "×4"]
    return {row[1]: row[2:] for row in rows}


@pytest.mark.slow
def test_report_paper_renders_all_tables_from_real_runs(checkpoints, table1_sweep, four_set_root, tmp_path):
    ckpts = ",".join(f"{s}:'{p}'" for s, p in checkpoints.items())
    cfg = compose_eval(["report=paper", f"ckpt_path={{{ckpts}}}", "datasets=[Set5,Set14,B100,Urban100]",
                        f"benchmark_root={four_set_root}", f"report.table1_dir={table1_sweep}",
                        "report.runtime.warmup=0", "report.runtime.repeats=1"], tmp_path)
    # Table VI at the paper's sizes (256x256, 512x512 outputs) with models that time in milliseconds.
    with open_dict(cfg):
        cfg.report.runtime.models = {"HDSRNet": TINY_HDSRNET, "Bicubic": {"_target_": "srlab.models.bicubic.Bicubic"}}
    assert list(cfg.report.runtime.sizes) == [256, 512]
    assert evaluate(cfg) == 0

    with open(tmp_path / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert list(results[0]) == ["model", "dataset", "scale", "psnr", "ssim", "paper_psnr", "paper_ssim"]
    assert sorted((r["model"], r["dataset"], r["scale"]) for r in results) == sorted(
        (m, d, str(s)) for m in ("HDSRNet", "Bicubic") for d in SET_TABLES for s in (2, 3, 4))
    measured = {(r["model"], r["dataset"], int(r["scale"])): (float(r["psnr"]), float(r["ssim"])) for r in results}
    assert float(next(r for r in results if r["model"] == "HDSRNet" and r["scale"] == "2")["paper_psnr"]) == 37.95

    tables = tmp_path / "tables"
    for name in ("table1", *SET_TABLES.values(), "table6", "table7"):
        for suffix in ("md", "csv", "tex"):
            assert (tables / f"{name}.{suffix}").stat().st_size > 0, f"{name}.{suffix}"
    for dataset, name in SET_TABLES.items():
        rows = read_table_csv(tables / f"{name}.csv")
        markdown = (tables / f"{name}.md").read_text()
        for s, hdsrnet, bicubic, delta in zip((2, 3, 4), *(rows[label] for label in SRLAB_ROWS)):
            psnr, ssim = measured["HDSRNet", dataset, s]
            paper_psnr, paper_ssim = paper_value(dataset, s)
            expected = {
                hdsrnet: f"{psnr:.2f}/{ssim:.4f}",
                bicubic: "{:.2f}/{:.4f}".format(*measured["Bicubic", dataset, s]),
                delta: f"{psnr - paper_psnr:+.2f}/{ssim - paper_ssim:+.4f}",
            }
            for cell, want in expected.items():
                assert cell == want, f"{name} x{s}: {cell} != {want}"
                assert f" {want} " in markdown
    table2 = (tables / "table2.md").read_text()
    for paper_cell in ("37.95/0.9604", "34.31/0.9263", "32.15/0.8927", "33.66/0.9299", "36.66/0.9542"):
        assert paper_cell in table2  # HDSRNet's, Bicubic's and SRCNN's paper numbers
    assert r"HDSRNet (srlab, measured)" in (tables / "table2.tex").read_text()
    assert r"\toprule" in (tables / "table2.tex").read_text()

    table1 = (tables / "table1.md").read_text()
    assert "25.13/0.7525" in table1 and "26.01/0.7827" in table1
    for entry in collect_table1(table1_sweep):
        row = next(line for line in table1.splitlines() if f"| {entry['variant']} |" in line)
        assert "{:.2f}/{:.4f}".format(*best_from_metrics(Path(entry["run_dir"]))) in row

    with open(tables / "table6.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header[-2:] == ["HDSRNet (srlab)", "Bicubic (srlab)"]
    assert [row[:5] for row in rows] == [["256 × 256", "17.2", "15.9", "18.38", "14.17"],
                                         ["512 × 512", "57.5", "19.9", "75.79", "26.11"]]
    assert all(float(ms) > 0 for row in rows for ms in row[5:])
    assert "1,966,208" in (tables / "table7.md").read_text()
    combined = (tables / "paper_tables.md").read_text()
    assert all(f"TABLE {n}:" in combined for n in ("I", "II", "III", "IV", "V", "VI", "VII"))
    first_images = {"Set5": "baby", "Set14": "baboon", "B100": "a", "Urban100": "a"}
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"{d}_x{s}_{image}.png" for d, image in first_images.items() for s in (2, 3, 4))


@pytest.mark.slow
def test_table1_takes_each_variants_best_validation_score(table1_sweep):
    entries = collect_table1(table1_sweep)
    assert [e["variant"] for e in entries] == list(VARIANTS)  # paper row order
    for entry in entries:
        run_dir = Path(entry["run_dir"])
        with open(run_dir / "csv" / "metrics.csv", newline="") as f:
            validations = [r for r in csv.DictReader(f) if r.get("val/psnr")]
        assert len(validations) == 2  # validated after each of the two steps: "best" is a choice
        assert (entry["psnr"], entry["ssim"]) == best_from_metrics(run_dir)
        assert entry["val_set"] == "Sample" and entry["scale"] == 4
    assert len(table1_rows()) == 9


def test_table7_counts_parameters_and_every_convolution():
    table, counts = complexity_table({"HDSRNet": lambda: HDSRNet(4)}, output_size=1024, scale=4)
    (hdsrnet,) = counts
    assert hdsrnet["params"] == 1_966_208
    with torch.device("meta"):
        model = HDSRNet(4)
    flops = count_flops(model, (1, 3, 256, 256))
    pixels = 256 * 256
    # One conv layer by hand: the upper head, 3 -> 64 channels, 3x3, at the 256x256 LR size; 2 FLOPs per MAC.
    assert flops.per_module["HDSRNet.upper.head.0"]["aten.convolution"] == 2 * 3 * 64 * 9 * pixels
    # The five dynamic convs run F.conv2d on aggregated 64x64x3x3 kernels: counted, as functional convs.
    assert flops.functional_conv == 5 * 2 * 64 * 64 * 9 * pixels
    assert flops.total == hdsrnet["flops"] > flops.functional_conv > 0
    # Without them the count is the paper's 110.99G (as MACs) within 0.3%.
    assert abs((flops.total - flops.functional_conv) / 2 / 1e9 - 110.99) / 110.99 < 0.003
    rows = {row[0]: row for row in table.rows}
    assert rows["HDSRNet (paper)"][1:] == ["1,819K", "110.99G"]
    assert rows["HDSRNet (srlab)"][1].startswith("1,966,208")


def test_table6_times_each_model_beside_the_paper():
    torch.manual_seed(0)
    table, measurements = runtime_table({"HDSRNet": HDSRNet(4, channels=4, num_blocks=1, lower_depth=2),
                                         "Bicubic": Bicubic(4)}, "cpu", sizes=(256,), warmup=0, repeats=1)
    assert [m["model"] for m in measurements] == ["HDSRNet", "Bicubic"]
    assert table.header[1:5] == ["VDSR (paper)", "CARN-M (paper)", "ACNet (paper)", "HDSRNet (paper)"]
    (row,) = table.rows
    assert row[:5] == ["256 × 256", "17.2", "15.9", "18.38", "14.17"]
    assert all(float(cell) > 0 for cell in row[5:])
    assert "CPU" in table.title and "RTX 3090" in " ".join(table.notes)


def test_measure_latency_warms_up_synchronises_and_reports_the_median():
    calls = []
    timing = measure_latency(lambda x: calls.append(x), torch.zeros(1), warmup=2, repeats=5, device="cpu")
    assert len(calls) == 7
    assert timing["repeats"] == 5 and timing["warmup"] == 2 and timing["device"].startswith("CPU")
    assert timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(lambda: None, (), repeats=0)


def test_latex_escapes_special_characters():
    tex = to_latex(Table("t", "A & B", ["x_1", "Δ"], [["50%", "×2"]], ["note #1"]))
    assert r"\caption{A \& B}" in tex and r"x\_1 & $\Delta$ \\" in tex and r"50\% & $\times$2 \\" in tex
    assert "% note \\#1" in tex
