"""Configuration of the demo world and the per-site frame every product is written on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gpp_cubes.errors import ConfigError
from gpp_cubes.paper import STUDY_END, STUDY_START
from gpp_cubes.sites.grid import site_grid

from .granule import TILE_SIZE_M, Tile, mgrs_tile
from .landscape import FOREST_CLC, Patch, make_patches, site_rng

# Modules of this package that take no part in generating a world: serving one, the
# hand-specified test scenes, the real-layout copy (keyed by its own digest) and the toy
# cloud model.
SERVING_MODULES = frozenset({"serve.py", "fileserver.py", "scenes.py", "real_layout.py",
                             "cloud_model.py"})


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
    two_zone_sites : tuple of str
        Sites whose Sentinel-2 datatakes are written as two items each (where both tiles
        are in the archive): the tile of the site's UTM zone and the tile of the
        neighbouring zone that also covers it, as at a zone boundary in the real archive.
        Only a site lying inside a real tile of the neighbouring zone qualifies (FI-Hyy:
        35VLJ and 34VFP). BE-Vie (6.00 E) is also at a zone boundary in reality; it keeps
        one tile so the scene count stays down.
    """

    sites: tuple[str, ...] = ("DE-Hai", "BE-Vie", "FI-Var", "FI-Hyy")
    start: str = STUDY_START
    end: str = STUDY_END
    seed: int = 0
    s2_revisit_days: int = 10
    s1_revisit_days: int = 12
    modis_step_days: int = 4
    extent_m: float = 3000.0
    two_zone_sites: tuple[str, ...] = ("FI-Hyy",)

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

        The modules that take no part in generating a world (``serve.py``,
        ``fileserver.py``, ``scenes.py``) are left out: a change to them does not change
        what is generated.
        """
        h = hashlib.sha256(self.to_json().encode())
        here = Path(__file__).resolve().parent
        sources = [p for p in here.glob("*.py") if p.name not in SERVING_MODULES]
        for p in sorted([*sources, here.parent / "sensors" / "clearsky.py"]):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16]


class _Raster:
    """A north-up raster area on a 60 m lattice, given by ``bounds`` (left, bottom, right,
    top) [m, UTM]: its pixel grid at each Sentinel-2 resolution."""

    bounds: tuple[float, float, float, float]

    def shape(self, resolution: float) -> tuple[int, int]:
        left, bottom, right, top = self.bounds
        return (round((top - bottom) / resolution), round((right - left) / resolution))

    def transform(self, resolution: float):
        from affine import Affine

        return Affine(resolution, 0.0, self.bounds[0], 0.0, -resolution, self.bounds[3])

    def centres(self, resolution: float):
        """Pixel-centre coordinates (x row vector, y column vector) [m, the area's CRS]."""
        import numpy as np

        rows, cols = self.shape(resolution)
        x = self.bounds[0] + resolution * (np.arange(cols) + 0.5)
        y = self.bounds[3] - resolution * (np.arange(rows) + 0.5)
        return x[None, :], y[:, None]


@dataclass(frozen=True)
class TileWindow(_Raster):
    """The part of a Sentinel-2 tile written for a site: a rectangle on the tile's lattice.

    Attributes
    ----------
    tile : Tile
        The tile (CRS, upper-left corner).
    bounds : tuple of float
        (left, bottom, right, top) [m, in the tile's UTM CRS], multiples of 60 m, covering
        the site's area.
    """

    tile: Tile
    bounds: tuple[float, float, float, float]

    @property
    def epsg(self) -> int:
        return self.tile.epsg



@dataclass(frozen=True)
class DemoSite(_Raster):
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
        The Sentinel-2 MGRS tile containing the tower, in the site's UTM zone.
    s2_windows : tuple of TileWindow
        The tiles the Sentinel-2 items are written on: first ``tile`` with ``bounds``, then
        (two-zone sites) the neighbouring zone's tile with a window covering ``bounds``.
    render_bounds : tuple of float
        (left, bottom, right, top) [m, UTM, multiples of 60 m] of the area the landscape is
        rendered on: ``bounds``, grown to cover every window of ``s2_windows``.
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
    s2_windows: tuple[TileWindow, ...]
    render_bounds: tuple[float, float, float, float]
    s2_relative_orbit: int
    nadir_offset_m: float
    s1_orbits: tuple[int, int]
    patches: tuple[Patch, ...]

    @property
    def forest_clc(self) -> int:
        return FOREST_CLC.get(self.igbp, 313)

    @property
    def render_frame(self) -> TileWindow:
        """The area the Sentinel-2 landscape is rendered on, on the site tile's lattice."""
        return TileWindow(self.tile, self.render_bounds)



def demo_world_config(sites: int, seed: int = 0, quick: bool = False) -> DemoConfig:
    """The world ``gpp demo`` builds: its first ``sites`` stations, ``seed``, and with
    ``quick`` a coarser revisit (every stage kept, half the scenes).

    Parameters
    ----------
    sites : int
        Number of stations: the default world's, then catalogue candidates.
    seed : int, default 0
        Random seed of the world.
    quick : bool, default False
        S2 every 20 days, S1 every 24, MODIS every 8 (``gpp demo --quick``).

    Returns
    -------
    DemoConfig
    """
    names = DemoConfig().sites
    if sites > len(names):
        from gpp_cubes.sites.catalog import load_sites

        extra = [s.id for s in load_sites() if s.status == "candidate" and s.id not in names]
        names = (*names, *extra[: sites - len(names)])
    coarse = {"s2_revisit_days": 20, "s1_revisit_days": 24, "modis_step_days": 8} if quick else {}
    return DemoConfig(sites=tuple(names[:sites]), seed=seed, **coarse)


def station(site_id: str) -> tuple[str, float, float, float, str]:
    """(name, latitude, longitude, elevation [m], IGBP) of a catalog station."""
    from gpp_cubes.sites.catalog import get_site

    s = get_site(site_id)
    if s.elevation_m is None or s.igbp is None:
        raise ConfigError(f"site {site_id}: the catalog lacks elevation or IGBP class, which "
                          "the demo world needs")
    return (s.name or site_id, s.latitude, s.longitude, float(s.elevation_m), s.igbp)


def _ring(bounds: tuple[float, float, float, float], n: int = 16):
    """Points along the edge of a rectangle (x, y arrays), ``n`` per side."""
    import numpy as np

    left, bottom, right, top = bounds
    t = np.linspace(0.0, 1.0, n + 1)
    xs = np.concatenate([left + (right - left) * t, np.full(n + 1, right),
                         right - (right - left) * t, np.full(n + 1, left)])
    ys = np.concatenate([np.full(n + 1, bottom), bottom + (top - bottom) * t,
                         np.full(n + 1, top), top - (top - bottom) * t])
    return xs, ys


def _envelope_60(xs, ys) -> tuple[float, float, float, float]:
    """Bounds of points snapped outward to multiples of 60 m (the Sentinel-2 lattice)."""
    import math

    return (60.0 * math.floor(min(xs) / 60), 60.0 * math.floor(min(ys) / 60),
            60.0 * math.ceil(max(xs) / 60), 60.0 * math.ceil(max(ys) / 60))


def neighbour_zone_window(site_id: str, latitude: float, longitude: float,
                          bounds: tuple[float, float, float, float], epsg: int) -> TileWindow:
    """The window of the neighbouring UTM zone's tile that covers a site's area.

    The neighbouring zone is the one whose boundary is nearer the site. The tile is the
    MGRS tile of that zone over the site (:func:`~gpp_cubes.demo.granule.mgrs_tile`); the
    window is the envelope of the site's area in that zone, snapped outward to 60 m.

    Raises
    ------
    ConfigError
        If the window is not wholly inside the tile's 109.8 km square, or the tile's 100 km
        square does not reach into its own zone (no such Sentinel-2 tile).
    """
    from pyproj import Transformer

    zone = epsg % 100
    west = (zone - 1) * 6 - 180
    other = zone - 1 if longitude - west < 3 else zone + 1
    tile = mgrs_tile(latitude, longitude, zone=other)
    xs, ys = Transformer.from_crs(epsg, tile.epsg, always_xy=True).transform(*_ring(bounds))
    win = _envelope_60(xs, ys)
    if not (tile.ulx <= win[0] and win[2] <= tile.ulx + TILE_SIZE_M
            and tile.uly - TILE_SIZE_M <= win[1] and win[3] <= tile.uly):
        raise ConfigError(f"site {site_id}: its area is not inside tile {tile.tile_id}")
    e0, n0 = tile.ulx - tile.ulx % 100000, tile.uly - TILE_SIZE_M + 9800
    lon, _ = Transformer.from_crs(tile.epsg, 4326, always_xy=True).transform(
        *_ring((e0, n0, e0 + 100000, n0 + 100000)))
    zone_west = (other - 1) * 6 - 180
    if max(lon) <= zone_west or min(lon) >= zone_west + 6:
        raise ConfigError(f"site {site_id}: tile {tile.tile_id} lies outside UTM zone {other}")
    return TileWindow(tile, win)


def make_site(site_id: str, config: DemoConfig) -> DemoSite:
    """The demo frame of a catalog station."""
    from pyproj import Transformer

    name, lat, lon, elev, igbp = station(site_id)
    g = site_grid(lat, lon, buffer_m=config.extent_m / 2, margin_m=0.0)
    rng = site_rng(config.seed, site_id, "orbits")
    tile = mgrs_tile(lat, lon)
    windows = [TileWindow(tile, g.bounds)]
    if site_id in config.two_zone_sites:
        windows.append(neighbour_zone_window(site_id, lat, lon, g.bounds, g.epsg))
    render = g.bounds
    for w in windows[1:]:
        xs, ys = Transformer.from_crs(w.epsg, g.epsg, always_xy=True).transform(
            *_ring(w.bounds))
        env = _envelope_60(xs, ys)
        render = (min(render[0], env[0]), min(render[1], env[1]),
                  max(render[2], env[2]), max(render[3], env[3]))
    return DemoSite(
        site_id=site_id, name=name, latitude=lat, longitude=lon, elevation_m=elev, igbp=igbp,
        epsg=g.epsg, tower_x=g.tower_x, tower_y=g.tower_y, bounds=g.bounds,
        tile=tile, s2_windows=tuple(windows), render_bounds=render,
        s2_relative_orbit=int(rng.integers(1, 144)),
        nadir_offset_m=float(rng.uniform(-90e3, 90e3)),
        s1_orbits=(int(rng.integers(1, 176)), int(rng.integers(1, 176))),
        patches=make_patches(config.seed, site_id, g.tower_x, g.tower_y),
    )
