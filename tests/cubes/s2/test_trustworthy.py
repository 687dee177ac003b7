"""No silent garbage from the S2 stage: tiles of the neighbouring UTM zone, granules that do
not cover the site, low sun, band-dependent nodata inside the clear mask, and the same
scene served twice (the conditions of the real archive that once gave band means of 0.0
and 12-sigma features without a word).

References are independent of the code under test: sen2nbar's own c-factor interpolated
by xarray at pyproj-transformed pixel centres, numpy means over hand-chosen pixels, and the
c-factor envelope recomputed with sen2nbar's kernels.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer
from reference import REFERENCE as REF

from gpp_cubes.demo.scenes import LAT, LON, Scene, granule_at, write_scenes
from gpp_cubes.demo.scenes import sensing_time as when
from gpp_cubes.s2 import drop_duplicates, s2_features
from gpp_cubes.s2.granule import sun_zenith_at
from gpp_cubes.s2.nbar import (
    BRDF_BANDS,
    C_FACTOR_RANGE,
    MAX_SUN_ZENITH,
    c_factor_block,
    c_factor_problem,
)
from gpp_cubes.sites.grid import site_grid

FI_HYY = (61.8474, 24.2948)  # UTM zone 35; covered by zone-34 and zone-35 tiles


def _zone34_mtd(tmp_path, grid):
    """The reference granule, geocoded as a zone-34 tile with the site 50-60 km inside."""
    x, y = Transformer.from_crs(grid.epsg, 32634, always_xy=True).transform(
        grid.tower_x, grid.tower_y)
    ulx, uly = np.floor((x - 60000) / 60) * 60, np.ceil((y + 50000) / 60) * 60
    p = tmp_path / "MTD_TL_34.xml"
    p.write_text(granule_at(32634, ulx, uly))
    return p


def test_c_factor_of_a_tile_in_the_neighbouring_utm_zone(tmp_path):
    """Finding 1: a zone-34 granule on a zone-35 site grid. Reprojecting the 23 x 23 grid
    left NaN corners that the weighted sum spread to every pixel (NBAR NaN everywhere);
    now every pixel equals sen2nbar's c-factor interpolated by xarray where the pixel
    lies in the granule's CRS."""
    from sen2nbar.c_factor import c_factor_from_metadata
    from sen2nbar.utils import _extrapolate_c_factor

    grid = site_grid(*FI_HYY)
    assert grid.epsg == 32635
    p = _zone34_mtd(tmp_path, grid)
    ours = c_factor_block([p], grid)[0]
    assert np.isfinite(ours).all()
    px, py = np.meshgrid(grid.x, grid.y)
    tx, ty = Transformer.from_crs(32635, 32634, always_xy=True).transform(px, py)
    ref_c = _extrapolate_c_factor(c_factor_from_metadata(str(p)))
    ref = ref_c.interp(x=xr.DataArray(tx.ravel(), dims="p"),
                       y=xr.DataArray(ty.ravel(), dims="p"), method="linear",
                       kwargs={"fill_value": None})  # scipy's interpn: None extrapolates
    for k, band in enumerate(BRDF_BANDS):
        np.testing.assert_allclose(ours[k].ravel(), ref.sel(band=band).values, rtol=1e-6)
    # the grid really is rotated against the granule's: a row of pixels is not a row there
    assert abs(ty[0, 0] - ty[0, -1]) > 50


def test_granule_that_does_not_cover_the_site_gives_nan_and_a_reason(tmp_path):
    grid = site_grid(LAT, LON)
    p = tmp_path / "far.xml"
    p.write_text(granule_at(grid.epsg, grid.tower_x + 200e3, grid.tower_y + 300e3))
    c = c_factor_block([p], grid)[0]
    assert np.isnan(c).all()
    assert c_factor_problem(c, BRDF_BANDS).startswith("no_coverage:")
    assert np.isnan(sun_zenith_at(p, grid.tower_x, grid.tower_y, grid.epsg))


def _set_sun_zenith(text: str, zenith: float) -> str:
    """Every node of the granule's sun zenith grid (and the mean) set to ``zenith``."""
    head, tail = text.split("<Sun_Angles_Grid>", 1)
    block, rest = tail.split("</Sun_Angles_Grid>", 1)
    zen, azi = block.split("<Azimuth>", 1)
    zen = re.sub(r"<VALUES>[^<]*</VALUES>",
                 "<VALUES>" + " ".join([f"{zenith}"] * 23) + "</VALUES>", zen)
    rest = re.sub(r'(<Mean_Sun_Angle>\s*<ZENITH_ANGLE unit="deg">)[^<]*', rf"\g<1>{zenith}",
                  rest)
    return head + "<Sun_Angles_Grid>" + zen + "<Azimuth>" + azi + "</Sun_Angles_Grid>" + rest


