"""A batch build killed with SIGKILL during phase 1 (sensor stages loading) and restarted ends
identical to the uninterrupted build, redoes only the unfinished phase-1 stores, and leaves
no hidden temporary store behind. (Phase 2: test_build_resume_distributed.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpp_cubes.batch import SENSORS, build_sites
from gpp_cubes.cube.store import _host, is_complete

from .compare import assert_same_store
from .conftest import build_kwargs
from .test_build_resume_distributed import RUNNER, _kill_once_complete, _sites

pytestmark = pytest.mark.slow


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_build_killed_in_phase_1_and_restarted_equals_uninterrupted(
        local_build, build_served, tmp_path):
    _, ref = local_build
    out = tmp_path / "killed"
    sites = _sites(build_served)
    phase1 = [out / ".work" / s / f"{sensor}.zarr" for s in sites for sensor in SENSORS]
    args = {"sites": sites, "out": str(out), **build_kwargs(build_served)}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(args)],
                            cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # One worker runs the phase-1 tasks one after the other: once the first store is
    # complete, the next sensor stage is loading.
    _kill_once_complete(proc, phase1, "phase 1")
    done = {p: (p / ".gpp-complete").read_text() for p in phase1 if is_complete(p)}
    assert 1 <= len(done) < len(phase1), f"not killed during phase 1: {len(done)} done"
    assert not any(is_complete(out / f"{s}.zarr") for s in [*sites, "features"])
    # A temporary left by a killed writer of a store the restart will skip: only the
    # clean-up at build start can remove it.
    kept = next(iter(done))
    stale = kept.parent / f".{kept.name}.tmp-0123abcd-{_dead_pid()}-{_host()}"
    (stale / "v").mkdir(parents=True)

    table = build_sites(sites, out, n_workers=2, **build_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    # the phase-1 stores finished before the kill were not redone
    assert {p: (p / ".gpp-complete").read_text() for p in done} == done
    assert all(is_complete(p) for p in phase1)
    assert sorted(out.rglob(".*.tmp-*")) == [] and sorted(out.rglob(".*.old-*")) == []
    for s in [*sites, "features"]:
        assert_same_store(ref / f"{s}.zarr", out / f"{s}.zarr")
