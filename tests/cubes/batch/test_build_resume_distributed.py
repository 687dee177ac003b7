"""A build killed midway and restarted, and a build on a separate Dask scheduler + workers,
both give exactly the stores of the uninterrupted local build."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from gpp_cubes.batch import build_sites
from gpp_cubes.cube.store import is_complete

from .compare import assert_same_store
from .conftest import build_kwargs, start_scheduler

pytestmark = pytest.mark.slow

RUNNER = """
import json, sys
from gpp_cubes.batch import build_sites
args = json.loads(sys.argv[1])
build_sites(args.pop("sites"), args.pop("out"), n_workers=1, **args)
"""


def _sites(served) -> list[str]:
    return [s.site_id for s in served.world.sites]


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _kill_once_complete(proc: subprocess.Popen, stores: list, what: str) -> None:
    """Kill ``proc``'s process group (client, scheduler, workers) at once, as a crash or an
    OOM kill would, as soon as one of ``stores`` is complete; ``what`` names the phase."""
    try:
        deadline = time.monotonic() + 240
        while not any(is_complete(p) for p in stores):
            assert proc.poll() is None, f"the build ended before {what} could be interrupted"
            assert time.monotonic() < deadline, f"{what} never wrote a store"
            time.sleep(0.005)
    finally:
        _kill_group(proc)


def test_build_killed_in_phase_2_and_restarted_equals_uninterrupted(
        local_build, build_served, tmp_path):
    _, ref = local_build
    out = tmp_path / "killed"
    sites = _sites(build_served)
    # Phase-1 results of all but the last site are already there (from an earlier run that
    # was killed after them): this run redoes phase 1 of one site only, then phase 2.
    for s in sites[:-1]:
        shutil.copytree(ref / ".work" / s, out / ".work" / s)
    args = {"sites": sites, "out": str(out), **build_kwargs(build_served)}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(args)],
                            cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stores = [out / f"{s}.zarr" for s in sites]
    # Phase 2 is under way once the first site store is complete.
    _kill_once_complete(proc, stores, "phase 2")
    done = [is_complete(p) for p in stores]
    assert 1 <= sum(done) < len(sites), f"not killed midway: {done}"
    assert not is_complete(out / "features.zarr")
    # nothing half-written looks complete
    for p in out.glob(".*.zarr.tmp-*"):
        assert not is_complete(p)
    # Phase 2 overlaps phase 1 (the cached sites are assembled once the PCA is fitted, while
    # the last site's other sensors still run), so some of its intermediates may be missing.
    phase1 = {p: (p / ".gpp-complete").read_text() for p in out.glob(".work/*/*.zarr")
              if is_complete(p)}
    assert len(phase1) >= 4 * (len(sites) - 1) + 1  # the cached ones and the last S2

    table = build_sites(sites, out, n_workers=2, **build_kwargs(build_served))
    expected = ["skipped" if d else "built" for d in done]
    assert list(table["status"]) == expected
    # complete intermediates were not redone; the missing ones were made
    assert {p: (p / ".gpp-complete").read_text() for p in phase1} == phase1
    assert len(list(out.glob(".work/*/*.zarr"))) == 4 * len(sites)
    for s in [*sites, "features"]:
        assert_same_store(ref / f"{s}.zarr", out / f"{s}.zarr")


def test_build_on_separate_scheduler_and_workers_equals_local(
        local_build, build_served, tmp_path):
    from distributed import Client

    _, ref = local_build
    for d in ("scheduler", "worker-cwd", "worker-local", "client"):
        (tmp_path / d).mkdir()
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("scheduler", "worker")}  # noqa: SIM115
    procs = []
    try:
        scheduler, addr = start_scheduler(lambda args: subprocess.Popen(
            args, cwd=tmp_path / "scheduler", start_new_session=True,
            stdout=logs["scheduler"], stderr=subprocess.STDOUT))
        procs.append(scheduler)
        procs.append(subprocess.Popen(
            ["dask", "worker", addr, "--host", "127.0.0.1", "--nworkers", "2", "--nthreads",
             "1", "--local-directory", str(tmp_path / "worker-local"), "--no-dashboard"],
            cwd=tmp_path / "worker-cwd", start_new_session=True,
            stdout=logs["worker"], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(addr, timeout=5) as c:
                    c.wait_for_workers(2, timeout=60)
                    cwds = set(c.run(os.getcwd).values())
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
                time.sleep(0.5)
        assert cwds == {str(tmp_path / "worker-cwd")}
        out = tmp_path / "client" / "cubes"
        table = build_sites(_sites(build_served), out, scheduler=addr,
                            **build_kwargs(build_served))
        assert (table["status"] == "built").all(), table.to_string()
        for s in [*_sites(build_served), "features"]:
            assert_same_store(ref / f"{s}.zarr", out / f"{s}.zarr")
        # the workers wrote nothing into their own working directory
        assert not any((tmp_path / "worker-cwd").iterdir())
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _kill_group(p)
        for f in logs.values():
            f.close()
