"""Fixtures of the batch-build tests: the demo world served on 127.0.0.1 and one local build.

The builds use one year (2018) of the session's demo world so the whole directory stays
within a few minutes on 2 cores.
"""

from __future__ import annotations

import pytest

BUILD_START, BUILD_END = "2018-01-01", "2018-12-31"


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
