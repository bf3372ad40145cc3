"""exchange.durable: a replaced file holds the new bytes, the temporary name is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.durable import durable_replace, fsync_path


def test_durable_replace_puts_the_new_file_in_place(tmp_path: Path) -> None:
    final, tmp = tmp_path / "conf.json", tmp_path / ".conf.json.tmp"
    final.write_bytes(b"old")
    tmp.write_bytes(b"new")
    durable_replace(tmp, final)
    assert final.read_bytes() == b"new"
    assert not tmp.exists()


def test_fsync_of_a_missing_path_raises(tmp_path: Path) -> None:
    fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "missing")