@pytest.fixture(scope="module")
def low_sun_world(tmp_path_factory):
    """Five June scenes; the granule of the middle one says the sun stands at 87.4 deg."""
    root = tmp_path_factory.mktemp("lowsun")
    scenes = [Scene(f"L{k}", when(f"2018-06-{3 * k + 1:02d}")) for k in range(5)]
    w = write_scenes(root, scenes)
    mtd = root / "L2" / "MTD_TL.xml"
    mtd.write_text(_set_sun_zenith(mtd.read_text(), 87.4))
    return w


def test_low_sun_scene_is_excluded_with_its_reason(low_sun_world, tmp_path):
    """Finding 2: at a sun zenith of 87.4 deg the c-factor leaves any physical range and the
    features of the scene are far off; the rules exclude it and say why."""
    w = low_sun_world
    kw = dict(items=w.items, index_list=["NDVI", "NIRv"])
    g = w.grid
    assert sun_zenith_at(w.root / "L2" / "MTD_TL.xml", g.tower_x, g.tower_y,
                         g.epsg) == pytest.approx(87.4)
    feats = s2_features((LAT, LON), "2018-01-01", "2018-12-31", cache_dir=tmp_path / "a",
                        **kw)
    prov = json.loads(feats.attrs["provenance"])
    assert prov["stac_items"] == ["L0", "L1", "L3", "L4"]
    assert prov["excluded_items"]["L2"] == (
        f"sun_zenith: 87.4 deg at the tower > limit {MAX_SUN_ZENITH:g} deg")
    assert prov["dropped_items"] == {}  # a rule, not a failure: never counts as failed
    assert prov["max_sun_zenith"] == MAX_SUN_ZENITH
    # Lift the sun limit: the c-factor rule still catches the diverged kernels ...
    lifted = s2_features((LAT, LON), "2018-01-01", "2018-12-31", cache_dir=tmp_path / "b",
                         max_sun_zenith=90.0, **kw)
    why = json.loads(lifted.attrs["provenance"])["excluded_items"]["L2"]
    assert why.startswith("c_factor: ") and "outside the plausible [0.8, 1.25]" in why
    # ... and without any rule the scene's features are the garbage the rules keep out
    raw = s2_features((LAT, LON), "2018-01-01", "2018-12-31", cache_dir=tmp_path / "c",
                      max_sun_zenith=90.0, c_factor_range=(-np.inf, np.inf), **kw)
    bad = raw.B08.sel(time="2018-06-07").item()
    good = raw.B08.drop_sel(time=raw.time.sel(time="2018-06-07")).values
    assert abs(bad - good.mean()) > 10 * max(good.std(), 1e-3)


def test_plausible_c_factor_range_covers_the_model_up_to_the_sun_limit():
    """The documented envelope: sen2nbar's kernels for every Sentinel-2 geometry (view
    zenith <= 12 deg, any relative azimuth) at sun zenith <= the default limit."""
    from sen2nbar.axioms import fiso
    from sen2nbar.c_factor import c_factor

    bands = list(fiso.keys())
    sza = xr.DataArray(np.linspace(0, MAX_SUN_ZENITH, 41), dims="s")
    vza = xr.DataArray(np.repeat(np.linspace(0, 12, 13)[None], len(bands), 0),
                       dims=("band", "v"), coords={"band": bands})
    phi = xr.DataArray(np.linspace(0, 360, 37), dims="p")
    c = c_factor(sza, vza, phi)
    lo, hi = C_FACTOR_RANGE
    assert lo < float(c.min()) and float(c.max()) < hi
    # and the range is tight enough to catch the divergence 5 deg further down
    c85 = c_factor(xr.DataArray([85.0], dims="s"), vza, phi)
    assert float(c85.min()) < lo or float(c85.max()) > hi


