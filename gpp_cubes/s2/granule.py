"""Sentinel-2 granule metadata (``MTD_TL.xml``): fetched once, cached, parsed fast.

Every scene's sun and view angles come from its granule metadata (the ``granule-metadata``
asset, 5 km angle grids of 23 x 23 nodes). One XML per scene is the slow part of NBAR, so
:func:`fetch_granule_metadata` downloads them concurrently (thread pool, HTTP retries) into
an on-disk cache keyed by item id, and :func:`read_angles` cuts the few elements it needs
out of the bytes instead of building the whole document, giving the same numbers as
sen2nbar's parser (tested). The grids are evaluated at arbitrary points, transformed into
the granule's CRS first, by bilinear weights (:func:`interpolate`): a tile of the
neighbouring UTM zone is interpolated where its pixels really lie.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.atomic import write_atomic
from gpp_cubes.errors import AssetError, InputFormatError
from gpp_cubes.secrets import public_url

if TYPE_CHECKING:
    import pystac
    import xarray as xr


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
        raise AssetError(f"STAC item {item.id!r} has no asset 'granule-metadata'")
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
            raise OSError(f"HTTP {r.status_code} for {public_url(href)}")
        if b"Tile_Angles" not in r.content:
            raise InputFormatError(f"{public_url(href)} is not an L2A granule MTD_TL.xml "
                                   "(no Tile_Angles)")
    # Renamed into place: a killed download leaves no truncated file. Not fsynced: the
    # cache is checked on use, and an fsync per granule costs more than its download here.
    return write_atomic(target, r.content, durable=False)


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
        Item id -> local XML path, and item id -> reason (``"unreadable: granule metadata
        ..."``, :func:`gpp_cubes.stac.failures.failure_reason`) for the items whose metadata
        could not be fetched (the caller drops those scenes and records them).
    """
    from gpp_cubes.stac.failures import failure_reason

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)

    def one(it: pystac.Item) -> tuple[str, Path | None, str | None]:
        try:
            return it.id, _fetch_one(it, cache), None
        except Exception as err:  # network, HTTP, missing asset: reported, not raised
            return it.id, None, failure_reason(err, "granule metadata")

    paths: dict[str, Path] = {}
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        for iid, path, why in pool.map(one, items):
            if path is not None:
                paths[iid] = path
            else:
                failed[iid] = why or "unreadable: granule metadata unavailable"
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
        raise InputFormatError(f"{where}: no {start.decode()}...{end.decode()} in the "
                               "granule metadata")
    return text[i + len(start):j]


def _angle_grid(block: bytes, angle: str, where: str) -> np.ndarray:
    values = _between(_between(block, f"<{angle}>".encode(), f"</{angle}>".encode(), where),
                      b"<Values_List>", b"</Values_List>", where)
    n_rows = values.count(b"<VALUES>")
    # Plain byte operations and one C-level number parse: the same numbers as sen2nbar's
    # per-token float() ("NaN" included), without building the XML document.
    vals = np.fromstring(values.replace(b"<VALUES>", b" ").replace(b"</VALUES>", b" ")
                         .decode(), dtype=float, sep=" ")
    if not n_rows or vals.size % n_rows:
        raise InputFormatError(f"{where}: ragged {angle} angle grid ({n_rows} rows, "
                               f"{vals.size} values)")
    return vals.reshape(n_rows, -1)


def read_angles(metadata: str | Path, bands: Sequence[str] | None = None) -> xr.DataArray:
    """Sun and per-band view angles of a granule, exactly as sen2nbar reads them, but faster.

    Same output as :func:`sen2nbar.metadata.angles_from_metadata` (per band the NaN-mean over
    detectors of the 23 x 23 zenith and azimuth grids; node centres from the first (10 m)
    upper-left corner + 2500 m). The granule XML is machine-written by ESA's processor, so
    the few elements needed are cut out of the bytes with plain byte searches and their
    numbers parsed in one C call, instead of building the whole document as a dict
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
    InputFormatError
        Missing geocoding or angles (names the file and the element).
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
            raise InputFormatError(f"{where}: not all bands include angle values (no {k})")
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
        raise InputFormatError(f"{where}: no Tile_Geocoding (HORIZONTAL_CS_CODE EPSG, "
                               "ULX/ULY): not an L2A MTD_TL.xml")
    return int(code.group(1)), float(pos.group(1)), float(pos.group(2))


def _node_coords(ulx: float, uly: float) -> tuple[np.ndarray, np.ndarray]:
    """x, y [m] of the 23 x 23 angle-grid nodes: upper-left corner + half a step (sen2nbar)."""
    x = np.arange(ulx, ulx + _ANGLE_STEP * _ANGLE_N, _ANGLE_STEP) + _ANGLE_STEP / 2
    y = np.arange(uly, uly - _ANGLE_STEP * _ANGLE_N, -_ANGLE_STEP) - _ANGLE_STEP / 2
    return x, y


#: How far beyond its outermost nodes an angle grid is extrapolated [m]: one node step. The
#: nodes span the tile plus 5 km; farther out the granule does not describe the pixel.
MAX_EXTRAPOLATION_M = _ANGLE_STEP


def interpolation_matrix(x: np.ndarray, y: np.ndarray, epsg: int, px: np.ndarray,
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


def interpolate(values: np.ndarray, x: np.ndarray, y: np.ndarray, epsg: int,
                 px: np.ndarray, py: np.ndarray, points_epsg: int) -> np.ndarray:
    """(..., y, x) node values -> (..., points) by :func:`interpolation_matrix`."""
    w, outside = interpolation_matrix(x, y, epsg, px, py, points_epsg)
    lead = values.shape[:-2]
    out = np.asarray(w @ values.reshape(-1, values.shape[-2] * values.shape[-1]).T).T
    out[:, outside] = np.nan
    return out.reshape(*lead, -1)


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
    return float(interpolate(zen, nx, ny, g_epsg, np.array([x]), np.array([y]), epsg)[0])


