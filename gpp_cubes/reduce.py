"""Spatial reduction around the tower: buffer circle/annulus masks, clear-pixel rule, means.

The paper averages Sentinel-2 NBAR over the clear forest pixels inside a 1 km *circle* around
the tower (not the bounding box), dropping time steps with fewer than 1 % clear forest pixels
(:func:`clear_fraction`, :func:`keep_clear`; both Sentinel-2 paths use them), and
Sentinel-1 backscatter over a 50-1000 m annulus (radii in :mod:`gpp_cubes.paper`). These
functions are pure xarray and work lazily on Dask arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gpp_cubes.paper import MIN_CLEAR_FRACTION

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid


def radial_mask(grid: SiteGrid, outer_m: float, inner_m: float = 0.0) -> xr.DataArray:
    """Pixels whose centre lies in the circle (or annulus) around the tower.

    Parameters
    ----------
    grid : SiteGrid
        Site grid.
    outer_m : float
        Outer radius [m]; a pixel centre at exactly this distance is inside.
    inner_m : float, default 0
        Inner radius [m]; pixel centres closer than this are outside (annulus).

    Returns
    -------
    xarray.DataArray
        bool, dims ``(y, x)`` with the grid's pixel-centre coordinates [m].
    """
    import xarray as xr

    if outer_m <= inner_m:
        raise ValueError(f"outer radius {outer_m} m must exceed inner radius {inner_m} m")
    d = grid.distance_to_tower()
    inside = (d <= outer_m) & (d >= inner_m)
    return xr.DataArray(inside, dims=("y", "x"), coords={"y": grid.y, "x": grid.x},
                        name="buffer",
                        attrs={"long_name": f"pixel centre {inner_m:g}-{outer_m:g} m from tower"})


def masked_mean(da: xr.DataArray, mask: xr.DataArray,
                dims: Sequence[str] = ("y", "x")) -> xr.DataArray:
    """Mean of ``da`` over the pixels where ``mask`` is True (NaN where there are none).

    Parameters
    ----------
    da : xarray.DataArray
        Values (any units); NaN values are skipped.
    mask : xarray.DataArray
        bool, broadcastable against ``da`` (e.g. (y, x) or (time, y, x)).
    dims : sequence of str
        Dimensions to average over.

    Returns
    -------
    xarray.DataArray
        ``da`` reduced over ``dims``, same units, float.
    """
    sel = da.where(mask)
    total = sel.sum(dim=list(dims), skipna=True, min_count=1)
    count = sel.notnull().sum(dim=list(dims))
    return total / count.where(count > 0)


def clear_fraction(valid: xr.DataArray, region: xr.DataArray,
                   dims: Sequence[str] = ("y", "x")) -> xr.DataArray:
    """Fraction of the ``region`` pixels that are ``valid`` (clear) at each time [1].

    Parameters
    ----------
    valid : xarray.DataArray
        bool (time, y, x): pixel is clear (no cloud, shadow, snow, nodata).
    region : xarray.DataArray
        bool (y, x): pixels that count, e.g. forest inside the 1 km circle.

    Returns
    -------
    xarray.DataArray
        float (time), 0..1; NaN if the region is empty.
    """
    n_region = region.sum(dim=list(dims))
    n_clear = (valid & region).sum(dim=list(dims))
    return n_clear / n_region.where(n_region > 0)


def keep_clear(fraction: np.ndarray | xr.DataArray,
               min_fraction: float = MIN_CLEAR_FRACTION) -> np.ndarray:
    """The paper's clear rule: which time steps have at least ``min_fraction`` clear pixels.

    Parameters
    ----------
    fraction : array_like
        (time) clear fraction [1] (:func:`clear_fraction`); NaN (empty region) is not kept.
    min_fraction : float, default :data:`gpp_cubes.paper.MIN_CLEAR_FRACTION`

    Returns
    -------
    numpy.ndarray
        bool (time).
    """
    frac = np.asarray(fraction)
    return ~np.isnan(frac) & (frac >= min_fraction)


def apply_clear_rule(ds: xr.Dataset | xr.DataArray, valid: xr.DataArray,
                     region: xr.DataArray, min_fraction: float = MIN_CLEAR_FRACTION,
                     dims: Sequence[str] = ("y", "x")) -> xr.Dataset | xr.DataArray:
    """Drop time steps with fewer than ``min_fraction`` clear pixels in ``region``.

    Parameters
    ----------
    ds : xarray.Dataset or DataArray
        Data with a ``time`` dimension (a time series or a cube).
    valid, region : see :func:`clear_fraction`.
    min_fraction : float, default :data:`gpp_cubes.paper.MIN_CLEAR_FRACTION`
        The paper's rule (:func:`keep_clear`): at least 1 % clear forest pixels in the 1 km
        circle.

    Returns
    -------
    same type as ``ds``
        Time steps kept; a ``clear_fraction`` coordinate records the fraction of each.
    """
    frac = clear_fraction(valid, region, dims).compute()
    keep = keep_clear(frac.values, min_fraction)
    out = ds.assign_coords(clear_fraction=("time", frac.values.astype("float32")))
    return out.isel(time=np.flatnonzero(keep))
