"""COG read faults, injected by a proxy in front of the demo world's file server.

Item hrefs are rewritten by a second (fault-free) proxy in front of the STAC API, so the
search and the reads go the way they go against Planetary Computer: only the URL changes.
Recoverable faults must give values and used scenes identical to the fault-free load;
unrecoverable ones must drop the scene explicitly, name it and the reason, and fail the site
when too many scenes fail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pystac
import pytest

from gpp_cubes.errors import BuildError
from gpp_cubes.sites.grid import site_grid
from gpp_cubes.stac.load import compute_dropping_failures, load_items, load_report
from gpp_cubes.stac.search import search_items

from .conftest import Proxy

COLLECTION = "sentinel-2-l2a"
START, END = "2018-05-01", "2018-08-31"
BANDS = ["B04", "B8A", "SCL"]  # 10 m, 20 m and the integer class band


@pytest.fixture(scope="module")
def grid(served_demo):
    s = served_demo.world.site("DE-Hai")
    return site_grid(s.latitude, s.longitude)


@pytest.fixture(scope="module")
def reference(served_demo, grid):
    items = search_items(COLLECTION, grid, START, END, provider="custom",
                         stac_url=served_demo.stac_url)
    ds = load_items(items, BANDS, grid, site_id="DE-Hai").compute()
    assert ds.sizes["time"] >= 4 and not load_report(ds).dropped
    return items, ds


@contextmanager
def through_proxy(served, proxy_factory, fault: str, **kw) -> Iterator[tuple[list, Proxy]]:
    """Items found through a rewriting STAC proxy, hrefs pointing at a faulty file proxy."""
    with (proxy_factory(served.files_url, fault, **kw) as files,
          proxy_factory(served.stac_url, "none",
                        rewrite=[f"{served.files_url}/={files.url}/"]) as stac):
        yield stac.url, files


def _search(url: str, grid) -> list[pystac.Item]:
    return search_items(COLLECTION, grid, START, END, provider="custom", stac_url=url)


def _assert_same(ds, ref) -> None:
    assert list(ds["items"].values) == list(ref["items"].values)
    assert load_report(ds).used == load_report(ref).used
    for b in BANDS:
        np.testing.assert_array_equal(ds[b].values, ref[b].values, err_msg=b)


@pytest.mark.parametrize("fault", ["429", "500", "502", "503", "504", "drop", "timeout",
                                   "429,500,503,drop"])
def test_recoverable_read_fault_gives_identical_values(fault, served_demo, grid, reference,
                                                       proxy_factory):
    _, ref = reference
    with through_proxy(served_demo, proxy_factory, fault, rate=0.3, timeout_s=1.0) as (url, fp):
        items = _search(url, grid)
        assert all(fp.url in it.assets["B04"].href for it in items)
        ds = load_items(items, BANDS, grid, site_id="DE-Hai").compute()
        injected = fp.faults()
    assert injected, "no fault was injected"
    assert not load_report(ds).dropped
    _assert_same(ds, ref)


def test_reset_mid_body_is_explicit_never_silent(served_demo, grid, reference, proxy_factory,
                                                caplog):
    """A tile cut mid-body (GDAL does not retry it) may fail the load or drop scenes, but
    only explicitly: an error naming the file, or scenes listed as dropped with a reason;
    never a cube with silently missing pixels."""
    items_ref, ref = reference
    with through_proxy(served_demo, proxy_factory, "reset-body", rate=0.3) as (url, fp):
        items = _search(url, grid)
        try:
            ds = load_items(items, BANDS, grid, site_id="DE-Hai",
                            max_failed_fraction=1.0).compute()
        except Exception as err:  # failed loudly: the file is named in the error or the log
            faulty = {f["key"].split()[1].rsplit("/", 1)[1] for f in fp.faults()}
            said = str(err) + caplog.text
            assert any(name in said for name in faulty), said[-2000:]
            return
    rep = load_report(ds)
    assert sorted(rep.used + list(rep.dropped)) == sorted(it.id for it in items_ref)
    for iid, why in rep.dropped.items():
        assert "unreadable" in why or "missing" in why, (iid, why)
    keep = [i for i, ids in enumerate(ref["items"].values)
            if not set(str(ids).split()) & set(rep.dropped)]
    for b in BANDS:  # the scenes kept are exactly the fault-free ones
        np.testing.assert_array_equal(ds[b].values, ref[b].values[keep])


@pytest.mark.parametrize(("engine", "precheck"), [("odc", True), ("odc", False),
                                                  ("stackstac", False)],
                         ids=["checked", "odc-read-only", "stackstac-read-only"])
def test_reset_mid_body_recovered(engine, precheck, served_demo, grid, reference,
                                  proxy_factory, caplog):
    """Cut transfers are retried after clearing GDAL's cache of the URL: by the pre-check,
    and (precheck=False) by the odc-stac or stackstac read itself."""
    _, ref = reference
    caplog.set_level(logging.INFO, logger="gpp_cubes.stac.readers")
    with through_proxy(served_demo, proxy_factory, "reset-body", rate=0.3) as (url, fp):
        ds = load_items(_search(url, grid), BANDS, grid, site_id="DE-Hai", precheck=precheck,
                        engine=engine, max_failed_fraction=1.0).compute()
        cut = [f for f in fp.faults() if f["key"].startswith("GET ")]
    assert cut, "no transfer was cut"
    assert "retrying read of http://127.0.0.1" in caplog.text
    assert not load_report(ds).dropped
    _assert_same(ds, ref)


# ------------------------------------------------------------------ unrecoverable faults


def test_truncated_cog_dropped_by_load_items(served_demo, grid, reference, proxy_factory):
    items_ref, _ = reference
    name = items_ref[1].assets["B8A"].href.rsplit("/", 1)[1]
    with through_proxy(served_demo, proxy_factory, "truncate", rate=1.0, match=name) as (
            url, _fp):
        ds = load_items(_search(url, grid), BANDS, grid, site_id="DE-Hai",
                        max_failed_fraction=0.5).compute()
    assert list(load_report(ds).dropped) == [items_ref[1].id]


def test_truncated_cog_dropped_at_compute_without_precheck(served_demo, grid, reference,
                                                           proxy_factory, caplog):
    """compute_dropping_failures (S1 and LST: no pre-check) finds the failing time step
    only when a read fails, drops and names it, and keeps the others' values."""
    items_ref, ref = reference
    victim = items_ref[1]
    name = victim.assets["B8A"].href.rsplit("/", 1)[1]
    with through_proxy(served_demo, proxy_factory, "truncate", rate=1.0, match=name) as (
            url, _fp):
        lazy = load_items(_search(url, grid), BANDS, grid, site_id="DE-Hai", precheck="assets")
        assert not load_report(lazy).dropped  # nothing opened yet
        ds = compute_dropping_failures(lazy, site_id="DE-Hai", max_failed_fraction=0.5)
    rep = load_report(ds)
    assert list(rep.dropped) == [victim.id] and "unreadable" in rep.dropped[victim.id]
    assert victim.id in caplog.text and "DE-Hai" in caplog.text
    assert sorted(rep.used) == sorted(i.id for i in items_ref if i.id != victim.id)
    keep = [i for i, ids in enumerate(ref["items"].values) if victim.id not in str(ids)]
    for b in BANDS:
        np.testing.assert_array_equal(ds[b].values, ref[b].values[keep])
    # Too many failures fail the site, naming it and the item.
    with through_proxy(served_demo, proxy_factory, "truncate", rate=1.0, match="_B8A_") as (
            url, _fp), pytest.raises(BuildError) as err:
        compute_dropping_failures(load_items(_search(url, grid), BANDS, grid,
                                             site_id="DE-Hai", precheck="assets"),
                                  site_id="DE-Hai", max_failed_fraction=0.2)
    assert "DE-Hai" in str(err.value) and "unreadable" in str(err.value)


