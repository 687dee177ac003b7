"""Fixtures of the batch-build tests: the demo world served on 127.0.0.1 and one local build.

The builds use one year (2018) of the session's demo world so the whole directory stays
within a few minutes on 2 cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

BUILD_START, BUILD_END = "2018-01-01", "2018-12-31"
#: The short build that resume and option tests rerun: one site over three months keeps each
#: build to a few seconds on an in-process cluster.
SITE = "DE-Hai"
START, END = "2018-05-01", "2018-07-31"


@pytest.fixture(scope="session")
def build_served(served_demo):
    """The session's demo world, served on 127.0.0.1."""
    return served_demo


def build_kwargs(served) -> dict:
    """Arguments of :func:`gpp_cubes.batch.build_sites` for the served demo world."""
    w = served.world
    return {"start": BUILD_START, "end": BUILD_END, "provider": "custom",
            "stac_url": served.stac_url, "corine_source": str(w.corine_path),
            "fluxnet_dir": str(w.fluxnet_dir)}


@pytest.fixture(scope="session")
def local_build(build_served, tmp_path_factory):
    """An uninterrupted build of every demo site on a 2-worker LocalCluster."""
    from gpp_cubes.batch import build_sites

    out = tmp_path_factory.mktemp("local-build")
    sites = [s.site_id for s in build_served.world.sites]
    table = build_sites(sites, out, n_workers=2, **build_kwargs(build_served))
    return table, out


def short_kwargs(served, **changes) -> dict:
    """:func:`build_kwargs` for the short build, with ``changes`` applied."""
    return {**build_kwargs(served), "start": START, "end": END, **changes}


@pytest.fixture(scope="session")
def client():
    """One in-process worker with one thread: no process start per build."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail if a build tries to start a Dask cluster."""
    import gpp_cubes.batch.build as build

    def refuse(*args, **kwargs):
        raise AssertionError("the build started a Dask cluster")

    monkeypatch.setattr(build, "dask_client", refuse)


@pytest.fixture(scope="session")
def base(build_served, client, tmp_path_factory) -> Path:
    """A complete short build of one site; tests that rerun it work on a :func:`copy_build`."""
    from gpp_cubes.batch import build_sites

    out = tmp_path_factory.mktemp("short-build")
    table = build_sites([SITE], out, client=client, **short_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    return out


def copy_build(base: Path, tmp_path: Path) -> Path:
    """A copy of ``base`` (copy2: modification times are kept)."""
    out = tmp_path / "out"
    shutil.copytree(base, out)
    return out


def build_cli():
    """A Typer app with ``gpp build`` only, for ``CliRunner().invoke``."""
    import typer

    from gpp_cubes.cli.build_cmd import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass  # a callback keeps ``build`` a subcommand, as in ``gpp``

    register(app)
    return app


@pytest.fixture
def captured(monkeypatch):
    """build_sites replaced by a recorder: each call's sites and the BuildConfig it would make
    (so the options are checked as build_sites would check them); every site is "built"."""
    import pandas as pd

    import gpp_cubes.batch as batch
    from gpp_cubes.batch import BuildConfig
    from gpp_cubes.batch.build import TABLE_COLUMNS

    calls: list = []

    def fake(sites, out_dir, **kw):
        keep = ("start", "end", "s2_options", "qa", "radius_m", "train_years", "test_years",
                "pca_variance", "pca_components", "extremes_method", "lst_source",
                "protocol", "targets", "pca_from", "fluxnet_dir")
        calls.append((list(sites), BuildConfig.create(out_dir, **{k: kw[k] for k in keep})))
        # sites are ids, or Site objects for --at points
        return pd.DataFrame([{c: None for c in TABLE_COLUMNS} | {"site": getattr(s, "id", s),
                                                                   "status": "built"}
                             for s in sites])

    monkeypatch.setattr(batch, "build_sites", fake)
    return calls


def start_scheduler(start, *, attempts: int = 5):
    """A ``dask scheduler`` process listening on 127.0.0.1, and its address.

    ``start(args)`` starts the command (a ``subprocess.Popen``). A free port can be taken by
    another test between choosing it and binding it (the scheduler then exits with "address
    already in use"), so a scheduler that exits before it listens is retried on a new port.
    """
    from gpp_cubes.demo.serve import free_port, wait_for_port
    from gpp_cubes.errors import GppError

    for attempt in range(attempts):
        port = free_port()
        proc = start(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                      "--no-dashboard"])
        try:
            wait_for_port(port, proc, "dask scheduler", timeout=60)
        except GppError:
            if proc.poll() is None or attempt == attempts - 1:
                raise
            continue
        return proc, f"tcp://127.0.0.1:{port}"
    raise AssertionError("unreachable")
