"""Recoverable STAC API faults, injected by a proxy in front of the demo world's STAC API, must
not change what a search returns; unrecoverable ones must name the endpoint and the reason."""

from __future__ import annotations

import pytest

from gpp_cubes.errors import StacError
from gpp_cubes.sites.grid import site_grid
from gpp_cubes.stac.search import search_items

COLLECTION = "sentinel-2-l2a"
START, END = "2018-01-01", "2020-12-31"


@pytest.fixture(scope="module")
def grid(served_demo):
    s = served_demo.world.site("DE-Hai")
    return site_grid(s.latitude, s.longitude)


@pytest.fixture(scope="module")
def reference_ids(served_demo, grid) -> list[str]:
    items = search_items(COLLECTION, grid, START, END, provider="custom",
                         stac_url=served_demo.stac_url)
    return [it.id for it in items]


def _search(url: str, grid) -> list[str]:
    return [it.id for it in search_items(COLLECTION, grid, START, END, provider="custom",
                                         stac_url=url)]


def test_reference_search_sees_the_generated_items(served_demo, reference_ids):
    truth = served_demo.world.truth.s2_scenes
    expected = truth.loc[truth["site"] == "DE-Hai", "item_id"]
    assert sorted(reference_ids) == sorted(expected) and len(reference_ids) > 20


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504", "drop", "timeout"])
def test_recoverable_fault_gives_identical_items(fault, served_demo, grid, reference_ids,
                                                 proxy_factory):
    # rate 0.5: about half of the requests (landing page, conformance, each POST page) fail
    # once; timeout = the server hangs 1 s, then closes the connection.
    with proxy_factory(served_demo.stac_url, fault, rate=0.5, timeout_s=1.0) as proxy:
        got = _search(proxy.url, grid)
        injected = proxy.faults()
    assert got == reference_ids
    assert injected and {f["fault"] for f in injected} == {fault}
    assert any(f["key"].startswith("POST /search") for f in injected), \
        "no fault hit the POST search itself"


def test_every_request_failing_twice_with_mixed_faults(served_demo, grid, reference_ids,
                                                       proxy_factory):
    with proxy_factory(served_demo.stac_url, "500,502,503,504,drop", rate=1.0,
                       times=2) as proxy:
        got = _search(proxy.url, grid)
        injected = proxy.faults()
    assert got == reference_ids
    keys = {f["key"] for f in injected}
    assert len(injected) == 2 * len(keys) and len(keys) >= 3  # each request failed twice


def test_connection_reset_mid_page_gives_identical_items(served_demo, grid, reference_ids,
                                                         proxy_factory):
    with proxy_factory(served_demo.stac_url, "reset-body", rate=0.5) as proxy:
        got = _search(proxy.url, grid)
        injected = proxy.faults()
    assert got == reference_ids
    assert any(f["key"].startswith("POST /search") for f in injected), \
        "no page of the POST search was cut"


def test_every_page_cut_twice_gives_identical_items(served_demo, grid, reference_ids,
                                                    proxy_factory, monkeypatch):
    import gpp_cubes.stac.providers as providers

    fast = providers.stac_io_with_retries  # default attempts, short backoff (test speed)
    monkeypatch.setattr("gpp_cubes.stac.search.stac_io_with_retries",
                        lambda **kw: fast(backoff_factor=0.05))
    with proxy_factory(served_demo.stac_url, "reset-body", rate=1.0, times=2,
                       match="/search") as proxy:
        got = _search(proxy.url, grid)
        injected = proxy.faults()
    keys = {f["key"] for f in injected}
    assert got == reference_ids
    assert len(injected) == 2 * len(keys) and len(keys) >= 2  # every page, twice


def test_reset_mid_page_beyond_retries_is_a_clear_stac_error_not_a_short_list(
        served_demo, grid, proxy_factory, monkeypatch):
    """A page that stays cut after every retry fails the search, never returns fewer items."""
    import gpp_cubes.stac.providers as providers

    # Few, fast retries: the proxy cuts the first page on each of its 3 attempts.
    fast = providers.stac_io_with_retries
    monkeypatch.setattr("gpp_cubes.stac.search.stac_io_with_retries",
                        lambda **kw: fast(total=2, backoff_factor=0.01))
    with proxy_factory(served_demo.stac_url, "reset-body", rate=1.0, times=100,
                       match="/search") as proxy:
        with pytest.raises(StacError, match=r"STAC search of 'sentinel-2-l2a' at http://127"
                           r".* failed \(no complete answer\)"):
            _search(proxy.url, grid)
        assert len(proxy.faults()) == 3  # the first try and 2 retries of the first page


def test_permanent_error_names_endpoint_and_collection(served_demo, grid, proxy_factory):
    with (proxy_factory(served_demo.stac_url, "404", rate=1.0, match="/search") as proxy,
          pytest.raises(StacError) as err):
        _search(proxy.url, grid)
    msg = str(err.value)
    assert proxy.url in msg and "'sentinel-2-l2a'" in msg and "601716/5659658" in msg


def test_permanent_error_names_the_http_status(served_demo, grid, proxy_factory):
    with (proxy_factory(served_demo.stac_url, "404", rate=1.0, match="/search") as proxy,
          pytest.raises(StacError, match=r"failed \(HTTP 404\)")):
        _search(proxy.url, grid)
