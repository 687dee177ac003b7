"""Feature QA (gpp_cubes.qa): ranges, index bounds, the Hampel scan, actions, tables, report.

References are independent of the code under test: hand-worked numbers, the index values
:func:`gpp_cubes.s2.indices.compute_indices` produces, a numerical integral of the TOA
irradiance, the clear-sky model of :mod:`gpp_cubes.sensors.clearsky`.
"""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from gpp_cubes.errors import ConfigError
from gpp_cubes.qa import (
    OUTLIER_FLOORS,
    QAConfig,
    apply_to_series,
    check_s2_steps,
    check_series,
    format_qa_table,
    formula_range,
    ghi_upper_bound,
    hampel,
    index_range,
    qa_rows,
    range_rule,
    reason_category,
    s2_section,
    sensor_section,
    variable_table,
)

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
         "B12")

# --------------------------------------------------------------------------------------
# Range rules and index bounds
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("NDVI", (-1.0, 1.0)),     # (N-R)/(N+R): |N-R| <= N+R for N, R >= 0
    ("NBR", (-1.0, 1.0)),      # (N-S2)/(N+S2): the same argument
    ("EVI", None),             # N + 6R - 7.5B + 1 vanishes at N=0, R=0, B=2/15: unbounded
    ("SR", None),              # N/R: R -> 0
    ("BCC", (0.0, 1.0)),       # B/(R+G+B): a share of non-negative parts
    ("SAVI", (-1.0, 1.0)),     # 2(N-R)/(N+R+1): max 2/2 at N=1, R=0 (corner)
    ("NIRv", (-1.0, 1.0)),     # NDVI in [-1, 1] times N in [0, 1]
    ("DpRVIVV", (0.0, 4.0)),   # 4 VH/(VV+VH): 4 x a share in [0, 1]
])
def test_index_bounds_derived_from_the_spyndex_formula(name, expected):
    rule = index_range(name)
    if expected is None:
        assert rule is None
    else:
        assert (rule.low, rule.high) == pytest.approx(expected)
        assert rule.units == "1" and "by definition" in rule.reason


