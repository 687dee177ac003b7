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
import re
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


#: Band names of ``bandId`` 0..12 in the granule metadata (ESA PSD; as sen2nbar orders them).
_BAND_IDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                              "B09", "B10", "B11", "B12")
#: sen2nbar's band order of the angle array (after "Sun").
_BAND_ORDER: tuple[str, ...] = _BAND_IDS
#: Angle grid spacing of MTD_TL.xml [m] and its size [nodes].
_ANGLE_STEP, _ANGLE_N = 5000.0, 23


_BAND_ID_RE = re.compile(rb'bandId\s*=\s*"(\d+)"')


def _between(text: bytes, start: bytes, end: bytes, where: str) -> bytes:
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"{where}: no {start.decode()}...{end.decode()} in the granule "
                         "metadata")
    return text[i + len(start):j]


def _angle_grid(block: bytes, angle: str, where: str) -> np.ndarray:
    values = _between(_between(block, f"<{angle}>".encode(), f"</{angle}>".encode(), where),
                      b"<Values_List>", b"</Values_List>", where)
    n_rows = values.count(b"<VALUES>")
    # Plain byte operations and one C-level number parse: the same numbers as sen2nbar's
    # per-token float() ("NaN" included), ~20x faster than building the XML document.
    vals = np.fromstring(values.replace(b"<VALUES>", b" ").replace(b"</VALUES>", b" ")
                         .decode(), dtype=float, sep=" ")
    if not n_rows or vals.size % n_rows:
        raise ValueError(f"{where}: ragged {angle} angle grid ({n_rows} rows, "
                         f"{vals.size} values)")
    return vals.reshape(n_rows, -1)


def read_angles(metadata: str | Path, bands: Sequence[str] | None = None) -> xr.DataArray:
    """Sun and per-band view angles of a granule, exactly as sen2nbar reads them, but faster.

    Same output as :func:`sen2nbar.metadata.angles_from_metadata` (per band the NaN-mean over
    detectors of the 23 x 23 zenith and azimuth grids; node centres from the first (10 m)
    upper-left corner + 2500 m). The granule XML is machine-written by ESA's processor, so
    the few elements needed are cut out of the bytes with plain byte searches and their
    numbers parsed in one C call, instead of building the whole ~0.5 MB document as a dict
    (``xmltodict``): parsing was most of the NBAR cost per scene. Equality with sen2nbar is
    tested on ESA's and the demo world's files.

    Parameters
    ----------
    metadata : str or Path
        Local ``MTD_TL.xml``.
    bands : sequence of str, optional
        Only these bands (plus ``Sun``); default all 13 as sen2nbar.

    Returns
    -------
    xarray.DataArray
        (band, angle, y, x) angles [degrees]; band ``Sun``, B01..B08, B8A, B09..B12; angle
        ``Zenith``/``Azimuth``; coords [m] in the granule CRS; attr ``epsg`` (int).

    Raises
    ------
    ValueError
        Missing geocoding or angles (names the file).
    """
    import warnings

    import xarray as xr

    where = str(metadata)
    text = Path(metadata).read_bytes()
    code = re.search(rb"<HORIZONTAL_CS_CODE>\s*EPSG:(\d+)\s*</HORIZONTAL_CS_CODE>", text)
    pos = re.search(rb"<Geoposition\b[^>]*>\s*<ULX>\s*([-+\d.eE]+)\s*</ULX>\s*"
                    rb"<ULY>\s*([-+\d.eE]+)\s*</ULY>", text)
    if code is None or pos is None:
        raise ValueError(f"{where}: no Tile_Geocoding (HORIZONTAL_CS_CODE EPSG, ULX/ULY): "
                         "not an L2A MTD_TL.xml")
    ulx, uly = float(pos.group(1)), float(pos.group(2))
    order = ["Sun", *(b for b in _BAND_ORDER if bands is None or b in bands)]
    per: dict[str, dict[str, list[np.ndarray]]] = {
        k: {"Zenith": [], "Azimuth": []} for k in order}
    for part in text.split(b"<Viewing_Incidence_Angles_Grids")[1:]:
        head, _, body = part.partition(b">")
        bid = _BAND_ID_RE.search(head)
        name = _BAND_IDS[int(bid.group(1))] if bid else None
        if name in per:
            body = body[:body.find(b"</Viewing_Incidence_Angles_Grids>")]
            for a in ("Zenith", "Azimuth"):
                per[name][a].append(_angle_grid(body, a, where))
    sun = _between(text, b"<Sun_Angles_Grid>", b"</Sun_Angles_Grid>", where)
    for a in ("Zenith", "Azimuth"):
        per["Sun"][a].append(_angle_grid(sun, a, where))
    stacked = []
    for k in order:
        if not per[k]["Zenith"]:
            raise ValueError(f"{where}: not all bands include angle values (no {k})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            stacked.append([np.nanmean(np.array(per[k][a]), axis=0)
                            for a in ("Zenith", "Azimuth")])
    y = np.arange(uly, uly - _ANGLE_STEP * _ANGLE_N, -_ANGLE_STEP) - _ANGLE_STEP / 2
    x = np.arange(ulx, ulx + _ANGLE_STEP * _ANGLE_N, _ANGLE_STEP) + _ANGLE_STEP / 2
    da = xr.DataArray(np.array(stacked), dims=["band", "angle", "y", "x"],
                      coords={"band": order, "angle": ["Zenith", "Azimuth"], "x": x, "y": y})
    da.attrs["epsg"] = int(code.group(1))
    return da


