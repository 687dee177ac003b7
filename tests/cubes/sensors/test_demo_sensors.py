"""S1 and LST stages end to end on the served demo world, against the world's known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpp_cubes.sensors.lst import lst_features
from gpp_cubes.sensors.s1 import s1_features
from gpp_cubes.sites.catalog import get_site
from gpp_cubes.sites.forest import forest_mask
from gpp_cubes.sites.grid import site_grid

START, END = "2018-01-01", "2018-12-31"
SITE = "DE-Hai"


@pytest.fixture(scope="module")
def meta():
    return get_site(SITE)


def _truth(world, name: str) -> pd.DataFrame:
    t = pd.read_csv(world.root / "truth" / name)
    t = t[t["site"] == SITE]
    return t[(t["date"] >= START) & (t["date"] <= END)]


def test_s1_matches_the_planted_annulus_means(served_demo, meta):
    grid = site_grid(meta.latitude, meta.longitude)
    forest = forest_mask(grid, served_demo.world.corine_path, site_id=SITE)
    res = s1_features(grid, forest, START, END, provider="custom",
                      stac_url=served_demo.stac_url, site_id=SITE)
    truth = _truth(served_demo.world, "s1_scenes.csv")
    assert res.scenes_found == len(truth) == res.scenes_kept
    daily = truth.groupby("date")[["annulus_vv_linear", "annulus_vh_linear"]].mean()
    daily.index = pd.to_datetime(daily.index)
    assert list(res.frame.index) == list(daily.index)
    # forest from 100 m CORINE vs the world's 10 m land cover: edge pixels differ slightly
    np.testing.assert_allclose(res.frame["S1_VV"], 10 * np.log10(daily["annulus_vv_linear"]),
                               atol=0.05)
    np.testing.assert_allclose(res.frame["S1_VH"], 10 * np.log10(daily["annulus_vh_linear"]),
                               atol=0.05)
    v, h = res.frame["S1_VV_linear"], res.frame["S1_VH_linear"]
    np.testing.assert_allclose(res.frame["S1_DpRVIVV"], 4 * h / (v + h), rtol=1e-6)


def test_lst_matches_the_truth_where_qc_allows(served_demo, meta):
    res = lst_features(meta.latitude, meta.longitude, START, END, provider="custom",
                       stac_url=served_demo.stac_url, site_id=SITE)
    truth = _truth(served_demo.world, "modis_scenes.csv")
    assert res.scenes_found == len(truth)
    for product in ("MOD11A1", "MYD11A1"):
        t = truth[truth["product"] == product].set_index("date")
        t.index = pd.to_datetime(t.index)
        for suffix, period in (("dt", "day"), ("nt", "night")):
            mine = res.frame[f"{product}_{suffix}"].reindex(t.index)
            # a value exactly where some pixel of the 3x3 window passed QC
            np.testing.assert_array_equal(mine.notna().to_numpy(),
                                          (t[f"{period}_good_3x3"] > 0).to_numpy())
            ok = mine.notna()
            # the window mean adds the world's small static spatial pattern to the truth
            np.testing.assert_allclose(mine[ok], t.loc[ok, f"{period}_truth_k"], atol=0.6)
    # days without an item stay missing
    item_days = pd.to_datetime(truth["date"].unique())
    assert res.frame.drop(index=item_days).isna().all().all()
