"""gpp-cubes: analysis-ready daily feature cubes at eddy-covariance flux towers.

The public API is imported lazily so ``import gpp_cubes`` stays fast and never pulls in
Dask, GDAL or Earth Engine until they are needed.
"""

from __future__ import annotations

from gpp_cubes.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Site": "gpp_cubes.sites.catalog",
    "load_sites": "gpp_cubes.sites.catalog",
    "get_site": "gpp_cubes.sites.catalog",
    "site_grid": "gpp_cubes.sites.grid",
    "SiteGrid": "gpp_cubes.sites.grid",
    "read_fluxnet": "gpp_cubes.targets.fluxnet",
    "gpp_targets": "gpp_cubes.targets.fluxnet",
    "detect_extremes": "gpp_cubes.targets.extremes",
    "s2_cube": "gpp_cubes.s2",
    "s2_features": "gpp_cubes.s2",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
