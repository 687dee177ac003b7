"""MODIS land surface temperature at the tower from STAC (default) or Earth Engine.

Stage of the data flow (paper section 2.1, "Land Surface Temperature")::

    modis-11A1-061 items ──> LST_Day_1km / LST_Night_1km + QC_Day / QC_Night
        ──> scale (0.02 K) + fill (0) + QC rule ──> 3x3 nan-aware mean ──> tower pixel

The cube is loaded on the product's *native* sinusoidal grid (a small window of 1 km MODIS
pixels around the tower), not on the 10 m UTM site grid: resampling 1 km pixels to 10 m and
back would only smear the pixel the tower sits in. The QC rule, scaling, smoothing and the
window are in :mod:`gpp_cubes.sensors.modis`, shared with the Earth Engine source
(:mod:`gpp_cubes.sensors.lst_ee`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.errors import AssetError, ConfigError, EmptySearchError
from gpp_cubes.sensors.modis import (
    LST_COLLECTION,
    LST_SCALE_K,
    LST_VALID_RANGE,
    MODIS_PIXEL_M,
    MODIS_SIN_PROJ4,
    PERIODS,
    PLATFORMS,
    ModisGrid,
    empty_lst_frame,
    modis_grid,
    tower_lst_series,
)
from gpp_cubes.sensors.result import SensorResult

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Sources: STAC (default) and Earth Engine (optional)
# --------------------------------------------------------------------------------------


def product_of_item(item: Any) -> str:
    """``MOD11A1`` or ``MYD11A1`` from an item's ``platform`` (or its id prefix)."""
    platform = str(item.properties.get("platform") or "").lower()
    for product, name in PLATFORMS.items():
        if platform == name or item.id.upper().startswith(product):
            return product
    raise AssetError(f"MODIS item {item.id}: cannot tell Terra from Aqua (platform={platform!r})")


def lst_features_from_items(items: Sequence[Any], grid: ModisGrid, start: str, end: str, *,
                            engine: str = "odc", max_lst_error_k: int = 2,
                            min_valid: int = 1, site_id: str | None = None) -> SensorResult:
    """Load MOD11A1/MYD11A1 items on the MODIS window and reduce them to tower LST.

    Parameters
    ----------
    items : sequence of pystac.Item
        ``modis-11A1-061`` items (Terra and Aqua mixed; split by ``platform``).
    grid : ModisGrid
        Native sinusoidal window around the tower (:func:`modis_grid`).
    start, end : str
        Calendar of the returned frame [ISO date, inclusive].
    engine : {"odc"}
        Loader; only odc-stac can load onto a non-EPSG (sinusoidal) grid.
    max_lst_error_k, min_valid : int
        QC and smoothing parameters.

    Returns
    -------
    SensorResult
    """
    from gpp_cubes.stac.load import compute_dropping_failures, load_items

    frame = empty_lst_frame(start, end)
    kept: set[str] = set()
    by_product: dict[str, list[Any]] = {}
    for it in items:
        by_product.setdefault(product_of_item(it), []).append(it)
    for product, its in sorted(by_product.items()):
        bands = [b for pair in PERIODS.values() for b in pair]
        # groupby="id": a MODIS daily granule starts at 00:00 UTC of its product day, so the
        # day is the UTC date of the item; solar-day grouping would shift it west of
        # Greenwich. Same-day granules (tile edges) are mosaicked in tower_lst_series.
        # ModisGrid stands in for a SiteGrid (geobox, x, y, epsg as a PROJ string): only
        # odc-stac can load onto the sinusoidal grid.
        cube = load_items(its, bands, grid, engine=engine, dtype="float32", nodata=np.nan,
                          groupby="id", resampling="nearest", site_id=site_id, precheck="assets")
        # No pre-check: opening every small MODIS file twice doubled this stage's time.
        cube = compute_dropping_failures(cube, site_id=site_id)
        for suffix, (lst_band, qc_band) in PERIODS.items():
            s = tower_lst_series(cube[lst_band], cube[qc_band], grid,
                                 max_lst_error_k=max_lst_error_k, min_valid=min_valid)
            s = s[(s.index >= frame.index[0]) & (s.index <= frame.index[-1])]
            frame.loc[s.index, f"{product}_{suffix}"] = s.to_numpy()
        kept.update(_ids_with_value(its, frame[[f"{product}_dt", f"{product}_nt"]]))
    params = {"collection": LST_COLLECTION, "scale_k": LST_SCALE_K,
              "valid_range": list(LST_VALID_RANGE), "max_lst_error_k": max_lst_error_k,
              "smoothing": "3x3 nan-aware mean", "min_valid": min_valid,
              "grid": {"crs": MODIS_SIN_PROJ4, "row0": grid.row0, "col0": grid.col0,
                       "size": grid.size}}
    return SensorResult(frame=frame.astype(np.float32), scenes_found=len(items),
                     scenes_kept=len(kept), item_ids=tuple(sorted(it.id for it in items)),
                     params=params)


