"""The one atomic-write helper: old or new content, never a truncated file or a leftover."""

from __future__ import annotations

import numpy as np
import pytest

from gpp_cubes.atomic import atomic_path, write_atomic


def test_write_atomic_replaces_text_and_bytes(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_atomic(target, "first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed midway")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_with_suffix_serves_numpy_save(tmp_path):
    target = tmp_path / "c.npy"
    with atomic_path(target, suffix=".npy") as tmp:
        np.save(tmp, np.arange(3.0))  # would append .npy to a name without it
    np.testing.assert_array_equal(np.load(target), [0.0, 1.0, 2.0])
    assert [p.name for p in tmp_path.iterdir()] == ["c.npy"]


def test_atomic_directory_swaps_in_and_keeps_the_old_one_on_failure(tmp_path):
    from gpp_cubes.atomic import atomic_directory

    target = tmp_path / "a.zarr"
    with atomic_directory(target) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("first")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("half")
        raise RuntimeError("killed midway")
    assert (target / "x").read_text() == "first"
    with atomic_directory(target) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("second")
    assert (target / "x").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.zarr"]  # no temporaries left
