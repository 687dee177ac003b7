"""Configuration of the demo world and the per-site frame every product is written on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gpp_cubes.errors import ConfigError
from gpp_cubes.grid import site_grid

from .granule import Tile, mgrs_tile
from .landscape import FOREST_CLC, Patch, make_patches, site_rng

# Modules of this package that serve a world but take no part in generating one.
SERVING_MODULES = frozenset({"serve.py", "fileserver.py"})


@dataclass(frozen=True)
class DemoConfig:
    """What the demo world holds.

    Attributes
    ----------
    sites : tuple of str
        Catalog station ids; their real coordinates, elevation and IGBP class are used.
    start, end : str
        First and last day (ISO dates, inclusive).
    seed : int
        Seed of every random choice; the world is a deterministic function of the config.
    s2_revisit_days : int
        Days between Sentinel-2 scenes of a site (real: 5 with S2A+S2B).
    s1_revisit_days : int
        Repeat cycle of each Sentinel-1 orbit direction [days] (one ascending and one
        descending pass per cycle).
    modis_step_days : int
        Days between MODIS LST items (real: 1); each step has a Terra and an Aqua item.
    extent_m : float
        Side of the square area written around each tower [m] (snapped outward to 60 m).
    """

    sites: tuple[str, ...] = ("DE-Hai", "BE-Vie", "FI-Var")
    start: str = "2016-01-01"
    end: str = "2020-12-31"
    seed: int = 0
    s2_revisit_days: int = 10
    s1_revisit_days: int = 12
    modis_step_days: int = 4
    extent_m: float = 3000.0

    def __post_init__(self) -> None:
        import pandas as pd

        if not self.sites:
            raise ConfigError("DemoConfig.sites is empty")
        try:
            lo, hi = pd.Timestamp(self.start), pd.Timestamp(self.end)
        except ValueError as err:
            raise ConfigError(f"DemoConfig start/end are not dates: {err}") from err
        if hi < lo:
            raise ConfigError(f"DemoConfig end {self.end} is before start {self.start}")
        for name in ("s2_revisit_days", "s1_revisit_days", "modis_step_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DemoConfig.{name} must be >= 1")
        if self.extent_m < 2400:
            raise ConfigError("DemoConfig.extent_m must be >= 2400 m (1 km circle + margin)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def digest(self) -> str:
        """Hash of the config and of the generator's source code (regenerate on change).

        The modules that only serve a world (``serve.py``, ``fileserver.py``) are left out:
        a change to them does not change what is generated.
        """
        h = hashlib.sha256(self.to_json().encode())
        here = Path(__file__).resolve().parent
        sources = [p for p in here.glob("*.py") if p.name not in SERVING_MODULES]
        for p in sorted([*sources, here.parent / "clearsky.py"]):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class DemoSite:
    """A demo site: the station and the frame its products are written on.

    Attributes
    ----------
    site_id, name : str
        Station id and name.
    latitude, longitude : float
        Tower position [degrees, WGS84].
    elevation_m : float
        Elevation [m].
    igbp : str
        IGBP class.
    epsg : int
        UTM EPSG code of the Sentinel-2/-1 rasters.
    tower_x, tower_y : float
        Tower position [m, UTM].
    bounds : tuple of float
        (left, bottom, right, top) of the written raster area [m, UTM], multiples of 60 m.
    tile : Tile
        The Sentinel-2 MGRS tile containing the tower.
    s2_relative_orbit : int
        Sentinel-2 relative orbit (1-143).
    nadir_offset_m : float
        Across-track offset of the Sentinel-2 ground track from the tile centre [m].
    s1_orbits : tuple of int
        Sentinel-1 relative orbits (ascending, descending), 1-175.
    patches : tuple of Patch
        Non-forest land-cover patches.
    """

    site_id: str
    name: str
    latitude: float
    longitude: float
    elevation_m: float
    igbp: str
    epsg: int
    tower_x: float
    tower_y: float
    bounds: tuple[float, float, float, float]
    tile: Tile
    s2_relative_orbit: int
    nadir_offset_m: float
    s1_orbits: tuple[int, int]
    patches: tuple[Patch, ...]

    @property
    def forest_clc(self) -> int:
        return FOREST_CLC.get(self.igbp, 313)

    def shape(self, resolution: float) -> tuple[int, int]:
        left, bottom, right, top = self.bounds
        return (round((top - bottom) / resolution), round((right - left) / resolution))

    def transform(self, resolution: float):
        from affine import Affine

        return Affine(resolution, 0.0, self.bounds[0], 0.0, -resolution, self.bounds[3])

    def centres(self, resolution: float):
        """Pixel-centre UTM coordinates (x row vector, y column vector) [m]."""
        import numpy as np

        rows, cols = self.shape(resolution)
        x = self.bounds[0] + resolution * (np.arange(cols) + 0.5)
        y = self.bounds[3] - resolution * (np.arange(rows) + 0.5)
        return x[None, :], y[:, None]


def station(site_id: str) -> tuple[str, float, float, float, str]:
    """(name, latitude, longitude, elevation [m], IGBP) of a catalog station."""
    from gpp_cubes.sites import get_site

    s = get_site(site_id)
    if s.elevation_m is None or s.igbp is None:
        raise ConfigError(f"site {site_id}: the catalog lacks elevation or IGBP class, which "
                          "the demo world needs")
    return (s.name or site_id, s.latitude, s.longitude, float(s.elevation_m), s.igbp)


def make_site(site_id: str, config: DemoConfig) -> DemoSite:
    """The demo frame of a catalog station."""
    name, lat, lon, elev, igbp = station(site_id)
    g = site_grid(lat, lon, buffer_m=config.extent_m / 2, margin_m=0.0)
    rng = site_rng(config.seed, site_id, "orbits")
    return DemoSite(
        site_id=site_id, name=name, latitude=lat, longitude=lon, elevation_m=elev, igbp=igbp,
        epsg=g.epsg, tower_x=g.tower_x, tower_y=g.tower_y, bounds=g.bounds,
        tile=mgrs_tile(lat, lon), s2_relative_orbit=int(rng.integers(1, 144)),
        nadir_offset_m=float(rng.uniform(-90e3, 90e3)),
        s1_orbits=(int(rng.integers(1, 176)), int(rng.integers(1, 176))),
        patches=make_patches(config.seed, site_id, g.tower_x, g.tower_y),
    )