def c_factor_from_angles(angles: xr.DataArray) -> xr.DataArray:
    """c-factor per BRDF band from angle grids, with sen2nbar's own functions.

    The same selection as :func:`sen2nbar.c_factor.c_factor_from_metadata` fed to
    :func:`sen2nbar.c_factor.c_factor` (RossThick-LiSparse kernels, Roy et al. 2017
    coefficients). Extra leading dimensions (e.g. ``time``: many scenes on the same angle
    grid) are carried through, so one call serves a block of scenes: sen2nbar's xarray code
    costs ~0.1 s per call whatever the size, so batching is what makes NBAR cheap.

    Parameters
    ----------
    angles : xarray.DataArray
        (..., band, angle, y, x) from :func:`read_angles` (stacked along leading dims).

    Returns
    -------
    xarray.DataArray
        (..., band, y, x) c-factor [1] for :data:`BRDF_BANDS` (NaN where view angles are).
    """
    from sen2nbar.axioms import fiso
    from sen2nbar.c_factor import c_factor

    bands = list(fiso.keys())
    theta = angles.sel(angle="Zenith", band="Sun")
    vartheta = angles.sel(angle="Zenith", band=bands)
    phi = angles.sel(angle="Azimuth", band="Sun") - angles.sel(angle="Azimuth", band=bands)
    return c_factor(theta, vartheta, phi)


