"""Demo Sentinel-2 L2A scenes: COGs, granule and product metadata, Planetary Computer items.

Each scene is a small window (the site's demo area) of a real MGRS tile grid, written as
one COG per band at the band's native resolution (10 m: B02, B03, B04, B08; 20 m: B05, B06,
B07, B8A, B11, B12, SCL; 60 m: B01, B09), ``uint16`` DN with nodata 0,
``DN = 10000 * reflectance`` plus the BOA offset of +1000 for processing baseline >= 04.00,
and the scene classification (SCL, ``uint8``) with the real classes 0 no data, 3 cloud
shadow, 4 vegetation, 5 not vegetated, 8/9 cloud medium/high probability, 10 thin cirrus,
11 snow.

Reflectance is a linear mix of a dormant and a peak spectrum per land-cover class, weighted
by the site's greenness of the day, times a static canopy texture. Clouds (discs, bright,
SCL 9 core / 8 rim), their shadows (cast away from the sun, dark, SCL 3), thin cirrus and
snow (bright visible, dark SWIR, SCL 11) are placed at known pixels and dates recorded in
the world's truth, as are a 60 m bright block outside the 1 km circle but inside the site
grid (the circle test) that every scene carries.

Items carry the real band, ``SCL``, ``granule-metadata`` and ``product-metadata`` assets and
all properties of a Planetary Computer item; the AOT, WVP, visual, preview and other
metadata assets are left out (nothing in the pipeline reads them).

Conditions of the real archive
------------------------------
The series holds what the real 2016-2020 archive holds and a pipeline must cope with:

* **UTM zone boundaries.** A site of ``DemoConfig.two_zone_sites`` (FI-Hyy, zone 35 near
  the 34/35 boundary at 24 E) is covered by a tile of its own zone and one of the
  neighbouring zone (35VLJ, EPSG:32635 and 34VFP, EPSG:32634): a datatake is written as one
  item per tile, same sensing time and datatake, each with its own CRS (``proj:epsg``),
  window on its tile's lattice and granule metadata (the tile's real corner; angle grids at
  its own nodes). The landscape is rendered once per datatake on the site's zone over an
  area covering both windows; a pixel of either tile holds the rendered value of the cell
  (same resolution) containing its centre, so both tiles agree on the ground. A datatake
  has only one of the two tiles in the archive with probability :data:`ONE_TILE_FRACTION`.
* **Low sun.** No scene is acquired with the sun more than :data:`MAX_SUN_ZENITH` (85 deg)
  from the zenith at the tower: from 23 October 2019 ESA extended Sentinel-2B acquisitions
  over Northern Europe and the Arctic to sun zenith angles up to 85 deg (ESA 2019); the demo
  applies that limit to the whole series. The northern sites (FI-Var, FI-Hyy) thus have
  winter scenes between 70 and 85 deg, where ESA's L2A Data Quality Report advises against
  quantitative use of L2A reflectance (sun zenith above 70 deg).
* **Swath edges.** A fraction :data:`PARTIAL_SWATH_FRACTION` of the scenes comes from a
  neighbouring relative orbit whose swath edge (a north-south line in the site's CRS)
  crosses the site area: pixels beyond it are nodata (DN 0, SCL 0). The edge of each band
  lies :data:`SWATH_EDGE_OFFSET_M` outward of the reference (B02) edge, as the bands'
  detector footprints differ at the swath edge (and the 60 m bands quantise it coarser);
  SCL is nodata wherever a 20 m band is. The granule's viewing angle grids are NaN beyond
  each band's swath (more than one 5 km grid step out, as in real files), the item
  geometry is the data footprint, and ``s2:nodata_pixel_percentage`` is the window's.
* **Processing baselines and duplicates.** Original processings are baseline 02.12 (04.00,
  with BOA_ADD_OFFSET -1000, from 2022-01-25). ESA's Collection-1 reprocessing (baseline
  05.00, BOA_ADD_OFFSET -1000: ``DN = 10000 * reflectance + 1000``) replaces them for
  sensing dates from :data:`REPROCESSED_START` to :data:`REPROCESSED_END`, and a fraction
  :data:`DUPLICATE_FRACTION` of the datatakes up to 2021 is in the archive twice, as 02.12
  and 05.00: same sensing time and tile, different ``s2:processing_baseline``,
  ``s2:generation_time``, ``s2:datatake_id`` suffix, product URI and item id. Both encode
  the same reflectance. The offset is stated where ESA states it, in the product's
  ``MTD_MSIL2A.xml`` (``BOA_ADD_OFFSET_VALUES_LIST``); the granule's ``MTD_TL.xml`` has none.

References
----------
ESA (2019). Copernicus Sentinel-2 observation in low illumination conditions over Northern
Europe and Arctic Areas. ESA Sentinel Online news, 17 October 2019.
ESA. Sentinel-2 L2A Data Quality Report (Optical Mission Performance Centre).
ESA (2021). Sentinel-2 Products Specification Document (PSD), S2-PDGS-TAS-DI-PSD, issue 14.9.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .cog import clipped_footprint_wgs84, footprint_wgs84, write_cog
from .config import DemoConfig, DemoSite, TileWindow
from .granule import (
    SWATH_M,
    TILE_SIZE_M,
    granule_metadata_xml,
    product_metadata_xml,
    sun_angle_grids_many,
    viewing_angles_xml,
)
from .landscape import landcover, site_rng

COLLECTION = "sentinel-2-l2a"
#: band -> (resolution [m], title, common name, centre wavelength [um], FWHM [um])
BANDS: dict[str, tuple[int, str, str | None, float, float]] = {
    "B01": (60, "Band 1 - Coastal aerosol - 60m", "coastal", 0.443, 0.027),
    "B02": (10, "Band 2 - Blue - 10m", "blue", 0.49, 0.098),
    "B03": (10, "Band 3 - Green - 10m", "green", 0.56, 0.045),
    "B04": (10, "Band 4 - Red - 10m", "red", 0.665, 0.038),
    "B05": (20, "Band 5 - Vegetation red edge 1 - 20m", "rededge", 0.704, 0.019),
    "B06": (20, "Band 6 - Vegetation red edge 2 - 20m", "rededge", 0.74, 0.018),
    "B07": (20, "Band 7 - Vegetation red edge 3 - 20m", "rededge", 0.783, 0.028),
    "B08": (10, "Band 8 - NIR - 10m", "nir", 0.842, 0.145),
    "B8A": (20, "Band 8A - Vegetation red edge 4 - 20m", "rededge", 0.865, 0.033),
    "B09": (60, "Band 9 - Water vapor - 60m", None, 0.945, 0.026),
    "B11": (20, "Band 11 - SWIR (1.6) - 20m", "swir16", 1.61, 0.143),
    "B12": (20, "Band 12 - SWIR (2.2) - 20m", "swir22", 2.19, 0.242),
}
BAND_NAMES = tuple(BANDS)
#: SCL classes used (ESA L2A product definition).
SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = (
    3, 4, 5, 8, 9, 10, 11)
#: first sensing day of processing baseline 04.00 (BOA_ADD_OFFSET = -1000 in the metadata)
BASELINE_04_START = pd.Timestamp("2022-01-25")
BOA_OFFSET_DN = 1000
#: first day Sentinel-2B data are in the archive
S2B_START = pd.Timestamp("2017-07-06")
#: baseline of the original processings before 04.00 (Planetary Computer's 2016-2021 items)
ORIGINAL_BASELINE = "02.12"
#: baseline of ESA's Collection-1 reprocessing (BOA_ADD_OFFSET -1000 like 04.00)
REPROCESSED_BASELINE = "05.00"
#: sensing dates whose archive items are the Collection-1 reprocessing (inclusive)
REPROCESSED_START, REPROCESSED_END = pd.Timestamp("2019-05-01"), pd.Timestamp("2020-04-30")
#: last sensing day the demo's Collection-1 reprocessing covers (the archive before 04.00;
#: duplicates occur up to it)
REPROCESSED_LAST_DAY = pd.Timestamp("2021-12-31")
#: fraction of the datatakes up to 2021 in the archive twice (02.12 and 05.00)
DUPLICATE_FRACTION = 0.10
#: no acquisition with the sun further than this from the zenith at the tower [deg]
MAX_SUN_ZENITH = 85.0
#: fraction of the scenes whose swath edge crosses the site area
PARTIAL_SWATH_FRACTION = 1 / 8
#: fraction of a two-zone site's datatakes with only one of its two tiles in the archive
ONE_TILE_FRACTION = 0.15
#: outward shift of each band's swath edge from the reference (B02) edge [m]: the bands'
#: detector footprints differ at the swath edge (VNIR and SWIR focal planes apart)
SWATH_EDGE_OFFSET_M = {"B01": 240.0, "B02": 0.0, "B03": 40.0, "B04": 80.0, "B05": 120.0,
                       "B06": 150.0, "B07": 180.0, "B08": -40.0, "B8A": 210.0, "B09": 270.0,
                       "B10": 300.0, "B11": -150.0, "B12": -110.0}

# Spectra (reflectance) in BAND_NAMES order: (dormant, peak) per class; static for others.
_S = {
    "broadleaf": ([.035, .040, .055, .060, .090, .130, .150, .170, .180, .170, .220, .140],
                  [.020, .025, .050, .025, .080, .250, .300, .320, .330, .320, .160, .070]),
    "conifer": ([.020, .020, .035, .030, .060, .120, .140, .150, .160, .150, .110, .060],
                [.015, .018, .040, .020, .055, .170, .210, .230, .240, .230, .110, .050]),
    "grass": ([.040, .050, .070, .080, .110, .170, .200, .220, .230, .220, .250, .160],
              [.030, .030, .060, .035, .090, .260, .330, .360, .370, .350, .200, .090]),
    "crop": ([.060, .070, .100, .130, .160, .190, .210, .220, .230, .230, .300, .250],
             [.030, .030, .060, .030, .090, .300, .380, .420, .430, .400, .200, .080]),
}
URBAN = np.array([.10, .10, .11, .12, .14, .16, .17, .18, .18, .17, .22, .19])
SNOW = np.array([.90, .88, .86, .84, .82, .80, .78, .76, .74, .70, .10, .06])
CLOUD = np.array([.55, .55, .56, .57, .58, .59, .60, .60, .60, .45, .40, .30])
#: reflectance of the planted circle-test block, all bands
BRIGHT = 0.8
SHADOW_FACTOR = 0.35
CLOUD_HEIGHT_M = 1500.0


def spectrum(kind: str, greenness: float) -> np.ndarray:
    """Reflectance of a class at a greenness in [0, 1] (BAND_NAMES order)."""
    dormant, peak = (np.asarray(v) for v in _S[kind])
    return dormant + greenness * (peak - dormant)


def ndvi(kind: str, greenness: float) -> float:
    """NDVI (B08, B04) of a class's spectrum [1]."""
    r = spectrum(kind, greenness)
    return float((r[7] - r[3]) / (r[7] + r[3]))


