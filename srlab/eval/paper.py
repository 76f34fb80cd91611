"""The HDSRNet paper's Tables I-VII as data.

The numbers live in ``paper_tables.yaml`` next to this module (transcribed from
Tian et al., arXiv:2402.15704, see that file's header for its conventions).
This module only loads and indexes them:

- :func:`load_paper_tables` -- the whole file as a dict;
- :func:`paper_value` -- one (PSNR, SSIM) cell of Tables II-V by benchmark,
  scale and method;
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

__all__ = [
    "DATASETS",
    "SCALES",
    "TABLES",
    "canonical_dataset",
    "load_paper_tables",
    "paper_value",
    "table1_rows",
    "table_rows",
]

_RESOURCE = "paper_tables.yaml"
TABLES: tuple[str, ...] = tuple(f"table{i}" for i in range(1, 8))

# Canonical benchmark names (the spelling srlab's data code uses) and the table
# of the paper that reports each one.
_DATASET_TABLE: dict[str, str] = {
    "Set5": "table2",
    "Set14": "table3",
    "B100": "table4",
    "Urban100": "table5",
}
DATASETS: tuple[str, ...] = tuple(_DATASET_TABLE)
SCALES: tuple[int, ...] = (2, 3, 4)

# The paper itself writes "U100" and "BSD100 (B100)"; other SR code says
# "BSDS100". Keys are normalised by _norm().
_DATASET_ALIASES: dict[str, str] = {
    "set5": "Set5",
    "set14": "Set14",
    "b100": "B100",
    "bsd100": "B100",
    "bsds100": "B100",
    "urban100": "Urban100",
    "u100": "Urban100",
}

_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii")


def _norm(name: str) -> str:
    # Case, spaces, hyphens and underscores carry no meaning in a benchmark or
    # table name ("urban-100", "Table VI", "table_6"), so drop them.
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


def canonical_dataset(dataset: str) -> str:
    """Canonical name (Set5, Set14, B100, Urban100) of a benchmark or its alias.

    Raises ValueError, naming the valid datasets, for anything else.
    """
    canonical = _DATASET_ALIASES.get(_norm(str(dataset)))
    if canonical is None:
        raise ValueError(
            f"unknown dataset {dataset!r}: the paper's Tables II-V cover "
            f"{', '.join(DATASETS)} (aliases: U100 for Urban100, BSD100/BSDS100 for B100)"
        )
    return canonical


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
    "BSD100"); ``scale`` is 2, 3 or 4. Returns None where the paper has no
    number: a cell printed "-" or a method missing from that dataset's table
    (e.g. CSCN is not in Table V). A method that is in none of Tables II-V, an
    unknown dataset or a scale other than 2/3/4 raises ValueError.
    """
    table = _DATASET_TABLE[canonical_dataset(dataset)]
    # bool is an int subclass; True would otherwise be looked up as "x1".
    if isinstance(scale, bool) or scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: the paper reports x2, x3 and x4")
    data = _load()
    key = _norm(method)
    for row in data[table]["rows"]:
        if key in _row_names(row):
            cell = row[f"x{scale}"]
            if cell is None:
                return None
            return float(cell["psnr"]), float(cell["ssim"])
    # Distinguish "not reported on this benchmark" (None) from a typo (error).
    all_rows = [r for t in _DATASET_TABLE.values() for r in data[t]["rows"]]
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
