"""Seasonal cycle, anomalies, thresholds and extreme runs against hand-worked series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpp_cubes.targets.extremes import (
    anomalies,
    anomaly_threshold,
    day_of_year_365,
    detect_extremes,
    flag_anomalies,
    seasonal_cycle,
)

ZERO_CYCLE = pd.Series(0.0, index=pd.RangeIndex(1, 366))


def test_day_of_year_365_feb29():
    idx = pd.DatetimeIndex(["2016-02-28", "2016-02-29", "2016-03-01", "2017-03-01",
                            "2016-12-31", "2017-12-31", "2017-01-01"])
    np.testing.assert_array_equal(day_of_year_365(idx), [59, 59, 60, 60, 365, 365, 1])


def test_seasonal_cycle_by_hand_with_leap_day():
    # 2016 (leap) is 4.0 every day, 2017 is 2.0: the cycle is 3.0 except on Feb 28, which
    # pools Feb 28 2016, Feb 29 2016 and Feb 28 2017: (4 + 4 + 2) / 3 = 10/3.
    days = pd.date_range("2016-01-01", "2017-12-31", freq="D")
    gpp = pd.Series(np.where(days.year == 2016, 4.0, 2.0), index=days)
    cycle = seasonal_cycle(gpp)
    assert len(cycle) == 365
    assert cycle[59] == pytest.approx(10 / 3)
    assert cycle.drop(59).eq(3.0).all()
    anom = anomalies(gpp)
    assert anom["2016-02-29"] == pytest.approx(4 - 10 / 3)
    assert anom["2017-02-28"] == pytest.approx(2 - 10 / 3)
    assert anom["2016-03-01"] == 1.0 and anom["2017-03-01"] == -1.0


def test_seasonal_cycle_circular_smoothing_by_hand():
    days = pd.date_range("2017-01-01", "2017-12-31", freq="D")
    gpp = pd.Series(0.0, index=days)
    gpp["2017-01-01"] = 3.0
    gpp["2017-01-02"] = np.nan
    cycle = seasonal_cycle(gpp, window=3)
    # DOY 365: (Dec 30, Dec 31, Jan 1) = (0 + 0 + 3) / 3; DOY 1: (Dec 31, Jan 1, [Jan 2 NaN])
    # = (0 + 3) / 2; DOY 2: (Jan 1, [NaN], Jan 3) = (3 + 0) / 2; DOY 3: (NaN, 0, 0) = 0
    assert cycle[365] == pytest.approx(1.0)
    assert cycle[1] == pytest.approx(1.5)
    assert cycle[2] == pytest.approx(1.5)
    assert cycle[3] == 0.0 and cycle[364] == 0.0
    unsmoothed = seasonal_cycle(gpp)
    assert np.isnan(unsmoothed[2]) and unsmoothed[1] == 3.0
    with pytest.raises(ValueError, match="odd"):
        seasonal_cycle(gpp, window=4)


def test_thresholds_by_hand():
    anom = pd.Series([-5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, np.nan])
    # negatives: -5..-1, q=0.1 -> position 0.4 -> -5 + 0.4 = -4.6
    assert anomaly_threshold(anom, 0.10) == pytest.approx(-4.6)
    # all 9 values: position 0.8 -> -4.2
    assert anomaly_threshold(anom, 0.10, "quantile") == pytest.approx(-4.2)
    # medians: negative tail -3 (flags -5, -4), whole distribution -1 (flags -5..-2)
    assert flag_anomalies(anom, 0.5).tolist() == [True, True] + [False] * 8
    assert flag_anomalies(anom, 0.5, "quantile").tolist() == [True] * 4 + [False] * 6
    with pytest.raises(ValueError, match="method"):
        flag_anomalies(anom, method="lowest")


def _planted() -> pd.Series:
    # 400 days of anomalies (zero seasonal cycle): +1 by default, 186 days at -1 and 14
    # extreme days at -10 (one at -12): days 5-10 (run of 6), 20-23 (run of 4),
    # 30-34 with day 32 missing (two runs of 2).
    values = np.ones(400)
    values[200:386] = -1.0
    values[5:11] = -10.0
    values[8] = -12.0
    values[20:24] = -10.0
    values[30:35] = -10.0
    values[32] = np.nan
    return pd.Series(values, index=pd.date_range("2017-01-01", periods=400, freq="D"))


def test_detect_extremes_hand_worked():
    gpp = _planted()
    # 200 negatives sorted: -12, -10 x13, -1 x186; q=0.1 -> position 19.9 -> threshold -1;
    # strictly below -1 -> exactly the 14 extreme days.
    res = detect_extremes(gpp, cycle=ZERO_CYCLE)
    assert res.threshold == pytest.approx(-1.0)
    assert res.flagged.sum() == 14
    assert list(res.events.columns) == ["start", "end", "length", "min_anomaly"]
    assert res.events.to_dict("records") == [{
        "start": pd.Timestamp("2017-01-06"), "end": pd.Timestamp("2017-01-11"),
        "length": 6, "min_anomaly": -12.0}]
    assert res.flags.sum() == 6 and res.flags["2017-01-06":"2017-01-11"].all()
    assert res.flags.dtype == bool

    res4 = detect_extremes(gpp, min_length=4, cycle=ZERO_CYCLE)
    assert res4.events["length"].tolist() == [6, 4]
    assert res4.events["start"].iloc[1] == pd.Timestamp("2017-01-21")
    # the missing day 32 splits days 30-34 into two runs of 2
    res2 = detect_extremes(gpp, min_length=2, cycle=ZERO_CYCLE)
    assert res2.events["length"].tolist() == [6, 4, 2, 2]
    assert res2.events["end"].iloc[2] == pd.Timestamp("2017-02-01")


def test_missing_dates_break_runs_and_run_at_end():
    gpp = _planted()
    # dropping a date (not just NaN) must also break a run: remove day 7 from the 6-day run
    gpp = gpp.drop(gpp.index[7])
    gpp.iloc[-5:] = -10.0  # a run of 5 touching the end of the series
    res = detect_extremes(gpp, cycle=ZERO_CYCLE)
    assert len(res.anomalies) == 400  # gap re-inserted on the daily calendar
    assert res.events["length"].tolist() == [5]
    assert res.events["end"].iloc[0] == pd.Timestamp("2018-02-04")


def test_planted_drought_found_in_multiyear_series():
    days = pd.date_range("2016-01-01", "2020-12-31", freq="D")
    doy = day_of_year_365(days)
    rng = np.random.default_rng(42)
    gpp = 5 + 4 * np.sin(2 * np.pi * (doy - 100) / 365) + rng.normal(0, 0.1, len(days))
    gpp = pd.Series(gpp, index=days)
    gpp["2018-07-10":"2018-07-19"] -= 5.0  # 10-day drought
    res = detect_extremes(gpp)
    assert len(res.events) == 1
    event = res.events.iloc[0]
    assert (event.start, event.end, event.length) == (pd.Timestamp("2018-07-10"),
                                                      pd.Timestamp("2018-07-19"), 10)
    # the drought is averaged into the cycle with weight 1/5: anomaly about -4
    assert -4.6 < event.min_anomaly < -3.4


def _runs_reference(flags: list[bool], min_length: int) -> list[tuple[int, int]]:
    """Plain-loop run finder, an independent implementation."""
    out, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_length:
                out.append((start, i - 1))
            start = None
    return out


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-20, 20, allow_nan=False), st.just(np.nan)),
                       min_size=1, max_size=120),
       min_length=st.integers(1, 7),
       method=st.sampled_from(["negative_tail", "quantile"]))
def test_runs_match_reference(values, min_length, method):
    gpp = pd.Series(values, index=pd.date_range("2019-03-01", periods=len(values), freq="D"))
    res = detect_extremes(gpp, min_length=min_length, method=method, cycle=ZERO_CYCLE)
    anom = np.asarray(values)
    flagged = [bool(a < res.threshold) for a in anom]  # NaN compares False
    assert res.flagged.tolist() == flagged
    runs = _runs_reference(flagged, min_length)
    assert [(e.start, e.end) for e in res.events.itertuples()] == [
        (gpp.index[a], gpp.index[b]) for a, b in runs]
    assert res.flags.sum() == sum(b - a + 1 for a, b in runs)
    for e, (a, b) in zip(res.events.itertuples(), runs, strict=True):
        assert e.min_anomaly == np.min(anom[a:b + 1])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nan_frac=st.floats(0.0, 0.9),
       start=st.dates(pd.Timestamp("2000-01-01").date(), pd.Timestamp("2030-01-01").date()),
       n_days=st.integers(1, 1500))
def test_anomalies_average_to_zero_per_day_of_year(seed, nan_frac, start, n_days):
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 30, n_days)
    values[rng.random(n_days) < nan_frac] = np.nan
    gpp = pd.Series(values, index=pd.date_range(start, periods=n_days, freq="D"))
    anom = anomalies(gpp)
    doy = day_of_year_365(pd.DatetimeIndex(anom.index))
    a = anom.to_numpy()
    # every day of year that has data: the anomalies of its years average to zero
    for d in np.unique(doy[~np.isnan(a)]):
        assert abs(np.nanmean(a[doy == d])) < 1e-9
    assert np.array_equal(np.isnan(a), np.isnan(values))


def test_all_missing_and_no_negative_anomalies():
    days = pd.date_range("2017-01-01", periods=30, freq="D")
    res = detect_extremes(pd.Series(np.nan, index=days))
    assert np.isnan(res.threshold) and res.events.empty and not res.flags.any()
    res = detect_extremes(pd.Series(1.0, index=days), cycle=ZERO_CYCLE)
    assert np.isnan(res.threshold) and res.events.empty
