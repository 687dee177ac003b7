"""gpp-cubes: analysis-ready daily feature cubes at eddy-covariance flux towers.

The public API is imported lazily so ``import gpp_cubes`` stays fast and never pulls in
Dask, GDAL or Earth Engine until they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Site": "gpp_cubes.sites",
    "load_sites": "gpp_cubes.sites",
    "get_site": "gpp_cubes.sites",
    "site_grid": "gpp_cubes.grid",
    "SiteGrid": "gpp_cubes.grid",
    "read_fluxnet": "gpp_cubes.fluxnet",
    "gpp_targets": "gpp_cubes.fluxnet",
    "detect_extremes": "gpp_cubes.extremes",
    "s2_cube": "gpp_cubes.s2",
    "s2_features": "gpp_cubes.s2",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gpp_cubes' has no attribute {name!r}")