@pytest.fixture(scope="module")
def swath_edge_world(tmp_path_factory):
    """Two scenes; in the first, B01 (60 m) has no data in the western half of the tile
    (a band-dependent swath edge) while SCL says vegetation there."""
    root = tmp_path_factory.mktemp("edge")
    w = write_scenes(root, [Scene("E0", when("2018-06-01")), Scene("E1", when("2018-06-04"))])
    path = w.items[0].assets["B01"].href
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1)
    data[:, : data.shape[1] // 2] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return w


def test_band_means_are_over_pixels_where_every_band_has_data(swath_edge_world, tmp_path):
    """Finding 3: the mean of each band divides by its own count of finite pixels; before,
    B01 summed without its NaN but divided by the clear count of all bands (biased low)."""
    from gpp_cubes.s2 import s2_cube

    w = swath_edge_world
    cube = s2_cube((LAT, LON), "2018-01-01", "2018-12-31", items=w.items,
                   cache_dir=tmp_path).compute()
    feats = s2_features((LAT, LON), "2018-01-01", "2018-12-31", items=w.items,
                        cache_dir=tmp_path, index_list=["NDVI"])
    c0 = cube.isel(time=0)
    b01 = c0.B01.values
    region = c0.forest.values & c0.buffer.values
    data = np.isfinite(b01)
    assert (region & ~data).sum() > 0.2 * region.sum()  # the edge cuts the circle
    assert not (c0.clear.values & ~data).any()  # no clear pixel without B01
    for band in ("B01", "B04", "B08"):
        expect = c0[band].values[region & data].mean()  # every other band has data there
        assert feats[band].values[0] == pytest.approx(expect, rel=1e-6), band
    assert int(feats.n_clear.values[0]) == int((region & data).sum())
    assert feats.clear_fraction.values[0] == pytest.approx((region & data).sum() / region.sum())
    assert np.isfinite(feats.NDVI.values).all()


def _pc_item(iid: str, tile: str, baseline: str, generated: str) -> pystac.Item:
    d = json.loads((REF / "pc-sentinel-2-l2a-item-2019.json").read_text())
    d["id"] = iid
    d["properties"].update({"s2:mgrs_tile": tile, "s2:processing_baseline": baseline,
                            "s2:generation_time": generated})
    return pystac.Item.from_dict(d)


def test_duplicates_of_one_scene_keep_the_newest_processing():
    items = [_pc_item("a-0212", "35VLG", "02.12", "2019-11-16T10:00:00Z"),
             _pc_item("a-0500", "35VLG", "05.00", "2023-03-01T10:00:00Z"),
             _pc_item("b-0212", "34VFN", "02.12", "2019-11-16T10:00:00Z")]  # other tile
    kept, superseded = drop_duplicates(items)
    assert [it.id for it in kept] == ["a-0500", "b-0212"]
    assert list(superseded) == ["a-0212"]
    assert superseded["a-0212"].startswith("duplicate: same scene as a-0500")


def test_duplicate_scene_with_another_baseline_gives_the_same_features(tmp_path):
    """The same scene processed twice (02.12, and 05.00 with its +1000 DN offset) is read
    once, and the features equal those of the original alone."""
    one = write_scenes(tmp_path / "one", [Scene("O", when("2018-06-01"))])
    two = write_scenes(tmp_path / "two", [Scene("O", when("2018-06-01")),
                                          Scene("R", when("2018-06-01"), baseline="05.00")])
    two.items[1].properties["s2:generation_time"] = "2023-03-01T10:00:00Z"
    # the reprocessing encodes the same reflectance: DN of scene 0 plus the offset
    for band, asset in two.items[1].assets.items():
        if band in ("SCL", "granule-metadata"):
            continue
        with rasterio.open(one.items[0].assets[band].href) as src:
            ref = src.read(1)
        with rasterio.open(asset.href) as src:
            profile = src.profile
        with rasterio.open(asset.href, "w", **profile) as dst:
            dst.write((ref + 1000).astype(np.uint16), 1)
    kw = dict(index_list=["NDVI"], cache_dir=tmp_path / "c")
    a = s2_features((LAT, LON), "2018-01-01", "2018-12-31", items=one.items, **kw)
    b = s2_features((LAT, LON), "2018-01-01", "2018-12-31", items=two.items, **kw)
    xr.testing.assert_allclose(a.drop_attrs().drop_vars("items"),
                               b.drop_attrs().drop_vars("items"), rtol=1e-6)
    prov = json.loads(b.attrs["provenance"])
    assert prov["stac_items"] == ["R"] and list(prov["excluded_items"]) == ["O"]


def test_reduction_never_averages_over_fewer_pixels_than_its_count():
    """Finding 3 at its root: a band NaN inside the clear mask (what a c-factor gap gave)
    was summed without its NaN but divided by the whole clear count (0.0 when all NaN)."""
    from gpp_cubes.s2 import reduce_cube

    rng = np.random.default_rng(0)
    ny = nx = 20
    b04 = rng.uniform(0.02, 0.06, (3, ny, nx)).astype(np.float32)
    b08 = rng.uniform(0.2, 0.4, (3, ny, nx)).astype(np.float32)
    b04[0, :, :8] = np.nan  # an NBAR gap over 40 % of the first scene
    b04[1] = np.nan  # the whole second scene: NaN, never 0.0
    clear = np.ones((3, ny, nx), bool)
    clear[2, :5] = False
    cube = xr.Dataset(
        {"B04": (("time", "y", "x"), b04), "B08": (("time", "y", "x"), b08),
         "clear": (("time", "y", "x"), clear),
         "forest": (("y", "x"), np.ones((ny, nx), bool)),
         "buffer": (("y", "x"), np.ones((ny, nx), bool))},
        coords={"time": np.array(["2018-06-01", "2018-06-04", "2018-06-07"],
                                 dtype="datetime64[ns]"),
                "items": ("time", ["a", "b", "c"])})
    means, failed, excluded = reduce_cube(cube, ["B04", "B08"], min_fraction=0.01)
    assert failed == {}
    assert list(means["items"].values) == ["a", "c"]
    assert excluded == {"b": "clear_fraction: 0.0% clear forest pixels in the circle < 1%"}
    used = [(np.isfinite(b04[0]), 0), (clear[2], 2)]
    for (mask, t), k in zip(used, range(2), strict=True):
        assert means.B04.values[k] == pytest.approx(b04[t][mask].mean(), rel=1e-6)
        assert means.B08.values[k] == pytest.approx(b08[t][mask].mean(), rel=1e-6)
        assert int(means.n_clear.values[k]) == int(mask.sum())
        assert means.clear_fraction.values[k] == pytest.approx(mask.mean())


def test_a_day_mixing_boa_offsets_keeps_one_offset(tmp_path):
    """A solar day whose tiles come in two baselines (one already reprocessed with the
    -1000 offset, its neighbour not) is one time step converted with one offset: the tile
    with the other offset is excluded, saying why, instead of being shifted by 0.1."""
    scenes = [Scene("N", when("2018-06-01"), baseline="05.00"),
              Scene("O", when("2018-06-01", minute=21))]
    both = write_scenes(tmp_path / "both", scenes)
    # the reprocessed tile ends in the middle of the site: the older one would fill the rest
    for asset in both.items[0].assets.values():
        if asset.href.endswith(".tif"):
            with rasterio.open(asset.href) as src:
                profile, data = src.profile, src.read(1)
            data[:, : data.shape[1] // 2] = 0
            with rasterio.open(asset.href, "w", **profile) as dst:
                dst.write(data, 1)
    kw = dict(index_list=["NDVI"], cache_dir=tmp_path / "c")
    mixed = s2_features((LAT, LON), "2018-01-01", "2018-12-31", items=both.items, **kw)
    alone = s2_features((LAT, LON), "2018-01-01", "2018-12-31", items=both.items[:1], **kw)
    xr.testing.assert_allclose(mixed.drop_attrs(), alone.drop_attrs(), rtol=1e-6)
    prov = json.loads(mixed.attrs["provenance"])
    assert prov["stac_items"] == ["N"]
    assert prov["excluded_items"]["O"].startswith("mixed_baseline: baseline 02.12")


def test_c_factors_cached_by_an_earlier_method_are_not_read_back(tmp_path, monkeypatch):
    """The c-factor cache outlives the code: a value cached by another computation (the
    reprojecting one gave NaN across UTM zones) must never be served for the new one."""
    import gpp_cubes.s2.nbar as nbar

    grid = site_grid(*FI_HYY)
    p = _zone34_mtd(tmp_path, grid)
    cache = tmp_path / "cache"
    monkeypatch.setattr(nbar, "C_FACTOR_METHOD", nbar.C_FACTOR_METHOD - 1)
    old = nbar.c_factor_block_cached([p], ["item"], grid, cache_dir=cache)
    (f,) = (cache / "c-factor").glob("*.npy")
    np.save(f, np.full_like(old, np.nan))  # what the earlier method left in the cache
    assert np.isnan(nbar.c_factor_block_cached([p], ["item"], grid, cache_dir=cache)).all()
    monkeypatch.undo()
    new = nbar.c_factor_block_cached([p], ["item"], grid, cache_dir=cache)
    assert np.isfinite(new).all()
    np.testing.assert_array_equal(new, c_factor_block([p], grid))
