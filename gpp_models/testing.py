"""A small synthetic world of feature cubes with a KNOWN truth, written through the contract.

Used by the tests, the benchmarks and as a fallback demo input. GPP is planted as
``GPP = max(0, 8 g + 1.5 mean15(S2_PC1) - 0.25 (MOD11A1_dt - LST_clim) + e)`` with
``g = clear_sky_ghi / 300 W m-2``, so clear-sky radiation dominates, the Sentinel-2 first
component acts with a 15-day memory and land-surface temperature anomalies (heat/drought
events, flagged as ``extreme``) lower GPP. The other predictors are autocorrelated noise.

The stores follow the contract of :mod:`gpp_cubes.contract`: per-site ``<SITE>.zarr`` and
a multi-site ``features.zarr`` (dims ``site``, ``time``), each with its completion marker.

This is a test helper, so unlike the rest of ``gpp_models`` (which may import only
``gpp_cubes.contract`` and ``gpp_cubes.errors``) it writes through the real writer of
:mod:`gpp_cubes.cube.features` and :mod:`gpp_cubes.cube.store` (``combine_sites``,
``write_site_store``, ``write_multisite_store``, ``write_zarr_atomic``): the synthetic stores
are then exactly what a build writes, not a second implementation of the contract.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gpp_cubes.contract import FIXED_PREDICTORS, FORMAT_VERSION, MULTISITE_NAME, predictor_metadata
from gpp_cubes.paper import STUDY_END, STUDY_START

TRUE_DRIVER = "clear_sky_ghi"

# (site id, latitude [deg], longitude [deg], elevation [m], IGBP class): real ICOS towers.
DEFAULT_SITES: tuple[tuple[str, float, float, float, str], ...] = (
    ("DE-Hai", 51.0792, 10.4522, 430.0, "DBF"),
    ("BE-Vie", 50.3049, 5.9981, 493.0, "MF"),
    ("FI-Var", 67.7549, 29.6100, 395.0, "ENF"),
)


def predictor_names(n_pcs: int = 3) -> list[str]:
    """Contract predictor names in order: S2 PCs, S1, MODIS LST, clear-sky GHI."""
    return [f"S2_PC{i}" for i in range(1, n_pcs + 1)] + list(FIXED_PREDICTORS)


def daily_clear_sky_ghi(latitude: float, time: pd.DatetimeIndex) -> np.ndarray:
    """Daily mean clear-sky global horizontal irradiance [W m-2], a 0.75 x extraterrestrial model.

    Parameters
    ----------
    latitude : float
        Site latitude [deg].
    time : pandas.DatetimeIndex
        Days.

    References
    ----------
    Duffie, J. A. & Beckman, W. A. (2013). Solar Engineering of Thermal Processes, eq. 1.10.3
    (daily extraterrestrial radiation) and 1.6.1 (declination, Cooper 1969).
    """
    doy = time.dayofyear.to_numpy().astype(float)
    phi = np.deg2rad(latitude)
    delta = np.deg2rad(23.45) * np.sin(2 * np.pi * (284 + doy) / 365)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    e0 = 1 + 0.033 * np.cos(2 * np.pi * doy / 365)
    h0 = 1361.0 / np.pi * e0 * (np.cos(phi) * np.cos(delta) * np.sin(ws)
                                 + ws * np.sin(phi) * np.sin(delta))
    return (0.75 * np.maximum(h0, 0.0)).astype(np.float32)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """AR(1) series with stationary standard deviation ``sd``."""
    e = rng.normal(0, sd * np.sqrt(1 - phi**2), n)
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def synthetic_site(
    site: tuple[str, float, float, float, str],
    *,
    seed: int = 0,
    start: str = STUDY_START,
    end: str = STUDY_END,
    n_pcs: int = 3,
    gap_fraction: float = 0.15,
) -> xr.Dataset:
    """One contract-conforming per-site Dataset with planted GPP (see module docstring).

    Parameters
    ----------
    site : tuple
        (site id, latitude [deg], longitude [deg], elevation [m], IGBP class).
    seed : int
        Random seed (combined with the site's position in nothing: pass different seeds).
    start, end : str
        First and last day (inclusive).
    n_pcs : int
        Number of Sentinel-2 principal components.
    gap_fraction : float
        Approximate fraction of GPP days set to NaN (in blocks of 1-10 days) [1].
    """
    site_id, lat, lon, elev, igbp = site
    rng = np.random.default_rng(seed)
    time = pd.date_range(start, end, freq="D")
    n = time.size
    ghi = daily_clear_sky_ghi(lat, time)
    g = ghi / 300.0

    # Heat/drought events: 1-2 per summer, 8-20 days, +7 K land-surface temperature.
    event = np.zeros(n, bool)
    for year in np.unique(time.year):
        for _ in range(rng.integers(1, 3)):
            first = pd.Timestamp(f"{year}-05-15") + pd.Timedelta(days=int(rng.integers(0, 90)))
            i0 = int(np.searchsorted(time, first))
            event[i0 : i0 + int(rng.integers(8, 21))] = True
    lst_clim = 278.0 + 18.0 * g
    lst_anom = _ar1(rng, n, 0.9, 1.5) + 7.0 * event
    lst_dt = lst_clim + lst_anom
    pc1 = _ar1(rng, n, 0.98, 1.0)
    pc1_mem = pd.Series(pc1).rolling(15, min_periods=1).mean().to_numpy()
    gpp = np.maximum(0.0, 8.0 * g + 1.5 * pc1_mem - 0.25 * lst_anom + rng.normal(0, 0.3, n))

    gaps = np.zeros(n, bool)
    while gaps.mean() < gap_fraction:
        i0 = int(rng.integers(0, n))
        gaps[i0 : i0 + int(rng.integers(1, 11))] = True
    gpp[gaps] = np.nan

    values: dict[str, np.ndarray] = {"S2_PC1": pc1}
    for i in range(2, n_pcs + 1):
        values[f"S2_PC{i}"] = _ar1(rng, n, 0.95, 1.0)
    values["S1_VV"] = -8.0 + _ar1(rng, n, 0.9, 0.8)
    values["S1_VH"] = -14.0 + _ar1(rng, n, 0.9, 0.8)
    values["S1_DpRVIVV"] = 0.5 + _ar1(rng, n, 0.9, 0.05)
    values["MOD11A1_dt"] = lst_dt
    values["MOD11A1_nt"] = lst_clim - 8.0 + _ar1(rng, n, 0.8, 1.5)
    values["MYD11A1_dt"] = lst_dt + 1.0 + rng.normal(0, 0.5, n)
    values["MYD11A1_nt"] = lst_clim - 9.0 + _ar1(rng, n, 0.8, 1.5)
    values["clear_sky_ghi"] = ghi
    # Sentinel-1 starts a few days late: NaN outside the data range, as the contract allows.
    for name in ("S1_VV", "S1_VH", "S1_DpRVIVV"):
        values[name][:6] = np.nan

    names = predictor_names(n_pcs)
    data_vars = {}
    for name in names:
        data_vars[name] = xr.Variable(
            "time", values[name].astype(np.float32),
            attrs={"units": predictor_metadata(name)[0], "long_name": f"synthetic {name}",
                   "n_observed": int(n), "n_interpolated": 0, "n_edge_filled": 0},
        )
    data_vars["GPP"] = xr.Variable(
        "time", gpp.astype(np.float32),
        attrs={"units": "g m-2 d-1", "long_name": "synthetic gross primary production",
               "n_observed": int(np.isfinite(gpp).sum())},
    )
    data_vars["extreme"] = xr.Variable("time", event, attrs={"long_name": "planted heat event"})
    attrs = {
        "format_version": FORMAT_VERSION,
        "site_id": site_id,
        "latitude": float(lat),
        "longitude": float(lon),
        "elevation_m": float(elev),
        "igbp": igbp,
        "predictors": names,
        "target": "GPP",
        "train_years": [2016, 2017, 2018],
        "test_years": [2019, 2020],
        "provenance": json.dumps({"generator": "gpp_models.testing.synthetic_site",
                                  "seed": seed, "truth": "8 g + 1.5 mean15(PC1) - 0.25 dLST"}),
    }
    return xr.Dataset(data_vars, coords={"time": time.values.astype("datetime64[ns]")},
                      attrs=attrs)


def write_store(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to ``path`` with the build's atomic writer (temp path, rename, marker).

    Unlike :func:`gpp_cubes.cube.features.write_site_store` the path is free and ``ds`` is not
    checked, so tests can write stores that break the contract on purpose.
    """
    from gpp_cubes.cube.store import write_zarr_atomic

    return write_zarr_atomic(ds, path, provenance=json.loads(ds.attrs.get("provenance", "{}")))


def write_synthetic_world(
    out_dir: str | Path,
    sites: Sequence[tuple[str, float, float, float, str]] = DEFAULT_SITES,
    *,
    seed: int = 0,
    start: str = STUDY_START,
    end: str = STUDY_END,
    n_pcs: int = 3,
    per_site: bool = True,
) -> Path:
    """Write per-site stores and ``features.zarr`` under ``out_dir``; return the multi-site path.

    Parameters
    ----------
    out_dir : path
        Output directory (created).
    sites : sequence of tuples
        (site id, latitude [deg], longitude [deg], elevation [m], IGBP class) per site.
    seed : int
        Base seed; site i uses ``seed + i``.
    start, end : str
        First and last day.
    n_pcs : int
        Sentinel-2 principal components.
    per_site : bool
        Also write ``<SITE>.zarr`` for every site.
    """
    from gpp_cubes.cube.features import combine_sites, write_multisite_store, write_site_store

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dss = [synthetic_site(s, seed=seed + i, start=start, end=end, n_pcs=n_pcs)
           for i, s in enumerate(sites)]
    if per_site:  # the build's path: site stores first, then stacked from them
        return write_multisite_store([write_site_store(ds, out) for ds in dss], out)
    return write_store(combine_sites(dss), out / MULTISITE_NAME)
