"""Shared stages: providers/retries, search, load, reduce, forest mask, atomic store."""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from gpp_cubes.cube.store import is_complete, provenance_base, write_zarr_atomic
from gpp_cubes.demo.cog import write_cog
from gpp_cubes.demo.scenes import RES, Scene, band_values, serve_scenes, write_scenes
from gpp_cubes.demo.scenes import sensing_time as when
from gpp_cubes.demo.serve import free_port
from gpp_cubes.errors import AssetError, BuildError, ConfigError, EmptySearchError
from gpp_cubes.reduce import apply_clear_rule, clear_fraction, masked_mean, radial_mask
from gpp_cubes.stac.gdal import configure_gdal
from gpp_cubes.stac.load import load_items, load_report
from gpp_cubes.stac.providers import (
    resolve_provider,
    stac_io_with_retries,
)
from gpp_cubes.stac.search import search_items


# ------------------------------------------------------------------------- providers
def test_resolve_provider_names_and_errors():
    pc = resolve_provider()
    assert pc.name == "planetary-computer" and pc.url.startswith("https://planetarycomputer")
    assert pc.sign is not None
    es = resolve_provider("earth-search")
    assert es.asset_keys["red"] == "B04" and es.asset_keys["scl"] == "SCL"
    local = resolve_provider("custom", "http://127.0.0.1:1234")
    assert local.url == "http://127.0.0.1:1234" and local.sign is None
    with pytest.raises(ConfigError, match="stac_url"):
        resolve_provider(None)
    with pytest.raises(ConfigError, match="unknown STAC provider 'nasa'"):
        resolve_provider("nasa")


def test_earth_search_assets_renamed(mini_world):
    item = mini_world.items[0].clone()
    item.assets["red"] = item.assets.pop("B04")
    item.assets["scl"] = item.assets.pop("SCL")
    out = resolve_provider("earth-search").canonical_item(item)
    assert "B04" in out.assets and "SCL" in out.assets and "red" not in out.assets
    assert "red" in item.assets  # the input item is left alone


def test_pc_signing_leaves_local_hrefs(mini_world):
    item = mini_world.items[0]
    signed = resolve_provider().canonical_item(item)
    assert signed.assets["B04"].href == item.assets["B04"].href


