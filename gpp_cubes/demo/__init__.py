"""An offline demo world behind a real local STAC API.

``generate_world`` writes, deterministically from a seed, Sentinel-2 L2A scenes (COGs and
ESA granule metadata), Sentinel-1 RTC and MODIS LST COGs, a CORINE-like land-cover raster
and FLUXNET2015-format daily files for a few real stations, with Planetary Computer's
collection ids, asset keys and properties; ``serve_world`` serves the files over HTTP with
Range support and the items through ``rustac serve`` on 127.0.0.1, so every stage runs
through the same code as against Planetary Computer, with only the URL changed.
"""

from __future__ import annotations

from gpp_cubes.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DemoConfig": "gpp_cubes.demo.config",
    "DemoSite": "gpp_cubes.demo.config",
    "demo_world_config": "gpp_cubes.demo.config",
    "World": "gpp_cubes.demo.world",
    "Truth": "gpp_cubes.demo.world",
    "generate_world": "gpp_cubes.demo.world",
    "ServedWorld": "gpp_cubes.demo.serve",
    "serve_world": "gpp_cubes.demo.serve",
    "serve_forever": "gpp_cubes.demo.serve",
    "summary": "gpp_cubes.demo.report",
    "default_world_dir": "gpp_cubes.demo.report",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
