"""Clear-sky radiation against published and independent references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

from gpp_cubes.sensors.clearsky import clear_sky_ghi, daily_clear_sky_ghi, solar_position

# Golden, Colorado (NREL SRRL): the SPA report's worked example (Reda & Andreas 2008, Table A4.1)
GOLDEN = dict(latitude=39.742476, longitude=-105.1786, elevation_m=1830.14)


def test_spa_published_example() -> None:
    t = pd.DatetimeIndex([pd.Timestamp("2003-10-17 12:30:30", tz="Etc/GMT+7")])  # UTC-7
    sp = solar_position(t, **GOLDEN, pressure_pa=82000.0, temperature_c=11.0, delta_t=67.0)
    # published: topocentric zenith 50.11162 deg, topocentric azimuth 194.34024 deg
    assert sp["apparent_zenith"].iloc[0] == pytest.approx(50.11162, abs=5e-5)
    assert sp["azimuth"].iloc[0] == pytest.approx(194.34024, abs=5e-5)


def test_daily_mean_equals_quadrature_of_ineichen() -> None:
    day = pd.Timestamp("2019-06-10")
    ours = daily_clear_sky_ghi(**GOLDEN, start=day, end=day).iloc[0]

    def ghi_at(seconds: float) -> float:
        t = pd.DatetimeIndex([day.tz_localize("UTC") + pd.Timedelta(seconds=seconds)])
        return float(clear_sky_ghi(t, **GOLDEN).iloc[0])

    # adaptive quadrature over the UTC day, split at the (approximate) sunrise and sunset kinks
    fine = pd.date_range(day, periods=24 * 60, freq="1min", tz="UTC")
    g = clear_sky_ghi(fine, **GOLDEN).to_numpy()
    lit = np.flatnonzero(g > 0)
    kinks = [lit[0] * 60.0, lit[-1] * 60.0 + 60.0]
    total, _ = integrate.quad(ghi_at, 0.0, 86400.0, points=kinks, limit=200, epsabs=1e-3)
    reference = total / 86400.0
    assert ours == pytest.approx(reference, rel=2e-3)  # 10-min midpoint rule vs adaptive quad


def test_daily_mean_bounded_by_extraterrestrial_daily_mean() -> None:
    # Daily mean top-of-atmosphere irradiance on a horizontal plane, by hand (Duffie & Beckman
    # eq. 1.10.3): H0 = S E0 / pi * (cos phi cos d sin ws + ws sin phi sin d)
    day = pd.Timestamp("2019-06-10")
    n = day.dayofyear
    decl = math.radians(23.45) * math.sin(2 * math.pi * (284 + n) / 365)
    phi = math.radians(GOLDEN["latitude"])
    ws = math.acos(-math.tan(phi) * math.tan(decl))
    e0 = 1 + 0.033 * math.cos(2 * math.pi * n / 365)
    h0 = 1366.1 * e0 / math.pi * (math.cos(phi) * math.cos(decl) * math.sin(ws)
                                  + ws * math.sin(phi) * math.sin(decl))
    ours = daily_clear_sky_ghi(**GOLDEN, start=day, end=day).iloc[0]
    # a clear, high-altitude atmosphere transmits roughly 70-85 % of it
    assert 0.70 * h0 < ours < 0.85 * h0


def test_polar_night_is_dark_and_haurwitz_agrees_in_summer() -> None:
    # Varrio (FI-Var, 67.75 N): the sun stays below the horizon around the winter solstice
    fi = dict(latitude=67.7549, longitude=29.61, elevation_m=395.0)
    winter = daily_clear_sky_ghi(**fi, start="2018-12-18", end="2018-12-24")
    assert (winter == 0).all()
    summer_i = daily_clear_sky_ghi(**fi, start="2018-06-15", end="2018-06-15", model="ineichen")
    summer_h = daily_clear_sky_ghi(**fi, start="2018-06-15", end="2018-06-15", freq="30min",
                                   model="haurwitz")
    # two different clear-sky models and steps: agree within 15 %
    assert summer_i.iloc[0] == pytest.approx(summer_h.iloc[0], rel=0.15)


def test_daily_index_and_errors() -> None:
    s = daily_clear_sky_ghi(**GOLDEN, start="2020-02-27", end="2020-03-02")
    assert list(s.index.strftime("%Y-%m-%d")) == [
        "2020-02-27", "2020-02-28", "2020-02-29", "2020-03-01", "2020-03-02"]
    assert s.index.tz is None
    with pytest.raises(ValueError, match="divides one day"):
        daily_clear_sky_ghi(**GOLDEN, start="2020-01-01", end="2020-01-01", freq="7h")
