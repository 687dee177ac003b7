"""Nadir BRDF-adjusted reflectance (NBAR) by the c-factor method, with sen2nbar's functions.

For every scene, the sun and view angles of its granule metadata (``granule-metadata``
asset, ``MTD_TL.xml``, 5 km angle grids) give, per band, the c-factor
``c = BRDF(sun, view=0) / BRDF(sun, view)`` of the RossThick-LiSparse model with the fixed
coefficients of Roy et al. (2017) (:func:`sen2nbar.c_factor.c_factor_from_metadata`). The
23 x 23 grid is filled by nearest neighbour where detectors leave gaps (sen2nbar's
``_extrapolate_c_factor``) and interpolated bilinearly (extrapolating at the edges, at most
one node step) at the cube's pixel centres, as sen2nbar's ``nbar_stac`` does, the centres
being transformed into the granule's CRS first (a tile of the neighbouring UTM zone).
NBAR = c * reflectance.

Traps handled here:

- sen2nbar has coefficients only for B02-B08, B11, B12 (:data:`BRDF_BANDS`); B01, B8A and
  B09 pass through unchanged (multiplying a band-indexed array would silently drop them);
- sen2nbar's own NBAR functions start from digital numbers and subtract the baseline >= 04.00
  offset themselves; we multiply *reflectance* already scaled and offset once
  (:func:`gpp_cubes.s2.to_reflectance`), which is equal because the c-factor is a factor;
- ``c_factor_from_item`` needs ``proj:epsg``, which pystac-client rewrites to ``proj:code``:
  we read the angles from the XML instead (:mod:`gpp_cubes.s2.granule`, which also fetches
  and caches it);
- sen2nbar's xarray code has a fixed cost per call, so the c-factors of the scenes of one
  tile are computed in one call (:func:`c_factor_block`) and cached on disk per item.

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
import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.atomic import atomic_path
from gpp_cubes.s2.granule import (
    default_cache_dir,
    interpolation_matrix,
    read_angles,
)

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)

#: Bands with RossThick-LiSparse coefficients in sen2nbar (Roy et al., 2017).
BRDF_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")


def c_factor_from_angles(angles: xr.DataArray) -> xr.DataArray:
    """c-factor per BRDF band from angle grids, with sen2nbar's own functions.

    The same selection as :func:`sen2nbar.c_factor.c_factor_from_metadata` fed to
    :func:`sen2nbar.c_factor.c_factor` (RossThick-LiSparse kernels, Roy et al. 2017
    coefficients). Extra leading dimensions (e.g. ``time``: many scenes on the same angle
    grid) are carried through, so one call serves a block of scenes: sen2nbar's xarray code
    has a fixed cost per call whatever the size, so batching is what makes NBAR cheap.

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
    InputFormatError
        If the metadata lack angles for some band (names the file).
    """
    angles = read_angles(metadata)
    c = _fill_gaps(c_factor_from_angles(angles))
    c.attrs["epsg"] = angles.attrs["epsg"]
    return c


#: Default upper limit of the sun zenith angle at the tower [degrees], where the c-factor
#: model stops being a small angular correction. With the Roy et al. (2017) coefficients
#: the c-factor of any Sentinel-2 geometry (view zenith <= 12 deg) stays in [0.91, 1.07] up
#: to a sun zenith of 70 deg and [0.83, 1.18] up to 80 deg, then the kernels diverge
#: (-90..1134 at 85 deg), and the archive has scenes up to 85 deg at northern sites since
#: Sentinel-2B's low-illumination acquisitions began on 23 Oct 2019 (ESA news, 17 Oct
#: 2019, "Copernicus Sentinel-2 observation in low illumination conditions over Northern
#: Europe and Arctic Areas"). Stricter: ESA's L2A Data Quality Report advises against
#: quantitative use of L2A above 70 deg (same source); 80 keeps the winter scenes of
#: central European sites (sun zenith 72-78 deg at 50-51 N), which the paper used.
MAX_SUN_ZENITH = 80.0
#: Plausible c-factor range [1]: wider than anything the model gives for Sentinel-2's view
#: zenith (<= 12 deg) at sun zenith <= 80 deg ([0.83, 1.18], see :data:`MAX_SUN_ZENITH`);
#: a c-factor outside means diverged kernels or corrupt angle grids, not a BRDF effect.
C_FACTOR_RANGE = (0.8, 1.25)


def c_factor_problem(c: np.ndarray, bands: Sequence[str],
                     valid_range: tuple[float, float] = C_FACTOR_RANGE) -> str | None:
    """Why a scene's c-factors on the site grid cannot be used, or None if they can.

    Parameters
    ----------
    c : numpy.ndarray
        (band, y, x) c-factor [1] on the site grid (:func:`c_factor_block`).
    bands : sequence of str
        Band names of the first axis.
    valid_range : (float, float)
        Plausible c-factor range [1] (:data:`C_FACTOR_RANGE`).

    Returns
    -------
    str or None
        ``"no_coverage: ..."`` when the granule's angle grids do not reach the site (or a
        band has no angles there), ``"c_factor: ..."`` when a band's c-factor leaves
        ``valid_range`` anywhere on the grid; None otherwise. NaN pixels in a band that has
        values elsewhere are not a problem of the scene: those pixels become invalid.
    """
    lo, hi = valid_range
    for k, band in enumerate(bands):
        finite = c[k][np.isfinite(c[k])]
        if finite.size == 0:
            return (f"no_coverage: the granule's {band} angle grid does not reach the site "
                    f"(no c-factor)")
        cmin, cmax = float(finite.min()), float(finite.max())
        if cmin < lo or cmax > hi:
            return (f"c_factor: {band} c-factor {cmin:.3g}..{cmax:.3g} outside the plausible "
                    f"[{lo:g}, {hi:g}]")
    return None


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
    return nodes_on_grid([c_factor_native(metadata)], grid, bands)[0]


def c_factor_nodes(paths: Sequence[str | Path]) -> list[xr.DataArray]:
    """c-factors of many scenes on their granules' angle grids, computed together.

    Scenes whose angle grids share a frame (CRS and upper-left corner: the same MGRS tile)
    go through sen2nbar's c-factor in one call, whatever their number: its xarray code has a
    fixed cost per call. Each result equals :func:`c_factor_native` of that scene.

    Parameters
    ----------
    paths : sequence of str or Path
        ``MTD_TL.xml`` of each scene.

    Returns
    -------
    list of xarray.DataArray
        Per scene, (band, y, x) c-factor [1] for :data:`BRDF_BANDS` on the 23 x 23 nodes,
        gaps filled; coords [m] in the granule's CRS, attr ``epsg``.
    """
    import xarray as xr

    out: list[xr.DataArray | None] = [None] * len(paths)
    frames: dict[tuple[Any, ...], list[tuple[int, xr.DataArray]]] = {}
    for i, p in enumerate(paths):
        a = read_angles(p, bands=BRDF_BANDS)
        key = (a.attrs["epsg"], float(a.x[0]), float(a.y[0]))
        frames.setdefault(key, []).append((i, a))
    for (epsg, _, _), members in frames.items():
        stack = xr.concat([a for _, a in members], dim="time")
        c = _fill_gaps(c_factor_from_angles(stack)).transpose("time", "band", "y", "x")
        for k, (i, _) in enumerate(members):
            out[i] = c.isel(time=k, drop=True).assign_attrs(epsg=epsg)
    return out  # type: ignore[return-value]


@lru_cache(maxsize=64)
def _grid_weights(epsg: int, x: tuple[float, ...], y: tuple[float, ...], grid_key: tuple
                  ) -> tuple[Any, np.ndarray]:
    # One sparse matrix per (angle-grid frame, site grid): the same for every scene of a
    # tile, so a site's few frames are built once instead of once per block of scenes.
    grid_epsg, x_px, y_px = grid_key
    px, py = np.meshgrid(np.asarray(x_px), np.asarray(y_px))
    return interpolation_matrix(np.asarray(x), np.asarray(y), epsg, px, py, grid_epsg)


def nodes_on_grid(nodes: Sequence[xr.DataArray], grid: SiteGrid,
                  bands: Sequence[str] = BRDF_BANDS) -> np.ndarray:
    """Interpolate node c-factors (:func:`c_factor_nodes`) to the grid's pixel centres.

    Bilinear, extrapolating at most :data:`gpp_cubes.s2.granule.MAX_EXTRAPOLATION_M` beyond
    the outermost nodes (NaN farther out, or where one of a pixel's nodes is NaN), the
    centres being transformed into each granule's CRS first.

    Parameters
    ----------
    nodes : sequence of xarray.DataArray
        Per scene, (band, y, x) c-factor [1] on its angle grid (attr ``epsg``).
    grid : SiteGrid
        Target grid.
    bands : sequence of str
        Bands (subset of :data:`BRDF_BANDS`), in output order.

    Returns
    -------
    numpy.ndarray
        float32 (scene, band, y, x) c-factor [1].
    """
    ny, nx = grid.shape
    out = np.empty((len(nodes), len(bands), ny, nx), np.float32)
    grid_key = (int(grid.epsg), tuple(np.asarray(grid.x, float).tolist()),
                tuple(np.asarray(grid.y, float).tolist()))
    frames: dict[tuple[Any, ...], list[int]] = {}
    for i, c in enumerate(nodes):
        key = (int(c.attrs["epsg"]), tuple(c.x.values.tolist()), tuple(c.y.values.tolist()))
        frames.setdefault(key, []).append(i)
    for (epsg, x, y), members in frames.items():
        vals = np.stack([nodes[i].sel(band=list(bands)).transpose("band", "y", "x").values
                         for i in members])
        w, outside = _grid_weights(epsg, x, y, grid_key)
        flat = np.asarray(w @ vals.reshape(-1, len(y) * len(x)).T).T
        flat[:, outside] = np.nan
        out[members] = flat.reshape(len(members), len(bands), ny, nx)
    return out


def c_factor_block(paths: Sequence[str | Path], grid: SiteGrid,
                   bands: Sequence[str] = BRDF_BANDS) -> np.ndarray:
    """c-factors of many scenes on the grid, computed together (fast path of NBAR).

    :func:`c_factor_nodes` then :func:`nodes_on_grid`; equals :func:`c_factor_on_grid`
    scene by scene.

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
    return nodes_on_grid(c_factor_nodes(paths), grid, bands)


#: Version of the c-factor computation, part of the cache key: bump it when the values
#: change, so no c-factor of an earlier method is ever read back (version 2: evaluated at
#: the pixel centres transformed into the granule's CRS; version 1 reprojected the grid).
C_FACTOR_METHOD = 2


def _sen2nbar_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sen2nbar")
    except PackageNotFoundError:  # pragma: no cover - sen2nbar is a dependency
        return "unknown"


def _cache_files(keys: Sequence[str], grid: SiteGrid, bands: Sequence[str],
                 cache_dir: str | Path | None) -> list[Path]:
    base = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "c-factor"
    frame = hashlib.sha1(repr((grid.epsg, tuple(grid.bounds), grid.resolution, tuple(bands),
                               C_FACTOR_METHOD, _sen2nbar_version())).encode()).hexdigest()[:10]
    return [base / f"{hashlib.sha1(k.encode()).hexdigest()[:16]}-{frame}.npy" for k in keys]


def c_factor_cached(keys: Sequence[str], grid: SiteGrid, bands: Sequence[str] = BRDF_BANDS,
                    cache_dir: str | Path | None = None) -> list[bool]:
    """Whether each scene's c-factor on ``grid`` is in the cache of
    :func:`c_factor_block_cached` (parameters as there)."""
    return [f.is_file() for f in _cache_files(keys, grid, bands, cache_dir)]


def c_factor_block_cached(paths: Sequence[str | Path], keys: Sequence[str], grid: SiteGrid,
                          bands: Sequence[str] = BRDF_BANDS,
                          cache_dir: str | Path | None = None, *,
                          nodes: dict[str, xr.DataArray] | None = None) -> np.ndarray:
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
        ``c-factor/`` subdirectory as float32 ``.npy`` files, written atomically, keyed by
        item id, grid, bands, :data:`C_FACTOR_METHOD` and the sen2nbar version.
    nodes : dict, optional
        Item id -> node c-factors (:func:`c_factor_nodes`) already computed for some
        scenes, e.g. all scenes of a site in one batched call; the others not cached are
        computed here (one call).

    Returns
    -------
    numpy.ndarray
        float32 (scene, band, y, x) c-factor [1].
    """
    files = _cache_files(keys, grid, bands, cache_dir)
    ny, nx = grid.shape
    out = np.empty((len(paths), len(bands), ny, nx), np.float32)
    todo = []
    for i, f in enumerate(files):
        try:
            out[i] = np.load(f)
        except (OSError, ValueError):  # missing or unreadable: compute again
            todo.append(i)
    if todo:
        given = nodes or {}
        missing = [i for i in todo if keys[i] not in given]
        computed = dict(zip(missing, c_factor_nodes([paths[i] for i in missing]), strict=True))
        vals = nodes_on_grid([given[keys[i]] if i not in computed else computed[i]
                              for i in todo], grid, bands)
        for k, i in enumerate(todo):
            out[i] = vals[k]
            # Atomic (never a truncated file), not fsynced: np.load rejects a damaged
            # entry, which is then computed again; 200 fsyncs cost seconds per site-year.
            with atomic_path(files[i], suffix=".npy", durable=False) as tmp:
                np.save(tmp, vals[k])
    return out


def c_factor_cube(paths: Sequence[str | Path], grid: SiteGrid,
                  bands: Sequence[str] = BRDF_BANDS,
                  time_chunks: Sequence[int] | None = None, *,
                  keys: Sequence[str] | None = None,
                  cache_dir: str | Path | None = None) -> xr.DataArray:
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
    keys : sequence of str, optional
        STAC item id of each time step: read from and write to the on-disk cache
        (:func:`c_factor_block_cached`, ``cache_dir``) instead of computing every time.
    cache_dir : str or Path, optional
        Cache directory when ``keys`` are given.

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
        task = (dask.delayed(c_factor_block)(chunk, grid, tuple(bands)) if keys is None else
                dask.delayed(c_factor_block_cached)(chunk, tuple(keys[s:s + n]), grid,
                                                    tuple(bands), cache_dir))
        parts.append(dsa.from_delayed(task, shape=(n, len(bands), ny, nx), dtype=np.float32))
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
