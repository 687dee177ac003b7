"""Daily calendar, predictor interpolation (GPP never), and the contract's attributes."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpp_cubes.cube.features import (
    FIXED_PREDICTORS,
    SiteInputs,
    assemble_site,
    combine_sites,
    daily_calendar,
    fill_predictor,
)
from gpp_cubes.errors import BuildError
from gpp_cubes.sites import point_site


def test_calendar_is_gap_free_daily_ns():
    cal = daily_calendar("2016-01-01", "2020-12-31")
    assert len(cal) == 366 + 365 * 3 + 366
    assert cal.dtype == "datetime64[ns]"
    assert (np.diff(cal.values) == np.timedelta64(1, "D")).all()


def test_fill_interior_linear_and_edges_nearest():
    cal = daily_calendar("2018-01-01", "2018-01-10")
    s = pd.Series([10.0, 20.0, 5.0], index=pd.to_datetime(["2018-01-03", "2018-01-07",
                                                            "2018-01-08"]))
    values, counts = fill_predictor(s, cal)
    expected = [10, 10, 10, 12.5, 15, 17.5, 20, 5, 5, 5]
    np.testing.assert_allclose(values, expected)
    assert counts.n_observed == 3
    assert counts.n_interpolated == 7
    assert counts.n_edge_filled == 4          # Jan 1-2 and Jan 9-10


def test_fill_uses_observations_outside_the_calendar():
    cal = daily_calendar("2018-01-01", "2018-01-04")
    s = pd.Series([0.0, 6.0], index=pd.to_datetime(["2017-12-30", "2018-01-05"]))
    values, counts = fill_predictor(s, cal)
    np.testing.assert_allclose(values, [2, 3, 4, 5])   # interpolated, not edge-filled
    assert counts.n_observed == 0 and counts.n_edge_filled == 0


def test_fill_without_observation_raises_naming_the_predictor():
    cal = daily_calendar("2018-01-01", "2018-01-04")
    with pytest.raises(BuildError, match=r"S1_VV.*DE-Hai"):
        fill_predictor(pd.Series([np.nan], index=cal[:1]), cal, name="S1_VV", site_id="DE-Hai")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-50, 50)), min_size=2, max_size=60))
def test_fill_property(values):
    cal = daily_calendar("2019-01-01", "2019-12-31")[: len(values)]
    s = pd.Series([np.nan if v is None else v for v in values], index=cal)
    if s.notna().sum() == 0:
        with pytest.raises(BuildError):
            fill_predictor(s, cal)
        return
    out, counts = fill_predictor(s, cal)
    assert np.isfinite(out).all()
    obs = s.notna().to_numpy()
    np.testing.assert_allclose(out[obs], s[obs].to_numpy(), rtol=1e-6, atol=1e-5)
    assert counts.n_observed + counts.n_interpolated == len(cal)
    assert counts.n_observed == obs.sum()
    # filled values stay within the observed range (linear interpolation, constant edges)
    lo, hi = s.min(), s.max()
    assert (out >= lo - 1e-4).all() and (out <= hi + 1e-4).all()
    # an interior gap day lies on the segment between its neighbouring observations
    idx = np.flatnonzero(obs)
    for a, b in itertools.pairwise(idx):
        for k in range(a + 1, b):
            w = (k - a) / (b - a)
            assert out[k] == pytest.approx((1 - w) * s.iloc[a] + w * s.iloc[b], abs=1e-4)


def _inputs(site="DE-Hai", seed=0):
    cal = daily_calendar("2016-01-01", "2016-03-31")
    rng = np.random.default_rng(seed)
    preds = pd.DataFrame(index=cal)
    for name in ["S2_PC2", "S2_PC1", *FIXED_PREDICTORS]:
        col = rng.normal(size=len(cal))
        col[rng.random(len(cal)) < 0.5] = np.nan
        col[0] = 1.0
        preds[name] = col
    gpp = pd.Series(rng.uniform(0, 10, len(cal)), index=cal)
    gpp[10:20] = np.nan
    ext = pd.Series(False, index=cal)
    ext[30:36] = True
    hai = point_site(51.08, 10.45, site_id=site, elevation_m=430.0, igbp="DBF")
    return cal, SiteInputs(hai, preds, gpp, ext, {"items": {"s1": ["a", "b"]}})


def test_assemble_contract_and_gpp_never_interpolated():
    cal, inp = _inputs()
    ds = assemble_site(inp, cal)
    assert ds.attrs["predictors"][:2] == ["S2_PC1", "S2_PC2"]
    assert ds.attrs["predictors"][2:] == list(FIXED_PREDICTORS)
    for key in ("format_version", "site_id", "latitude", "longitude", "elevation_m", "igbp",
                "target", "train_years", "test_years", "provenance"):
        assert key in ds.attrs
    assert ds.attrs["format_version"] == "1"
    assert ds.attrs["train_years"] == [2016, 2017, 2018]
    assert ds.attrs["test_years"] == [2019, 2020]
    prov = json.loads(ds.attrs["provenance"])
    assert prov["items"]["s1"] == ["a", "b"]
    for name in ds.attrs["predictors"]:
        v = ds[name]
        assert v.dtype == np.float32 and np.isfinite(v.values).all()
        assert {"units", "long_name", "n_observed", "n_interpolated"} <= set(v.attrs)
        assert v.attrs["n_observed"] == int(inp.predictors[name].notna().sum())
    assert ds["S1_VV"].attrs["units"] == "dB"
    assert ds["MOD11A1_dt"].attrs["units"] == "K"
    assert ds["clear_sky_ghi"].attrs["units"] == "W m-2"
    assert ds["GPP"].dtype == np.float32
    np.testing.assert_array_equal(np.isnan(ds["GPP"].values), inp.gpp.isna().to_numpy())
    assert ds["extreme"].dtype == bool and int(ds["extreme"].sum()) == 6


def test_combine_sites_has_site_dimension_and_coords():
    cal, a = _inputs("DE-Hai", 0)
    _, b = _inputs("BE-Vie", 1)
    vie = point_site(50.3, 6.0, site_id="BE-Vie", elevation_m=493.0, igbp="MF")
    b = SiteInputs(vie, b.predictors, b.gpp, b.extreme, {})
    ds = combine_sites([assemble_site(a, cal), assemble_site(b, cal)])
    assert list(ds["site"].values) == ["DE-Hai", "BE-Vie"]
    assert list(ds["igbp"].values) == ["DBF", "MF"]
    np.testing.assert_allclose(ds["latitude"].values, [51.08, 50.3])
    assert ds["S1_VV"].dims == ("site", "time")
    assert ds.attrs["predictors"][0] == "S2_PC1"
    assert set(json.loads(ds.attrs["provenance"])) == {"DE-Hai", "BE-Vie"}
