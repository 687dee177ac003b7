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

from gpp_cubes.stac.search import _public_url

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid

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

    from gpp_cubes.stac.providers import http_retry

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
    epsg, ulx, uly = _geocoding(text, where)
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
    x, y = _node_coords(ulx, uly)
    da = xr.DataArray(np.array(stacked), dims=["band", "angle", "y", "x"],
                      coords={"band": order, "angle": ["Zenith", "Azimuth"], "x": x, "y": y})
    da.attrs["epsg"] = epsg
    return da


def _geocoding(text: bytes, where: str) -> tuple[int, float, float]:
    """(EPSG code, ULX, ULY [m]) of a granule's ``Tile_Geocoding``."""
    code = re.search(rb"<HORIZONTAL_CS_CODE>\s*EPSG:(\d+)\s*</HORIZONTAL_CS_CODE>", text)
    pos = re.search(rb"<Geoposition\b[^>]*>\s*<ULX>\s*([-+\d.eE]+)\s*</ULX>\s*"
                    rb"<ULY>\s*([-+\d.eE]+)\s*</ULY>", text)
    if code is None or pos is None:
        raise ValueError(f"{where}: no Tile_Geocoding (HORIZONTAL_CS_CODE EPSG, ULX/ULY): "
                         "not an L2A MTD_TL.xml")
    return int(code.group(1)), float(pos.group(1)), float(pos.group(2))


def _node_coords(ulx: float, uly: float) -> tuple[np.ndarray, np.ndarray]:
    """x, y [m] of the 23 x 23 angle-grid nodes: upper-left corner + half a step (sen2nbar)."""
    x = np.arange(ulx, ulx + _ANGLE_STEP * _ANGLE_N, _ANGLE_STEP) + _ANGLE_STEP / 2
    y = np.arange(uly, uly - _ANGLE_STEP * _ANGLE_N, -_ANGLE_STEP) - _ANGLE_STEP / 2
    return x, y


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


#: How far beyond its outermost nodes an angle grid is extrapolated [m]: one node step. The
#: nodes span the tile plus 5 km; farther out the granule does not describe the pixel.
MAX_EXTRAPOLATION_M = _ANGLE_STEP


def _interpolation_matrix(x: np.ndarray, y: np.ndarray, epsg: int, px: np.ndarray,
                          py: np.ndarray, points_epsg: int) -> tuple[Any, np.ndarray]:
    """Bilinear weights from the nodes of an angle grid to points.

    The points are transformed into the granule's CRS first, so a tile of another UTM zone
    than the site's grid is interpolated where its pixels really lie (the 23 x 23 grid is
    never reprojected: reprojection rotates it and leaves NaN corners, which a weighted sum
    spreads to every pixel). Linear extrapolation up to :data:`MAX_EXTRAPOLATION_M` beyond
    the outermost nodes, as sen2nbar's ``interp`` with ``fill_value="extrapolate"`` does at
    the tile edges.

    Parameters
    ----------
    x, y : numpy.ndarray
        Node coordinates [m] in the granule's CRS (regular, either order).
    epsg : int
        EPSG code of the granule's CRS.
    px, py : numpy.ndarray
        Point coordinates [m] in ``points_epsg`` (any shape; flattened).
    points_epsg : int
        EPSG code of the points' CRS.

    Returns
    -------
    (weights, outside) : (scipy.sparse.csr_matrix, numpy.ndarray)
        (points, nodes) weights, nodes in row-major (y, x) order, at most four non-zero per
        row; ``outside`` (points,) bool: beyond the extrapolation limit (value NaN).
    """
    from scipy import sparse

    px, py = np.ravel(px), np.ravel(py)
    if epsg != points_epsg:
        from pyproj import Transformer

        px, py = Transformer.from_crs(points_epsg, epsg, always_xy=True).transform(px, py)
    outside = np.zeros(px.size, bool)
    axes = []
    for nodes, at in ((y, py), (x, px)):
        step = nodes[1] - nodes[0]
        f = (at - nodes[0]) / step  # fractional node index
        k = np.clip(np.floor(f).astype(np.intp), 0, len(nodes) - 2)
        margin = MAX_EXTRAPOLATION_M / abs(step)
        outside |= (f < -margin) | (f > len(nodes) - 1 + margin)
        axes.append((k, f - k))
    (ky, ty), (kx, tx) = axes
    pix = np.arange(px.size)
    rows, cols, weights = [], [], []
    for dy, wy in ((0, 1.0 - ty), (1, ty)):
        for dx, wx in ((0, 1.0 - tx), (1, tx)):
            rows.append(pix)
            cols.append((ky + dy) * len(x) + kx + dx)
            weights.append(wy * wx)
    w = sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows),
                                                    np.concatenate(cols))),
                          shape=(px.size, len(y) * len(x)))
    w.eliminate_zeros()  # a NaN node with weight 0 must not reach a point
    return w, outside


