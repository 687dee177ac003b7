"""S2 builder end to end on the demo world, searched through its STAC API over HTTP.

The demo world records the truth (planted clouds, shadows and snow per scene, fully cloudy
dates, a bright 60 m block outside the 1 km circle); these tests check the builder against
it. The world is served by :func:`gpp_cubes.demo.serve_world` (the session's ``served_demo``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gpp_cubes.demo import DemoConfig, ServedWorld, World, generate_world, serve_world
from gpp_cubes.s2 import s2_cube, s2_features

pytestmark = pytest.mark.slow  # the shared demo world takes ~1 min to generate once
SITE = "DE-Hai"
START, END = "2018-01-01", "2018-12-31"


@pytest.fixture(scope="module")
def served(served_demo: ServedWorld):
    return served_demo.world, served_demo.stac_url


@pytest.fixture(scope="module")
def cube(served, tmp_path_factory):
    _, stac_url = served
    c = s2_cube(SITE, START, END, provider="custom", stac_url=stac_url,
                cache_dir=tmp_path_factory.mktemp("mtd"))
    return c.compute()


def _truth(world: World, *, processed_twice: bool = False) -> pd.DataFrame:
    """The site's scenes; without ``processed_twice`` the original processing (02.xx) of a
    scene the archive also holds reprocessed (05.00) is left out, as the builder does."""
    t = world.truth.s2_scenes
    t = t[(t.site == SITE) & (t.date >= START) & (t.date <= END)]
    if not processed_twice:
        t = t[~(t.duplicate_of.notna() & (t.processing_baseline.astype(float) < 4.0))]
    return t.set_index("item_id")


def test_planted_clouds_shadows_and_snow_are_masked(served, cube):
    world, _ = served
    truth = _truth(world)
    circle = cube.buffer.values
    assert list(cube["items"].values) == list(truth.index)  # one scene per solar day
    n_snow = 0
    for t, iid in enumerate(cube["items"].values):
        row = truth.loc[str(iid)]
        cloud = cube.cloud.values[t][circle].mean()
        shadow = cube.shadow.values[t][circle].mean()
        # truth fractions are of the 10 m classification, SCL is 20 m: edges differ a little
        assert cloud == pytest.approx(row.cloud_fraction_1km, abs=0.02), iid
        assert shadow == pytest.approx(row.shadow_fraction_1km, abs=0.02), iid
        clear = cube.clear.values[t]
        assert not (clear & cube.cloud.values[t]).any()
        assert not (clear & cube.shadow.values[t]).any()
        snow_scl = cube.SCL.values[t] == 11
        if row.snow_fraction_1km > 0:
            n_snow += 1
            # the Fmask spectral test (not SCL) finds the planted snow ...
            found = cube.snow.values[t][snow_scl].mean()
            assert found > 0.95, iid
            # ... and no clear pixel is planted snow (but for 20 m SCL cell edges)
            assert (clear & snow_scl).sum() <= 0.02 * snow_scl.sum(), iid
    assert n_snow > 0, "the test year has no snow scene: choose another year"


def test_fully_cloudy_dates_dropped_by_the_1_percent_rule(served, tmp_path):
    world, stac_url = served
    truth = _truth(world)
    feats = s2_features(SITE, START, END, provider="custom", stac_url=stac_url,
                        cache_dir=tmp_path, index_list=["NDVI"])
    kept = {str(t)[:10] for t in feats.time.values}
    full = set(truth.loc[truth.fully_cloudy.astype(bool), "date"])
    assert full and not (full & kept)
    # the other dates are kept when the truth has >= 1 % clear forest in the circle
    # (the 10 m truth vs the 20 m SCL: a margin of 0.5 % each side)
    for _, row in truth[~truth.fully_cloudy.astype(bool)].iterrows():
        if row.clear_forest_fraction_1km > 0.015:
            assert row.date in kept, row.date
        elif row.clear_forest_fraction_1km < 0.005:
            assert row.date not in kept, row.date
    assert (feats.clear_fraction.values >= 0.01).all()
    prov = json.loads(feats.attrs["provenance"])
    # every item found is used or excluded with its reason; none is dropped as failed
    everything = _truth(world, processed_twice=True)
    assert not set(prov["stac_items"]) & set(prov["excluded_items"])
    assert sorted([*prov["stac_items"], *prov["excluded_items"]]) == sorted(everything.index)
    assert prov["dropped_items"] == {}
    assert {why.split(":")[0] for why in prov["excluded_items"].values()} <= {
        "clear_fraction", "sun_zenith", "duplicate"}
    twice = everything.index.difference(truth.index)
    assert len(twice) > 0 and all(
        prov["excluded_items"][iid].startswith("duplicate:") for iid in twice)
    # the NBAR NDVI of clear forest follows the planted greenness (noise-free truth)
    ndvi = pd.Series(feats.NDVI.values, index=[str(t)[:10] for t in feats.time.values])
    ref = truth.set_index("date").forest_ndvi.reindex(ndvi.index)
    assert np.corrcoef(ndvi.values, ref.values)[0, 1] > 0.95


def test_circle_excludes_the_bright_block_outside_1_km(served, cube):
    world, _ = served
    planted = world.truth.s2_planted
    block = planted[planted.site == SITE].iloc[0]
    assert block.distance_m > 1000
    xx, yy = np.meshgrid(cube.x.values, cube.y.values)
    inb = (xx > block.left) & (xx < block.right) & (yy > block.bottom) & (yy < block.top)
    assert inb.sum() == 36  # the 60 m block is in the cube (6 x 6 pixels at 10 m) ...
    assert not cube.buffer.values[inb].any()  # ... but outside the circle
    assert not cube.clear.values[:, inb].any()
    # it is bright where not clouded: only the circle keeps it out of the means
    b04 = cube.B04.values[:, inb]
    free = ~cube.cloud.values[:, inb].any(axis=1)
    assert free.any() and np.nanmin(b04[free]) > 0.6
    sel = cube.clear.values
    assert np.nanmax(np.where(sel, cube.B04.values, np.nan)) < 0.5


def test_odc_stac_and_stackstac_give_the_same_features(served, tmp_path):
    _, stac_url = served
    kw = dict(provider="custom", stac_url=stac_url, cache_dir=tmp_path,
              index_list=["NDVI", "kNDVI", "NDMI"])
    a = s2_features(SITE, "2018-04-01", "2018-09-30", engine="odc", **kw)
    b = s2_features(SITE, "2018-04-01", "2018-09-30", engine="stackstac", **kw)
    assert a.sizes["time"] > 3
    xr.testing.assert_allclose(a.drop_attrs(), b.drop_attrs(), rtol=1e-6)


@pytest.fixture(scope="module")
def world_2022(tmp_path_factory):
    """One site across the switch to processing baseline 04.00 (2022-01-25)."""
    cfg = DemoConfig(sites=(SITE,), start="2022-01-05", end="2022-02-14", seed=3,
                     s2_revisit_days=5, s1_revisit_days=12, modis_step_days=10)
    return generate_world(tmp_path_factory.mktemp("w2022") / "world", cfg, workers=1)


def test_baseline_04_offset_applied_after_january_2022(world_2022, tmp_path):
    planted = world_2022.truth.s2_planted.set_index("item_id")
    scenes = world_2022.truth.s2_scenes.set_index("item_id")
    assert {"02.12", "04.00"} <= set(scenes.processing_baseline)
    with serve_world(world_2022) as served_2022:
        stac_url = served_2022.stac_url
        cube = s2_cube(SITE, "2022-01-01", "2022-02-28", provider="custom", stac_url=stac_url,
                       cache_dir=tmp_path, nbar=False).compute()
    block = planted.iloc[0]
    xx, yy = np.meshgrid(cube.x.values, cube.y.values)
    inb = (xx > block.left) & (xx < block.right) & (yy > block.bottom) & (yy < block.top)
    seen = set()
    for t, iid in enumerate(cube["items"].values):
        row, p = scenes.loc[str(iid)], planted.loc[str(iid)]
        assert p.dn == round(10000 * p.reflectance) + row.boa_offset_dn  # what was written
        if cube.cloud.values[t][inb].any():
            continue
        # DN 8000 (02.12) and DN 9000 (04.00) are both reflectance 0.8
        np.testing.assert_allclose(cube.B04.values[t][inb], p.reflectance, atol=1e-6)
        seen.add(row.processing_baseline)
    assert seen == {"02.12", "04.00"}


def test_site_on_a_utm_zone_boundary_uses_both_tiles(served, tmp_path):
    """FI-Hyy (zone 35) is covered by a zone-34 tile too: its scenes are mosaicked on the
    zone-35 grid, with NBAR from whichever granule comes first, and no band mean is NaN or
    0.0 (what a reprojected c-factor grid once gave)."""
    world, stac_url = served
    site, start, end = "FI-Hyy", "2018-05-01", "2018-09-30"
    feats = s2_features(site, start, end, provider="custom", stac_url=stac_url,
                        cache_dir=tmp_path, index_list=["NDVI"])
    prov = json.loads(feats.attrs["provenance"])
    t = world.truth.s2_scenes
    t = t[(t.site == site) & (t.date >= start) & (t.date <= end)].set_index("item_id")
    used = t.loc[prov["stac_items"]]
    assert set(used.epsg) == {32634, 32635}  # both zones' tiles went into the cube
    assert prov["dropped_items"] == {} and feats.sizes["time"] >= 3
    for band in ("B02", "B04", "B08", "B11"):
        assert (feats[band].values > 0.005).all() and (feats[band].values < 0.8).all(), band
    ndvi = pd.Series(feats.NDVI.values, index=[str(d)[:10] for d in feats.time.values])
    ref = used.groupby("date").forest_ndvi.first().reindex(ndvi.index)
    np.testing.assert_allclose(ndvi.values, ref.values, atol=0.05)