def _fill_gaps(c: xr.DataArray) -> xr.DataArray:
    """sen2nbar's nearest-neighbour gap filling (``_extrapolate_c_factor``), batched.

    sen2nbar builds a ``NearestNDInterpolator`` per band and scene. The node each gap takes
    its value from depends only on where the gaps are (the detector footprints, the same
    for every scene of a tile and orbit), so the same interpolator is built once per gap
    pattern on the node *indices* and reused: identical values, a fraction of the cost.
    """
    from scipy.interpolate import NearestNDInterpolator

    c = c.transpose(..., "y", "x")
    vals = np.array(c.values, order="C")  # own contiguous copy, filled in place
    flat = vals.reshape(-1, vals.shape[-2] * vals.shape[-1])
    xx, yy = np.meshgrid(c.x.values, c.y.values)  # as sen2nbar: X, Y = meshgrid(x, y)
    xx, yy = xx.ravel(), yy.ravel()
    sources: dict[bytes, np.ndarray] = {}
    for row in flat:
        ok = ~np.isnan(row)
        if ok.all():
            continue
        key = ok.tobytes()
        if key not in sources:
            idx = np.flatnonzero(ok)
            pick = NearestNDInterpolator(list(zip(xx[ok], yy[ok], strict=True)), idx)
            sources[key] = pick(xx, yy).astype(np.intp)
        row[:] = row[sources[key]]
    return c.copy(data=vals)


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
        Equal to ``_extrapolate_c_factor(c_factor_from_metadata(metadata))`` of sen2nbar.

    Raises
    ------
    ValueError
        If the metadata lack angles for some band.
    """
    angles = read_angles(metadata)
    c = _fill_gaps(c_factor_from_angles(angles))
    c.attrs["epsg"] = angles.attrs["epsg"]
    return c


def _to_grid(c: xr.DataArray, epsg: int, grid: SiteGrid, bands: Sequence[str]) -> np.ndarray:
    """Reproject (if needed) and interpolate (..., band, y, x) c-factors to the grid."""
    import rioxarray  # noqa: F401  (registers .rio)

    if epsg != grid.epsg:
        c = c.rio.write_crs(f"EPSG:{epsg}").rio.reproject(
            f"EPSG:{grid.epsg}").drop_vars("spatial_ref")
        c = c.where(np.isfinite(c))
    c = c.sel(band=list(bands)).transpose(..., "band", "y", "x")
    # Bilinear interpolation (linear extrapolation at the edges) as separable weight
    # matrices: the same as xarray's ``interp(method="linear", fill_value="extrapolate")``
    # to ~1e-15, and ~50x faster for a block of scenes.
    wy = _linear_weights(c.y.values, grid.y)
    wx = _linear_weights(c.x.values, grid.x)
    return np.einsum("iy,...yx,jx->...ij", wy, c.values, wx, optimize=True).astype(np.float32)


def _linear_weights(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), len(nodes)) weights of 1-D linear inter/extrapolation between nodes."""
    order = np.argsort(nodes)
    xs = nodes[order].astype(float)
    k = np.clip(np.searchsorted(xs, at) - 1, 0, len(xs) - 2)
    t = (at - xs[k]) / (xs[k + 1] - xs[k])
    w = np.zeros((len(at), len(xs)))
    rows = np.arange(len(at))
    w[rows, order[k]] += 1.0 - t
    w[rows, order[k + 1]] += t
    return w


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
    c = c_factor_native(metadata)
    return _to_grid(c, c.attrs["epsg"], grid, bands)


def c_factor_block(paths: Sequence[str | Path], grid: SiteGrid,
                   bands: Sequence[str] = BRDF_BANDS) -> np.ndarray:
    """c-factors of many scenes on the grid, computed together (fast path of NBAR).

    Scenes whose angle grids share a frame (CRS and upper-left corner: the same MGRS tile)
    go through sen2nbar's c-factor in one call; the result equals
    :func:`c_factor_on_grid` scene by scene.

    Parameters
    ----------
    paths : sequence of str or Path
        ``MTD_TL.xml`` of each scene.
    grid : SiteGrid
        Target grid.
    bands : sequence of str
        BRDF bands, in output order.

    Returns
    -------
    numpy.ndarray
        float32 (scene, band, y, x) c-factor [1].
    """
    import xarray as xr

    ny, nx = grid.shape
    out = np.empty((len(paths), len(bands), ny, nx), np.float32)
    frames: dict[tuple[Any, ...], list[tuple[int, xr.DataArray]]] = {}
    for i, p in enumerate(paths):
        a = read_angles(p, bands=BRDF_BANDS)
        key = (a.attrs["epsg"], float(a.x[0]), float(a.y[0]))
        frames.setdefault(key, []).append((i, a))
    for (epsg, _, _), members in frames.items():
        stack = xr.concat([a for _, a in members], dim="time")
        c = _fill_gaps(c_factor_from_angles(stack))
        if epsg == grid.epsg:
            vals = _to_grid(c, epsg, grid, bands)
        else:  # rioxarray reprojects 2-D/3-D arrays: scene by scene
            vals = np.stack([_to_grid(c.isel(time=k), epsg, grid, bands)
                             for k in range(c.sizes["time"])])
        out[[i for i, _ in members]] = vals
    return out


