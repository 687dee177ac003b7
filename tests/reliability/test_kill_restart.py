"""A store write killed with SIGKILL never leaves a store that looks complete; the previous
store stays byte-identical; a restart ends identical to an uninterrupted write.

(The batch build killed during phase 2 and restarted is covered in
tests/cubes/batch/test_build_resume_distributed.py.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from gpp_cubes.cube.store import COMPLETE_MARKER, is_complete

# Writes a 40-chunk store whose chunks take 0.1 s each to compute (a slow COG read stands in),
# so a kill lands mid-write. argv: path, value offset, seconds per chunk.
WRITER = r"""
import sys, time
import dask, dask.array as da, numpy as np, xarray as xr
from gpp_cubes.cube.store import write_zarr_atomic
path, offset, pause = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def slow(block, block_info=None):
    time.sleep(pause)
    i = block_info[None]["chunk-location"][0]
    return np.full(block.shape, offset + i, dtype=np.float32)
data = da.zeros((40, 50, 50), chunks=(1, 50, 50), dtype=np.float32)
data = data.map_blocks(slow, dtype=np.float32)
ds = xr.Dataset({"v": (("time", "y", "x"), data)}, coords={"time": np.arange(40)})
with dask.config.set(scheduler="synchronous"):
    write_zarr_atomic(ds, path, provenance={"offset": offset})
"""


def _write(path: Path, offset: float, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(offset), str(pause)],
                            start_new_session=True)


def _digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def kill_when(proc: subprocess.Popen, under_way: Callable[[], bool], poll: float) -> None:
    """SIGKILL the writer ``proc``'s process group once ``under_way()`` holds (checked every
    ``poll`` s, for at most 60 s), failing if the writer ended first; reaped either way."""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if under_way():
                break
            time.sleep(poll)
        assert proc.poll() is None, "the writer finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)


def _kill_mid_write(path: Path, offset: float) -> None:
    def under_way() -> bool:  # the temporary store has its first chunks
        tmps = list(path.parent.glob(f".{path.name}.tmp-*"))
        return bool(tmps) and len(list(tmps[0].rglob("c/*"))) >= 3

    kill_when(_write(path, offset, pause=0.1), under_way, poll=0.02)


def _values(path: Path) -> tuple[np.ndarray, str]:
    with xr.open_zarr(path) as ds:
        return ds["v"].values, ds.attrs["provenance"]


def _temporaries(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.tmp-*")) + sorted(
        path.parent.glob(f".{path.name}.old-*"))


def test_killed_first_write_leaves_no_complete_store_and_restart_finishes(tmp_path):
    path = tmp_path / "SITE.zarr"
    _kill_mid_write(path, 0.0)
    assert not is_complete(path)
    assert not list(tmp_path.rglob(COMPLETE_MARKER))
    assert len(_temporaries(path)) == 1  # the killed writer's half-written store
    assert _write(path, 0.0).wait(timeout=120) == 0  # the restart
    assert _temporaries(path) == []  # ... removed it
    ref = tmp_path / "ref" / "SITE.zarr"
    assert _write(ref, 0.0).wait(timeout=120) == 0  # uninterrupted
    assert is_complete(path)
    (v, p), (rv, rp) = _values(path), _values(ref)
    np.testing.assert_array_equal(v, rv)
    assert p == rp
    assert v[:, 0, 0].tolist() == list(range(40))


def test_killed_rewrite_keeps_previous_store_byte_identical(tmp_path):
    path = tmp_path / "SITE.zarr"
    assert _write(path, 0.0).wait(timeout=120) == 0
    before = _digest(path)
    _kill_mid_write(path, 100.0)
    assert _digest(path) == before and is_complete(path)
    # only the previous store carries a marker; the half-written one is a hidden temporary
    assert list(tmp_path.rglob(COMPLETE_MARKER)) == [path / COMPLETE_MARKER]
    assert _write(path, 100.0).wait(timeout=120) == 0
    v, _ = _values(path)
    assert v[:, 0, 0].tolist() == [100.0 + i for i in range(40)]
    assert _temporaries(path) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_stale_temporaries_removed_live_and_foreign_ones_kept(tmp_path):
    from gpp_cubes.cube.store import _host, remove_stale_temporaries, write_zarr_atomic

    path = tmp_path / "SITE.zarr"
    other = tmp_path / "SITE.zarr2"  # another store whose name starts the same
    host, dead = _host(), _dead_pid()
    stale = [tmp_path / f".SITE.zarr.tmp-0123abcd-{dead}-{host}",
             tmp_path / ".SITE.zarr.tmp-89abcdef"]  # the name format before writer ids
    live = tmp_path / f".SITE.zarr.tmp-fedcba98-{os.getpid()}-{host}"  # this process
    foreign = [tmp_path / f".SITE.zarr2.tmp-0123abcd-{dead}-{host}", other]
    for p in [*stale, live, *foreign]:
        (p / "v").mkdir(parents=True)
    assert sorted(remove_stale_temporaries(path)) == sorted(stale)
    assert all(p.exists() for p in [live, *foreign]) and not any(p.exists() for p in stale)

    # a write killed between its two renames: only ".old-*" holds the previous store
    write_zarr_atomic(xr.Dataset({"v": ("t", np.arange(3.0))}), path, provenance={})
    aside = tmp_path / f".SITE.zarr.old-00ff00ff-{dead}-{host}"
    path.rename(aside)
    assert remove_stale_temporaries(path) == [] and is_complete(path)  # renamed back
    with xr.open_zarr(path) as ds:
        assert ds["v"].values.tolist() == [0.0, 1.0, 2.0]
    # ... and once the new store is in place, the leftover copy goes
    shutil.copytree(path, aside)
    assert remove_stale_temporaries(path) == [aside] and is_complete(path)
