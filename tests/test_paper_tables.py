"""The paper's Tables I-VII (srlab/eval/paper_tables.yaml) and their loader.

Spot values come from the paper's prose and docs/protocol.md, so a transcription slip
in the YAML fails here rather than in a report comparing against the paper.
"""

from __future__ import annotations

import fnmatch
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

from srlab.data.benchmark import canonical_benchmark
from srlab.eval import paper
from srlab.eval.paper import load_paper_tables, paper_value, table1_rows, table_rows

REPO = Path(__file__).resolve().parents[1]
PSNR_TABLES = ("table2", "table3", "table4", "table5")


# --- packaging ---------------------------------------------------------------


def test_yaml_is_a_package_resource():
    # Found through importlib.resources from the installed (editable) package,
    # which is how paper.py reads it.
    res = resources.files("srlab.eval").joinpath("paper_tables.yaml")
    assert res.is_file()
    assert "table7:" in res.read_text(encoding="utf-8")


def test_yaml_matches_the_package_data_glob():
    # A wheel only ships the YAML if pyproject's package-data pattern covers it.
    # Patterns apply relative to the package they are listed under; "*" lists them for every package.
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    package_data = cfg["tool"]["setuptools"]["package-data"]
    listed = [("srlab", "eval/paper_tables.yaml"), ("srlab.eval", "paper_tables.yaml"), ("*", "paper_tables.yaml")]
    assert any(fnmatch.fnmatch(path, p) for key, path in listed for p in package_data.get(key, []))


def test_load_is_cached_and_returns_copies():
    paper._load.cache_clear()
    first = load_paper_tables()
    first["table2"]["rows"].clear()
    second = load_paper_tables()
    assert paper._load.cache_info().misses == 1  # parsed once
    assert len(second["table2"]["rows"]) == 28  # the edit did not leak
    assert second["source"].startswith("Tian et al.")
    assert "2402.15704" in second["source"]
    assert set(paper.TABLES) <= set(second)


# --- spot values -------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, scale, expected",
    [
        ("Set5", 2, (33.66, 0.9299)),
        ("Set5", 3, (30.39, 0.8682)),
        ("Set5", 4, (28.42, 0.8104)),
        ("Set14", 2, (30.24, 0.8688)),
        ("Set14", 3, (27.55, 0.7742)),
        ("Set14", 4, (26.00, 0.7027)),
    ],
)
def test_bicubic_rows_match_design(dataset, scale, expected):
    assert paper_value(dataset, scale, "Bicubic") == expected


def test_hdsrnet_rows():
    assert paper_value("Set5", 2) == (37.95, 0.9604)
    assert paper_value("Set5", 4) == (32.15, 0.8927)
    assert paper_value("Set14", 3) == (30.27, 0.8412)
    assert paper_value("B100", 2) == (32.14, 0.8994)
    assert paper_value("B100", 4) == (27.55, 0.7357)
    assert paper_value("Urban100", 2) == (32.00, 0.9267)
    assert paper_value("Urban100", 3) == (28.02, 0.8493)
    assert paper_value("Urban100", 4) == (26.01, 0.7827)


def test_table1_rows_in_paper_order():
    rows = table1_rows()
    assert [r["variant"] for r in rows] == [
        "six_conv",
        "upper_plain",
        "upper_no_dynamic",
        "upper_no_dilated",
        "upper_conv_for_dilated",
        "upper_conv_for_dynamic",
        "upper",
        "no_lower_residual",
        "full",
    ]
    assert (rows[0]["psnr"], rows[0]["ssim"]) == (25.13, 0.7525)
    assert rows[0]["method"] == "A combination of six stacked Conv+ReLU and a CB"
    assert (rows[-1]["psnr"], rows[-1]["ssim"]) == (26.01, 0.7827)
    assert rows[-1]["method"] == "HDSRNet"
    tables = load_paper_tables()
    assert tables["table1"]["dataset"] == "Urban100"
    assert tables["table1"]["scale"] == 4


