"""Workers that share no disk with the client: a ``dask scheduler`` and two ``dask worker``
processes, each with its own working directory, HOME, TMPDIR and cache, build into S3 (moto's
server on 127.0.0.1) from inputs reachable by URL only (the demo world's STAC API and CORINE
over HTTP, the FLUXNET file in the bucket); the stores equal the local build's.

What a worker reads, and how it gets there: the STAC items and COGs over HTTP, the CORINE
raster by URL (GDAL's /vsicurl/), the FLUXNET daily file from object storage
(:func:`gpp_cubes.targets.fluxnet.find_fluxnet_file` lists the prefix), the PCA from the
output prefix; nothing by a path on the client's disk (every path field of the
``BuildConfig`` that travels to the workers is a URL, checked below).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from gpp_cubes.batch import BuildConfig, build_sites
from gpp_cubes.batch.logs import read_site_log
from gpp_cubes.demo.serve import stop_process_group
from gpp_cubes.storage import as_location

from .conftest import SITE, short_kwargs, start_scheduler

pytestmark = pytest.mark.slow

#: Provenance entries that name where the inputs and outputs are (paths here, URLs there):
#: the only differences allowed between the two builds.
WHERE = ("corine_source", "fluxnet_dir", "stac_url")


def _strip_where(obj):
    """``obj`` without creation times, fingerprints (they identify inputs by location) and
    the :data:`WHERE` entries, at any depth."""
    if isinstance(obj, dict):
        return {k: _strip_where(v) for k, v in obj.items()
                if k not in (*WHERE, "created", "fingerprint")}
    if isinstance(obj, list):
        return [_strip_where(v) for v in obj]
    return obj


def _assert_same_modulo_location(local: Path, url: str) -> None:
    with xr.open_zarr(local) as x, xr.open_zarr(url) as y:
        x, y = x.load(), y.load()
        assert sorted(x.variables) == sorted(y.variables)
        for name in x.variables:
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
            assert x[name].attrs == y[name].attrs, name
        assert ({k: v for k, v in x.attrs.items() if k != "provenance"}
                == {k: v for k, v in y.attrs.items() if k != "provenance"})
        px, py = (json.loads(d.attrs["provenance"]) for d in (x, y))
        assert _strip_where(px) == _strip_where(py)


def _start(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    """A process in its own session, working directory, HOME, TMPDIR and cache."""
    for d in ("cwd", "home", "tmp", "cache"):
        (root / d).mkdir(parents=True)
    own = {**env, "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
           "XDG_CACHE_HOME": str(root / "cache"), "GPP_CUBES_CACHE": str(root / "cache/gpp"),
           "DASK_TEMPORARY_DIRECTORY": str(root / "tmp")}
    log = open(root / "process.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, cwd=root / "cwd", env=own, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def test_workers_without_shared_disk_build_into_s3_like_a_local_cluster(
        base, build_served, s3_server, tmp_path):
    from distributed import Client

    bucket = s3_server.create_bucket()
    world = build_served.world
    fluxnet = as_location(f"{bucket}/inputs/fluxnet")
    flux_file = world.fluxnet_path(SITE)
    (fluxnet / flux_file.name).write_bytes(flux_file.read_bytes())
    kwargs = short_kwargs(build_served,
                          corine_source=f"{build_served.files_url}/corine/CLC2018_demo.vrt",
                          fluxnet_dir=str(fluxnet))
    out = f"{bucket}/cubes"
    cfg = BuildConfig.create(out, **{k: kwargs[k] for k in ("corine_source", "fluxnet_dir",
                                                             "stac_url")})
    assert all("://" in str(v) for v in (cfg.out_dir, cfg.corine_source, cfg.fluxnet_dir,
                                         cfg.stac_url))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "GPP_"))}
    attempt = iter(range(100))
    scheduler, addr = start_scheduler(
        lambda args: _start(args, tmp_path / f"scheduler-{next(attempt)}", env))
    procs = [scheduler]
    try:
        for name in ("w1", "w2"):
            root = tmp_path / name
            procs.append(_start(["dask", "worker", addr, "--host", "127.0.0.1", "--name", name,
                                 "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                 "--local-directory", str(root / "tmp")], root, env))
        deadline = time.monotonic() + 90
        while True:
            try:
                with Client(addr, timeout=5) as c:
                    c.wait_for_workers(2, timeout=90)
                    homes = c.run(lambda: (os.getcwd(), os.environ["HOME"]))
                break
            except OSError:
                assert time.monotonic() < deadline, (
                    tmp_path / "scheduler-0" / "process.log").read_text()
                time.sleep(0.5)
        assert sorted(homes.values()) == [(str(tmp_path / n / "cwd"), str(tmp_path / n / "home"))
                                          for n in ("w1", "w2")]

        table = build_sites([SITE], out, scheduler=addr, **kwargs)
        assert list(table["status"]) == ["built"], table.to_string()
    finally:
        for p in reversed(procs):
            stop_process_group(p, timeout=20)

    for name in (f"{SITE}.zarr", "features.zarr"):
        _assert_same_modulo_location(base / name, f"{out}/{name}")
    assert "stage write done" in read_site_log(cfg.log_path(SITE))
    # nothing was written to the workers' working directories, nor left in their TMPDIR
    # but Dask's own scratch space
    for name in ("w1", "w2"):
        assert not any((tmp_path / name / "cwd").iterdir())
        left = [p.name for p in (tmp_path / name / "tmp").iterdir()]
        assert all(n.startswith("dask-scratch-space") for n in left), left
