"""The HDSRNet paper's Tables I-VII as data.

The numbers live in ``paper_tables.yaml`` next to this module (transcribed from
Tian et al., arXiv:2402.15704, see that file's header for its conventions).
This module only loads and indexes them:

- :func:`load_paper_tables` -- the whole file as a dict;
- :func:`paper_value` -- one (PSNR, SSIM) cell of Tables II-V by benchmark,
  scale and method; :func:`dataset_table` -- which of them reports a benchmark;
- :func:`table1_rows` -- the U100 x4 ablation (Table I), in paper order;
- :func:`table_rows` -- the rows of any table, named ``"table6"``, ``"VI"``, ``6``...

Example::

    >>> paper_value("U100", 4)
    (26.01, 0.7827)
    >>> paper_value("Set5", 2, "Bicubic")
    (33.66, 0.9299)
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

from srlab.data.benchmark import canonical_benchmark

__all__ = [
    "TABLES",
    "dataset_table",
    "load_paper_tables",
    "paper_value",
    "roman_numeral",
    "table1_rows",
    "table_rows",
]

_RESOURCE = "paper_tables.yaml"
TABLES: tuple[str, ...] = tuple(f"table{i}" for i in range(1, 8))
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii")


def _norm(name: str) -> str:
    # Case, spaces, hyphens and underscores carry no meaning in a method or
    # table name ("LESRCNN-S", "Table VI", "table_6"), so drop them.
    return "".join(ch for ch in name.casefold() if ch not in " -_")


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    # importlib.resources (not a path relative to __file__) so the file is found
    # from a wheel, a zipped install and the editable install alike; pyproject's
    # package-data glob "**/*.yaml" ships it.
    text = resources.files("srlab.eval").joinpath(_RESOURCE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    missing = [t for t in TABLES if not isinstance(data.get(t), dict) or "rows" not in data[t]]
    if missing:
        raise RuntimeError(f"{_RESOURCE} is missing tables or their rows: {missing}")
    return data


def load_paper_tables() -> dict[str, Any]:
    """All of ``paper_tables.yaml`` (keys ``source``, ``table1`` ... ``table7``).

    The file is parsed once; each call returns a deep copy so a caller that
    edits its result cannot change what the next caller sees.
    """
    return copy.deepcopy(_load())


def _benchmark_tables() -> dict[str, str]:
    # {canonical set: table key} for Tables II-V, the tables with per-scale cells (their `scales` field).
    data = _load()
    return {data[t]["dataset"]: t for t in TABLES if "scales" in data[t]}


def dataset_table(dataset: str) -> str:
    """The key (``table2`` ... ``table5``) of the paper's table for a benchmark set or its alias.

    Raises ValueError for an unknown set, or a known one the paper does not report.
    """
    canonical = canonical_benchmark(dataset)
    tables = _benchmark_tables()
    if canonical not in tables:
        raise ValueError(f"the paper's Tables II-V do not report {canonical}; they cover {', '.join(tables)}")
    return tables[canonical]


def roman_numeral(table: str | int) -> str:
    """How the paper numbers a table: ``"table5"`` -> ``"V"``."""
    return _ROMAN[int(_table_key(table).removeprefix("table")) - 1].upper()


def _row_names(row: dict[str, Any]) -> set[str]:
    # A row answers to its bare name ("SRCNN") and to the cell as printed
    # ("SRCNN [3]", "HDSRNet (Ours)"), so either can be pasted from the paper.
    names = {_norm(row["method"])}
    if row.get("ours"):
        names.add(_norm(f"{row['method']} (Ours)"))
    if row.get("ref") is not None:
        names.add(_norm(f"{row['method']} [{row['ref']}]"))
    return names


def paper_value(dataset: str, scale: int, method: str = "HDSRNet") -> tuple[float, float] | None:
    """(PSNR dB, SSIM) the paper reports for ``method`` on ``dataset`` at ``scale``.

    ``dataset`` is Set5, Set14, B100 or Urban100 (or an alias such as "U100",
    "BSD100"); ``scale`` one the table reports (2, 3 or 4). Returns None where
    the paper has no number: a cell printed "-" or a method missing from that
    dataset's table (e.g. CSCN is not in Table V). A method that is in none of
    Tables II-V, an unknown dataset or another scale raises ValueError.
    """
    table = _load()[dataset_table(dataset)]
    # bool is an int subclass; True would otherwise be looked up as "x1".
    if isinstance(scale, bool) or scale not in table["scales"]:
        raise ValueError(
            f"unknown scale {scale!r}: the paper reports " + ", ".join(f"x{s}" for s in table["scales"])
        )
    key = _norm(method)
    for row in table["rows"]:
        if key in _row_names(row):
            cell = row[f"x{scale}"]
            if cell is None:
                return None
            return float(cell["psnr"]), float(cell["ssim"])
    # Distinguish "not reported on this benchmark" (None) from a typo (error).
    all_rows = [r for t in _benchmark_tables().values() for r in _load()[t]["rows"]]
    if any(key in _row_names(r) for r in all_rows):
        return None
    known = sorted({r["method"] for r in all_rows})
    raise ValueError(f"unknown method {method!r}; Tables II-V list: {', '.join(known)}")


def _table_key(table: str | int) -> str:
    # Accept "table6", "Table VI", "VI", "6" and 6: the paper names tables in
    # Roman numerals, code tends to use the YAML keys.
    if isinstance(table, int) and not isinstance(table, bool):
        key = str(table)
    else:
        key = _norm(str(table))
        key = key.removeprefix("table")
    if key in _ROMAN:
        key = str(_ROMAN.index(key) + 1)
    if key.isdigit() and f"table{int(key)}" in TABLES:
        return f"table{int(key)}"
    raise ValueError(f"unknown table {table!r}; valid: {', '.join(TABLES)} (or I-VII)")


def table_rows(table: str | int) -> list[dict[str, Any]]:
    """Rows of one table in paper order (copies; see paper_tables.yaml for the fields)."""
    return copy.deepcopy(_load()[_table_key(table)]["rows"])


def table1_rows() -> list[dict[str, Any]]:
    """Table I (Urban100 x4 ablation): nine rows ``{variant, method, psnr, ssim}``.

    ``variant`` is srlab's config name for the row (six_conv ... full).
    """
    return table_rows("table1")