def processing_baseline(day: pd.Timestamp) -> str:
    """Baseline of the original processing of a sensing day (02.12, 04.00 from 2022-01-25)."""
    return "04.00" if pd.Timestamp(day).normalize() >= BASELINE_04_START else ORIGINAL_BASELINE


def archive_baseline(day: pd.Timestamp) -> str:
    """Baseline of the archive's main item of a sensing day (05.00 in the reprocessed part)."""
    d = pd.Timestamp(day).normalize()
    if REPROCESSED_START <= d <= REPROCESSED_END:
        return REPROCESSED_BASELINE
    return processing_baseline(d)


def boa_offset_dn(baseline: str) -> int:
    """DN added to ``10000 * reflectance`` by a processing baseline (-BOA_ADD_OFFSET)."""
    return BOA_OFFSET_DN if baseline >= "04.00" else 0


@dataclass(frozen=True)
class SiteRasters:
    """Static per-site 10 m fields: land cover, spectral class and canopy texture."""

    clc: np.ndarray  # CLC code at 10 m
    kind: np.ndarray  # object array of class names
    texture: np.ndarray  # multiplicative, mean 1
    block: tuple[float, float, float, float]  # planted bright block bounds (UTM)


def site_rasters(site: DemoSite, seed: int) -> SiteRasters:
    """The static fields of a site on its render frame (land cover from the same patches as
    CORINE)."""
    x, y = site.render_frame.centres(10)
    clc = landcover(x, y, site.forest_clc, site.patches)
    rng = site_rng(seed, site.site_id, "texture")
    noise = ndimage.gaussian_filter(rng.normal(size=clc.shape), 2.0)
    texture = 1 + 0.06 * noise / noise.std()
    kind = np.empty(clc.shape, dtype=object)
    kind[clc == 311] = "broadleaf"
    kind[clc == 312] = "conifer"
    if (clc == 313).any():
        mix = ndimage.gaussian_filter(rng.normal(size=clc.shape), 4.0) > 0
        kind[(clc == 313) & mix] = "broadleaf"
        kind[(clc == 313) & ~mix] = "conifer"
    kind[clc == 231] = "grass"
    kind[clc == 211] = "crop"
    kind[clc == 112] = "urban"
    return SiteRasters(clc, kind, texture, bright_block(site))