class _Flaky(BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 0) then 503 then 200 to POSTs."""

    calls: list[str] = []  # noqa: RUF012

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append("POST")
        n = len(self.calls)
        if n == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0")
        elif n == 2:
            self.send_response(503)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        body = b'{"ok": true}' if n >= 3 else b"busy"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    _Flaky.calls = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/search"
    srv.shutdown()


def test_stac_io_retries_post_on_429_and_503(flaky_server):
    io = stac_io_with_retries(backoff_factor=0.0)
    text = io.request(flaky_server, method="POST", parameters={"limit": 1})
    assert json.loads(text) == {"ok": True}
    assert _Flaky.calls == ["POST"] * 3


def test_default_pystac_client_io_does_not_retry_post(flaky_server):
    # The reference behaviour the retries fix: pystac-client's own StacApiIO gives up.
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    with pytest.raises(APIError):
        StacApiIO().request(flaky_server, method="POST", parameters={"limit": 1})
    assert _Flaky.calls == ["POST"]


def test_configure_gdal_sets_env_and_keeps_user_values(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    monkeypatch.delenv("GDAL_HTTP_RETRY_CODES", raising=False)
    s = configure_gdal()
    assert s["GDAL_HTTP_MAX_RETRY"] == "9"
    assert s["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert os.environ["GDAL_HTTP_RETRY_CODES"] == s["GDAL_HTTP_RETRY_CODES"]
    assert "429" in s["GDAL_HTTP_RETRY_CODES"]
    assert configure_gdal({"GDAL_HTTP_MAX_RETRY": "2"})["GDAL_HTTP_MAX_RETRY"] == "2"


# ---------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    fport = free_port()
    scenes = [Scene("A_20180601", when("2018-06-01"), cloud_cover=10.0),
              Scene("A_20180520", when("2018-05-20"), cloud_cover=80.0),
              Scene("A_20190301", when("2019-03-01"), cloud_cover=0.0)]
    w = write_scenes(root, scenes, href_base=f"http://127.0.0.1:{fport}",
                     bands=("B04", "B08", "SCL"))
    with serve_scenes(root, w.items, fport) as url:
        yield w, url


def test_search_sorted_filtered_and_signed(served):
    w, url = served
    items = search_items("sentinel-2-l2a", w.grid, "2018-01-01", "2018-12-31",
                         provider="planetary-computer", stac_url=url)
    assert [it.id for it in items] == ["A_20180520", "A_20180601"]
    # rustac silently ignores/breaks `query`: the cloud filter must work on the client
    items = search_items("sentinel-2-l2a", w.grid, "2018-01-01", "2019-12-31",
                         provider="custom", stac_url=url, max_cloud=50)
    assert [it.id for it in items] == ["A_20180601", "A_20190301"]


def test_search_empty_names_site_dates_endpoint(served):
    w, url = served
    with pytest.raises(EmptySearchError) as e:
        search_items("sentinel-2-l2a", w.grid, "2017-01-01", "2017-02-01", provider="custom",
                     stac_url=url, site_id="DE-Hai")
    msg = str(e.value)
    for part in ("DE-Hai", "2017-01-01", "2017-02-01", "sentinel-2-l2a", url):
        assert part in msg


def test_search_missing_asset_names_item(served):
    w, url = served
    with pytest.raises(AssetError, match=r"A_20180601.*'B11'"):
        search_items("sentinel-2-l2a", w.grid, "2018-06-01", "2018-06-01", provider="custom",
                     stac_url=url, required_assets=["B04", "B11"])


def test_load_over_http_equals_files(served):
    w, url = served
    items = search_items("sentinel-2-l2a", w.grid, "2018-06-01", "2018-06-01",
                         provider="custom", stac_url=url)
    ds = load_items(items, ["B04", "SCL"], w.grid).compute()
    k = 0  # A_20180601 is scene 0
    assert np.array_equal(ds.B04.values[0], _expected(w, "B04", k))


# ------------------------------------------------------------------------------ load
def _expected(w, band, scene, offset=0):
    """Nearest-neighbour value of the native raster at every grid pixel centre."""
    res = RES[band]
    tb = w.tile_bounds
    native = band_values(band, scene, round((tb[3] - tb[1]) / res),
                         round((tb[2] - tb[0]) / res), offset)
    cols = np.floor((w.grid.x - tb[0]) / res).astype(int)
    rows = np.floor((tb[3] - w.grid.y) / res).astype(int)
    return native[np.ix_(rows, cols)]


@pytest.mark.parametrize("engine", ["odc", "stackstac"])
def test_load_values_on_grid(mini_world, engine):
    w = mini_world
    ds = load_items(w.items, ["B02", "B05", "B09", "SCL"], w.grid, engine=engine,
                    properties=["s2:processing_baseline"])
    assert ds.B02.chunks is not None  # lazy
    assert ds.sizes == {"time": 3, "y": w.grid.shape[0], "x": w.grid.shape[1]}
    np.testing.assert_allclose(ds.x, w.grid.x)
    np.testing.assert_allclose(ds.y, w.grid.y)
    ds = ds.compute()
    for band in ("B02", "B05", "B09"):
        assert np.array_equal(ds[band].values[0], _expected(w, band, 0)), band
        assert np.array_equal(ds[band].values[2], _expected(w, band, 2, 1000)), band
    assert list(ds["s2:processing_baseline"].values) == ["02.12", "02.12", "04.00"]
    assert list(ds["items"].values) == [s.id for s in w.scenes]
    # planted SCL cloud at 20 m pixel (50, 50) -> 10 m pixels of that 20 m cell
    scl = ds.SCL.values[1]
    tb = w.tile_bounds
    r = np.floor((tb[3] - w.grid.y) / 20).astype(int)
    c = np.floor((w.grid.x - tb[0]) / 20).astype(int)
    assert np.array_equal(scl == 9, (r[:, None] == 50) & (c[None, :] == 50))


def test_engines_identical(mini_world):
    a = load_items(mini_world.items, ["B04", "B8A", "B01", "SCL"], mini_world.grid)
    b = load_items(mini_world.items, ["B04", "B8A", "B01", "SCL"], mini_world.grid,
                   engine="stackstac")
    xr.testing.assert_identical(a.compute(), b.compute())


def test_same_solar_day_mosaicked(tmp_path):
    # Two tiles of one overpass (same day, 5 s apart): one time step, first item wins,
    # the second fills its nodata.
    w = write_scenes(tmp_path, [Scene("T1", when("2018-06-01", 10, 20)),
                                Scene("T2", when("2018-06-01", 10, 21))], bands=("B04",))
    href = w.items[0].assets["B04"].href
    with rasterio.open(href) as src:
        data = src.read(1)
    half = data.shape[1] // 2
    data[:, :half] = 0  # west half of T1 is nodata
    write_cog(Path(href), data, transform=from_origin(w.tile_bounds[0], w.tile_bounds[3], 10, 10),
              crs=f"EPSG:{w.grid.epsg}", nodata=0)
    west = w.grid.x[None, :] < w.tile_bounds[0] + 10 * half
    exp = np.where(west, _expected(w, "B04", 1), _expected(w, "B04", 0))
    for engine in ("odc", "stackstac"):
        ds = load_items(w.items, ["B04"], w.grid, engine=engine).compute()
        assert ds.sizes["time"] == 1
        assert ds["items"].values[0] == "T1 T2"
        assert np.array_equal(ds.B04.values[0], exp), engine


def test_failed_scene_dropped_and_reported(tmp_path):
    scenes = [Scene(f"S{i}", when(f"2018-06-{i + 1:02d}")) for i in range(6)]
    w = write_scenes(tmp_path, scenes, bands=("B04", "SCL"))
    bad = w.items[2].assets["B04"].href
    with open(bad, "r+b") as fh:  # corrupt header: not a TIFF any more
        fh.write(b"garbage!" * 8)
    os.remove(w.items[4].assets["SCL"].href)
    ds = load_items(w.items, ["B04", "SCL"], w.grid, max_failed_fraction=0.5)
    rep = load_report(ds)
    assert sorted(rep.dropped) == ["S2", "S4"]
    assert "'B04' unreadable" in rep.dropped["S2"] and "'SCL'" in rep.dropped["S4"]
    assert rep.used == ["S0", "S1", "S3", "S5"]
    assert list(ds["items"].values) == rep.used
    with pytest.raises(BuildError, match=r"DE-Hai.*2 of 6 scenes failed"):
        load_items(w.items, ["B04", "SCL"], w.grid, max_failed_fraction=0.2,
                   site_id="DE-Hai")


# ---------------------------------------------------------------------------- reduce
def test_radial_mask_circle_and_annulus(mini_world):
    g = mini_world.grid
    d = g.distance_to_tower()
    m = radial_mask(g, 1000.0)
    assert m.dims == ("y", "x") and m.dtype == bool
    assert int(m.sum()) == int((d <= 1000).sum())
    # a circle, not the bounding box: about pi r^2 / pixel area pixels
    assert abs(int(m.sum()) - np.pi * 1000**2 / 100) / (np.pi * 1e4) < 0.01
    corner = (np.abs(g.x[None, :] - g.tower_x) > 800) & (np.abs(g.y[:, None] - g.tower_y) > 800)
    assert not m.values[corner].any()
    ann = radial_mask(g, 1000.0, 50.0)
    assert int(ann.sum()) == int(((d <= 1000) & (d >= 50)).sum())
    with pytest.raises(ValueError):
        radial_mask(g, 50, 100)


def test_masked_mean_and_clear_rule():
    rng = np.random.default_rng(0)
    vals = rng.random((3, 4, 5))
    da = xr.DataArray(vals, dims=("time", "y", "x"))
    region = xr.DataArray(rng.random((4, 5)) > 0.3, dims=("y", "x"))
    valid = xr.DataArray(rng.random((3, 4, 5)) > 0.5, dims=("time", "y", "x"))
    valid[2] = False
    mean = masked_mean(da, valid & region)
    for t in range(2):
        sel = valid.values[t] & region.values
        assert mean.values[t] == pytest.approx(vals[t][sel].mean())
    assert np.isnan(mean.values[2])
    frac = clear_fraction(valid, region)
    assert frac.values[0] == pytest.approx((valid.values[0] & region.values).sum()
                                           / region.values.sum())
    assert frac.values[2] == 0
    kept = apply_clear_rule(da.assign_coords(time=[10, 20, 30]), valid, region)
    assert list(kept.time.values) == [10, 20]
    # 1 % rule boundary: 1 clear pixel of 100 is kept, 0 is not
    region = xr.DataArray(np.ones((10, 10), bool), dims=("y", "x"))
    v = np.zeros((2, 10, 10), bool)
    v[0, 3, 3] = True
    out = apply_clear_rule(xr.DataArray(np.zeros((2, 10, 10)), dims=("time", "y", "x")),
                           xr.DataArray(v, dims=("time", "y", "x")), region, 0.01)
    assert out.sizes["time"] == 1


# ---------------------------------------------------------------------------- forest
def test_forest_mask_from_corine_raster(tmp_path, mini_world):
    from gpp_cubes.sites.forest import forest_mask

    g = mini_world.grid
    left, bottom, right, top = g.bounds
    # 100 m CLC raster in the grid's CRS: west half 312 (coniferous), east half 211 (arable)
    ncols, nrows = round((right - left + 400) / 100), round((top - bottom + 400) / 100)
    codes = np.full((nrows, ncols), 211, np.uint16)
    codes[:, : ncols // 2] = 312
    path = tmp_path / "clc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=ncols, height=nrows, count=1,
                       dtype="uint16", crs=f"EPSG:{g.epsg}", nodata=0,
                       transform=from_origin(left - 200, top + 200, 100, 100)) as dst:
        dst.write(codes, 1)
    m = forest_mask(g, path)
    assert m.dtype == bool and m.shape == g.shape
    boundary = left - 200 + 100 * (ncols // 2)
    assert np.array_equal(m.values, np.broadcast_to(g.x[None, :] < boundary, g.shape))


# ----------------------------------------------------------------------------- store
def _ds(v: float) -> xr.Dataset:
    t = np.array(["2018-06-01", "2018-06-02"], dtype="datetime64[ns]")
    return xr.Dataset({"a": ("time", np.array([v, v + 1], "float32"),
                             {"units": "1", "long_name": "test"})}, coords={"time": t})


def test_store_atomic_write_and_provenance(tmp_path):
    p = tmp_path / "DE-Hai.zarr"
    prov = {**provenance_base(), "items": ["X"],
            "href": "https://x.blob.core.windows.net/a.tif?sv=1&sig=SECRET",
            "subscription_key": "SECRET"}
    write_zarr_atomic(_ds(1.0), p, provenance=prov)
    assert is_complete(p)
    back = xr.open_zarr(p)
    np.testing.assert_array_equal(back.a.values, [1, 2])
    assert back.a.attrs["units"] == "1"
    text = back.attrs["provenance"]
    assert "SECRET" not in text and json.loads(text)["items"] == ["X"]
    assert json.loads(text)["packages"]["xarray"] == xr.__version__
    assert [f.name for f in tmp_path.iterdir()] == ["DE-Hai.zarr"]  # no temp leftovers


def test_store_interrupted_rewrite_keeps_previous(tmp_path, monkeypatch):
    import gpp_cubes.cube.store as store

    p = tmp_path / "S.zarr"
    write_zarr_atomic(_ds(1.0), p, provenance={})

    def boom(path):
        raise KeyboardInterrupt  # killed after writing the temp store, before the rename

    monkeypatch.setattr(store, "_fsync_dir", boom)
    with pytest.raises(KeyboardInterrupt):
        write_zarr_atomic(_ds(5.0), p, provenance={})
    monkeypatch.undo()
    assert is_complete(p)
    np.testing.assert_array_equal(xr.open_zarr(p).a.values, [1, 2])
    assert [f.name for f in tmp_path.iterdir()] == ["S.zarr"]
    # a store without marker (killed before the marker) is not complete
    q = tmp_path / "T.zarr"
    shutil.copytree(p, q)
    (q / ".gpp-complete").unlink()
    assert not is_complete(q)
    write_zarr_atomic(_ds(7.0), q, provenance={})  # restart replaces it
    assert is_complete(q)
    np.testing.assert_array_equal(xr.open_zarr(q).a.values, [7, 8])