def test_table1_full_model_equals_table5_x4():
    # The same model on the same benchmark: the two tables must agree.
    full = table1_rows()[-1]
    assert (full["psnr"], full["ssim"]) == paper_value("U100", 4)


def test_table6_runtime_ms():
    t6 = load_paper_tables()["table6"]
    assert t6["unit"] == "ms"
    assert t6["scale"] == 4
    assert "RTX 3090" in t6["device"]
    rows = {r["method"]: r for r in t6["rows"]}
    assert list(rows) == ["VDSR", "CARN-M", "ACNet", "HDSRNet"]
    assert rows["HDSRNet"]["ours"] is True
    assert rows["HDSRNet"]["time_ms"] == {"256x256": 14.17, "512x512": 26.11}
    assert rows["VDSR"]["time_ms"] == {"256x256": 17.2, "512x512": 57.5}
    assert rows["CARN-M"]["time_ms"] == {"256x256": 15.9, "512x512": 19.9}
    assert rows["ACNet"]["time_ms"] == {"256x256": 18.38, "512x512": 75.79}


def test_table7_params_and_flops():
    t7 = load_paper_tables()["table7"]
    assert (t7["params_unit"], t7["flops_unit"]) == ("K", "G")
    assert t7["output_size"] == "1024x1024"
    rows = {r["method"]: r for r in t7["rows"]}
    assert list(rows) == ["DCLS", "ACNet", "HDSRNet"]
    h = rows["HDSRNet"]
    assert (h["params_k"], h["flops_g"]) == (1819, 110.99)
    assert (h["params_printed"], h["flops_printed"]) == ("1,819K", "110.99G")
    assert (rows["DCLS"]["params_k"], rows["DCLS"]["flops_g"]) == (13626, 498.18)
    assert (rows["ACNet"]["params_k"], rows["ACNet"]["flops_g"]) == (1357, 132.82)
    # The numeric and printed forms must say the same thing.
    for r in t7["rows"]:
        assert r["params_printed"] == f"{r['params_k']:,}K"
        assert r["flops_printed"] == f"{r['flops_g']:.2f}G"


# --- the prose of Section IV.E quotes differences that the tables must give ---


@pytest.mark.parametrize(
    "dataset, scale, rival, dpsnr, dssim",
    [
        ("Set5", 2, "IDN", 0.12, None),  # text's "0.004 SSIM" is 0.0004 in the table
        ("Set14", 4, "DSRCNN", 0.10, None),  # text's "0.003 SSIM" is 0.0003 in the table
        ("B100", 2, "DSRCNN", 0.09, 0.0016),
        ("U100", 4, "DSRCNN", 0.07, 0.0012),
    ],
)
def test_margins_quoted_in_the_text(dataset, scale, rival, dpsnr, dssim):
    ours, theirs = paper_value(dataset, scale), paper_value(dataset, scale, rival)
    assert ours[0] - theirs[0] == pytest.approx(dpsnr, abs=1e-9)
    if dssim is not None:
        assert ours[1] - theirs[1] == pytest.approx(dssim, abs=1e-9)


# --- structure of Tables II-V --------------------------------------------------


def test_row_counts():
    tables = load_paper_tables()
    counts = {t: len(tables[t]["rows"]) for t in paper.TABLES}
    assert counts == {
        "table1": 9,
        "table2": 28,
        "table3": 28,
        "table4": 27,
        "table5": 29,
        "table6": 4,
        "table7": 3,
    }


@pytest.mark.parametrize("table", PSNR_TABLES)
def test_bicubic_and_hdsrnet_have_all_scales(table):
    rows = {r["method"]: r for r in table_rows(table)}
    for method in ("Bicubic", "HDSRNet"):
        for s in ("x2", "x3", "x4"):
            assert rows[method][s] is not None, (table, method, s)
    assert rows["HDSRNet"]["ours"] is True
    # Exactly one row is the paper's own, and it is printed last.
    ours = [r for r in table_rows(table) if r.get("ours")]
    assert len(ours) == 1 and table_rows(table)[-1]["method"] == "HDSRNet"


