"""Forest mask on the site grid from CORINE Land Cover 2018 (classes 311, 312, 313).

Reading and reprojecting CORINE is :mod:`gpp_cubes.sites.corine`'s job (nearest neighbour onto the
grid); this stage turns the class codes into the boolean mask the reductions use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid


def forest_mask(grid: SiteGrid, corine_source: str | Path | xr.DataArray, *,
                site_id: str | None = None) -> xr.DataArray:
    """Boolean forest mask (CLC 311 broad-leaved, 312 coniferous, 313 mixed) on the grid.

    Parameters
    ----------
    grid : SiteGrid
        Site grid.
    corine_source : str, Path or xarray.DataArray
        A CORINE raster (local path or URL, see :func:`gpp_cubes.sites.corine.read_corine`) or CLC
        codes already on the grid.
    site_id : str, optional
        Named in error messages.

    Returns
    -------
    xarray.DataArray
        bool, dims ``(y, x)``, the grid's pixel-centre coordinates [m].

    References
    ----------
    EEA (2020). CORINE Land Cover 2018, version 2020_20u1.
    doi:10.2909/960998c1-1870-4e82-8051-6485205ebbac
    """
    import xarray as xr

    from gpp_cubes.sites import corine

    if isinstance(corine_source, xr.DataArray):
        codes = corine_source
    else:
        codes = corine.read_corine(corine_source, grid, site_id=site_id)
    mask = corine.forest_mask(codes)
    mask = xr.DataArray(mask.values if hasattr(mask, "values") else mask, dims=("y", "x"),
                        coords={"y": grid.y, "x": grid.x}, name="forest")
    mask.attrs.update(long_name="CORINE 2018 forest (CLC 311, 312, 313)", units="1")
    return mask