def _interpolate(values: np.ndarray, x: np.ndarray, y: np.ndarray, epsg: int,
                 px: np.ndarray, py: np.ndarray, points_epsg: int) -> np.ndarray:
    """(..., y, x) node values -> (..., points) by :func:`_interpolation_matrix`."""
    w, outside = _interpolation_matrix(x, y, epsg, px, py, points_epsg)
    lead = values.shape[:-2]
    out = np.asarray(w @ values.reshape(-1, values.shape[-2] * values.shape[-1]).T).T
    out[:, outside] = np.nan
    return out.reshape(*lead, -1)


def _to_grid(c: xr.DataArray, epsg: int, grid: SiteGrid, bands: Sequence[str]) -> np.ndarray:
    """Interpolate (..., band, y, x) c-factors from their nodes to the grid's pixel centres.

    NaN where a pixel lies beyond the granule's angle grid (:data:`MAX_EXTRAPOLATION_M`)
    or where one of its (at most four) nodes is NaN; never elsewhere.
    """
    c = c.sel(band=list(bands)).transpose(..., "band", "y", "x")
    px, py = np.meshgrid(grid.x, grid.y)
    vals = _interpolate(c.values, c.x.values, c.y.values, epsg, px, py, grid.epsg)
    return vals.reshape(*c.shape[:-2], *grid.shape).astype(np.float32)


def sun_zenith_at(metadata: str | Path, x: float, y: float, epsg: int) -> float:
    """Sun zenith angle of a granule at a point, from its 5 km sun-angle grid.

    Parameters
    ----------
    metadata : str or Path
        Local ``MTD_TL.xml``.
    x, y : float
        The point [m] in ``epsg`` (e.g. the tower on the site grid).
    epsg : int
        EPSG code of the point's CRS (may differ from the granule's).

    Returns
    -------
    float
        Sun zenith [degrees], bilinear between the grid nodes; NaN where the grid does not
        reach the point.
    """
    text = Path(metadata).read_bytes()
    g_epsg, ulx, uly = _geocoding(text, str(metadata))
    sun = _between(text, b"<Sun_Angles_Grid>", b"</Sun_Angles_Grid>", str(metadata))
    zen = _angle_grid(sun, "Zenith", str(metadata))
    nx, ny = _node_coords(ulx, uly)
    return float(_interpolate(zen, nx, ny, g_epsg, np.array([x]), np.array([y]), epsg)[0])


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
        out[[i for i, _ in members]] = _to_grid(c, epsg, grid, bands)
    return out


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
        ``c-factor/`` subdirectory as float32 ``.npy`` files, written atomically, keyed by
        item id, grid, bands, :data:`C_FACTOR_METHOD` and the sen2nbar version.

    Returns
    -------
    numpy.ndarray
        float32 (scene, band, y, x) c-factor [1].
    """
    base = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "c-factor"
    base.mkdir(parents=True, exist_ok=True)
    frame = hashlib.sha1(repr((grid.epsg, tuple(grid.bounds), grid.resolution, tuple(bands),
                               C_FACTOR_METHOD, _sen2nbar_version())).encode()).hexdigest()[:10]
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
