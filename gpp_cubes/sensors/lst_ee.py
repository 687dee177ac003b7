"""MODIS LST features from Earth Engine, the optional second source of :mod:`gpp_cubes.sensors.lst`.

Same window, same QC, same smoothing: only where the pixels come from differs, so both
sources give identical numbers for identical pixels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gpp_cubes.errors import ConfigError
from gpp_cubes.sensors.modis import (
    LST_SCALE_K,
    MODIS_PIXEL_M,
    PERIODS,
    ModisGrid,
    empty_lst_frame,
    modis_grid,
    tower_lst_series,
)
from gpp_cubes.sensors.result import SensorResult

#: Earth Engine collections of the two MODIS LST products.
EE_COLLECTIONS = {"MOD11A1": "MODIS/061/MOD11A1", "MYD11A1": "MODIS/061/MYD11A1"}


def lst_features_ee(latitude: float, longitude: float, start: str, end: str, *,
                    grid: ModisGrid | None = None, max_lst_error_k: int = 2,
                    min_valid: int = 1, project: str | None = None) -> SensorResult:
    """The same features from Earth Engine (``MODIS/061/MOD11A1``, ``MODIS/061/MYD11A1``).

    The window is fetched with ``ee.data.computePixels`` on the same native sinusoidal
    grid (one request per product and year, images stacked as bands), then reduced by the
    same pure functions as the STAC path, so both sources give identical numbers for
    identical pixels. Needs ``pip install gpp-cubes[ee]`` and ``ee.Authenticate()``.
    """
    try:
        import ee
    except ModuleNotFoundError as err:
        raise ConfigError("LST source 'ee' needs the Earth Engine API: "
                          "pip install 'gpp-cubes[ee]'") from err
    ee.Initialize(project=project)
    grid = grid or modis_grid(latitude, longitude)
    left, _, _, top = grid.bounds
    pixel_grid = {
        "dimensions": {"width": grid.size, "height": grid.size},
        "affineTransform": {"scaleX": MODIS_PIXEL_M, "shearX": 0, "translateX": left,
                            "shearY": 0, "scaleY": -MODIS_PIXEL_M, "translateY": top},
        "crsWkt": grid.crs.to_wkt(),
    }
    frame = empty_lst_frame(start, end)
    n_found = n_kept = 0
    ids: list[str] = []
    for product, coll in EE_COLLECTIONS.items():
        for year in range(pd.Timestamp(start).year, pd.Timestamp(end).year + 1):
            y0 = max(pd.Timestamp(start), pd.Timestamp(f"{year}-01-01"))
            y1 = min(pd.Timestamp(end), pd.Timestamp(f"{year}-12-31")) + pd.Timedelta(days=1)
            ic = ee.ImageCollection(coll).filterDate(y0.strftime("%Y-%m-%d"),
                                                     y1.strftime("%Y-%m-%d"))
            names = ic.aggregate_array("system:index").getInfo()
            if not names:
                continue
            n_found += len(names)
            ids += [f"{coll}/{n}" for n in names]
            bands = [b for pair in PERIODS.values() for b in pair]
            arr = ee.data.computePixels({"expression": ic.select(bands).toBands(),
                                         "fileFormat": "NUMPY_NDARRAY", "grid": pixel_grid})
            days = pd.to_datetime([n.replace("_", "-") for n in names])
            for suffix, (lst_band, qc_band) in PERIODS.items():
                dn = np.stack([arr[f"{n}_{lst_band}"] for n in names]).astype(np.float64)
                qc = np.stack([arr[f"{n}_{qc_band}"] for n in names]).astype(np.float64)
                coords = {"time": days}
                s = tower_lst_series(xr.DataArray(dn, dims=("time", "y", "x"), coords=coords),
                                     xr.DataArray(qc, dims=("time", "y", "x"), coords=coords),
                                     grid, max_lst_error_k=max_lst_error_k,
                                     min_valid=min_valid)
                frame.loc[s.index.intersection(frame.index), f"{product}_{suffix}"] = \
                    s.reindex(s.index.intersection(frame.index)).to_numpy()
                n_kept += int(s.notna().sum()) if suffix == "dt" else 0
    params = {"source": "earth-engine", "collections": list(EE_COLLECTIONS.values()),
              "scale_k": LST_SCALE_K, "max_lst_error_k": max_lst_error_k,
              "smoothing": "3x3 nan-aware mean", "min_valid": min_valid}
    return SensorResult(frame=frame.astype(np.float32), scenes_found=n_found, scenes_kept=n_kept,
                     item_ids=tuple(ids), params=params)
