"""What the demo's Sentinel-2 archive holds for a site: acquisitions and their items.

The series holds what the real 2016-2020 archive holds and a pipeline must cope with:

* **UTM zone boundaries.** A site of ``DemoConfig.two_zone_sites`` (FI-Hyy, zone 35 near
  the 34/35 boundary at 24 E) is covered by a tile of its own zone and one of the
  neighbouring zone (35VLJ, EPSG:32635 and 34VFP, EPSG:32634): a datatake is written as one
  item per tile, same sensing time and datatake, each with its own CRS (``proj:epsg``),
  window on its tile's lattice and granule metadata (the tile's real corner; angle grids at
  its own nodes). A datatake has only one of the two tiles in the archive with probability
  :data:`ONE_TILE_FRACTION`.
* **Low sun.** No scene is acquired with the sun more than :data:`MAX_SUN_ZENITH` (85 deg)
  from the zenith at the tower: from 23 October 2019 ESA extended Sentinel-2B acquisitions
  over Northern Europe and the Arctic to sun zenith angles up to 85 deg (ESA 2019); the demo
  applies that limit to the whole series. The northern sites (FI-Var, FI-Hyy) thus have
  winter scenes between 70 and 85 deg, where ESA's L2A Data Quality Report advises against
  quantitative use of L2A reflectance (sun zenith above 70 deg).
* **Swath edges.** A fraction :data:`PARTIAL_SWATH_FRACTION` of the scenes comes from a
  neighbouring relative orbit whose swath edge (a north-south line in the site's CRS)
  crosses the site area (:class:`Swath`): pixels beyond it are nodata. The edge of each
  band lies :data:`SWATH_EDGE_OFFSET_M` outward of the reference (B02) edge, as the bands'
  detector footprints differ at the swath edge.
* **Processing baselines and duplicates.** Original processings are baseline 02.12 (04.00,
  with BOA_ADD_OFFSET -1000, from 2022-01-25). ESA's Collection-1 reprocessing (baseline
  05.00, BOA_ADD_OFFSET -1000: ``DN = 10000 * reflectance + 1000``) replaces them for
  sensing dates from :data:`REPROCESSED_START` to :data:`REPROCESSED_END`, and a fraction
  :data:`DUPLICATE_FRACTION` of the datatakes up to 2021 is in the archive twice, as 02.12
  and 05.00: same sensing time and tile, different ``s2:processing_baseline``,
  ``s2:generation_time``, ``s2:datatake_id`` suffix, product URI and item id. Both encode
  the same reflectance.

:func:`plan_datatakes` draws all of this from a random stream of its own, before any scene is
rendered.

References
----------
ESA (2019). Copernicus Sentinel-2 observation in low illumination conditions over Northern
Europe and Arctic Areas. ESA Sentinel Online news, 17 October 2019.
ESA. Sentinel-2 L2A Data Quality Report (Optical Mission Performance Centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import DemoConfig, DemoSite
from .granule import SWATH_M, TILE_SIZE_M
from .landscape import site_rng
from .s2_items import BAND_NAMES
from .s2_render import bright_block

#: first sensing day of processing baseline 04.00 (BOA_ADD_OFFSET = -1000 in the metadata)
BASELINE_04_START = pd.Timestamp("2022-01-25")
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


def processing_baseline(day: pd.Timestamp) -> str:
    """Baseline of the original processing of a sensing day (02.12, 04.00 from 2022-01-25)."""
    return "04.00" if pd.Timestamp(day).normalize() >= BASELINE_04_START else ORIGINAL_BASELINE


def archive_baseline(day: pd.Timestamp) -> str:
    """Baseline of the archive's main item of a sensing day (05.00 in the reprocessed part)."""
    d = pd.Timestamp(day).normalize()
    if REPROCESSED_START <= d <= REPROCESSED_END:
        return REPROCESSED_BASELINE
    return processing_baseline(d)


def scene_dates(site: DemoSite, config: DemoConfig) -> list[pd.Timestamp]:
    """Sensing times: every ``s2_revisit_days`` from a per-site offset, ~10:30 local solar."""
    rng = site_rng(config.seed, site.site_id, "s2dates")
    first = pd.Timestamp(config.start) + pd.Timedelta(
        days=int(rng.integers(0, config.s2_revisit_days)))
    days = pd.date_range(first, config.end, freq=f"{config.s2_revisit_days}D")
    utc_hours = 10.5 - site.longitude / 15.0
    return [d + pd.Timedelta(hours=utc_hours) + pd.Timedelta(seconds=int(rng.integers(0, 60)))
            for d in days]


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
