"""MODIS LST v6.1 (MOD11A1 / MYD11A1) at a tower, the part both sources share: constants, QC
rule, scaling, 3x3 smoothing and the native sinusoidal window.

Stage of the data flow (paper section 2.1, "Land Surface Temperature")::

    modis-11A1-061 items ──> LST_Day_1km / LST_Night_1km + QC_Day / QC_Night
        ──> scale (0.02 K) + fill (0) + QC rule ──> 3x3 nan-aware mean ──> tower pixel

The cube is loaded on the product's *native* sinusoidal grid (a small window of 1 km MODIS
pixels around the tower), not on the 10 m UTM site grid: resampling 1 km pixels to 10 m and
back would only smear the pixel the tower sits in.

QC rule (MOD11 user guide, collection 6.1, table "QC bit flags of MOD11A1")
--------------------------------------------------------------------------
``QC_Day`` / ``QC_Night`` are 8-bit fields:

=========  ====================================================================
bits 1-0   mandatory QA: 00 LST produced, good quality; 01 LST produced, other
           quality (check the detailed flags); 10 not produced, cloud; 11 not
           produced, other reasons
bits 3-2   data quality: 00 good; 01 other quality; 10, 11 TBD
bits 5-4   emissivity error: 00 <= 0.01; 01 <= 0.02; 10 <= 0.04; 11 > 0.04
bits 7-6   LST error: 00 <= 1 K; 01 <= 2 K; 10 <= 3 K; 11 > 3 K
=========  ====================================================================

A pixel is kept when the mandatory flag is 00, or when it is 01 **and** the data quality is
00 (good) **and** the LST error flag is at most ``max_lst_error_k`` (default 2 K, i.e. bits
7-6 in {00, 01}). Flags 10 and 11 (LST not produced) are always dropped, as are fill values
(DN 0) and DNs outside the valid range 7500-65535.

References
----------
Wan, Z. (2019). MODIS Land Surface Temperature Products Users' Guide, Collection 6.1.
    ERI, University of California, Santa Barbara.
Wan, Z., Hook, S., Hulley, G. (2021). MOD11A1/MYD11A1 MODIS/Terra(Aqua) Land Surface
    Temperature/Emissivity Daily L3 Global 1km SIN Grid V061. NASA EOSDIS LP DAAC.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from gpp_cubes.errors import ConfigError

LST_COLLECTION = "modis-11A1-061"
#: STAC ``platform`` property of each product.
PLATFORMS = {"MOD11A1": "terra", "MYD11A1": "aqua"}
#: LST scale factor [K per DN], fill value and valid DN range (user guide, table 3).
LST_SCALE_K = 0.02
LST_FILL = 0
LST_VALID_RANGE = (7500, 65535)
#: Feature name suffix -> (LST asset, QC asset).
PERIODS = {"dt": ("LST_Day_1km", "QC_Day"), "nt": ("LST_Night_1km", "QC_Night")}
FEATURES = ("MOD11A1_dt", "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt")

#: The MODIS sinusoidal projection: a sphere of radius 6371007.181 m (user guide, sec. 2).
MODIS_SPHERE_RADIUS_M = 6371007.181
MODIS_SIN_PROJ4 = f"+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R={MODIS_SPHERE_RADIUS_M} +units=m +no_defs"
#: Upper-left corner of the global tile system and the 1 km pixel size [m]
#: (36 x 18 tiles of 1200 x 1200 pixels).
MODIS_ORIGIN_X = -20015109.355798
MODIS_ORIGIN_Y = 10007554.677899
MODIS_TILE_M = 1111950.5197665
MODIS_PIXEL_M = MODIS_TILE_M / 1200.0


# --------------------------------------------------------------------------------------
# QC, scaling and smoothing (pure functions)
# --------------------------------------------------------------------------------------


def decode_qc(qc: np.ndarray) -> dict[str, np.ndarray]:
    """Split MOD11A1/MYD11A1 QC bytes into their four 2-bit flags.

    Parameters
    ----------
    qc : numpy.ndarray of int
        ``QC_Day`` or ``QC_Night`` values [bit field, 0-255].

    Returns
    -------
    dict
        ``mandatory`` (bits 1-0), ``data_quality`` (bits 3-2), ``emis_error`` (bits 5-4)
        and ``lst_error`` (bits 7-6), each an array of ints 0-3.

    References
    ----------
    Wan (2019), MODIS LST Users' Guide C6.1, QC table of MOD11A1.
    """
    q = np.asarray(qc).astype(np.uint16) & 0xFF
    return {
        "mandatory": q & 0b11,
        "data_quality": (q >> 2) & 0b11,
        "emis_error": (q >> 4) & 0b11,
        "lst_error": (q >> 6) & 0b11,
    }


def qc_accept(qc: np.ndarray, *, max_lst_error_k: int = 2) -> np.ndarray:
    """Pixels whose QC passes the rule documented in the module docstring.

    Parameters
    ----------
    qc : numpy.ndarray of int
        QC bytes [bit field].
    max_lst_error_k : {1, 2, 3}, default 2
        Largest accepted average LST error [K] for "other quality" pixels (mandatory 01).

    Returns
    -------
    numpy.ndarray of bool
    """
    if max_lst_error_k not in (1, 2, 3):
        raise ConfigError(f"max_lst_error_k must be 1, 2 or 3 K, got {max_lst_error_k!r}")
    f = decode_qc(qc)
    good = f["mandatory"] == 0
    other_ok = (
        (f["mandatory"] == 1) & (f["data_quality"] == 0) & (f["lst_error"] <= max_lst_error_k - 1)
    )
    return good | other_ok


def scale_lst(dn: np.ndarray, qc: np.ndarray | None = None, *,
              max_lst_error_k: int = 2) -> np.ndarray:
    """Digital numbers to LST [K], with fill, valid range and QC applied.

    Parameters
    ----------
    dn : numpy.ndarray of int or float
        ``LST_Day_1km`` / ``LST_Night_1km`` values [DN]; 0 is fill. NaN (a loader's nodata)
        counts as missing.
    qc : numpy.ndarray of int, optional
        The matching QC bytes; pixels failing :func:`qc_accept` become NaN. A missing QC
        value (NaN) rejects the pixel.
    max_lst_error_k : int, default 2
        Passed to :func:`qc_accept`.

    Returns
    -------
    numpy.ndarray of float32
        LST [K], NaN where missing or rejected.
    """
    dn = np.asarray(dn, dtype=np.float64)
    lo, hi = LST_VALID_RANGE
    ok = np.isfinite(dn) & (dn != LST_FILL) & (dn >= lo) & (dn <= hi)
    if qc is not None:
        qc = np.asarray(qc, dtype=np.float64)
        qc_ok = np.isfinite(qc)
        ok &= qc_ok & qc_accept(np.where(qc_ok, qc, 255).astype(np.uint16),
                                max_lst_error_k=max_lst_error_k)
    return np.where(ok, dn * LST_SCALE_K, np.nan).astype(np.float32)


def nan_mean_3x3(arr: np.ndarray, *, min_valid: int = 1) -> np.ndarray:
    """3x3 moving mean over the last two axes that ignores missing (NaN) pixels.

    Each output pixel is the mean of the valid pixels among itself and its 8 neighbours
    (fewer at the array edge); with fewer than ``min_valid`` valid pixels it is NaN.

    Parameters
    ----------
    arr : numpy.ndarray, shape (..., rows, cols)
        Values [any unit], NaN where missing.
    min_valid : int, default 1
        Minimum number of valid pixels in the window [count, 1-9].

    Returns
    -------
    numpy.ndarray of float32, same shape as ``arr``
    """
    if not 1 <= min_valid <= 9:
        raise ConfigError(f"min_valid must be within 1..9, got {min_valid}")
    a = np.asarray(arr, dtype=np.float64)
    valid = np.isfinite(a)
    # A 3x3 box over the spatial axes only; zero padding so outside pixels count as missing.
    size = (1,) * (a.ndim - 2) + (3, 3)
    total = ndimage.uniform_filter(np.where(valid, a, 0.0), size=size, mode="constant") * 9
    count = ndimage.uniform_filter(valid.astype(np.float64), size=size, mode="constant") * 9
    count = np.rint(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count >= min_valid, total / np.maximum(count, 1), np.nan)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------
# The native sinusoidal window around a tower
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModisGrid:
    """A window of MODIS 1 km sinusoidal pixels centred on the pixel containing a tower.

    Attributes
    ----------
    row0, col0 : int
        Global pixel indices of the window's upper-left pixel (row from the north edge of
        the tile system, column from its west edge).
    size : int
        Window side [pixels], odd.
    tower_x, tower_y : float
        Tower position in sinusoidal coordinates [m].
    """

    row0: int
    col0: int
    size: int
    tower_x: float
    tower_y: float

    @property
    def resolution(self) -> float:
        """Pixel size [m]."""
        return MODIS_PIXEL_M

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the window [m, sinusoidal]."""
        left = MODIS_ORIGIN_X + self.col0 * MODIS_PIXEL_M
        top = MODIS_ORIGIN_Y - self.row0 * MODIS_PIXEL_M
        return (left, top - self.size * MODIS_PIXEL_M, left + self.size * MODIS_PIXEL_M, top)

    @property
    def epsg(self) -> str:
        """The CRS as a PROJ string (the MODIS sphere has no EPSG code); pyproj reads it."""
        return MODIS_SIN_PROJ4

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates [m], west to east."""
        return self.bounds[0] + MODIS_PIXEL_M * (np.arange(self.size) + 0.5)

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates [m], north to south."""
        return self.bounds[3] - MODIS_PIXEL_M * (np.arange(self.size) + 0.5)

    @property
    def tower_index(self) -> tuple[int, int]:
        """(row, col) of the tower's pixel inside the window."""
        return (self.size // 2, self.size // 2)

    @cached_property
    def crs(self):  # -> odc.geo.CRS, lazily imported
        from odc.geo import CRS

        return CRS(MODIS_SIN_PROJ4)

    @cached_property
    def geobox(self):  # -> odc.geo.geobox.GeoBox
        from affine import Affine
        from odc.geo.geobox import GeoBox

        left, _, _, top = self.bounds
        transform = Affine(MODIS_PIXEL_M, 0.0, left, 0.0, -MODIS_PIXEL_M, top)
        return GeoBox(self.shape, transform, self.crs)


def modis_grid(lat: float, lon: float, *, size: int = 5) -> ModisGrid:
    """The MODIS 1 km sinusoidal window centred on the pixel that contains a point.

    Parameters
    ----------
    lat, lon : float
        Tower position [degrees, WGS84].
    size : int, default 5
        Window side [pixels]; odd and >= 3 so the 3x3 smoothing of the tower pixel sees all
        its neighbours.

    Returns
    -------
    ModisGrid

    References
    ----------
    Wolfe, R. E., Roy, D. P., Vermote, E. (1998). MODIS land data storage, gridding, and
        compositing methodology: Level 2 grid. IEEE TGRS 36(4), 1324-1338.
    """
    from pyproj import Transformer

    if size < 3 or size % 2 == 0:
        raise ConfigError(f"MODIS window size must be odd and >= 3, got {size}")
    to_sin = Transformer.from_crs("EPSG:4326", MODIS_SIN_PROJ4, always_xy=True)
    x, y = to_sin.transform(lon, lat)
    col = int(np.floor((x - MODIS_ORIGIN_X) / MODIS_PIXEL_M))
    row = int(np.floor((MODIS_ORIGIN_Y - y) / MODIS_PIXEL_M))
    half = size // 2
    return ModisGrid(row0=row - half, col0=col - half, size=size, tower_x=float(x),
                     tower_y=float(y))


def tower_lst_series(dn: xr.DataArray, qc: xr.DataArray, grid: ModisGrid, *,
                     max_lst_error_k: int = 2, min_valid: int = 1) -> pd.Series:
    """Daily LST at the tower pixel after scaling, QC and 3x3 nan-aware smoothing.

    Parameters
    ----------
    dn, qc : xarray.DataArray, dims (time, y, x)
        LST digital numbers [DN] and QC bytes on ``grid`` (one time step per product day).
    grid : ModisGrid
        The window the arrays are on; the tower's pixel is its centre.
    max_lst_error_k, min_valid : int
        See :func:`qc_accept` and :func:`nan_mean_3x3`.

    Returns
    -------
    pandas.Series of float32
        LST [K] indexed by day (``time``, midnight); NaN where no valid pixel was near.
    """
    if dn.shape != qc.shape:
        raise ValueError(f"LST and QC shapes differ: {dn.shape} vs {qc.shape}")
    if dn.shape[-2:] != grid.shape:
        raise ValueError(f"LST array {dn.shape[-2:]} is not on the MODIS window {grid.shape}")
    lst = scale_lst(dn.values, qc.values, max_lst_error_k=max_lst_error_k)
    days = pd.DatetimeIndex(pd.to_datetime(dn["time"].values)).normalize()
    # Several granules on one day (two tiles around a tile edge): mosaic them pixel by pixel
    # (tiles do not overlap, so at most one is valid per pixel) before smoothing.
    uniq, inverse = np.unique(days.values, return_inverse=True)
    mosaic = np.full((len(uniq), *lst.shape[1:]), np.nan, dtype=np.float32)
    for k in range(len(uniq)):
        layers = lst[inverse == k]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            mosaic[k] = np.nanmean(layers, axis=0) if len(layers) > 1 else layers[0]
    smooth = nan_mean_3x3(mosaic, min_valid=min_valid)
    r, c = grid.tower_index
    s = pd.Series(smooth[:, r, c].astype(np.float32), index=pd.DatetimeIndex(uniq), name="LST")
    s.index.name = "time"
    return s


def empty_lst_frame(start: str, end: str) -> pd.DataFrame:
    """All-NaN daily LST features over ``start``..``end`` (a site without scenes)."""
    idx = pd.date_range(start, end, freq="D", name="time")
    return pd.DataFrame({f: np.full(len(idx), np.nan, np.float32) for f in FEATURES}, index=idx)