def _s2(url: str, tmp_path, **kw):
    from gpp_cubes.s2 import s2_features

    return s2_features("DE-Hai", START, END, provider="custom", stac_url=url,
                       cache_dir=tmp_path, **kw)


@pytest.fixture(scope="module")
def s2_reference(served_demo, tmp_path_factory):
    return _s2(served_demo.stac_url, tmp_path_factory.mktemp("mtd"))


def test_truncated_cog_dropped_named_and_counted_by_s2_features(
        served_demo, reference, s2_reference, proxy_factory, tmp_path):
    items_ref, _ = reference
    victim = items_ref[1]
    name = victim.assets["B8A"].href.rsplit("/", 1)[1]
    with through_proxy(served_demo, proxy_factory, "truncate", rate=1.0, match=name) as (
            url, fp):
        got = _s2(url, tmp_path, max_failed_fraction=0.5)
        assert fp.faults() and all(name in f["key"] for f in fp.faults())
    prov, ref_prov = json.loads(got.attrs["provenance"]), json.loads(s2_reference.attrs[
        "provenance"])
    assert list(prov["dropped_items"]) == [victim.id]
    assert prov["stac_items"] == [i for i in ref_prov["stac_items"] if i != victim.id]
    keep = [t for t in s2_reference.time.values if t in got.time.values]
    assert len(keep) == got.sizes["time"]
    for v in ("B04", "B8A", "NDVI") if "NDVI" in got else ("B04", "B8A"):
        np.testing.assert_array_equal(got[v].values, s2_reference[v].sel(time=keep).values)


def test_site_fails_when_too_many_scenes_are_truncated(served_demo, proxy_factory, tmp_path):
    with through_proxy(served_demo, proxy_factory, "truncate", rate=1.0, match="_B8A_") as (
            url, _fp), pytest.raises(BuildError) as err:
        _s2(url, tmp_path, max_failed_fraction=0.2)
    msg = str(err.value)
    # every scene failed: the site fails, naming itself and the reason
    assert "DE-Hai" in msg and ("scenes failed" in msg or "no readable" in msg), msg


def test_missing_asset_dropped_and_named(reference, grid):
    items_ref, _ = reference
    items = [it.clone() for it in items_ref]
    del items[2].assets["SCL"]
    ds = load_items(items, BANDS, grid, site_id="DE-Hai", max_failed_fraction=0.5)
    rep = load_report(ds)
    assert rep.dropped == {items[2].id: "asset 'SCL' missing"}
    assert items[2].id not in " ".join(ds["items"].values)


def test_missing_angle_metadata_named(served_demo, reference, proxy_factory, tmp_path):
    from gpp_cubes.s2.granule import fetch_granule_metadata

    items_ref, _ = reference
    victim = items_ref[0]
    with through_proxy(served_demo, proxy_factory, "404", rate=1.0,
                       match=victim.id + "/") as (url, _fp):
        stac_items = _search(url, site_grid(served_demo.world.site("DE-Hai").latitude,
                                            served_demo.world.site("DE-Hai").longitude))
        paths, failed = fetch_granule_metadata(stac_items, tmp_path / "cache")
    assert list(failed) == [victim.id]
    assert "404" in failed[victim.id] and "granule" in failed[victim.id]
    assert set(paths) == {it.id for it in items_ref} - {victim.id}