def _item_day(item: Any) -> pd.Timestamp:
    p = item.properties
    t = p.get("start_datetime") or p.get("datetime")
    return pd.Timestamp(t).tz_convert(None).normalize() if pd.Timestamp(t).tzinfo else \
        pd.Timestamp(t).normalize()


def _ids_with_value(items: Sequence[Any], frame: pd.DataFrame) -> set[str]:
    has = frame.notna().any(axis=1)
    return {it.id for it in items if bool(has.get(_item_day(it), False))}


def lst_features(latitude: float, longitude: float, start: str, end: str, *,
                 source: str = "stac", provider: str = "planetary-computer",
                 stac_url: str | None = None, site_id: str | None = None,
                 window: int = 5, max_lst_error_k: int = 2, min_valid: int = 1,
                 ee_project: str | None = None) -> SensorResult:
    """Daily MODIS LST features (``MOD11A1_dt/nt``, ``MYD11A1_dt/nt`` [K]) at a tower.

    Parameters
    ----------
    latitude, longitude : float
        Tower position [degrees, WGS84].
    start, end : str
        First and last day [ISO date].
    source : {"stac", "ee"}, default "stac"
        ``stac``: ``modis-11A1-061`` through :func:`gpp_cubes.stac.search.search_items`;
        ``ee``: Earth Engine ``MODIS/061/MOD11A1`` and ``MYD11A1`` (needs the ``ee`` extra
        and credentials).
    provider, stac_url : str
        STAC endpoint, as for :func:`gpp_cubes.stac.search.search_items`.
    site_id : str, optional
        Named in errors and logs.
    window : int, default 5
        Side of the loaded window [MODIS pixels].
    max_lst_error_k, min_valid : int
        QC and smoothing parameters (module docstring).
    ee_project : str, optional
        Earth Engine cloud project.

    Returns
    -------
    SensorResult
    """
    grid = modis_grid(latitude, longitude, size=window)
    if source == "ee":
        from gpp_cubes.sensors.lst_ee import lst_features_ee

        return lst_features_ee(latitude, longitude, start, end, grid=grid,
                               max_lst_error_k=max_lst_error_k, min_valid=min_valid,
                               project=ee_project)
    if source != "stac":
        raise ConfigError(f"unknown LST source {source!r}; use 'stac' or 'ee'")
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.search import search_items

    # The search only needs a bounding box covering the window (tiles are 1100 km wide).
    search_grid = site_grid(latitude, longitude, buffer_m=window * MODIS_PIXEL_M / 2)
    try:
        items = search_items(LST_COLLECTION, search_grid, start, end, provider=provider,
                             stac_url=stac_url, max_cloud=None, site_id=site_id)
    except EmptySearchError:
        log.warning("%s: no %s items %s..%s", site_id, LST_COLLECTION, start, end)
        return SensorResult(frame=empty_lst_frame(start, end), scenes_found=0, scenes_kept=0)
    return lst_features_from_items(items, grid, start, end, max_lst_error_k=max_lst_error_k,
                                   min_valid=min_valid, site_id=site_id)
