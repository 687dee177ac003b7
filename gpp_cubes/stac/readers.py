"""Reads that up-sample a coarser, grid-aligned raster by an integer factor (nearest).

Sentinel-2's 20 m and 60 m assets (9 of the 13 read per scene) loaded on a 10 m site grid
whose bounds are multiples of 60 m (:mod:`gpp_cubes.sites.grid`), in the tile's own UTM zone,
are an exact integer up-sampling: every 10 m pixel lies inside a single source pixel.
odc-stac hands every read that is not a plain paste to GDAL's warper
(``rasterio.warp.reproject``), whose set-up costs ~2 ms of CPU per 200 x 200 window of a
local file. Reading the source window and repeating each pixel k x k times gives the same
values as a nearest-neighbour warp, for ~0.05 ms (in a build over HTTP, ~0.8 ms of CPU less
per read, ~10 % of a Sentinel-2 task). Anything else (another CRS, a rotation, a
misaligned grid, other resampling, multi-band selections) goes to odc-stac's own read.
It imports odc-stac at module level: :mod:`gpp_cubes.stac.load` imports it only when it builds
its reader, which needs odc-stac anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio
from odc.loader._rio import (
    nodata_mask,
    resolve_dst_dtype,
    resolve_dst_nodata,
    resolve_src_nodata,
    rio_env,
    same_nodata,
)
from rasterio.enums import MaskFlags
from rasterio.windows import Window

#: Relative tolerance on resolutions and on pixel offsets [1].
ALIGN_TOL = 1e-6


def integer_upsampling(src_transform: Any, dst_transform: Any) -> tuple[int, int, int] | None:
    """How a destination grid splits the pixels of a source grid, if it does so exactly.

    Parameters
    ----------
    src_transform, dst_transform : affine.Affine
        Pixel-to-CRS transforms of the source raster and of the destination grid (same
        CRS; the caller checks that) [CRS units per pixel].

    Returns
    -------
    (k, col_off, row_off) or None
        Each source pixel holds k x k destination pixels (k >= 2), and the destination's
        first pixel is ``col_off`` columns and ``row_off`` rows (destination pixels, may be
        negative) from the source's first pixel. None when the grids are not north-up,
        not an integer ratio apart, or not aligned on destination pixel edges.
    """
    s, d = src_transform, dst_transform
    if s.b or s.d or d.b or d.d or s.a <= 0 or d.a <= 0 or s.e >= 0 or d.e >= 0:
        return None
    k = s.a / d.a
    k_int = round(k)
    if k_int < 2 or abs(k - k_int) > ALIGN_TOL * k or abs(s.e / d.e - k_int) > ALIGN_TOL * k:
        return None
    col_off, row_off = (d.c - s.c) / d.a, (d.f - s.f) / d.e
    if max(abs(col_off - round(col_off)), abs(row_off - round(row_off))) > ALIGN_TOL * k:
        return None
    return k_int, round(col_off), round(row_off)


def axis_windows(n_src: int, n_dst: int, k: int, offset: int) -> tuple[slice, slice, int] | None:
    """One axis of an integer up-sampling: what to read, where it lands, what to trim.

    Parameters
    ----------
    n_src, n_dst : int
        Source and destination lengths along the axis [pixels].
    k : int
        Destination pixels per source pixel [1].
    offset : int
        Position of the destination's first pixel from the source's first pixel
        [destination pixels].

    Returns
    -------
    (dst, src, trim) or None
        The destination slice the source covers, the source slice to read, and how many
        leading up-sampled pixels to drop; None when they do not overlap.
    """
    first, stop = max(0, -offset), min(n_dst, k * n_src - offset)
    if stop <= first:
        return None
    lo, hi = (offset + first) // k, (offset + stop - 1) // k + 1
    return slice(first, stop), slice(lo, hi), offset + first - lo * k


def read_upsampled(src: Any, cfg: Any, dst_geobox: Any
                   ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """odc-stac's read of one band for an integer up-sampling, or None when it does not apply.

    Parameters
    ----------
    src : odc.loader.RasterSource
        The band to read; its footprint (``geobox``, from the item's projection extension)
        decides whether to try, before anything is opened.
    cfg : odc.loader.RasterLoadParams
        Load parameters (resampling, dtype, nodata) of the band.
    dst_geobox : odc.geo.geobox.GeoBox
        The destination grid.

    Returns
    -------
    ((rows, cols), pixels) or None
        As odc-stac's ``RioReader.read``: the destination window covered and its pixels,
        source nodata mapped to the destination nodata. None before opening the file when
        its footprint rules the fast path out, or after, when the file disagrees with its
        footprint, masks pixels other than by a nodata value, or does not overlap.
    """
    footprint = src.geobox
    if (not cfg.nearest or src.band < 1 or footprint is None or src.subdataset is not None
            or (src.meta is not None and src.meta.extra_dims)
            or not hasattr(footprint, "transform") or footprint.crs != dst_geobox.crs
            or integer_upsampling(footprint.transform, dst_geobox.transform) is None):
        return None
    with rasterio.open(src.uri, "r", sharing=False) as rdr, rio_env(VSI_CACHE=False):
        return _read_open(rdr, src.band, cfg, dst_geobox)


def _read_open(rdr: Any, bidx: int, cfg: Any, dst_geobox: Any
               ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    flags = rdr.mask_flag_enums[bidx - 1]
    if rdr.crs is None or dst_geobox.crs != rdr.crs or not (
            MaskFlags.all_valid in flags or MaskFlags.nodata in flags):
        return None  # a mask band or alpha: the warper would honour it
    how = integer_upsampling(rdr.transform, dst_geobox.transform)
    if how is None:
        return None
    k, col_off, row_off = how
    rows = axis_windows(rdr.height, dst_geobox.shape.y, k, row_off)
    cols = axis_windows(rdr.width, dst_geobox.shape.x, k, col_off)
    if rows is None or cols is None:
        return None
    (dst_r, src_r, trim_r), (dst_c, src_c, trim_c) = rows, cols
    pix = rdr.read(bidx, window=Window.from_slices(src_r, src_c))
    big = np.repeat(np.repeat(pix, k, axis=0), k, axis=1)[
        trim_r:trim_r + dst_r.stop - dst_r.start, trim_c:trim_c + dst_c.stop - dst_c.start]
    out = big.astype(resolve_dst_dtype(pix.dtype, cfg), copy=False)
    src_nodata = resolve_src_nodata(rdr.nodatavals[bidx - 1], cfg)
    dst_nodata = resolve_dst_nodata(out.dtype, cfg, src_nodata)
    if dst_nodata is not None and not same_nodata(src_nodata, dst_nodata):
        np.copyto(out, dst_nodata, where=nodata_mask(big, src_nodata))
    return (dst_r, dst_c), out