def c_factor_block_cached(paths: Sequence[str | Path], keys: Sequence[str], grid: SiteGrid,
                          bands: Sequence[str] = BRDF_BANDS,
                          cache_dir: str | Path | None = None) -> np.ndarray:
    """:func:`c_factor_block` with an on-disk cache of the c-factors on the grid.

    Parameters
    ----------
    paths : sequence of str or Path
        ``MTD_TL.xml`` of each scene.
    keys : sequence of str
        STAC item id of each scene (cache key, with the grid and the bands).
    grid : SiteGrid
        Target grid.
    bands : sequence of str
        BRDF bands, in output order.
    cache_dir : str or Path, optional
        Granule-metadata cache (:func:`default_cache_dir`); c-factors go to its
        ``c-factor/`` subdirectory as float32 ``.npy`` files, written atomically.

    Returns
    -------
    numpy.ndarray
        float32 (scene, band, y, x) c-factor [1].
    """
    base = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "c-factor"
    base.mkdir(parents=True, exist_ok=True)
    frame = hashlib.sha1(repr((grid.epsg, tuple(grid.bounds), grid.resolution,
                               tuple(bands))).encode()).hexdigest()[:10]
    files = [base / f"{hashlib.sha1(k.encode()).hexdigest()[:16]}-{frame}.npy" for k in keys]
    ny, nx = grid.shape
    out = np.empty((len(paths), len(bands), ny, nx), np.float32)
    todo = []
    for i, f in enumerate(files):
        try:
            out[i] = np.load(f)
        except (OSError, ValueError):  # missing or unreadable: compute again
            todo.append(i)
    if todo:
        vals = c_factor_block([paths[i] for i in todo], grid, bands)
        for k, i in enumerate(todo):
            out[i] = vals[k]
            tmp = files[i].with_name(f".{files[i].name}.{uuid.uuid4().hex[:6]}.npy")
            np.save(tmp, vals[k])
            tmp.replace(files[i])  # atomic: never a truncated cache file
    return out


def c_factor_cube(paths: Sequence[str | Path], grid: SiteGrid,
                  bands: Sequence[str] = BRDF_BANDS,
                  time_chunks: Sequence[int] | None = None) -> xr.DataArray:
    """Lazy (time, band, y, x) c-factor, one Dask task per time chunk.

    Parameters
    ----------
    paths : sequence of str or Path
        ``MTD_TL.xml`` of each time step, in time order.
    grid : SiteGrid
        Target grid.
    bands : sequence of str
        BRDF bands.
    time_chunks : sequence of int, optional
        Chunk sizes along time (default: one chunk per time step), e.g. the data's chunks
        so each task computes the c-factors of a whole chunk with :func:`c_factor_block`.

    Returns
    -------
    xarray.DataArray
        float32 c-factor [1], computed per chunk only when needed.
    """
    import dask
    import dask.array as dsa
    import xarray as xr

    ny, nx = grid.shape
    sizes = list(time_chunks) if time_chunks is not None else [1] * len(paths)
    if sum(sizes) != len(paths):
        raise ValueError(f"time_chunks sum to {sum(sizes)}, not {len(paths)} scenes")
    parts, s = [], 0
    for n in sizes:
        chunk = tuple(str(p) for p in paths[s:s + n])
        parts.append(dsa.from_delayed(dask.delayed(c_factor_block)(chunk, grid, tuple(bands)),
                                      shape=(n, len(bands), ny, nx), dtype=np.float32))
        s += n
    arr = dsa.concatenate(parts) if parts else dsa.zeros((0, len(bands), ny, nx), np.float32)
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
