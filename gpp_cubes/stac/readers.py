"""The readers behind every load: retried reads, the pre-check, and integer up-sampling.

Retries: GDAL retries HTTP error statuses itself (:mod:`gpp_cubes.stac.gdal`) but not a
transfer cut mid-body, and caches that failure under the URL. :func:`read_with_retries` tries
a remote read again after clearing GDAL's cache of that URL; odc-stac's and stackstac's
readers are subclassed so every read of a load goes through it (:func:`retrying_driver`,
``RetryingStackstacReader``), and :func:`check_item` (the optional pre-check of a load) uses
it to open every asset and read the block at the tower.

Up-sampling: Sentinel-2's 20 m and 60 m assets loaded on a 10 m site grid whose bounds are
multiples of 60 m (:mod:`gpp_cubes.sites.grid`), in the tile's own UTM zone, are an exact
integer up-sampling: every 10 m pixel lies inside a single source pixel. odc-stac hands
every read that is not a plain paste to GDAL's warper, whose set-up dominates the cost of a
small window; reading the source window and repeating each pixel k x k times gives the same
values as a nearest-neighbour warp (:func:`read_upsampled`). Anything else (another CRS, a
rotation, a misaligned grid, other resampling, multi-band selections) goes to odc-stac's own
read. Figures: ``benchmarks/README.md``.

This module imports odc-stac and rasterio at module level; :mod:`gpp_cubes.stac.load`
imports it only when it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

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

from gpp_cubes.secrets import public_url, redact
from gpp_cubes.stac.gdal import clear_gdal_http_cache, is_remote

if TYPE_CHECKING:
    import pystac

    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Attempts of one asset open or read. GDAL retries HTTP error statuses itself
#: (GDAL_HTTP_MAX_RETRY) but not a transfer cut mid-body, and caches that failure.
READ_ATTEMPTS = 3
#: Wait before the first retry [s], doubled on each further one.
READ_RETRY_DELAY_S = 0.25


def read_with_retries(href: str, read: Callable[[], T], *, attempts: int = READ_ATTEMPTS,
                       delay_s: float = READ_RETRY_DELAY_S) -> T:
    """``read()``, tried again after clearing GDAL's cache of ``href`` when it raises.

    Only remote hrefs are retried (a local file does not heal). The last error is raised.
    """
    import time

    tries = max(1, attempts) if is_remote(href) else 1
    extra: dict[str, str] = {}
    for k in range(tries):
        try:
            if not extra:
                return read()
            with rasterio.Env(**extra):
                return read()
        except Exception as err:  # RasterioIOError, CPLE_*, WarpOperationError, ...
            if k + 1 >= tries:
                raise
            # GDAL remembers the failed transfer (even "file does not exist" after a cut
            # HEAD); without clearing, the retry would fail again without any request.
            extra = clear_gdal_http_cache(href)
            log.info("retrying read of %s (%d of %d) after %s: %s", public_url(href), k + 2,
                     tries, type(err).__name__, redact(str(err), urls=[href])[:200])
            time.sleep(delay_s * 2 ** k)
    raise AssertionError("unreachable")  # pragma: no cover


def _probe_block(src: Any, grid: SiteGrid | None) -> Any:
    """The block of ``src`` (a rasterio dataset) holding the tower, else the first block."""
    bh, bw = src.block_shapes[0]
    if grid is None:
        return src.block_window(1, 0, 0)
    from rasterio.warp import transform

    xs, ys = transform(f"EPSG:{grid.epsg}", src.crs, [grid.tower_x], [grid.tower_y])
    row, col = src.index(xs[0], ys[0])
    row = min(max(int(row), 0), src.height - 1)  # tower off this tile: nearest block
    col = min(max(int(col), 0), src.width - 1)
    return src.block_window(1, row // bh, col // bw)


def check_item(item: pystac.Item, bands: Sequence[str],
               gdal_env: Mapping[str, str] | None = None, *, grid: SiteGrid | None = None,
               read_block: bool = True, attempts: int = READ_ATTEMPTS) -> str | None:
    """Open (and read one block of) every band asset; return why the item is unreadable.

    A COG truncated after its header opens fine and fails only when its pixels are read,
    so one block is read too: the block holding the site's tower (the one the load reads),
    or the first block without ``grid``. A failed open or read is retried ``attempts``
    times after clearing GDAL's ``/vsicurl/`` cache of that URL (GDAL does not retry a
    transfer cut mid-body and caches the failure).

    Parameters
    ----------
    item : pystac.Item
        Signed item.
    bands : sequence of str
        Asset keys to check.
    gdal_env : mapping, optional
        GDAL settings (``rasterio.Env``).
    grid : SiteGrid, optional
        Site grid: which block to read.
    read_block : bool, default True
        Read one block of each asset (False: open only, headers).
    attempts : int, default 3
        Tries per remote asset.

    Returns
    -------
    str or None
        ``"asset 'B04' missing"``, ``"asset 'B04' unreadable: <GDAL message>"`` or None.
    """
    def probe(href: str) -> str | None:
        with rasterio.open(href) as src:
            if src.count < 1 or src.crs is None:
                return "has no band or no CRS"
            if read_block:
                src.read(1, window=_probe_block(src, grid))
        return None

    with rasterio.Env(**(gdal_env or {})):
        for band in bands:
            asset = item.assets.get(band)
            if asset is None:
                return f"asset {band!r} missing"
            href = asset.href
            try:
                why = read_with_retries(href, lambda h=href: probe(h), attempts=attempts)
            except Exception as err:  # rasterio raises RasterioIOError, CPLE_*, ...
                return f"asset {band!r} unreadable: {redact(str(err), urls=[href])[:200]}"
            if why is not None:
                return f"asset {band!r} {why}"
    return None


@lru_cache(maxsize=1)
def _retry_classes() -> dict[str, type]:
    """odc-stac / stackstac readers whose reads are retried (built on first use)."""
    from odc.loader import RioDriver, RioReader

    class RetryingRioReader(RioReader):
        """odc-stac's rasterio reader, each read retried by :func:`read_with_retries`;
        integer up-samplings (S2's 20 m and 60 m bands on the 10 m grid) are read without
        GDAL's warper (:func:`read_upsampled`)."""

        def read(self, cfg: Any, dst_geobox: Any, *, dst: Any = None,
                 selection: Any = None) -> Any:
            def attempt() -> Any:
                if dst is None and selection is None:
                    fast = read_upsampled(self._src, cfg, dst_geobox)
                    if fast is not None:
                        return fast
                return RioReader.read(self, cfg, dst_geobox, dst=dst, selection=selection)

            return read_with_retries(self._src.uri, attempt)

    class RetryingRioDriver(RioDriver):
        """odc-stac's rasterio driver with :class:`RetryingRioReader` (same metadata)."""

        def open(self, src: Any, ctx: Any) -> Any:
            return RetryingRioReader(src, ctx)

    from stackstac.rio_reader import AutoParallelRioReader

    class RetryingStackstacReader(AutoParallelRioReader):
        """stackstac's reader, each read retried (reopening the file) after a failure."""

        def read(self, window: Any, **kwargs: Any) -> Any:
            def attempt() -> Any:
                try:
                    return AutoParallelRioReader.read(self, window, **kwargs)
                except Exception:
                    self.close()  # the retry opens the file again
                    raise

            return read_with_retries(self.url, attempt)

    classes = (RetryingRioReader, RetryingRioDriver, RetryingStackstacReader)
    for cls in classes:
        # Picklable by reference (Dask workers): module __getattr__ below rebuilds them.
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {c.__name__: c for c in classes}


def retry_class(name: str) -> type:
    """``"RetryingRioReader"``, ``"RetryingRioDriver"`` or ``"RetryingStackstacReader"``."""
    return _retry_classes()[name]


def __getattr__(name: str) -> Any:
    if name in ("RetryingRioReader", "RetryingRioDriver", "RetryingStackstacReader"):
        return retry_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def retrying_driver() -> Any:
    """odc-stac's rasterio driver whose reads go through :func:`read_with_retries`."""
    try:  # odc-stac's metadata handling of auxiliary bands, as its default driver has
        from odc.stac._mdtools import StacAuxReader

        aux = StacAuxReader()
    except ImportError:  # private location moved: not needed for plain bands
        aux = None
    return _retry_classes()["RetryingRioDriver"](aux_reader=aux)


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
