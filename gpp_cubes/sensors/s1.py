"""Sentinel-1 RTC backscatter at the tower: forest mean in the 50-1000 m annulus.

Stage of the data flow (paper section 2.1, "Sentinel-1")::

    sentinel-1-rtc items (gamma0 vv, vh, linear power) ──> site grid (10 m UTM)
        ──> CORINE forest mask ∩ annulus 50-1000 m ──> mean in LINEAR power
        ──> S1_VV, S1_VH = 10 log10(mean) [dB];  S1_DpRVIVV = spyndex DpRVIVV(mean) [1]

Why the mean is taken in linear power
-------------------------------------
gamma0 is a power ratio; the backscatter of an area is the mean of its pixels' *powers*.
Averaging dB values would compute a geometric mean, biased low by speckle (for fully
developed speckle with L looks by about -10 log10(e) (psi(L) - ln L) dB) and dominated by
dark pixels. So pixels, passes and days are all averaged in linear units, and dB is taken
once, of the final mean. DpRVIVV is computed from the same linear means, as the index is
defined on linear gamma0 (Bhogapurapu et al. 2021).

The annulus
-----------
Pixels whose centre is closer than 50 m to the tower are excluded (the mast and its
infrastructure are bright, corner-reflector-like scatterers), as are pixels beyond 1000 m
(:data:`gpp_cubes.paper.S1_ANNULUS_INNER_M`, :data:`gpp_cubes.paper.S1_ANNULUS_OUTER_M`).
Within the annulus only CORINE forest pixels (CLC 311/312/313) count, and only pixels where
both VV and VH are valid, so both polarisations (and DpRVI) describe the same pixels.

One value per day: passes
-------------------------
Each acquisition pass is reduced on its own: the items are split by relative orbit (which
fixes the pass direction and geometry) and each group is loaded with one time step per
local solar day, so the frames (slices) of one datatake are mosaicked but passes are not.
A pass whose valid forest-annulus pixels cover less than ``min_valid_fraction`` (default
50 %) of the forest annulus (e.g. the swath edge) is dropped. When several passes fall on
the same local solar day (ascending ~18 h and descending ~6 h local time in Europe, or two
overlapping orbits at high latitude), the day's value is the **equal-weight linear mean of
the passes' linear means** (VV and VH separately); dB and DpRVI are then computed from those
daily linear means.

References
----------
Montero, D. et al. (2024), section 2.1, "Sentinel-1".
Bhogapurapu, N. et al. (2021). Dual-polarimetric descriptors from Sentinel-1 GRD SAR data for
    crop growth assessment. ISPRS J. Photogramm. Remote Sens. 178, 20-35.
Montero, D. et al. (2023). A standardized catalogue of spectral indices to advance the use of
    remote sensing in Earth system research. Sci. Data 10, 197 (spyndex).
Small, D. (2011). Flattening gamma: radiometric terrain correction for SAR imagery. IEEE TGRS
    49(8), 3081-3093.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gpp_cubes.errors import BuildError, EmptySearchError
from gpp_cubes.paper import S1_ANNULUS_INNER_M, S1_ANNULUS_OUTER_M
from gpp_cubes.sensors.result import SensorResult

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)

S1_COLLECTION = "sentinel-1-rtc"
S1_BANDS = ("vv", "vh")
S1_NODATA = -32768.0
FEATURES = ("S1_VV", "S1_VH", "S1_DpRVIVV")


def linear_to_db(x: np.ndarray | float) -> np.ndarray:
    """10 log10(x) [dB] of linear power; non-positive or missing values give NaN.

    Parameters
    ----------
    x : array_like
        Linear power ratio (gamma0) [1].

    Returns
    -------
    numpy.ndarray
        [dB]
    """
    a = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, 10.0 * np.log10(np.where(a > 0, a, 1.0)), np.nan)


def dprvi_vv(vv: np.ndarray | float, vh: np.ndarray | float) -> np.ndarray:
    """DpRVIVV of linear gamma0 with spyndex (formula from the Awesome Spectral Indices).

    Parameters
    ----------
    vv, vh : array_like
        Linear gamma0 VV and VH [1].

    Returns
    -------
    numpy.ndarray
        DpRVIVV [1].
    """
    import spyndex

    vv = np.asarray(vv, dtype=np.float64)
    vh = np.asarray(vh, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = spyndex.computeIndex("DpRVIVV", params={"VV": vv, "VH": vh})
    return np.asarray(out, dtype=np.float64)


def s1_features_from_cube(vv: xr.DataArray, vh: xr.DataArray, forest: xr.DataArray | np.ndarray,
                          grid: SiteGrid, *, min_valid_fraction: float = 0.5,
                          inner_m: float = S1_ANNULUS_INNER_M,
                          outer_m: float = S1_ANNULUS_OUTER_M
                          ) -> pd.DataFrame:
    """Daily S1 features from per-pass gamma0 cubes on the site grid.

    Parameters
    ----------
    vv, vh : xarray.DataArray, dims (time, y, x)
        Linear gamma0 [1] on ``grid``, one time step per pass; NaN, values <= 0 and the
        product's nodata (-32768) count as missing.
    forest : xarray.DataArray or numpy.ndarray of bool, dims (y, x)
        Forest mask on ``grid``.
    grid : SiteGrid
        The site grid (tower position).
    min_valid_fraction : float, default 0.5
        Minimum fraction of the forest-annulus pixels that must be valid in a pass [0-1].
    inner_m, outer_m : float
        Annulus radii [m] (paper: 50 and 1000).

    Returns
    -------
    pandas.DataFrame
        Index ``time`` (local solar day, midnight); columns ``S1_VV``, ``S1_VH`` [dB],
        ``S1_DpRVIVV`` [1], ``S1_VV_linear``, ``S1_VH_linear`` [1] (daily linear means) and
        ``n_passes``. Days without a valid pass are absent.
    """
    import xarray as xr

    from gpp_cubes.reduce import masked_mean, radial_mask
    from gpp_cubes.stac.load import tower_lon

    if vv.shape != vh.shape:
        raise ValueError(f"VV and VH cubes differ in shape: {vv.shape} vs {vh.shape}")
    ring = radial_mask(grid, outer_m, inner_m=inner_m)
    forest_da = xr.DataArray(np.asarray(forest, dtype=bool), dims=("y", "x"),
                             coords={"y": ring["y"], "x": ring["x"]})
    region = ring & forest_da
    n_region = int(region.sum())
    if n_region == 0:
        raise BuildError(f"no forest pixel in the {inner_m:g}-{outer_m:g} m annulus of the tower")
    vv = vv.assign_coords(y=ring["y"].values, x=ring["x"].values)
    vh = vh.assign_coords(y=ring["y"].values, x=ring["x"].values)
    valid = (vv > 0) & (vh > 0) & (vv != S1_NODATA) & (vh != S1_NODATA)
    mask = valid & region
    frac = (mask.sum(("y", "x")) / n_region).values
    vv_mean = masked_mean(vv, mask).values.astype(np.float64)
    vh_mean = masked_mean(vh, mask).values.astype(np.float64)
    keep = (frac >= min_valid_fraction) & np.isfinite(vv_mean) & np.isfinite(vh_mean)
    lon = tower_lon(grid)
    t = pd.DatetimeIndex(pd.to_datetime(vv["time"].values))
    days = (t + pd.to_timedelta(lon / 15.0, unit="h")).normalize()
    per_pass = pd.DataFrame({"vv": vv_mean, "vh": vh_mean}, index=days)[keep]
    daily = per_pass.groupby(level=0).agg(vv=("vv", "mean"), vh=("vh", "mean"),
                                          n_passes=("vv", "size"))
    out = pd.DataFrame({
        "S1_VV": linear_to_db(daily["vv"].to_numpy()),
        "S1_VH": linear_to_db(daily["vh"].to_numpy()),
        "S1_DpRVIVV": dprvi_vv(daily["vv"].to_numpy(), daily["vh"].to_numpy()),
        "S1_VV_linear": daily["vv"].to_numpy(),
        "S1_VH_linear": daily["vh"].to_numpy(),
        "n_passes": daily["n_passes"].to_numpy(),
    }, index=pd.DatetimeIndex(daily.index, name="time"))
    return out


def _orbit_key(item: Any) -> str:
    p = item.properties
    return f"{p.get('sat:orbit_state', '?')}-{p.get('sat:relative_orbit', '?')}"


def s1_features_from_items(items: Sequence[Any], grid: SiteGrid, forest: xr.DataArray, *,
                           engine: str = "odc", min_valid_fraction: float = 0.5,
                           site_id: str | None = None,
                           outer_m: float = S1_ANNULUS_OUTER_M) -> SensorResult:
    """Load S1 RTC items (split by orbit) and reduce them with :func:`s1_features_from_cube`.

    Parameters
    ----------
    items : sequence of pystac.Item
        ``sentinel-1-rtc`` items (signed) with ``vv`` and ``vh`` assets.
    grid : SiteGrid
        Site grid.
    forest : xarray.DataArray
        Forest mask on ``grid``.
    engine : {"odc", "stackstac"}
        Loader (:func:`gpp_cubes.stac.load.load_items`).
    min_valid_fraction : float
        See :func:`s1_features_from_cube`.
    site_id : str, optional
        Named in logs and errors.
    outer_m : float, default :data:`gpp_cubes.paper.S1_ANNULUS_OUTER_M` (1000)
        Outer radius of the annulus [m] (``gpp build --radius``).

    Returns
    -------
    SensorResult
    """
    import json

    from gpp_cubes.stac.load import compute_dropping_failures, load_items, tower_lon

    groups: dict[str, list[Any]] = {}
    for it in items:
        groups.setdefault(_orbit_key(it), []).append(it)
    frames, used, kept = [], [], 0
    for key in sorted(groups):
        cube = load_items(groups[key], list(S1_BANDS), grid, engine=engine, dtype="float32",
                          nodata=np.nan, groupby="solar_day", resampling="nearest",
                          site_id=site_id, precheck="assets")
        cube = compute_dropping_failures(cube, site_id=site_id)
        used += json.loads(cube.attrs.get("stac_items", "[]"))
        per_pass = s1_features_from_cube(cube["vv"], cube["vh"], forest, grid,
                                         min_valid_fraction=min_valid_fraction,
                                         outer_m=outer_m)
        # An item is kept when its pass (time step) contributed a day.
        lon = tower_lon(grid)
        t = pd.DatetimeIndex(pd.to_datetime(cube["time"].values))
        days = (t + pd.to_timedelta(lon / 15.0, unit="h")).normalize()
        for day, ids in zip(days, cube["items"].values, strict=True):
            if day in per_pass.index:
                kept += len(str(ids).split())
        frames.append(per_pass[["S1_VV_linear", "S1_VH_linear"]].rename(
            columns={"S1_VV_linear": "vv", "S1_VH_linear": "vh"}).assign(
            n=per_pass["n_passes"]))
    if frames:
        allp = pd.concat(frames)
        # Same-day passes of different orbits: equal-weight linear mean over passes.
        w = allp["n"].to_numpy()
        allp = allp.assign(vvw=allp["vv"] * w, vhw=allp["vh"] * w)
        g = allp.groupby(level=0).sum()
        vvd, vhd = g["vvw"] / g["n"], g["vhw"] / g["n"]
        frame = pd.DataFrame({
            "S1_VV": linear_to_db(vvd.to_numpy()), "S1_VH": linear_to_db(vhd.to_numpy()),
            "S1_DpRVIVV": dprvi_vv(vvd.to_numpy(), vhd.to_numpy()),
            "S1_VV_linear": vvd.to_numpy(), "S1_VH_linear": vhd.to_numpy(),
            "n_passes": g["n"].to_numpy().astype(int)},
            index=pd.DatetimeIndex(g.index, name="time")).sort_index()
    else:
        frame = pd.DataFrame(columns=[*FEATURES, "S1_VV_linear", "S1_VH_linear", "n_passes"],
                             index=pd.DatetimeIndex([], name="time"))
    params = {"collection": S1_COLLECTION, "bands": list(S1_BANDS),
              "annulus_m": [S1_ANNULUS_INNER_M, outer_m], "mean": "linear power",
              "min_valid_fraction": min_valid_fraction,
              "same_day_passes": "equal-weight linear mean of per-pass linear means",
              "index": "spyndex DpRVIVV", "engine": engine}
    return SensorResult(frame=frame, scenes_found=len(items), scenes_kept=kept,
                    item_ids=tuple(sorted(used)), params=params)


def s1_features(grid: SiteGrid, forest: xr.DataArray, start: str, end: str, *,
                provider: str = "planetary-computer", stac_url: str | None = None,
                site_id: str | None = None, engine: str = "odc",
                min_valid_fraction: float = 0.5,
                outer_m: float = S1_ANNULUS_OUTER_M) -> SensorResult:
    """Search ``sentinel-1-rtc`` over a site and return its daily S1 features.

    Parameters
    ----------
    grid : SiteGrid
        Site grid (10 m UTM, :func:`gpp_cubes.sites.grid.site_grid`).
    forest : xarray.DataArray
        Forest mask on ``grid`` (:func:`gpp_cubes.sites.forest.forest_mask`).
    start, end : str
        First and last day [ISO date].
    provider, stac_url : str
        STAC endpoint (:func:`gpp_cubes.stac.search.search_items`).
    site_id : str, optional
    engine : {"odc", "stackstac"}
    min_valid_fraction : float
    outer_m : float, default :data:`gpp_cubes.paper.S1_ANNULUS_OUTER_M` (1000)
        Outer radius of the annulus [m].

    Returns
    -------
    SensorResult
        An empty frame (and ``scenes_found`` 0) when the search finds nothing.
    """
    from gpp_cubes.stac.search import search_items

    try:
        items = search_items(S1_COLLECTION, grid, start, end, provider=provider,
                             stac_url=stac_url, max_cloud=None, site_id=site_id,
                             required_assets=list(S1_BANDS))
    except EmptySearchError:
        log.warning("%s: no %s items %s..%s", site_id, S1_COLLECTION, start, end)
        return SensorResult(frame=pd.DataFrame(
            columns=[*FEATURES, "S1_VV_linear", "S1_VH_linear", "n_passes"],
            index=pd.DatetimeIndex([], name="time")), scenes_found=0, scenes_kept=0)
    return s1_features_from_items(items, grid, forest, engine=engine,
                                  min_valid_fraction=min_valid_fraction, site_id=site_id,
                                  outer_m=outer_m)
