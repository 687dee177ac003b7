"""CORINE Land Cover 2018 on the site grid: the one place that reads CORINE.

CLC2018 is distributed by the EEA as a 100 m raster in ETRS89-LAEA Europe (EPSG:3035) whose
pixel values are ``GRID_CODE`` 1-44 (48 = no data), and by Earth Engine
(``COPERNICUS/CORINE/V20/100m/2018``, band ``landcover``) with the three-digit CLC codes
111-523. Both are accepted; values are returned as CLC codes, with 0 for no data.

Reprojection to the site grid uses nearest neighbour (class codes must not be averaged)
through a GDAL warped VRT, so only the blocks around the site are read, also from a remote
file (``/vsicurl/https://...``).

References
----------
European Environment Agency (2020). CORINE Land Cover 2018 (raster 100 m), Europe, 6-yearly,
version 2020_20u1. https://doi.org/10.2909/960998c1-1870-4e82-8051-6485205ebbac
Büttner, G. et al. (2021). CORINE Land Cover product user manual, version 1.0. Copernicus
Land Monitoring Service.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from gpp_cubes.errors import InputFormatError, SiteError

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid

#: CLC classes counted as forest: 311 broad-leaved, 312 coniferous, 313 mixed forest.
FOREST_CLASSES: tuple[int, ...] = (311, 312, 313)
#: Code written for pixels without CORINE data (outside coverage, or unknown values).
NODATA = 0

Encoding = Literal["auto", "clc", "grid_code"]


@lru_cache(maxsize=1)
def clc_legend() -> dict[int, tuple[int, str]]:
    """GRID_CODE -> (CLC code, level-3 label) for the 44 CORINE classes."""
    text = (resources.files("gpp_cubes") / "data" / "clc_legend.csv").read_text("utf-8")
    rows = csv.DictReader(text.splitlines())
    return {int(r["GRID_CODE"]): (int(r["CLC_CODE"]), r["LABEL3"]) for r in rows}


def clc_codes() -> tuple[int, ...]:
    """The 44 valid three-digit CLC codes (111..523)."""
    return tuple(code for code, _ in clc_legend().values())


def to_clc_codes(values: np.ndarray, encoding: Encoding = "auto") -> np.ndarray:
    """Convert raster values to CLC codes (uint16), anything not in the legend to 0.

    Parameters
    ----------
    values : numpy.ndarray
        Raster values: CLC codes (111-523) or EEA GRID_CODE (1-44).
    encoding : {"auto", "clc", "grid_code"}
        ``"auto"``: CLC codes if any value is one of the 44 CLC codes, else GRID_CODE (so
        no-data values such as 48, 128 or 255 of the EEA files do not mislead it).
    """
    values = np.asarray(values)
    if encoding == "auto":
        encoding = "clc" if np.isin(values, clc_codes()).any() else "grid_code"
    lut = np.zeros(65536, dtype=np.uint16)  # covers uint8/uint16/int16 rasters
    if encoding == "grid_code":
        for grid_code, (code, _) in clc_legend().items():
            lut[grid_code] = code
    elif encoding == "clc":
        lut[list(clc_codes())] = clc_codes()
    else:
        raise ValueError(f"encoding must be 'auto', 'clc' or 'grid_code', got {encoding!r}")
    valid = np.isfinite(values) & (values >= 0) & (values < lut.size)
    out = np.zeros(values.shape, dtype=np.uint16)
    out[valid] = lut[values[valid].astype(np.int64)]
    return out


def forest_mask(codes: xr.DataArray | np.ndarray):
    """True where the CLC code is a forest class (311, 312, 313)."""
    return np.isin(codes, FOREST_CLASSES) if isinstance(codes, np.ndarray) \
        else codes.isin(list(FOREST_CLASSES))


def artificial_mask(codes: xr.DataArray | np.ndarray):
    """True where the CLC code is an artificial surface (level 1 class 1: 111-142)."""
    return (codes >= 100) & (codes < 200)


def read_corine(source: str | Path, grid: SiteGrid, *, encoding: Encoding = "auto",
                site_id: str | None = None) -> xr.DataArray:
    """CLC codes of a CORINE raster on the site grid (nearest neighbour).

    Parameters
    ----------
    source : str or Path
        A raster GDAL can open: a local GeoTIFF, ``/vsicurl/https://...``, an ``https://``
        URL (read through ``/vsicurl/``), a VRT, ...
    grid : SiteGrid
        Target grid (:func:`gpp_cubes.sites.grid.site_grid`).
    encoding : {"auto", "clc", "grid_code"}
        Pixel values of the source, see :func:`to_clc_codes`.
    site_id : str, optional
        Named in error messages.

    Returns
    -------
    xarray.DataArray
        uint16 CLC codes, dims ``(y, x)`` with the grid's pixel-centre coordinates [m], CRS
        attached (rioxarray), 0 where the source has no data.

    Raises
    ------
    SiteError
        If the raster does not cover the site grid ("outside CORINE coverage").
    InputFormatError
        If the source cannot be opened as a raster.
    """
    import rasterio
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    who = f"site {site_id}" if site_id else f"grid around ({grid.tower_x:.0f}, " \
        f"{grid.tower_y:.0f}) EPSG:{grid.epsg}"
    src_path = str(source)
    if src_path.startswith(("http://", "https://")):
        src_path = "/vsicurl/" + src_path
    rows, cols = grid.shape
    left, _, _, top = grid.bounds
    dst_transform = from_origin(left, top, grid.resolution, grid.resolution)
    try:
        src = rasterio.open(src_path)
    except rasterio.errors.RasterioIOError as err:
        raise InputFormatError(f"cannot open CORINE raster {source}: {err}") from err
    with src:
        if src.crs is None:
            raise InputFormatError(f"CORINE raster {source} has no CRS")
        gb = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        sb = src.bounds
        if gb[0] >= sb.right or gb[2] <= sb.left or gb[1] >= sb.top or gb[3] <= sb.bottom:
            raise SiteError(f"{who} is outside CORINE coverage of {source}")
        # Integer rasters: src.nodata (e.g. 48 in some EEA files, 0 in Earth Engine exports)
        # becomes 0 in the VRT; uncovered areas are 0 too.
        with WarpedVRT(src, crs=grid.crs, transform=dst_transform, width=cols, height=rows,
                       resampling=Resampling.nearest, nodata=src.nodata) as vrt:
            values = vrt.read(1, masked=True)
    filled = values.filled(0) if np.ma.isMaskedArray(values) else values
    codes = to_clc_codes(filled, encoding)
    if not (codes != NODATA).any():
        raise SiteError(f"{who} is outside CORINE coverage of {source} (no data on the grid)")
    da = xr.DataArray(
        codes, dims=("y", "x"), coords={"y": grid.y, "x": grid.x}, name="clc",
        attrs={"long_name": "CORINE Land Cover class (CLC code)", "units": "1",
               "source": str(source), "nodata": NODATA},
    )
    return da.rio.write_crs(grid.crs.to_wkt()).rio.write_nodata(NODATA)


def read_corine_ee(grid: SiteGrid, *, year: int = 2018, site_id: str | None = None
                   ) -> xr.DataArray:
    """CLC codes from Earth Engine (``COPERNICUS/CORINE/V20/100m/<year>``) on the site grid.

    Needs the ``ee`` extra (``earthengine-api``, ``xee``) and an initialised Earth Engine
    session (``ee.Initialize(project=...)``); both are imported only here.

    Parameters
    ----------
    grid : SiteGrid
        Target grid.
    year : int, default 2018
        CORINE edition (1990, 2000, 2006, 2012, 2018).
    site_id : str, optional
        Named in error messages.
    """
    try:
        import ee
        import rioxarray  # noqa: F401
        import xarray as xr
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "read_corine_ee needs the 'ee' extra: pip install 'gpp-cubes[ee]'"
        ) from err
    image = ee.Image(f"COPERNICUS/CORINE/V20/100m/{year}").select("landcover")
    left, bottom, right, top = grid.bounds
    region = ee.Geometry.Rectangle([left, bottom, right, top], f"EPSG:{grid.epsg}", False)
    # Earth Engine resamples with nearest neighbour unless told otherwise.
    ds = xr.open_dataset(
        ee.ImageCollection([image]), engine="ee", crs=f"EPSG:{grid.epsg}",
        scale=grid.resolution, geometry=region,
    )
    # xee names projected dims X/Y; sort north-up to match the grid's rows.
    band = ds["landcover"].isel(time=0).transpose("Y", "X").sortby("Y", ascending=False)
    values = np.asarray(band.values)
    if values.shape != grid.shape:  # pragma: no cover - network path
        raise InputFormatError(
            f"Earth Engine returned a {values.shape} grid, expected {grid.shape}"
        )
    codes = to_clc_codes(np.nan_to_num(values, nan=0), "clc")
    if not (codes != NODATA).any():
        who = site_id or f"EPSG:{grid.epsg} ({grid.tower_x:.0f}, {grid.tower_y:.0f})"
        raise SiteError(f"{who} is outside CORINE coverage (Earth Engine CORINE {year})")
    da = xr.DataArray(codes, dims=("y", "x"), coords={"y": grid.y, "x": grid.x}, name="clc",
                      attrs={"source": f"COPERNICUS/CORINE/V20/100m/{year}", "nodata": NODATA})
    return da.rio.write_crs(grid.crs.to_wkt())
