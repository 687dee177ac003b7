"""Nadir BRDF-adjusted reflectance (NBAR) by the c-factor method, with sen2nbar's functions.

For every scene, the sun and view angles of its granule metadata (``granule-metadata``
asset, ``MTD_TL.xml``, 5 km angle grids) give, per band, the c-factor
``c = BRDF(sun, view=0) / BRDF(sun, view)`` of the RossThick-LiSparse model with the fixed
coefficients of Roy et al. (2017) (:func:`sen2nbar.c_factor.c_factor_from_metadata`). The
23 x 23 grid is filled by nearest neighbour where detectors leave gaps (sen2nbar's
``_extrapolate_c_factor``), reprojected if the granule's CRS differs from the cube's, and
interpolated bilinearly (extrapolating at the edges) to the cube's pixel centres, as
sen2nbar's ``nbar_stac`` does. NBAR = c * reflectance.

Traps handled here:

- sen2nbar has coefficients only for B02-B08, B11, B12 (:data:`BRDF_BANDS`); B01, B8A and
  B09 pass through unchanged (multiplying a band-indexed array would silently drop them);
- sen2nbar's own NBAR functions start from digital numbers and subtract the baseline >= 04.00
  offset themselves; we multiply *reflectance* already scaled and offset once
  (:func:`gpp_cubes.s2.to_reflectance`), which is equal because the c-factor is a factor;
- ``c_factor_from_item`` needs ``proj:epsg``, which pystac-client rewrites to ``proj:code``:
  we call ``c_factor_from_metadata`` on the XML instead;
- one XML per scene is the slow part: :func:`fetch_granule_metadata` downloads them
  concurrently (thread pool, retries) into an on-disk cache.

References
----------
Roy, D. P. et al. (2017). Examination of Sentinel-2A multi-spectral instrument (MSI)
reflectance anisotropy and the suitability of a general method to normalize MSI reflectance
to nadir BRDF adjusted reflectance. Remote Sensing of Environment 199, 25-38.
doi:10.1016/j.rse.2017.06.019
Roy, D. P. et al. (2016). A general method to normalize Landsat reflectance data to nadir
BRDF adjusted reflectance. Remote Sensing of Environment 176, 255-271.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gpp_cubes.search import _public_url

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from gpp_cubes.grid import SiteGrid

log = logging.getLogger(__name__)

#: Bands with RossThick-LiSparse coefficients in sen2nbar (Roy et al., 2017).
BRDF_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")


def default_cache_dir() -> Path:
    """``$GPP_CUBES_CACHE/granule-metadata`` or ``~/.cache/gpp_cubes/granule-metadata``."""
    base = os.environ.get("GPP_CUBES_CACHE") or Path.home() / ".cache" / "gpp_cubes"
    return Path(base) / "granule-metadata"


def _cache_name(item: pystac.Item) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in item.id)[:150]
    digest = hashlib.sha1(item.id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}_MTD_TL.xml"


def _fetch_one(item: pystac.Item, cache: Path) -> Path:
    asset = item.assets.get("granule-metadata")
    if asset is None:
        raise KeyError("asset 'granule-metadata' missing")
    href = asset.href
    if not href.startswith(("http://", "https://")):
        local = Path(href.removeprefix("file://"))
        if not local.is_file():
            raise FileNotFoundError(f"granule metadata {local} not found")
        return local
    target = cache / _cache_name(item)
    if target.is_file() and target.stat().st_size > 0:
        return target
    import requests
    from requests.adapters import HTTPAdapter

    from gpp_cubes.providers import http_retry

    with requests.Session() as s:
        s.mount("http://", HTTPAdapter(max_retries=http_retry()))
        s.mount("https://", HTTPAdapter(max_retries=http_retry()))
        r = s.get(href, timeout=(10, 60))
        if r.status_code != 200:
            raise OSError(f"HTTP {r.status_code} for {_public_url(href)}")
        if b"Tile_Angles" not in r.content:
            raise ValueError(f"{_public_url(href)} is not an L2A granule MTD_TL.xml "
                             "(no Tile_Angles)")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_bytes(r.content)
    tmp.replace(target)  # atomic: a killed download never leaves a truncated cache file
    return target


def fetch_granule_metadata(items: Sequence[pystac.Item], cache_dir: str | Path | None = None,
                           *, max_workers: int = 8) -> tuple[dict[str, Path], dict[str, str]]:
    """Fetch the ``MTD_TL.xml`` of every item concurrently, caching them on disk.

    Parameters
    ----------
    items : sequence of pystac.Item
        Signed S2 L2A items with a ``granule-metadata`` asset (local path or URL).
    cache_dir : str or Path, optional
        Cache directory (default :func:`default_cache_dir`).
    max_workers : int, default 8
        Concurrent downloads.

    Returns
    -------
    (paths, failed) : tuple of dict
        Item id -> local XML path, and item id -> reason for the items whose metadata could
        not be fetched (the caller drops those scenes and records them).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)

    def one(it: pystac.Item) -> tuple[str, Path | None, str | None]:
        try:
            return it.id, _fetch_one(it, cache), None
        except Exception as err:  # network, HTTP, missing asset: reported, not raised
            return it.id, None, f"granule metadata: {type(err).__name__}: {str(err)[:200]}"

    paths: dict[str, Path] = {}
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        for iid, path, why in pool.map(one, items):
            if path is not None:
                paths[iid] = path
            else:
                failed[iid] = why or "granule metadata unavailable"
    return paths, failed


