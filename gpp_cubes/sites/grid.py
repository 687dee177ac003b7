"""The site grid: a UTM raster grid centred on a flux tower.

Every raster product (Sentinel-2, Sentinel-1, CORINE) is loaded onto the same grid so that
masks and reflectances line up pixel for pixel. The grid's origin is snapped to multiples of
60 m, so 10 m, 20 m and 60 m Sentinel-2 pixels nest exactly inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from pyproj import CRS, Transformer

from gpp_cubes.paper import RADIUS_M

#: Snap the grid origin to this many metres, the coarsest Sentinel-2 pixel (60 m bands).
GRID_SNAP_M = 60.0


def utm_epsg(lat: float, lon: float) -> int:
    """EPSG code of the WGS84 / UTM zone containing a point.

    Parameters
    ----------
    lat, lon : float
        Latitude and longitude [degrees, WGS84].

    Returns
    -------
    int
        326xx for the northern hemisphere, 327xx for the southern one.

    References
    ----------
    Snyder, J. P. (1987). Map Projections: A Working Manual. USGS Professional Paper 1395.
    """
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"coordinates out of range: lat={lat}, lon={lon}")
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class SiteGrid:
    """A north-up UTM grid around a tower.

    Attributes
    ----------
    epsg : int
        UTM EPSG code of the grid.
    tower_x, tower_y : float
        Tower position in grid coordinates [m].
    resolution : float
        Pixel size [m].
    bounds : tuple of float
        (left, bottom, right, top) of the grid's outer pixel edges [m].
    """

    epsg: int
    tower_x: float
    tower_y: float
    resolution: float
    bounds: tuple[float, float, float, float]

    @property
    def crs(self) -> CRS:
        return CRS.from_epsg(self.epsg)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the grid."""
        left, bottom, right, top = self.bounds
        return (round((top - bottom) / self.resolution), round((right - left) / self.resolution))

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre x coordinates [m], west to east."""
        left = self.bounds[0]
        return left + self.resolution * (np.arange(self.shape[1]) + 0.5)

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre y coordinates [m], north to south."""
        top = self.bounds[3]
        return top - self.resolution * (np.arange(self.shape[0]) + 0.5)

    @cached_property
    def geobox(self):  # -> odc.geo.geobox.GeoBox; imported lazily to keep `import gpp_cubes` fast
        from odc.geo.geobox import GeoBox

        return GeoBox.from_bbox(self.bounds, crs=f"EPSG:{self.epsg}", resolution=self.resolution)

    def distance_to_tower(self) -> np.ndarray:
        """Distance of every pixel centre from the tower [m], shape ``self.shape``."""
        dx = self.x[None, :] - self.tower_x
        dy = self.y[:, None] - self.tower_y
        return np.hypot(dx, dy)

    def bbox_wgs84(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the grid in WGS84 degrees, for STAC searches."""
        to_geo = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        left, bottom, right, top = self.bounds
        xs = np.array([left, right, right, left])
        ys = np.array([bottom, bottom, top, top])
        lon, lat = to_geo.transform(xs, ys)
        return (float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat)))


def site_grid(
    lat: float,
    lon: float,
    *,
    buffer_m: float = RADIUS_M,
    resolution: float = 10.0,
    margin_m: float = 60.0,
    epsg: int | None = None,
) -> SiteGrid:
    """The grid of a site: UTM, ``resolution`` metres, covering the tower's buffer.

    Parameters
    ----------
    lat, lon : float
        Tower latitude and longitude [degrees, WGS84].
    buffer_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Radius of the analysis buffer around the tower [m] (paper section 2.1).
    resolution : float, default 10
        Pixel size [m] (Sentinel-2's finest band).
    margin_m : float, default 60
        Extra distance kept outside the buffer [m], so the circle never touches the edge.
    epsg : int, optional
        Force a CRS (default: the UTM zone of the tower).

    Returns
    -------
    SiteGrid
        Bounds snapped outward to multiples of 60 m (:data:`GRID_SNAP_M`).
    """
    epsg = epsg or utm_epsg(lat, lon)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    tx, ty = to_utm.transform(lon, lat)
    half = buffer_m + margin_m
    snap = GRID_SNAP_M
    bounds = (
        math.floor((tx - half) / snap) * snap,
        math.floor((ty - half) / snap) * snap,
        math.ceil((tx + half) / snap) * snap,
        math.ceil((ty + half) / snap) * snap,
    )
    return SiteGrid(epsg=epsg, tower_x=float(tx), tower_y=float(ty), resolution=resolution,
                    bounds=bounds)