def test_formula_range_on_hand_made_formulas():
    box = {"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (0.0, math.inf)}
    assert formula_range("(a-b)/(a+b)", box)[:2] == (-1.0, 1.0)
    assert formula_range("(2*a-b)/(a+b)", box)[:2] == (-1.0, 2.0)  # coefficient ratios
    assert formula_range("a/(b+0.5)", box)[:2] == pytest.approx((0.0, 2.0))  # corners
    assert formula_range("3*a-2*b+1", box)[:2] == (-1.0, 4.0)  # linear form, exact
    assert formula_range("a**2-b", box)[:2] == (-1.0, 1.0)  # interval arithmetic
    assert formula_range("a/b", box) is None  # b may vanish
    assert formula_range("c/(c+b)", box)[:2] == (0.0, 1.0)  # c unbounded above
    assert formula_range("c-b", box) is None
    assert formula_range("a+zz", box) is None  # unknown symbol
    assert formula_range("x*k", {"x": (0.0, 1.0)}, {"k": 3.0})[:2] == (0.0, 3.0)


def test_derived_index_bounds_hold_for_computed_indices():
    """Every bound derived for the shipped list holds on indices computed by
    gpp_cubes.s2.indices from random and corner reflectances in [0, 1]."""
    import xarray as xr

    from gpp_cubes.s2.indices import compute_indices, default_index_list

    rng = np.random.default_rng(0)
    n = 20000
    refl = rng.uniform(0.0, 1.0, (len(BANDS), n))
    refl[:, :4000] = rng.integers(0, 2, (len(BANDS), 4000))  # corners of the box
    ds = xr.Dataset({b: ("t", refl[i]) for i, b in enumerate(BANDS)})
    idx = compute_indices(ds)
    bounded = [n for n in default_index_list() if index_range(n) is not None]
    assert {"NDVI", "NIRv", "kNDVI", "SAVI", "EVI2"} <= set(bounded)
    assert len(bounded) >= 60  # about half of the 132 are bounded by their definition
    for name in bounded:
        rule = index_range(name)
        v = idx[name].values.astype(np.float64)
        assert not rule.outside(v).any(), (name, rule.text(), np.nanmin(v), np.nanmax(v))


def test_band_rule_excludes_zero_and_values_above_one():
    rule = range_rule("B04")
    assert rule.text() == "(0, 1]" and rule.units == "1"
    v = np.array([0.0, -0.01, 1e-6, 0.3, 1.0, 1.0 + 1e-8, 1.2, np.nan, np.inf])
    assert rule.outside(v).tolist() == [True, True, False, False, False, False, True, False,
                                        True]


def test_fixed_ranges_have_units_and_reasons():
    t = variable_table(["NDVI", "EVI"]).set_index("variable")
    assert t.loc["S1_VV", "units"] == "dB" and t.loc["S1_VV", "range"] == "[-30, 5]"
    assert t.loc["S1_DpRVIVV", "range"] == "[0, 4]"
    assert t.loc["MOD11A1_dt", "units"] == "K" and t.loc["MOD11A1_dt", "range"] == "[200, 340]"
    assert t.loc["clear_sky_ghi", "units"] == "W m-2"
    assert t.loc["EVI", "range"].startswith("none")
    assert t.loc["B01", "outlier_floor"] == "not scanned"
    assert (t["reason"].str.len() > 0).sum() == len(t) - 1  # all but EVI


def _toa_daily_mean_numerical(lat: float, day: str) -> float:
    """Daily-mean TOA horizontal irradiance [W m-2] by integrating E0 max(cos z, 0) over a
    UTC day at 1-minute steps (pvlib SPA), independent of the closed form."""
    from pvlib.irradiance import get_extra_radiation
    from pvlib.solarposition import get_solarposition

    t = pd.date_range(day, periods=1440, freq="min", tz="UTC") + pd.Timedelta(seconds=30)
    zen = get_solarposition(t, lat, 0.0, method="nrel_numpy")["zenith"].to_numpy()
    e0 = float(get_extra_radiation(pd.Timestamp(day).dayofyear))
    return e0 * float(np.maximum(np.cos(np.radians(zen)), 0.0).mean())


@pytest.mark.parametrize(("lat", "day"), [(0.0, "2019-03-20"), (51.08, "2019-06-21"),
                                          (51.08, "2019-12-21"), (67.76, "2019-06-21")])
def test_ghi_bound_is_the_daily_mean_toa_irradiance(lat, day):
    ref = _toa_daily_mean_numerical(lat, day)
    bound = ghi_upper_bound(lat, pd.DatetimeIndex([day]))[0]
    toa = (bound - 2.0) / 1.02
    assert toa == pytest.approx(ref, rel=0.01)
    if lat == 0.0:  # equator at equinox: E0 / pi (Duffie & Beckman eq. 1.10.3, ws = 90 deg)
        assert toa == pytest.approx(1366.1 * 1.0 / math.pi, rel=0.02)


def test_ghi_bound_is_zero_plus_margin_in_the_polar_night():
    assert ghi_upper_bound(67.76, pd.DatetimeIndex(["2019-12-21"]))[0] == pytest.approx(2.0)


def test_clear_sky_ghi_never_exceeds_its_bound():
    from gpp_cubes.qa import qa_clear_sky_ghi
    from gpp_cubes.sensors.clearsky import daily_clear_sky_ghi

    # the polar-night edge (refraction) and a high, clear Alpine site
    for lat, lon, elev in [(67.7553, 29.61, 275.0), (46.5, 9.8, 2500.0)]:
        ghi = daily_clear_sky_ghi(lat, lon, elev, "2019-01-01", "2019-12-31")
        out, sec = qa_clear_sky_ghi(ghi, lat, QAConfig())
        assert sec["findings"] == {} and out.equals(ghi.rename("clear_sky_ghi"))


def test_ghi_above_toa_is_dropped():
    from gpp_cubes.qa import qa_clear_sky_ghi

    days = pd.date_range("2019-06-20", periods=3, freq="D")
    ghi = pd.Series([300.0, 900.0, 310.0], index=days)  # 900: an instantaneous noon value
    out, sec = qa_clear_sky_ghi(ghi, 51.0, QAConfig())
    assert np.isnan(out.iloc[1]) and out.iloc[[0, 2]].tolist() == [300.0, 310.0]
    assert sec["findings"] == {"range": {"clear_sky_ghi": 1}} and sec["values_dropped"] == 1
    assert "outside [0, 4" in sec["list"][0]["detail"]


# --------------------------------------------------------------------------------------
# Hampel identifier
# --------------------------------------------------------------------------------------


def test_hampel_hand_worked_example():
    s = pd.Series([1.0, 1.1, 0.9, 1.0, 5.0, 1.05, 0.95, 1.0, 1.1])
    h = hampel(s, window=5, n_sigma=3.0, floor=0.01)
    # index 4: window [0.9, 1.0, 5.0, 1.05, 0.95] -> median 1.0; |dev| [0.1, 0, 4, 0.05,
    # 0.05] -> MAD 0.05 -> sigma 1.4826 x 0.05 = 0.07413; score 4 / 0.07413 = 53.96
    assert h.loc[4, "median"] == pytest.approx(1.0)
    assert h.loc[4, "sigma"] == pytest.approx(0.07413)
    assert h.loc[4, "score"] == pytest.approx(53.96, rel=1e-3)
    # index 3: window [1.1, 0.9, 1.0, 5.0, 1.05] -> median 1.05; |dev| [0.05, 0.15, 0.05,
    # 3.95, 0] -> MAD 0.05; score 0.05 / 0.07413 = 0.6745
    assert h.loc[3, "median"] == pytest.approx(1.05)
    assert h.loc[3, "score"] == pytest.approx(0.6745, rel=1e-3)
    # index 0: truncated window [1.0, 1.1, 0.9] -> median 1.0, MAD 0.1
    assert h.loc[0, "median"] == pytest.approx(1.0)
    assert h.loc[0, "sigma"] == pytest.approx(0.14826)
    assert h["outlier"].tolist() == [False] * 4 + [True] + [False] * 4


def test_hampel_floor_keeps_flat_series_quiet_and_ignores_nan():
    s = pd.Series([0.80, 0.80, 0.80, 0.81, 0.80, np.nan, 0.80, 0.80])
    assert hampel(s, 7, 5.0).loc[3, "outlier"]  # no floor: MAD 0 makes 0.01 infinite
    h = hampel(s, 7, 5.0, floor=0.03)
    assert not h["outlier"].any() and 5 not in h.index
    # relative floor: 10 % of a median of 0.3 is 0.03
    h = hampel(pd.Series([0.3] * 7), 7, 5.0, floor=0.01, rel_floor=0.1)
    assert h["sigma"].tolist() == pytest.approx([0.03] * 7)
    assert hampel(pd.Series([1.0, 9.0]), 7, 5.0)["score"].isna().all()  # too short: no verdict


def _phenology(days: pd.DatetimeIndex, noise: float, seed: int = 0) -> pd.Series:
    """Deciduous NDVI: 0.45 in winter, 0.85 in summer, green-up over ~3 weeks in May."""
    doy = days.dayofyear.to_numpy()
    up = 1 / (1 + np.exp(-(doy - 130) / 4.0))
    down = 1 / (1 + np.exp((doy - 285) / 5.0))
    rng = np.random.default_rng(seed)
    return pd.Series(0.45 + 0.40 * up * down + rng.normal(0, noise, len(days)), index=days)


def test_hampel_does_not_flag_green_up_or_snow_melt_but_flags_a_spike():
    floor = OUTLIER_FLOORS["NDVI"]
    days = pd.date_range("2019-01-01", "2019-12-31", freq="5D")
    ndvi = _phenology(days, noise=0.01)
    assert not hampel(ndvi, 7, 5.0, *floor)["outlier"].any()
    # snow melt: a step of -0.3 lasting the 4 snow-covered observations of March
    melt = ndvi.copy()
    melt.iloc[10:14] -= 0.3
    assert not hampel(melt, 7, 5.0, *floor)["outlier"].any()
    spiked = ndvi.copy()
    spiked.iloc[40] = 0.2  # a residual cloud in August
    h = hampel(spiked, 7, 5.0, *floor)
    assert h["outlier"].sum() == 1 and h["outlier"].iloc[40]


# --------------------------------------------------------------------------------------
# S2 steps, per-value series, actions, sections
# --------------------------------------------------------------------------------------


def _s2_table(n: int = 12) -> pd.DataFrame:
    t = pd.date_range("2019-05-01", periods=n, freq="10D")
    red, nir = 0.03, 0.30
    df = pd.DataFrame({b: 0.05 for b in BANDS}, index=t)
    df["B04"], df["B08"] = red, nir
    df["NDVI"] = (nir - red) / (nir + red)
    df["NIRv"] = df["NDVI"] * nir
    df["SR"] = nir / red  # unbounded: never a range finding
    return df


def test_s2_steps_range_and_outlier_findings():
    df = _s2_table()
    df.iloc[2, df.columns.get_loc("B02")] = 0.0            # a band mean of 0.0
    df.iloc[4, df.columns.get_loc("B08")] = 1.4            # NBAR above 1
    df.iloc[4, df.columns.get_loc("NIRv")] = 1.3           # ... and a broken index
    df.iloc[7, df.columns.get_loc("NIRv")] = 0.54          # a c-factor spike
    df.iloc[9, df.columns.get_loc("SR")] = 1e6             # unbounded: no rule
    found = check_s2_steps(df, QAConfig())
    assert sorted(found) == [df.index[2], df.index[4], df.index[7]]
    assert [(f.rule, f.variable) for f in found[df.index[2]]] == [("range", "B02")]
    assert {(f.rule, f.variable) for f in found[df.index[4]]} == {("range", "B08"),
                                                                  ("range", "NIRv")}
    assert [(f.rule, f.variable) for f in found[df.index[7]]] == [("outlier", "NIRv")]
    assert "outside (0, 1] 1" in found[df.index[2]][0].detail
    assert check_s2_steps(df, QAConfig(action="off")) == {}


def test_s2_section_accounts_for_every_item():
    df = _s2_table(8)
    df.iloc[3, df.columns.get_loc("B08")] = 1.4
    steps = df.assign(items=[f"S2A_MSIL2A_{t:%Y%m%d}T100000_N0400_R022_T32UNB_X"
                             for t in df.index])
    steps.iloc[0, steps.columns.get_loc("items")] += " S2B_MSIL2A_20190501T100000_other"
    stac = [i for s in steps["items"] for i in s.split()] + [
        "S2A_MSIL2A_20190502T100000_cloudy"]
    excluded = {"S2A_MSIL2A_20190503T100000_lowsun": "sun_zenith: 83.1 deg > 80 deg",
                "S2A_MSIL2A_20190504T100000_dup": "duplicate: of S2A_...",
                "S2A_MSIL2A_20190505T100000_weird": "something odd happened"}
    dropped = {"S2A_MSIL2A_20190506T100000_bad": "read failed: HTTP 500"}
    findings = check_s2_steps(df, QAConfig())
    n_found = len(stac) + len(excluded) + len(dropped)
    sec = s2_section(steps, findings, QAConfig(), n_found=n_found, stac_items=stac,
                     dropped_items=dropped, excluded_items=excluded)
    items = sec["items"]
    assert items["found"] == 14 and items["used"] == 8  # 9 items in 8 steps, 1 dropped
    assert items["dropped"] == {"clear_fraction": 1, "duplicate": 1, "excluded": 1,
                                "qa_range": 1, "sun_zenith": 1, "unreadable": 1}
    assert items["used"] + sum(items["dropped"].values()) == items["found"]
    assert sec["steps"] == {"kept": 7, "dropped": 1, "flagged": 0}
    assert sec["findings"] == {"range": {"B08": 1}}
    by_status = pd.DataFrame(sec["scenes"]).groupby("status").size().to_dict()
    assert by_status == {"dropped": 6, "used": 7}
    qa_scene = next(s for s in sec["scenes"] if s["reason"].startswith("qa_range"))
    assert qa_scene["date"] == str(df.index[3].date()) and qa_scene["NDVI"] == pytest.approx(
        df["NDVI"].iloc[3])
    cloudy = next(s for s in sec["scenes"] if s["reason"] == "clear_fraction")
    assert cloudy["date"] == "2019-05-02" and cloudy["NDVI"] is None
    # flag: the same findings, nothing dropped by the QA
    flagged = s2_section(steps, findings, QAConfig(action="flag"), n_found=n_found,
                         stac_items=stac, dropped_items=dropped, excluded_items=excluded)
    assert flagged["items"]["used"] == 9 and "qa_range" not in flagged["items"]["dropped"]
    assert flagged["steps"] == {"kept": 8, "dropped": 0, "flagged": 1}
    json.dumps(sec)  # provenance-ready


def test_reason_category():
    assert reason_category("sun_zenith: 83.1 deg", "x") == "sun_zenith"
    assert reason_category("read failed: HTTP 500", "unreadable") == "unreadable"
    assert reason_category("asset 'B04' missing", "unreadable") == "unreadable"


def _s1_frame() -> pd.DataFrame:
    t = pd.date_range("2019-01-01", periods=20, freq="6D")
    vv, vh = np.full(20, 0.14), np.full(20, 0.035)
    f = pd.DataFrame({"S1_VV": 10 * np.log10(vv), "S1_VH": 10 * np.log10(vh),
                      "S1_DpRVIVV": 4 * vh / (vv + vh)}, index=t)
    f.iloc[5, 0] = 12.0    # VV above +5 dB: the day's three values go
    f.iloc[12, 1] = -6.0   # VH 8.5 dB above its neighbours: that value only
    return f


def test_s1_range_drops_the_day_outlier_drops_the_value():
    from gpp_cubes.qa import qa_s1_frame

    f = _s1_frame()
    out, sec = qa_s1_frame(f, QAConfig(), n_found=25, n_loaded=24, n_kept=20)
    assert out.iloc[5].isna().all()
    assert np.isnan(out.iloc[12]["S1_VH"]) and out.iloc[12][["S1_VV", "S1_DpRVIVV"]].notna().all()
    assert int(out.isna().sum().sum()) == 4 and sec["values_dropped"] == 4
    assert sec["findings"] == {"outlier": {"S1_VH": 1}, "range": {"S1_VV": 1}}
    assert sec["items"] == {"found": 25, "used": 20,
                            "dropped": {"unreadable": 1, "valid_fraction": 4}}
    kept, sec = qa_s1_frame(f, QAConfig(action="flag"), n_found=25, n_loaded=24, n_kept=20)
    assert kept.equals(f) and sec["values_flagged"] == 2 and sec["values_dropped"] == 0


def test_lst_per_value_with_nan_days():
    t = pd.date_range("2019-07-01", periods=30, freq="D")
    rng = np.random.default_rng(1)
    f = pd.DataFrame({"MOD11A1_dt": 300 + rng.normal(0, 1.5, 30),
                      "MOD11A1_nt": 285 + rng.normal(0, 1.5, 30)}, index=t)
    f.iloc[::3] = np.nan                    # cloudy days: not observations
    f.iloc[10, 0] = 150.0                   # decoding error
    f.iloc[13, 1] = 255.0                   # cloud-contaminated night (-30 K)
    findings = check_series(f, ["MOD11A1_dt", "MOD11A1_nt"], QAConfig())
    assert {(x.rule, x.variable, x.time) for x in findings} == {
        ("range", "MOD11A1_dt", t[10]), ("outlier", "MOD11A1_nt", t[13])}
    out, n = apply_to_series(f, findings, QAConfig())
    assert n == 2 and np.isnan(out.iloc[10, 0]) and np.isnan(out.iloc[13, 1])


def test_qa_config_validation():
    assert QAConfig.from_options(None) == QAConfig()
    assert QAConfig.from_options({"action": "flag", "outlier_sigma": "6"}).outlier_sigma == 6.0
    assert QAConfig.from_options((("action", "off"),)).enabled is False
    for bad in ({"action": "delete"}, {"outlier_sigma": 0}, {"window": 6}, {"sigma": 5}):
        with pytest.raises(ConfigError):
            QAConfig.from_options(bad)


def _site_qa() -> dict:
    df = _s2_table()
    df.iloc[6, df.columns.get_loc("NIRv")] = 0.6
    steps = df.assign(items=[f"S2A_MSIL2A_{t:%Y%m%d}T100000_X" for t in df.index])
    cfg = QAConfig()
    s2 = s2_section(steps, check_s2_steps(df, cfg), cfg, n_found=14,
                    stac_items=list(steps["items"]),
                    excluded_items={"S2A_MSIL2A_20190502T100000_a": "sun_zenith: 85 deg",
                                    "S2A_MSIL2A_20190503T100000_b": "sun_zenith: 86 deg"})
    lst = sensor_section(check_series(pd.DataFrame(
        {"MOD11A1_dt": [300.0, 400.0, 301.0]}, index=pd.date_range("2019-06-01", periods=3)),
        ["MOD11A1_dt"], cfg), cfg, n_found=3, n_used=3, values_dropped=1)
    return {"config": cfg.to_dict(), "s2": s2, "lst": lst}


def test_log_table_one_line_per_reason():
    qa = _site_qa()
    text = format_qa_table(qa, "XX-Tst")
    assert text.splitlines()[0].startswith("feature QA of XX-Tst (action drop, outliers > 5.0")
    rows = qa_rows(qa)
    got = dict(zip(rows["sensor"] + " " + rows["what"], rows["count"], strict=True))
    assert got["s2 scenes found"] == 14 and got["s2 scenes used"] == 11
    assert got["s2 scenes dropped: sun_zenith"] == 2
    assert got["s2 scenes dropped: qa_outlier"] == 1
    assert got["s2 scenes dropped, outlier: NIRv"] == 1
    assert got["lst values dropped, range: MOD11A1_dt"] == 1
    for key in got:
        assert key.split(" ", 1)[1] in text
    from gpp_models.report import qa_site_table  # the report's table, read from provenance

    table = qa_site_table({"XX-Tst": qa})
    assert table.loc["XX-Tst", "S2 not used, by reason"] == "sun_zenith 2, qa_outlier 1"
    assert "s2 outlier NIRv 1" in table.loc["XX-Tst", "QA findings"]


# --------------------------------------------------------------------------------------
# The demo world: clean scenes are not flagged
# --------------------------------------------------------------------------------------


def test_demo_world_scenes_are_not_flagged(served_demo):
    from gpp_cubes.qa import qa_s2_features
    from gpp_cubes.s2 import s2_features

    w = served_demo.world
    site = w.sites[0].site_id
    ds = s2_features(site, w.config.start, w.config.end, provider="custom",
                     stac_url=served_demo.stac_url, corine=str(w.corine_path),
                     blocks_in_flight=1, read_threads=2)
    keep, sec = qa_s2_features(ds, QAConfig())
    assert keep.all() and sec["findings"] == {} and sec["steps"]["dropped"] == 0
    assert sec["items"]["used"] + sum(sec["items"]["dropped"].values()) == \
        sec["items"]["found"]
    # the same scan catches a c-factor-like blow-up planted in a mid-series scene
    k = ds.sizes["time"] // 2
    ds["B08"][k] = ds["B08"][k] * 2.5
    ds["NIRv"][k] = ds["NIRv"][k] * 2.5
    keep, sec = qa_s2_features(ds, QAConfig())
    assert np.flatnonzero(~keep).tolist() == [k]
    assert sec["findings"] == {"outlier": {"B08": 1, "NIRv": 1}}


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


def test_report_has_a_feature_qa_section_and_figure(tmp_path):
    from gpp_models.report import write_report

    rows = [{"model": m, "site": s, "setting": st, "nrmse": 0.1, "n": 10}
            for m in ("LSTM", "seasonal_cycle") for s in ("XX-One", "XX-Two")
            for st in ("full", "growing_season", "extremes")]
    pd.DataFrame(rows).to_csv(tmp_path / "nrmse.csv", index=False)
    qa = _site_qa()
    prov = {"XX-One": {"site_id": "XX-One", "qa": qa}, "XX-Two": {"site_id": "XX-Two"}}
    (tmp_path / "runs.json").write_text(json.dumps(
        {"runs": {}, "features": str(tmp_path / "nowhere.zarr"), "sites": ["XX-One", "XX-Two"],
         "provenance": prov}))
    page = write_report(tmp_path).read_text()
    assert "<h2>Feature QA</h2>" in page
    section = page[page.index("<h2>Feature QA</h2>"):page.index("<h2>Runs and provenance")]
    assert "XX-One" in section and "sun_zenith 2, qa_outlier 1" in section
    assert "qa_outlier: NIRv = 0.6" in section  # the dropped scene, with its reason
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', section)
    assert len(images) == 1
    assert base64.b64decode(images[0]).lstrip().startswith(b"<?xml")
    assert (tmp_path / "figures" / "fig_feature_qa.png").stat().st_size > 10_000
    # the provenance dump does not repeat the per-scene list
    assert "scenes: see Feature QA" in page