def bright_block(site: DemoSite) -> tuple[float, float, float, float]:
    """A 60 m cell inside the standard site grid (1 km + 60 m) but outside the 1 km circle.

    It lies on forest (no patch), so only the circle can exclude it.
    """
    from gpp_cubes.sites.grid import site_grid

    g = site_grid(site.latitude, site.longitude)
    for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1)):
        cx = np.floor((site.tower_x + sx * 830) / 60) * 60 + 30
        cy = np.floor((site.tower_y + sy * 830) / 60) * 60 + 30
        inside = (g.bounds[0] < cx - 30 and cx + 30 < g.bounds[2]
                  and g.bounds[1] < cy - 30 and cy + 30 < g.bounds[3])
        corners = [(cx + a, cy + b) for a in (-30, 30) for b in (-30, 30)]
        dmin = min(np.hypot(a - site.tower_x, b - site.tower_y) for a, b in corners)
        on_forest = all(np.hypot(cx - p.x, cy - p.y) > p.radius_m + 60 for p in site.patches)
        if inside and dmin > 1050 and on_forest:
            return (cx - 30, cy - 30, cx + 30, cy + 30)
    raise RuntimeError(f"site {site.site_id}: no corner cell for the planted bright block")


def scene_dates(site: DemoSite, config: DemoConfig) -> list[pd.Timestamp]:
    """Sensing times: every ``s2_revisit_days`` from a per-site offset, ~10:30 local solar."""
    rng = site_rng(config.seed, site.site_id, "s2dates")
    first = pd.Timestamp(config.start) + pd.Timedelta(
        days=int(rng.integers(0, config.s2_revisit_days)))
    days = pd.date_range(first, config.end, freq=f"{config.s2_revisit_days}D")
    utc_hours = 10.5 - site.longitude / 15.0
    return [d + pd.Timedelta(hours=utc_hours) + pd.Timedelta(seconds=int(rng.integers(0, 60)))
            for d in days]


def _discs_mask(x: np.ndarray, y: np.ndarray, discs: list[tuple[float, float, float]],
                scale: float = 1.0) -> np.ndarray:
    m = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
    for cx, cy, r in discs:
        m |= np.hypot(x - cx, y - cy) <= r * scale
    return m


def _scenario(rng: np.random.Generator, site: DemoSite, day: pd.Timestamp, index: int
              ) -> dict[str, Any]:
    """Random but recorded cloud/snow situation of a scene."""
    month = day.month
    snow_months = (11, 12, 1, 2, 3, 4) if site.latitude > 60 else (12, 1, 2)
    u = rng.uniform()
    full = index == 1 or u < 0.18
    discs: list[tuple[float, float, float]] = []
    if not full and u < 0.65:
        for _ in range(int(rng.integers(1, 4))):
            ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 1400)
            discs.append((site.tower_x + dist * np.cos(ang), site.tower_y + dist * np.sin(ang),
                          float(rng.uniform(120, 600))))
    cirrus = []
    if not full and rng.uniform() < 0.15:
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 1200)
        cirrus.append((site.tower_x + dist * np.cos(ang), site.tower_y + dist * np.sin(ang),
                       float(rng.uniform(200, 500))))
    snow = month in snow_months and rng.uniform() < (0.6 if site.latitude > 60 else 0.3)
    return {"full": bool(full), "discs": discs, "cirrus": cirrus, "snow": bool(snow),
            "snow_threshold": float(rng.uniform(-1.0, 0.5)), "gain": float(rng.normal(1, 0.01))}


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    r, c = a.shape[-2] // k, a.shape[-1] // k
    return a.reshape(*a.shape[:-2], r, k, c, k).mean(axis=(-3, -1))


