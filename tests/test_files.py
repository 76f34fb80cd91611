"""srlab.utils.files: atomic writes leave the old file or the new one, never a partial one or a temporary file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from srlab.utils.files import atomic_open, atomic_write_bytes, atomic_write_text, temp_sibling, write_csv


def test_text_bytes_and_csv_round_trip(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "a" / "b.txt", "Δ ×2\n").read_text(encoding="utf-8") == "Δ ×2\n"
    assert atomic_write_bytes(tmp_path / "c.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    path = write_csv(tmp_path / "r.csv", [{"x": 1, "y": None}, {"x": "a,b"}], ["x", "y"])
    assert path.read_text() == 'x,y\n1,\n"a,b",\n'
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.txt", "c.bin", "r.csv"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError, match="serialisation failed"):
        with atomic_open(target) as fh:
            fh.write(b"half of the new")
            raise RuntimeError("serialisation failed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_failed_fsync_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic_write_text(tmp_path / "summary.csv", "old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.csv"]


def test_given_temporary_name_is_used_and_removed(tmp_path: Path) -> None:
    seen = []
    temp = tmp_path / ".x.partial"
    with atomic_open(tmp_path / "x", temp=temp) as fh:
        seen.append(temp.exists())
        fh.write(b"1")
    assert seen == [True] and not temp.exists() and (tmp_path / "x").read_bytes() == b"1"
    assert temp_sibling(tmp_path / "x").name.startswith(".x.") and temp_sibling(tmp_path / "x").parent == tmp_path
