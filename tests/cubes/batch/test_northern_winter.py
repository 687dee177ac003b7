"""The northern winter of the demo world end to end: no low-sun garbage in the cubes, and
no summer GPP predicted in November.

Before the low-sun rule, the scenes of the demo world at FI-Var with the sun at 81-88 deg
gave c-factors up to 2.9 on the site grid, S2 indices 10-12 standard deviations off, S2_PC1
of 40 in mid-November, and every model of ``gpp demo`` predicted 5-8 g C m-2 d-1 there in
November-February, where the observed GPP is about 0.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

pytestmark = pytest.mark.slow

NORTH = ("FI-Var", "FI-Hyy")
WINTER = (11, 12, 1, 2)


@pytest.fixture(scope="module")
def northern_build(build_served, tmp_path_factory):
    """FI-Var and FI-Hyy over the whole test world (three years), one shared PCA."""
    from gpp_cubes.batch import build_sites

    w = build_served.world
    out = tmp_path_factory.mktemp("north")
    table = build_sites(list(NORTH), out, start=w.config.start, end=w.config.end,
                        provider="custom", stac_url=build_served.stac_url,
                        corine_source=str(w.corine_path), fluxnet_dir=str(w.fluxnet_dir),
                        n_workers=2)
    assert set(table["status"]) == {"built"}, table.to_dict("records")
    return out


def test_low_sun_scenes_are_excluded_and_winter_features_stay_in_range(build_served,
                                                                       northern_build):
    from gpp_cubes.qa import index_range

    truth = build_served.world.truth.s2_scenes.set_index("item_id")
    for site in NORTH:
        with xr.open_zarr(northern_build / f"{site}.zarr") as ds:
            prov = json.loads(ds.attrs["provenance"])
            names = [v for v in ds.data_vars if str(v).startswith("S2_PC")]
            pcs = ds[names].reset_coords(drop=True).to_dataframe()  # site coordinates out
        s2 = prov["s2"]
        why = {**s2["params"]["dropped_items"], **s2["params"]["excluded_items"]}
        low = truth[(truth.site == site) & (truth.sun_zenith > 80.0)]
        assert len(low) > 0, f"the test world has no low-sun scene at {site}"
        for iid in low.index:  # every scene with the sun above 80 deg is excluded, saying so
            assert iid not in s2["item_ids"], iid
            assert why.get(iid, "").startswith(("sun_zenith:", "duplicate:")), (iid, why.get(iid))
        # the feature QA finds nothing left to drop: no index beyond its definition's bounds,
        # no band mean outside (0, 1], no outlier scene, over all three years
        assert prov["qa"]["s2"]["findings"] == {}, prov["qa"]["s2"]["findings"]
        with xr.open_zarr(northern_build / ".work" / site / "s2.zarr") as p1:
            table = p1["s2_indices"].to_pandas()
        ruled = {name: rule for name in table.columns if (rule := index_range(name))}
        assert len(ruled) > 50
        for name, rule in ruled.items():
            assert not rule.outside(table[name].to_numpy()).any(), (site, name)
        # the daily PCs of the winter months stay within the range of the rest of the year
        winter = pcs.index.month.isin(WINTER)
        lo, hi = pcs[~winter].min(), pcs[~winter].max()
        span = hi - lo
        assert (pcs[winter] >= lo - 0.25 * span).all().all(), site
        assert (pcs[winter] <= hi + 0.25 * span).all().all(), site


def test_lstm_predicts_no_summer_gpp_in_the_northern_winter(northern_build, tmp_path):
    from gpp_models import ModelConfig, TrainConfig, open_cube, train_and_evaluate

    cube = open_cube(northern_build / "features.zarr")
    years = sorted({int(y) for y in cube.years})
    config = TrainConfig(model=ModelConfig(cell="lstm", layers=1, units=16), epochs=15,
                         batch_size=64, learning_rate=5e-3, train_years=tuple(years[:-1]),
                         val_year=years[-2], test_years=(years[-1],))
    result = train_and_evaluate(config, tmp_path / "run", cube)
    pred = result.predict("test")
    pred = pred[(pred.site == "FI-Var") & pd.DatetimeIndex(pred.time).month.isin(WINTER)]
    assert len(pred) > 60
    obs = pd.Series(cube.y[list(cube.sites).index("FI-Var")], index=pd.DatetimeIndex(cube.time))
    winter_obs = obs[obs.index.month.isin(WINTER)].dropna()
    ceiling = winter_obs.max() + 1.0  # g C m-2 d-1
    assert pred["pred"].max() <= ceiling, (pred.nlargest(5, "pred"), winter_obs.max())
    assert np.isfinite(pred["pred"]).all()
