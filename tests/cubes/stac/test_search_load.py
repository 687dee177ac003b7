"""STAC search and loading on the site grid, failed scenes dropped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

from gpp_cubes.demo.cog import write_cog
from gpp_cubes.demo.scenes import RES, Scene, band_values, serve_scenes, write_scenes
from gpp_cubes.demo.scenes import sensing_time as when
from gpp_cubes.demo.serve import free_port
from gpp_cubes.errors import AssetError, BuildError, EmptySearchError
from gpp_cubes.stac.load import load_items, load_report
from gpp_cubes.stac.search import search_items


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