def render_scene(frame: TileWindow, static: SiteRasters, greenness: float,
                 sc: dict[str, Any], sun_azimuth: float, sun_zenith: float, seed_key: int
                 ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Reflectance at 10 m (band, row, col) in BAND_NAMES order and SCL at 10 and 20 m, on
    the render frame (see :attr:`DemoSite.render_frame`)."""
    x, y = frame.centres(10)
    refl = np.empty((len(BAND_NAMES), *static.clc.shape), np.float32)
    for kind in ("broadleaf", "conifer", "grass", "crop"):
        m = static.kind == kind
        if m.any():
            refl[:, m] = spectrum(kind, greenness)[:, None]
    refl[:, static.kind == "urban"] = URBAN[:, None]
    refl *= static.texture[None] * sc["gain"]

    # SCL at 10 and 20 m from the same geometry
    scl: dict[int, np.ndarray] = {}
    masks: dict[int, dict[str, np.ndarray]] = {}
    # shadows: clouds projected away from the sun onto the ground
    sh = CLOUD_HEIGHT_M * np.tan(np.radians(sun_zenith))
    dx, dy = -sh * np.sin(np.radians(sun_azimuth)), -sh * np.cos(np.radians(sun_azimuth))
    shadow_discs = [(cx + dx, cy + dy, r) for cx, cy, r in sc["discs"]]
    rng = np.random.default_rng(seed_key)
    snow_field = ndimage.gaussian_filter(rng.normal(size=static.clc.shape), 8.0)
    snow_field /= snow_field.std()
    for res in (10, 20):
        xr_, yr_ = frame.centres(res)
        shape = frame.shape(res)
        clc = static.clc if res == 10 else static.clc[::2, ::2]
        base = np.where(np.isin(clc, (112,)), SCL_NOT_VEG, SCL_VEG).astype(np.uint8)
        if sc["full"]:
            core = np.ones(shape, bool)
            rim = np.zeros(shape, bool)
        else:
            core = _discs_mask(xr_, yr_, sc["discs"], 0.8)
            rim = _discs_mask(xr_, yr_, sc["discs"]) & ~core
        shadow = _discs_mask(xr_, yr_, shadow_discs) & ~core & ~rim
        cirrus = _discs_mask(xr_, yr_, sc["cirrus"]) & ~core & ~rim
        snow = np.zeros(shape, bool)
        if sc["snow"]:
            sf = snow_field if res == 10 else snow_field[::2, ::2]
            snow = (sf > sc["snow_threshold"]) & ~core & ~rim & ~shadow
        s = base.copy()
        s[snow] = SCL_SNOW
        s[shadow] = SCL_SHADOW
        s[cirrus] = SCL_CIRRUS
        s[rim] = SCL_CLOUD_MED
        s[core] = SCL_CLOUD_HIGH
        scl[res] = s
        masks[res] = {"core": core, "rim": rim, "shadow": shadow, "cirrus": cirrus,
                      "snow": snow}
    m = masks[10]
    refl[:, m["snow"]] = SNOW[:, None] * static.texture[m["snow"]][None]
    refl[:, m["shadow"]] *= SHADOW_FACTOR
    refl[:, m["cirrus"]] += np.float32(0.04)
    refl[:, m["rim"]] = 0.5 * refl[:, m["rim"]] + 0.5 * CLOUD[:, None]
    refl[:, m["core"]] = CLOUD[:, None] * (1 + 0.03 * static.texture[m["core"]][None] - 0.03)
    # planted circle-test block: bright in every band, classified as vegetation
    bl, bb, br, bt = static.block
    for res in (10, 20):
        xr_, yr_ = frame.centres(res)
        inb = (xr_ > bl) & (xr_ < br) & (yr_ > bb) & (yr_ < bt)
        scl[res][inb] = SCL_VEG
    inb10 = (x > bl) & (x < br) & (y > bb) & (y < bt)
    refl[:, inb10] = BRIGHT
    return refl, scl


def to_dn(refl: np.ndarray, offset: int) -> np.ndarray:
    """Reflectance -> L2A DN (uint16), 1..65535 so that 0 stays nodata."""
    return np.clip(np.rint(refl * 10000.0) + offset, 1, 65535).astype(np.uint16)


def _percent(a: np.ndarray) -> float:
    return float(100.0 * a.mean())


def reflectance_conversion_factor(day: pd.Timestamp) -> float:
    """Sun-Earth distance correction d^-2 of the day (ESA L1C formula) [1]."""
    doy = pd.Timestamp(day).dayofyear
    return float(1.0 / (1.0 - 0.01673 * np.cos(0.0172 * (doy - 4))) ** 2)



@dataclass(frozen=True)
class Swath:
    """A swath edge crossing the site area: a north-south line in the site's CRS.

    Attributes
    ----------
    edge_x : float
        Easting of the reference (B02) edge [m, site CRS].
    side : int
        +1 if the swath (the data) lies east of the edge, -1 if west of it.
    """

    edge_x: float
    side: int

    def band_edge(self, band: str) -> float:
        """Easting of a band's edge [m, site CRS]: the reference edge moved outward."""
        return self.edge_x - self.side * SWATH_EDGE_OFFSET_M[band]

    def covered(self, band: str, x: np.ndarray) -> np.ndarray:
        """Whether points at eastings ``x`` [m, site CRS] are inside the band's swath."""
        return self.side * (np.asarray(x) - self.band_edge(band)) >= 0

    @property
    def nadir_x(self) -> float:
        """Easting of the ground track [m, site CRS] (half a swath inward of the edge)."""
        return self.edge_x + self.side * SWATH_M / 2

    @property
    def outer_edge_x(self) -> float:
        """Easting of the outermost band edge [m, site CRS]: all data lie on its inner side."""
        edges = [self.band_edge(b) for b in BAND_NAMES]
        return min(edges) if self.side > 0 else max(edges)


@dataclass(frozen=True)
class Datatake:
    """One acquisition of a site and the archive items it is in.

    Attributes
    ----------
    index : int
        Position in the site's series of acquisitions.
    time : pandas.Timestamp
        Sensing time (UTC).
    platform : str
        ``"Sentinel-2A"`` or ``"Sentinel-2B"``.
    sun_zenith, sun_azimuth : float
        Sun position at the tower (geometric) [deg].
    relative_orbit : int
        Relative orbit (1-143).
    nadir_x : float
        Easting of the ground track [m, site CRS].
    swath : Swath or None
        The swath edge when it crosses the site area.
    windows : tuple of int
        Indices into ``DemoSite.s2_windows`` of the tiles in the archive.
    baselines : tuple of str
        Processing baselines in the archive (the main one first; two for a duplicate).
    generated : tuple of pandas.Timestamp
        Generation time of each processing (UTC).
    """

    index: int
    time: pd.Timestamp
    platform: str
    sun_zenith: float
    sun_azimuth: float
    relative_orbit: int
    nadir_x: float
    swath: Swath | None
    windows: tuple[int, ...]
    baselines: tuple[str, ...]
    generated: tuple[pd.Timestamp, ...]


def plan_datatakes(site: DemoSite, config: DemoConfig) -> list[Datatake]:
    """The site's acquisitions (sun zenith <= 85 deg at the tower) and their archive items.

    Deterministic from the config's seed (a random stream of its own, so the scene contents
    drawn elsewhere do not shift).
    """
    from gpp_cubes.sensors.clearsky import solar_position

    times = scene_dates(site, config)
    sp = solar_position(pd.DatetimeIndex(times), site.latitude, site.longitude,
                        site.elevation_m)
    zenith, azimuth = sp["zenith"].to_numpy(), sp["azimuth"].to_numpy()
    rng = site_rng(config.seed, site.site_id, "s2archive")
    # partial scenes: acquisitions of another relative orbit whose swath edge crosses the site
    edge_orbit = (site.s2_relative_orbit - 1 + int(rng.integers(1, 143))) % 143 + 1
    nadir_x = site.tile.ulx + TILE_SIZE_M / 2 + site.nadir_offset_m
    # The data side of the edge holds the planted block (the circle test needs it in every
    # band): the edge may lie from 900 m outside the tower to just short of the block.
    bl, _, br, _ = bright_block(site)
    side = 1 if (bl + br) / 2 > site.tower_x else -1
    near = bl if side > 0 else br
    u_max = side * (near - site.tower_x) + min(SWATH_EDGE_OFFSET_M.values()) - 60.0
    out: list[Datatake] = []
    for when, zen, azi in zip(times, zenith, azimuth, strict=True):
        if zen > MAX_SUN_ZENITH:
            continue  # not acquired
        index = len(out)
        u = rng.uniform(size=5)
        delay, start, secs = (int(v) for v in rng.integers(0, [5, 420, 86400]))
        platform = "Sentinel-2A" if (when < S2B_START or index % 2 == 0) else "Sentinel-2B"
        swath = None
        if u[0] < PARTIAL_SWATH_FRACTION:
            swath = Swath(site.tower_x + side * (-900.0 + u[1] * (u_max + 900.0)), side)
        windows = tuple(range(len(site.s2_windows)))
        if len(windows) > 1 and u[2] < ONE_TILE_FRACTION:
            windows = (0,) if u[3] < 0.5 else (1,)
        day = when.normalize()
        baselines = (archive_baseline(day),)
        if day <= REPROCESSED_LAST_DAY and u[4] < DUPLICATE_FRACTION:
            baselines += ((ORIGINAL_BASELINE if baselines[0] == REPROCESSED_BASELINE
                           else REPROCESSED_BASELINE),)
        original = (when + pd.Timedelta(days=1 + delay, hours=3)).floor("s")
        reprocessed = (pd.Timestamp("2022-11-07") + pd.Timedelta(days=start, seconds=secs))
        generated = tuple(reprocessed if b == REPROCESSED_BASELINE else original
                          for b in baselines)
        out.append(Datatake(
            index=index, time=when, platform=platform, sun_zenith=float(zen),
            sun_azimuth=float(azi),
            relative_orbit=edge_orbit if swath else site.s2_relative_orbit,
            nadir_x=swath.nadir_x if swath else nadir_x, swath=swath, windows=windows,
            baselines=baselines, generated=generated))
    return out


@dataclass(frozen=True)
class _WindowPixels:
    """Where a window's pixel centres fall in the render frame, per resolution [m].

    ``take[res]`` is a pair of slices (the window is a sub-rectangle of the frame, same
    lattice) or a (rows, cols) array of flat indices into the frame array.
    """

    window: TileWindow
    take: dict[int, tuple[slice, slice] | np.ndarray]
    circle: dict[int, np.ndarray]  # pixel centre within 1 km of the tower

    def __call__(self, frame_array: np.ndarray, res: int) -> np.ndarray:
        """The window's pixels of a frame array at resolution ``res``."""
        t = self.take[res]
        return frame_array[t] if isinstance(t, tuple) else frame_array.reshape(-1)[t]


def _window_pixels(site: DemoSite, window: TileWindow) -> _WindowPixels:
    from pyproj import Transformer

    frame = site.render_frame
    left, _, _, top = frame.bounds
    take: dict[int, tuple[slice, slice] | np.ndarray] = {}
    circle = {}
    for res in (10, 20, 60):
        x, y = np.broadcast_arrays(*window.centres(res))
        nr, nc = frame.shape(res)
        if window.epsg == site.epsg:
            r0, c0 = round((top - window.bounds[3]) / res), round((window.bounds[0] - left) / res)
            rows, cols = window.shape(res)
            take[res] = (slice(r0, r0 + rows), slice(c0, c0 + cols))
            if r0 < 0 or c0 < 0 or r0 + rows > nr or c0 + cols > nc:
                raise RuntimeError(f"site {site.site_id}: window of tile "
                                   f"{window.tile.tile_id} is not inside the render frame")
        else:
            x, y = Transformer.from_crs(window.epsg, site.epsg, always_xy=True).transform(x, y)
            rows = np.floor((top - y) / res).astype(np.intp)
            cols = np.floor((x - left) / res).astype(np.intp)
            if rows.min() < 0 or cols.min() < 0 or rows.max() >= nr or cols.max() >= nc:
                raise RuntimeError(f"site {site.site_id}: window of tile "
                                   f"{window.tile.tile_id} is not inside the render frame")
            take[res] = rows * nc + cols
        circle[res] = np.hypot(x - site.tower_x, y - site.tower_y) <= 1000.0
    return _WindowPixels(window, take, circle)


def _forest_ndvi(forest_clc: int, greenness: float) -> float:
    """Noise-free NDVI of the site's forest class (mixed forest: mean of both) [1]."""
    if forest_clc == 313:
        return 0.5 * (ndvi("broadleaf", greenness) + ndvi("conifer", greenness))
    return ndvi("broadleaf" if forest_clc == 311 else "conifer", greenness)


def _quality(s20: np.ndarray) -> dict[str, float]:
    """``Image_Content_QI`` percentages of a window's SCL [%] (classes over valid pixels)."""
    valid = s20 != 0
    n = max(int(valid.sum()), 1)

    def pct(m: np.ndarray) -> float:
        return float(100.0 * (m & valid).sum() / n)

    cloudy = pct(np.isin(s20, (SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS)))
    return {
        "CLOUDY_PIXEL_PERCENTAGE": cloudy, "CLOUDY_PIXEL_OVER_LAND_PERCENTAGE": cloudy,
        "DEGRADED_MSI_DATA_PERCENTAGE": 0.0, "NODATA_PIXEL_PERCENTAGE": _percent(~valid),
        "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE": 0.0, "DARK_FEATURES_PERCENTAGE": 0.0,
        "CLOUD_SHADOW_PERCENTAGE": pct(s20 == SCL_SHADOW),
        "VEGETATION_PERCENTAGE": pct(s20 == SCL_VEG),
        "NOT_VEGETATED_PERCENTAGE": pct(s20 == SCL_NOT_VEG), "WATER_PERCENTAGE": 0.0,
        "UNCLASSIFIED_PERCENTAGE": 0.0,
        "MEDIUM_PROBA_CLOUDS_PERCENTAGE": pct(s20 == SCL_CLOUD_MED),
        "HIGH_PROBA_CLOUDS_PERCENTAGE": pct(s20 == SCL_CLOUD_HIGH),
        "THIN_CIRRUS_PERCENTAGE": pct(s20 == SCL_CIRRUS),
        "SNOW_ICE_PERCENTAGE": pct(s20 == SCL_SNOW),
    }


def write_site_scenes(root: Path, site: DemoSite, config: DemoConfig, daily: pd.DataFrame
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Write all Sentinel-2 items of a site (one per datatake, tile and processing).

    Returns
    -------
    items : list of dict
        STAC items with hrefs relative to ``root``.
    scenes : list of dict
        Truth rows, one per item.
    planted : list of dict
        Truth rows of the planted bright block (one per item; bounds in the site's CRS).
    """
    plan = plan_datatakes(site, config)
    frame = site.render_frame
    static = site_rasters(site, config.seed)
    rng = site_rng(config.seed, site.site_id, "s2scenes")
    pixels = [_window_pixels(site, w) for w in site.s2_windows]
    fx10, fy10 = frame.centres(10)
    circle = np.hypot(fx10 - site.tower_x, fy10 - site.tower_y) <= 1000.0
    forest = np.isin(static.clc, (311, 312, 313))
    # sun angle grids of every acquisition, per tile, in one SPA call each
    sun = [sun_angle_grids_many(w.tile, [dt.time for dt in plan]) for w in site.s2_windows]
    full_footprints = [footprint_wgs84(w.bounds, f"EPSG:{w.epsg}") for w in site.s2_windows]
    regular_viewing: dict[int, tuple[str, str]] = {}  # per window, full-swath track
    bl, bb, br, bt = static.block
    items, scenes, planted = [], [], []
    for pos, dt in enumerate(plan):
        when = dt.time
        day = when.normalize()
        sc = _scenario(rng, site, day, dt.index)
        green = float(daily["greenness"].asof(day))
        refl, scl = render_scene(frame, static, green, sc, dt.sun_azimuth, dt.sun_zenith,
                                 seed_key=int(rng.integers(0, 2**31)))
        # 10000 * reflectance at each band's resolution, and where each band has data
        q: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] | None = {} if dt.swath else None
        for i, band in enumerate(BAND_NAMES):
            res = BANDS[band][0]
            k = res // 10
            q[band] = np.rint((refl[i] if k == 1 else _block_mean(refl[i], k)) * 10000.0)
            if dt.swath and valid is not None:
                valid[band] = np.broadcast_to(dt.swath.covered(band, frame.centres(res)[0]),
                                              q[band].shape)
        scl20 = scl[20].copy()
        if valid is not None:
            for band in BAND_NAMES:
                if BANDS[band][0] == 20:
                    scl20[~valid[band]] = 0  # SCL has data where every 20 m band has
        s10 = scl[10].copy()
        s10[np.repeat(np.repeat(scl20 == 0, 2, axis=0), 2, axis=1)] = 0
        cloudy = np.isin(s10, (SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS))
        scene_truth = {
            "relative_orbit": dt.relative_orbit, "fully_cloudy": sc["full"],
            "snow": bool((s10 == SCL_SNOW).any()),
            "cloud_fraction_1km": float(cloudy[circle].mean()),
            "shadow_fraction_1km": float((s10 == SCL_SHADOW)[circle].mean()),
            "snow_fraction_1km": float((s10 == SCL_SNOW)[circle].mean()),
            "clear_forest_fraction_1km": float(
                (np.isin(s10, (SCL_VEG, SCL_NOT_VEG)) & forest)[circle].sum()
                / max(forest[circle].sum(), 1)),
            "greenness": green, "forest_ndvi": _forest_ndvi(site.forest_clc, green),
            "sun_zenith": dt.sun_zenith, "sun_azimuth": dt.sun_azimuth,
            "clouds": json.dumps([[round(v, 1) for v in d] for d in sc["discs"]]),
            "partial_swath": dt.swath is not None,
            "swath_edge_x": dt.swath.edge_x if dt.swath else np.nan,
            "swath_side": ("east" if dt.swath.side > 0 else "west") if dt.swath else "",
            "swath_edges": json.dumps({b: round(dt.swath.band_edge(b), 3)
                                       for b in BAND_NAMES}) if dt.swath else "",
        }
        pcode = "S2A" if dt.platform.endswith("A") else "S2B"
        sensing = when.strftime("%Y%m%dT%H%M%S")
        abs_orbit = int((when - pd.Timestamp("2015-06-23")).days * 14.3) + 1
        ids = {(w, b): (f"{pcode}_MSIL2A_{sensing}_R{dt.relative_orbit:03d}_"
                        f"T{site.s2_windows[w].tile.tile_id}_{g.strftime('%Y%m%dT%H%M%S')}")
               for w in dt.windows for b, g in zip(dt.baselines, dt.generated, strict=True)}
        for w in dt.windows:
            px = pixels[w]
            window = px.window
            if dt.swath or w not in regular_viewing:
                viewing = viewing_angles_xml(window.tile, track_x=dt.nadir_x,
                                             track_epsg=site.epsg,
                                             edge_offsets_m=SWATH_EDGE_OFFSET_M)
                if not dt.swath:
                    regular_viewing[w] = viewing
            else:
                viewing = regular_viewing[w]
            if dt.swath:
                geometry, bbox = clipped_footprint_wgs84(
                    window.bounds, f"EPSG:{window.epsg}", f"EPSG:{site.epsg}",
                    dt.swath.outer_edge_x, dt.swath.side)
            else:
                geometry, bbox = full_footprints[w]
            qw = {b: px(q[b], BANDS[b][0]) for b in BAND_NAMES}
            vw = None if valid is None else {b: px(valid[b], BANDS[b][0]) for b in BAND_NAMES}
            s20 = px(scl20, 20)
            quality = _quality(s20)
            nodata_1km = {f"nodata_1km_{b}": 0.0 if vw is None
                          else float((~vw[b])[px.circle[BANDS[b][0]]].mean())
                          for b in BAND_NAMES}
            nodata_1km["nodata_1km_SCL"] = float((s20 == 0)[px.circle[20]].mean())
            for baseline, generated in zip(dt.baselines, dt.generated, strict=True):
                other = [ids[(w, b)] for b in dt.baselines if b != baseline]
                item = _write_item(
                    root, window, dt, item_id=ids[(w, baseline)], baseline=baseline,
                    generated=generated, abs_orbit=abs_orbit, dn_source=(qw, vw, s20),
                    quality=quality, viewing=viewing,
                    sun=(sun[w][0][pos], sun[w][1][pos]), geometry=geometry, bbox=bbox)
                items.append(item)
                props = item["properties"]
                scenes.append({
                    "item_id": item["id"], "site": site.site_id,
                    "datetime": props["datetime"], "date": day.strftime("%Y-%m-%d"),
                    "platform": dt.platform, "mgrs_tile": window.tile.tile_id,
                    "epsg": window.epsg, "datatake": f"G{pcode}_{sensing}_{abs_orbit:06d}",
                    "datatake_id": props["s2:datatake_id"],
                    "processing_baseline": baseline, "boa_offset_dn": boa_offset_dn(baseline),
                    "generation_time": props["s2:generation_time"],
                    "duplicate_of": other[0] if other else "",
                    "eo_cloud_cover": props["eo:cloud_cover"],
                    **scene_truth,
                    "nodata_pixel_percentage": props["s2:nodata_pixel_percentage"],
                    **nodata_1km,
                })
                planted.append({
                    "item_id": item["id"], "site": site.site_id,
                    "kind": "bright_block_outside_circle", "epsg": site.epsg,
                    "left": bl, "bottom": bb, "right": br, "top": bt,
                    "x": (bl + br) / 2, "y": (bb + bt) / 2,
                    "distance_m": float(np.hypot((bl + br) / 2 - site.tower_x,
                                                 (bb + bt) / 2 - site.tower_y)),
                    "reflectance": BRIGHT,
                    "dn": int(to_dn(np.array([BRIGHT]), boa_offset_dn(baseline))[0]),
                    "scl": SCL_VEG,
                })
    return items, scenes, planted


def _write_item(root: Path, window: TileWindow, dt: Datatake, *,
                item_id: str, baseline: str, generated: pd.Timestamp, abs_orbit: int,
                dn_source: tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None,
                                 np.ndarray],
                quality: dict[str, float], viewing: tuple[str, str],
                sun: tuple[np.ndarray, np.ndarray], geometry: dict[str, Any],
                bbox: list[float]) -> dict[str, Any]:
    """Write one item's COGs, granule and product metadata; returns the STAC item."""
    q, valid, s20 = dn_source
    when = dt.time
    offset = boa_offset_dn(baseline)
    tile_id = window.tile.tile_id
    pcode = "S2A" if dt.platform.endswith("A") else "S2B"
    sensing = when.strftime("%Y%m%dT%H%M%S")
    gen = generated.strftime("%Y%m%dT%H%M%S")
    granule_id = f"{pcode}_OPER_MSI_L2A_TL_DEMO_{gen}_A{abs_orbit:06d}_T{tile_id}_N{baseline}"
    datastrip_id = f"{pcode}_OPER_MSI_L2A_DS_DEMO_{gen}_S{sensing}_N{baseline}"
    datatake_id = f"G{pcode}_{sensing}_{abs_orbit:06d}_N{baseline}"
    product_uri = (f"{pcode}_MSIL2A_{sensing}_N{baseline.replace('.', '')}_"
                   f"R{dt.relative_orbit:03d}_T{tile_id}_{gen}.SAFE")
    base = f"{COLLECTION}/{item_id}"
    crs = f"EPSG:{window.epsg}"
    stem = f"T{tile_id}_{sensing}"
    assets: dict[str, Any] = {}

    def add(key: str, rel: str, res: int, title: str,
            extra: dict[str, Any] | None = None) -> None:
        rows, cols = window.shape(res)
        t = window.transform(res)
        assets[key] = {
            "href": f"{base}/{rel}",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": title, "gsd": float(res), **(extra or {}),
            "proj:bbox": list(window.bounds), "proj:shape": [rows, cols],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f], "roles": ["data"],
        }

    image_files = []
    for band in BAND_NAMES:
        res, title, common, wl, fwhm = BANDS[band]
        arr = np.clip(q[band] + offset, 1, 65535).astype(np.uint16)
        if valid is not None:
            arr[~valid[band]] = 0
        rel = f"IMG_DATA/R{res}m/{stem}_{band}_{res}m.tif"
        write_cog(root / base / rel, arr, transform=window.transform(res), crs=crs, nodata=0,
                  blocksize=256 if res == 10 else 512, overview_resampling="average")
        eo = {"name": band, "description": title.rsplit(" - ", 1)[0],
              "center_wavelength": wl, "full_width_half_max": fwhm}
        if common:
            eo["common_name"] = common
        add(band, rel, res, title, {"eo:bands": [eo]})
        image_files.append(rel[:-4])
    rel = f"IMG_DATA/R20m/{stem}_SCL_20m.tif"
    write_cog(root / base / rel, s20, transform=window.transform(20), crs=crs, nodata=0,
              blocksize=512)
    add("SCL", rel, 20, "Scene classfication map (SCL)")
    image_files.append(rel[:-4])
    xml = granule_metadata_xml(
        tile=window.tile, sensing_time=when, tile_id_l2a=granule_id,
        tile_id_l1c=granule_id.replace("L2A", "L1C"), datastrip_id=datastrip_id,
        archiving_time=generated, viewing_xml=viewing, quality=quality, sun_grids=sun)
    rel = f"GRANULE/L2A_T{tile_id}_A{abs_orbit:06d}_{sensing}/MTD_TL.xml"
    (root / base / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / base / rel).write_text(xml, encoding="utf-8")
    assets["granule-metadata"] = {"href": f"{base}/{rel}", "type": "application/xml",
                                  "title": "Granule metadata", "roles": ["metadata"]}
    rcf = reflectance_conversion_factor(when.normalize())
    (root / base / "MTD_MSIL2A.xml").write_text(product_metadata_xml(
        product_uri=product_uri, processing_baseline=baseline, sensing_time=when,
        generation_time=generated, datatake_id=datatake_id, spacecraft=dt.platform,
        relative_orbit=dt.relative_orbit, granule_id=granule_id, datastrip_id=datastrip_id,
        image_files=image_files, boa_add_offset=-offset, reflectance_u=rcf),
        encoding="utf-8")
    assets["product-metadata"] = {"href": f"{base}/MTD_MSIL2A.xml", "type": "application/xml",
                                  "title": "Product metadata", "roles": ["metadata"]}
    mean_zen, mean_azi = _mean_sun(xml)
    props = {
        "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
        "platform": dt.platform, "proj:epsg": window.epsg, "instruments": ["msi"],
        "s2:mgrs_tile": tile_id, "constellation": "Sentinel 2",
        "s2:granule_id": granule_id,
        "eo:cloud_cover": round(quality["CLOUDY_PIXEL_PERCENTAGE"], 6),
        "s2:datatake_id": datatake_id,
        "s2:product_uri": product_uri, "s2:datastrip_id": datastrip_id,
        "s2:product_type": "S2MSI2A", "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": generated.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "sat:relative_orbit": dt.relative_orbit,
        "s2:water_percentage": 0.0,
        "s2:mean_solar_zenith": mean_zen, "s2:mean_solar_azimuth": mean_azi,
        "s2:processing_baseline": baseline,
        "s2:snow_ice_percentage": round(quality["SNOW_ICE_PERCENTAGE"], 6),
        "s2:vegetation_percentage": round(quality["VEGETATION_PERCENTAGE"], 6),
        "s2:thin_cirrus_percentage": round(quality["THIN_CIRRUS_PERCENTAGE"], 6),
        "s2:cloud_shadow_percentage": round(quality["CLOUD_SHADOW_PERCENTAGE"], 6),
        "s2:nodata_pixel_percentage": round(quality["NODATA_PIXEL_PERCENTAGE"], 6),
        "s2:unclassified_percentage": 0.0,
        "s2:dark_features_percentage": 0.0,
        "s2:not_vegetated_percentage": round(quality["NOT_VEGETATED_PERCENTAGE"], 6),
        "s2:degraded_msi_data_percentage": 0.0,
        "s2:high_proba_clouds_percentage": round(quality["HIGH_PROBA_CLOUDS_PERCENTAGE"], 6),
        "s2:reflectance_conversion_factor": rcf,
        "s2:medium_proba_clouds_percentage":
            round(quality["MEDIUM_PROBA_CLOUDS_PERCENTAGE"], 6),
        "s2:saturated_defective_pixel_percentage": 0.0,
    }
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "properties": props, "geometry": geometry, "links": [], "assets": assets,
        "bbox": bbox, "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
        "collection": COLLECTION,
    }
    return item


def _mean_sun(xml: str) -> tuple[float, float]:
    import re

    m = re.search(r"<Mean_Sun_Angle>\s*<ZENITH_ANGLE[^>]*>([^<]+)</ZENITH_ANGLE>\s*"
                  r"<AZIMUTH_ANGLE[^>]*>([^<]+)</AZIMUTH_ANGLE>", xml)
    assert m is not None
    return float(m.group(1)), float(m.group(2))


def collection() -> dict[str, Any]:
    """The ``sentinel-2-l2a`` collection (Planetary Computer's id, trimmed description)."""
    return _collection(
        COLLECTION, "Sentinel-2 Level-2A",
        "Demo-world Sentinel-2 L2A surface reflectance in Planetary Computer's item schema "
        "(synthetic data; see gpp_cubes.demo).",
        ["https://stac-extensions.github.io/eo/v1.0.0/schema.json"])


def _collection(cid: str, title: str, description: str, extensions: list[str]
                ) -> dict[str, Any]:
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": cid, "title": title,
        "description": description, "license": "proprietary", "links": [],
        "stac_extensions": extensions,
        "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                   "temporal": {"interval": [["2015-06-27T10:25:31Z", None]]}},
    }
