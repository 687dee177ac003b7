"""The demo world's ground truth: land cover patches, phenology, temperature, drought, GPP.

Everything here is a pure, deterministic function of the site, the dates and a seed; the
product writers (:mod:`~gpp_cubes.demo.s2_render`, :mod:`~gpp_cubes.demo.s1`,
:mod:`~gpp_cubes.demo.modis`, :mod:`~gpp_cubes.demo.corine`, :mod:`~gpp_cubes.demo.fluxnet`)
all sample the same truth, so a stage that recovers greenness, temperature or GPP from the
products can be checked against it.

GPP model (the "known function" of the FLUXNET files) [g C m-2 d-1]::

    GPP = GPP_max(IGBP) * (GHI_cs / 300 W m-2) * (0.7 + 0.3 g) * (0.6 + 0.4 f_T) * d + e

with ``GHI_cs`` the daily mean clear-sky GHI (:mod:`gpp_cubes.sensors.clearsky`), ``g`` the
greenness in [0, 1] that the Sentinel-2 scenes carry (NDVI and NIR follow it), ``f_T`` a
logistic temperature response of the daily LST the MODIS scenes carry, ``d`` the drought
factor (0.4 inside a planted drought, 1 elsewhere, 5-day linear ramps) and ``e`` noise.
The weights make clear-sky radiation the dominant driver: on the default world GHI alone
explains R^2 ~ 0.9 of the noise-free GPP at every site, greenness ~ 0.8, LST ~ 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gpp_cubes.sensors.clearsky import daily_clear_sky_ghi

#: CLC code of the forest around the tower, by IGBP class.
FOREST_CLC = {"DBF": 311, "EBF": 311, "ENF": 312, "MF": 313}
#: Peak GPP [g C m-2 d-1] by IGBP class (order of magnitude of European towers).
GPP_MAX = {"DBF": 14.0, "EBF": 10.0, "ENF": 9.0, "MF": 11.0}
#: GPP multiplier, greenness multiplier and LST increase [K] inside a drought.
DROUGHT_GPP, DROUGHT_GREEN, DROUGHT_LST_K = 0.4, 0.75, 6.0
DROUGHT_RAMP_DAYS = 5
GHI_REF = 300.0


@dataclass(frozen=True)
class Patch:
    """A disc of one land-cover class, in the site's UTM coordinates.

    Attributes
    ----------
    kind : str
        ``"grassland"``, ``"cropland"`` or ``"urban"``.
    clc : int
        CORINE Land Cover code (231, 211, 112).
    x, y : float
        Centre [m, UTM].
    radius_m : float
        Radius [m].
    """

    kind: str
    clc: int
    x: float
    y: float
    radius_m: float


def site_rng(seed: int, site_id: str, stream: str) -> np.random.Generator:
    """An independent, reproducible random stream per (seed, site, purpose)."""
    key = [seed, *(ord(c) for c in site_id), *(ord(c) for c in stream)]
    return np.random.default_rng(key)


def make_patches(seed: int, site_id: str, tower_x: float, tower_y: float) -> tuple[Patch, ...]:
    """Non-forest patches around a tower.

    One grassland disc inside the 1 km circle (radius 180 m, so >= 96 % of the circle stays
    forest), a cropland disc and an urban disc wholly outside 1.2 km (so no artificial class
    falls within the paper's 1 km buffer).
    """
    rng = site_rng(seed, site_id, "patches")
    a = rng.uniform(0, 2 * np.pi, 3)
    # keep the three patches apart in direction
    a[1] = a[0] + 2.1 + rng.uniform(-0.3, 0.3)
    a[2] = a[0] - 2.1 + rng.uniform(-0.3, 0.3)
    spec = [("grassland", 231, 600.0, 180.0), ("cropland", 211, 1750.0, 450.0),
            ("urban", 112, 1650.0, 250.0)]
    return tuple(
        Patch(kind, clc, float(tower_x + d * np.cos(ang)), float(tower_y + d * np.sin(ang)), r)
        for (kind, clc, d, r), ang in zip(spec, a, strict=True)
    )


def landcover(x: np.ndarray, y: np.ndarray, forest_clc: int,
              patches: tuple[Patch, ...]) -> np.ndarray:
    """CLC code at UTM points (arrays broadcast) [uint16]."""
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    out = np.full(x.shape, forest_clc, dtype=np.uint16)
    for p in patches:
        out[np.hypot(x - p.x, y - p.y) <= p.radius_m] = p.clc
    return out


def drought_events(seed: int, site_id: str, start: str, end: str) -> pd.DataFrame:
    """Planted drought extremes: one in summer 2018 and one in another summer.

    Returns
    -------
    pandas.DataFrame
        Columns ``site``, ``start``, ``end`` (inclusive days), ``kind``, ``gpp_factor``,
        only for events wholly inside ``start``..``end``.
    """
    rng = site_rng(seed, site_id, "drought")
    years = list(range(pd.Timestamp(start).year, pd.Timestamp(end).year + 1))
    rows = []
    if 2018 in years:
        s = pd.Timestamp("2018-07-01") + pd.Timedelta(days=int(rng.integers(0, 15)))
        rows.append((s, s + pd.Timedelta(days=int(rng.integers(28, 42)))))
    others = [yr for yr in years if yr != 2018]
    if others:
        yr = int(rng.choice(others))
        s = pd.Timestamp(f"{yr}-06-10") + pd.Timedelta(days=int(rng.integers(0, 40)))
        rows.append((s, s + pd.Timedelta(days=int(rng.integers(21, 35)))))
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    rows = [(s, e) for s, e in rows if s >= lo and e <= hi]
    return pd.DataFrame({
        "site": [site_id] * len(rows),
        "start": [s.strftime("%Y-%m-%d") for s, _ in rows],
        "end": [e.strftime("%Y-%m-%d") for _, e in rows],
        "kind": ["drought"] * len(rows),
        "gpp_factor": [DROUGHT_GPP] * len(rows),
    })


def _drought_weight(days: pd.DatetimeIndex, events: pd.DataFrame) -> np.ndarray:
    """0 outside droughts, 1 on their plateau, linear ramps of DROUGHT_RAMP_DAYS inside."""
    w = np.zeros(len(days))
    t = days.values.astype("datetime64[D]").astype(np.int64)
    for s, e in zip(events["start"], events["end"], strict=True):
        s0 = np.datetime64(s, "D").astype(np.int64)
        e0 = np.datetime64(e, "D").astype(np.int64)
        up = np.clip((t - s0 + 1) / DROUGHT_RAMP_DAYS, 0, 1)
        down = np.clip((e0 - t + 1) / DROUGHT_RAMP_DAYS, 0, 1)
        w = np.maximum(w, np.where((t >= s0) & (t <= e0), np.minimum(up, down), 0.0))
    return w


def phenology(days: pd.DatetimeIndex, latitude: float, igbp: str,
              rng: np.random.Generator) -> np.ndarray:
    """Greenness g in [0, 1] without drought: double logistic in day of year.

    Start (SOS) and end (EOS) of season shift with latitude (later spring and earlier autumn
    northwards) and by +-7 days from year to year. Deciduous forest drops to 0 in winter;
    evergreen needleleaf keeps 0.55, mixed forest 0.35.
    """
    doy = days.dayofyear.to_numpy().astype(float)
    years = days.year.to_numpy()
    sos = np.empty(len(days))
    eos = np.empty(len(days))
    for yr in np.unique(years):
        jit = rng.uniform(-7, 7, 2)
        sel = years == yr
        sos[sel] = 100 + 2.0 * (latitude - 45) + jit[0]
        eos[sel] = 300 - 2.0 * (latitude - 45) + jit[1]
    curve = 1 / (1 + np.exp(-(doy - sos) / 6.0)) - 1 / (1 + np.exp(-(doy - eos) / 8.0))
    floor = {"DBF": 0.0, "EBF": 0.7, "ENF": 0.55, "MF": 0.35}.get(igbp, 0.3)
    return np.clip(floor + (1 - floor) * curve, 0, 1)


def daily_truth(site_id: str, latitude: float, longitude: float, elevation_m: float,
                igbp: str, start: str, end: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The daily truth of a site and its drought events.

    Returns
    -------
    daily : pandas.DataFrame
        Indexed by day; columns ``clear_sky_ghi`` [W m-2], ``greenness`` [1] (with drought),
        ``lst_day_k``, ``lst_night_k`` [K] (seasonal + weather + drought), ``drought``
        [0-1 weight], ``gpp_true`` [g C m-2 d-1] (noise-free), ``gpp_noisy``.
    events : pandas.DataFrame
        See :func:`drought_events`.
    """
    days = pd.date_range(start, end, freq="D", name="time")
    rng = site_rng(seed, site_id, "daily")
    ghi = daily_clear_sky_ghi(latitude, longitude, elevation_m, start, end).to_numpy()
    events = drought_events(seed, site_id, start, end)
    w = _drought_weight(days, events)
    green = phenology(days, latitude, igbp, rng) * (1 - (1 - DROUGHT_GREEN) * w)
    # LST: seasonal cosine (coldest ~20 Jan), AR(1) weather (sd 2.5 K), drought heat
    doy = days.dayofyear.to_numpy()
    t0 = 288.0 - 0.7 * (latitude - 45)
    amp = 8.0 + 0.35 * (latitude - 45)
    season = -np.cos(2 * np.pi * (doy - 20) / 365.25)
    eps = rng.normal(0, 2.5 * np.sqrt(1 - 0.8**2), len(days))
    weather = np.empty(len(days))
    acc = rng.normal(0, 2.5)
    for i, e in enumerate(eps):
        acc = 0.8 * acc + e
        weather[i] = acc
    lst_day = t0 + amp * season + weather + DROUGHT_LST_K * w
    lst_night = lst_day - (5.0 + 5.0 * (season + 1) / 2) - DROUGHT_LST_K * 0.3 * w
    f_t = 1 / (1 + np.exp(-(lst_day - 278.15) / 2.5))
    d = 1 - (1 - DROUGHT_GPP) * w
    gpp = (GPP_MAX.get(igbp, 10.0) * (ghi / GHI_REF) * (0.7 + 0.3 * green)
           * (0.6 + 0.4 * f_t) * d)
    noise = rng.normal(0, 0.25 + 0.04 * gpp)
    daily = pd.DataFrame({
        "clear_sky_ghi": ghi, "greenness": green, "lst_day_k": lst_day,
        "lst_night_k": lst_night, "temperature_factor": f_t, "drought": w,
        "gpp_true": gpp, "gpp_noisy": gpp + noise,
    }, index=days)
    return daily, events
