"""A planted Planetary Computer key never reaches logs, provenance or error messages of a
search/load run against the demo world (with gpp_cubes.secrets' redaction installed, as the
CLI does)."""

from __future__ import annotations

import json
import logging

import pytest

from gpp_cubes.errors import StacError
from gpp_cubes.secrets import install_redaction, uninstall_redaction
from gpp_cubes.sites.grid import site_grid
from gpp_cubes.stac.load import load_items
from gpp_cubes.stac.search import search_items

TOKEN = "plantedPCkey0123456789abcdefSECRET"


@pytest.fixture
def planted(monkeypatch):
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", TOKEN)
    install_redaction()
    yield TOKEN
    uninstall_redaction()


def test_token_absent_from_logs_provenance_and_errors(planted, served_demo, proxy_factory,
                                                     caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    s = served_demo.world.site("BE-Vie")
    grid = site_grid(s.latitude, s.longitude)
    # Planetary Computer provider (signs items with the key) against the local API
    items = search_items("sentinel-2-l2a", grid, "2019-06-01", "2019-07-31",
                         provider="planetary-computer", stac_url=served_demo.stac_url,
                         site_id="BE-Vie")
    # the token leaks into an href as a signed URL would carry it; the run must not repeat it
    items[0].assets["B04"].href += f"?st=2026&sig={planted}"
    ds = load_items(items, ["B04", "SCL"], grid, site_id="BE-Vie", max_failed_fraction=1.0)
    logging.getLogger("gpp_cubes.test").warning("using key %s", planted)
    errors = []
    with proxy_factory(served_demo.stac_url, "404", rate=1.0, match="/search") as proxy:
        try:
            search_items("sentinel-2-l2a", grid, "2019-06-01", "2019-07-31",
                         provider="planetary-computer", stac_url=proxy.url + f"?key={planted}",
                         site_id="BE-Vie")
        except StacError as err:
            errors.append(str(err))
    assert errors, "the failing search did not raise"
    from gpp_cubes.cube.store import write_zarr_atomic

    path = write_zarr_atomic(ds.isel(time=[0]).drop_vars("items"), tmp_path / "x.zarr",
                             provenance={"stac_items": json.loads(ds.attrs["stac_items"]),
                                         "dropped": json.loads(ds.attrs["dropped_items"]),
                                         "hrefs": [items[0].assets["B04"].href]})
    stored = "".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file()
                     and p.stat().st_size < 1_000_000)
    assert "using key" in caplog.text  # the records were captured
    for where, text in {"logs": caplog.text, "errors": " ".join(errors),
                        "attrs": json.dumps(ds.attrs), "store": stored}.items():
        assert planted not in text, where


def test_token_in_free_text_provenance_is_redacted(planted, tmp_path):
    import numpy as np
    import xarray as xr

    from gpp_cubes.cube.store import write_zarr_atomic

    ds = xr.Dataset({"v": ("t", np.zeros(3))})
    path = write_zarr_atomic(ds, tmp_path / "y.zarr", provenance={
        "summary": {"error": f"HTTP 403 with header Ocp-Apim-Subscription-Key: {planted}"},
        # a bare copy of the key (known from the environment), in a list of free texts
        "notes": [f"retried with {planted} twice", "n_items 12"]})
    with xr.open_zarr(path) as back:
        prov = json.loads(back.attrs["provenance"])
    assert planted not in back.attrs["provenance"]
    assert prov["summary"]["error"].startswith("HTTP 403 with header")  # the rest is kept
    assert prov["notes"] == ["retried with *** twice", "n_items 12"]