@pytest.mark.parametrize("table", PSNR_TABLES)
def test_rows_are_well_formed_and_in_range(table):
    rows = table_rows(table)
    methods = [r["method"] for r in rows]
    assert len(set(methods)) == len(methods), "duplicate method row"
    for r in rows:
        assert set(r) >= {"method", "ref", "x2", "x3", "x4"}
        assert r["ref"] is None or isinstance(r["ref"], int)
        for s in ("x2", "x3", "x4"):
            cell = r[s]
            if cell is None:
                continue
            assert set(cell) == {"psnr", "ssim"}
            assert 20 <= cell["psnr"] <= 45, (table, r["method"], s)
            assert 0.5 <= cell["ssim"] <= 1, (table, r["method"], s)


def test_table1_in_range():
    for r in table1_rows():
        assert 20 <= r["psnr"] <= 45 and 0.5 <= r["ssim"] <= 1


def test_dataset_labels():
    tables = load_paper_tables()
    got = {t: (tables[t]["dataset"], tables[t]["dataset_printed"]) for t in PSNR_TABLES}
    assert got == {
        "table2": ("Set5", "Set5"),
        "table3": ("Set14", "Set14"),
        "table4": ("B100", "B100"),
        "table5": ("Urban100", "U100"),
    }


# --- lookups -------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("U100", "Urban100"),
        ("urban100", "Urban100"),
        ("BSD100", "B100"),
        ("B100", "B100"),
        ("bsds100", "B100"),
        ("set5", "Set5"),
        ("SET14", "Set14"),
    ],
)
def test_dataset_aliases(alias, canonical):
    assert canonical_benchmark(alias) == canonical
    assert paper_value(alias, 4) == paper_value(canonical, 4)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        paper_value("DIV2K", 2)
    msg = str(exc.value)
    assert "DIV2K" in msg
    for name in ("Set5", "Set14", "B100", "Urban100"):
        assert name in msg


def test_bad_scale_and_unknown_method():
    with pytest.raises(ValueError, match="scale"):
        paper_value("Set5", 8)
    with pytest.raises(ValueError, match="scale"):
        paper_value("Set5", True)
    with pytest.raises(ValueError, match="unknown method 'NotANet'") as exc:
        paper_value("Set5", 2, "NotANet")
    assert "SRCNN" in str(exc.value)


def test_missing_cells_are_none():
    assert paper_value("Set5", 3, "LapSRN") is None  # printed "-"
    assert paper_value("Set5", 2, "PGAN") is None
    assert paper_value("Set5", 4, "PGAN") == (31.03, 0.8798)
    assert paper_value("Urban100", 3, "ScSR") is None
    assert paper_value("Urban100", 2, "CSCN") is None  # no CSCN row in Table V
    assert paper_value("B100", 2, "RCN") is None  # no RCN row in Table IV


def test_method_names_as_printed():
    assert paper_value("Set5", 2, "SRCNN [3]") == paper_value("Set5", 2, "SRCNN") == (36.66, 0.9542)
    assert paper_value("Set5", 2, "HDSRNet (Ours)") == paper_value("Set5", 2)
    assert paper_value("Set14", 4, "A+") == (27.32, 0.7491)
    assert paper_value("Urban100", 4, "LESRCNN-S") == (25.78, 0.7739)


def test_table_name_forms():
    six = table_rows("table6")
    assert table_rows("VI") == table_rows("Table VI") == table_rows(6) == table_rows("6") == six
    assert table_rows("I") == table1_rows()
    with pytest.raises(ValueError, match="table1"):
        table_rows("table8")
    with pytest.raises(ValueError):
        table_rows("VIII")