def c_factor_native(metadata: str | Path) -> xr.DataArray:
    """c-factor (band, y, x) on the granule's 5 km angle grid, gaps filled.

    Parameters
    ----------
    metadata : str or Path
        Path of a Sentinel-2 L2A ``MTD_TL.xml``.

    Returns
    -------
    xarray.DataArray
        c-factor [1] for :data:`BRDF_BANDS`, coords in the granule's CRS [m] (attr ``epsg``).

    Raises
    ------
    ValueError
        If the metadata lack angles for some band (sen2nbar's message).
    """
    import re

    from sen2nbar.c_factor import c_factor_from_metadata
    from sen2nbar.utils import _extrapolate_c_factor

    c = _extrapolate_c_factor(c_factor_from_metadata(str(metadata)))
    # c_factor_from_metadata drops the CRS; read it without parsing the XML a second time.
    found = re.search(r"<HORIZONTAL_CS_CODE>\s*EPSG:(\d+)", Path(metadata).read_text())
    if found is None:
        raise ValueError(f"{metadata}: no HORIZONTAL_CS_CODE (EPSG) in the granule metadata")
    c.attrs["epsg"] = int(found.group(1))
    return c


def c_factor_on_grid(metadata: str | Path, grid: SiteGrid,
                     bands: Sequence[str] = BRDF_BANDS) -> np.ndarray:
    """c-factor interpolated to the grid's pixel centres.

    Parameters
    ----------
    metadata : str or Path
        ``MTD_TL.xml`` path.
    grid : SiteGrid
        Target grid.
    bands : sequence of str
        Bands (subset of :data:`BRDF_BANDS`), in output order.

    Returns
    -------
    numpy.ndarray
        float32 (band, y, x) c-factor [1].
    """
    import rioxarray  # noqa: F401  (registers .rio)

    c = c_factor_native(metadata)
    if c.attrs["epsg"] != grid.epsg:
        c = c.rio.write_crs(f"EPSG:{c.attrs['epsg']}").rio.reproject(
            f"EPSG:{grid.epsg}").drop_vars("spatial_ref")
        c = c.where(np.isfinite(c))
    c = c.sel(band=list(bands)).interp(y=grid.y, x=grid.x, method="linear",
                                       kwargs={"fill_value": "extrapolate"})
    return c.values.astype(np.float32)


def c_factor_cube(paths: Sequence[str | Path], grid: SiteGrid,
                  bands: Sequence[str] = BRDF_BANDS) -> xr.DataArray:
    """Lazy (time, band, y, x) c-factor, one Dask chunk per scene.

    Parameters
    ----------
    paths : sequence of str or Path
        ``MTD_TL.xml`` of each time step, in time order.
    grid : SiteGrid
        Target grid.
    bands : sequence of str
        BRDF bands.

    Returns
    -------
    xarray.DataArray
        float32 c-factor [1], computed per time step only when needed.
    """
    import dask
    import dask.array as dsa
    import xarray as xr

    ny, nx = grid.shape
    parts = [dsa.from_delayed(dask.delayed(c_factor_on_grid)(str(p), grid, tuple(bands)),
                              shape=(len(bands), ny, nx), dtype=np.float32) for p in paths]
    arr = dsa.stack(parts) if parts else dsa.zeros((0, len(bands), ny, nx), np.float32)
    return xr.DataArray(arr, dims=("time", "band", "y", "x"),
                        coords={"band": list(bands), "y": grid.y, "x": grid.x}, name="c_factor")


def apply_c_factor(refl: xr.Dataset, c: xr.DataArray) -> xr.Dataset:
    """NBAR: multiply the BRDF bands by their c-factor, pass the others through unchanged.

    Parameters
    ----------
    refl : xarray.Dataset
        Surface reflectance [1], one variable per band on (time, y, x), already scaled and
        offset (never DN: the offset must not be applied twice).
    c : xarray.DataArray
        c-factor (time, band, y, x) [1] with a ``band`` coordinate.

    Returns
    -------
    xarray.Dataset
        Same variables; :data:`BRDF_BANDS` replaced by NBAR, B01/B8A/B09 and any non-band
        variable untouched (variable by variable: no alignment on ``band`` drops anything).
    """
    out = refl.copy()
    cvals = c.drop_vars([k for k in ("y", "x") if k in c.coords])
    for band in c.band.values.tolist():
        if band in refl:
            factor = cvals.sel(band=band, drop=True).assign_coords(time=refl.time)
            out[band] = (refl[band] * factor).astype(refl[band].dtype)
            out[band].attrs = {**refl[band].attrs, "nbar": "c-factor (Roy et al. 2017)"}
    return out


def clear_cache(cache_dir: str | Path | None = None) -> None:  # pragma: no cover - utility
    """Delete the granule-metadata cache."""
    shutil.rmtree(Path(cache_dir) if cache_dir else default_cache_dir(), ignore_errors=True)
