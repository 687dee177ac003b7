"""Hand-specified Sentinel-2 scenes: a few items whose every pixel value is known in advance.

Stage tests need scenes whose dates, DN and SCL they choose, not a landscape. Each
:class:`Scene` is written as the demo world writes an item (:mod:`gpp_cubes.demo.s2_items`:
the same COG writer, a granule ``MTD_TL.xml`` with SPA sun angles for the sensing time and
push-broom viewing angles, a Planetary Computer item document) on one window of the real
MGRS tile over the site: the site grid grown by a margin. Band DN are a known function of
band, scene and pixel (:func:`band_values`), so a test can compute the expected value of
every grid pixel; the SCL is one class with hand-placed exceptions. The product metadata
(``MTD_MSIL2A.xml``) is left out: the pipeline takes the offset from
``s2:processing_baseline``.

Files lie under ``root/<scene id>/`` (``<band>.tif``, ``MTD_TL.xml``) so a test can damage
one by path. Hrefs are local paths, or URLs under ``href_base`` for :func:`serve_scenes`,
which serves the files and items with the demo's file server and STAC API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pystac

from gpp_cubes.sites.grid import SiteGrid, site_grid

from .cog import footprint_wgs84
from .config import TileWindow
from .granule import Tile, mgrs_tile, viewing_angles_xml
from .s2_items import (
    BAND_NAMES,
    BANDS,
    COLLECTION,
    SCL,
    Processing,
    boa_offset_dn,
    collection,
    data_asset,
    granule_xml,
    item_document,
    metadata_asset,
    scene_quality,
    write_band,
)
from .serve import serve_files, serve_stac

#: DE-Hai tower [degrees], the default site.
LAT, LON = 51.0792, 10.4522
#: native resolution [m] of every asset written: the bands and the SCL
RES = {**{b: BANDS[b][0] for b in BAND_NAMES}, "SCL": 20}
#: DN of each band at pixel (0, 0) of scene 0 (a plausible forest spectrum)
BASE = {"B01": 300, "B02": 400, "B03": 600, "B04": 500, "B05": 900, "B06": 1800,
        "B07": 2200, "B08": 2600, "B8A": 2700, "B09": 2800, "B11": 1600, "B12": 800}
RELATIVE_ORBIT = 22


def band_values(band: str, scene: int, rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """DN of a band at native resolution: base + 7*scene + (row + 2*col) % 40 (+ offset)."""
    r, c = np.mgrid[0:rows, 0:cols]
    return (BASE[band] + 7 * scene + (r + 2 * c) % 40 + offset).astype(np.uint16)


def sensing_time(day: str, hour: int = 10, minute: int = 20) -> datetime:
    """A sensing time (UTC) on an ISO day, by default about 10:30 local solar at DE-Hai."""
    y, m, d = map(int, day.split("-"))
    return datetime(y, m, d, hour, minute, tzinfo=UTC)


@dataclass
class Scene:
    """One hand-specified scene.

    Attributes
    ----------
    id : str
        Item id (also its directory under the root).
    when : datetime
        Sensing time (UTC).
    baseline : str, default "02.12"
        Processing baseline; from 04.00 on, DN carry the +1000 BOA offset.
    scl : dict, default {}
        (row, col) of a 20 m SCL pixel -> class, over ``scl_fill``.
    scl_fill : int, default 4 (vegetation)
        SCL class of every other pixel.
    cloud_cover : float, default 5.0
        ``eo:cloud_cover`` [%] (set by hand, for search filters).
    platform : str, default "Sentinel-2A"
    """

    id: str
    when: datetime
    baseline: str = "02.12"
    scl: dict[tuple[int, int], int] = field(default_factory=dict)
    scl_fill: int = SCL.VEG
    cloud_cover: float = 5.0
    platform: str = "Sentinel-2A"


@dataclass
class SceneSet:
    """Written scenes: their root, the site grid, the window's bounds and the items."""

    root: Path
    grid: SiteGrid
    tile_bounds: tuple[float, float, float, float]  # (left, bottom, right, top) [m, UTM]
    items: list[pystac.Item]
    scenes: list[Scene]


def _processing(when: datetime, tile_id: str, *, platform: str = "Sentinel-2A",
                baseline: str = "02.12") -> Processing:
    """Processing of a scene: naive UTC times (as the demo's), generated a day later."""
    t = pd.Timestamp(when)
    if t.tzinfo is not None:
        t = t.tz_convert(None)
    return Processing(platform, t, tile_id, RELATIVE_ORBIT, baseline,
                      (t + timedelta(days=1, hours=3)).floor("s"))


def write_scenes(root: str | Path, scenes: list[Scene], *, latitude: float = LAT,
                 longitude: float = LON, margin_m: float = 600.0,
                 href_base: str | None = None, bands: tuple[str, ...] = tuple(RES)
                 ) -> SceneSet:
    """Write the COGs, granule metadata and items of ``scenes`` under ``root``.

    Parameters
    ----------
    root : path
        Directory (created); scene ``k`` goes to ``root/<id>/``.
    scenes : list of Scene
        The scenes; scene ``k`` has DN :func:`band_values` ``(band, k, ...)``.
    latitude, longitude : float
        Site [degrees]; the window is its standard grid grown by ``margin_m`` on every side.
    margin_m : float, default 600
        Margin [m] (a multiple of 60 keeps the window on the tile's lattice).
    href_base : str, optional
        Base URL of the hrefs (``href_base/<id>/<band>.tif``); local paths by default.
    bands : tuple of str
        Assets written (default: the 12 bands and SCL).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    grid = site_grid(latitude, longitude)
    left, bottom, right, top = grid.bounds
    tb = (left - margin_m, bottom - margin_m, right + margin_m, top + margin_m)
    tile = mgrs_tile(latitude, longitude)
    window = TileWindow(tile, tb)
    geometry, bbox = footprint_wgs84(tb, f"EPSG:{tile.epsg}")
    viewing = viewing_angles_xml(tile)  # ground track at the tile centre: full swath
    items = []
    for k, sc in enumerate(scenes):
        d = root / sc.id
        d.mkdir(exist_ok=True)
        base = str(d) if href_base is None else f"{href_base}/{sc.id}"
        rows, cols = window.shape(20)
        scl = np.full((rows, cols), sc.scl_fill, np.uint8)
        for (r, c), v in sc.scl.items():
            scl[r, c] = v
        assets = {}
        for band in bands:
            if band == "SCL":
                data = scl
            else:
                data = band_values(band, k, *window.shape(RES[band]),
                                   boa_offset_dn(sc.baseline))
            write_band(d / f"{band}.tif", data, band, window)
            assets[band] = data_asset(f"{base}/{band}.tif", band, window)
        proc = _processing(sc.when, tile.tile_id, platform=sc.platform,
                           baseline=sc.baseline)
        quality = scene_quality(scl)
        xml = granule_xml(tile, proc, viewing=viewing, quality=quality)
        (d / "MTD_TL.xml").write_text(xml, encoding="utf-8")
        assets["granule-metadata"] = metadata_asset(f"{base}/MTD_TL.xml", "Granule metadata")
        doc = item_document(sc.id, proc, epsg=tile.epsg, quality=quality, granule=xml,
                            geometry=geometry, bbox=bbox, assets=assets)
        doc["properties"]["eo:cloud_cover"] = sc.cloud_cover
        items.append(pystac.Item.from_dict(doc))
    return SceneSet(root, grid, tb, items, list(scenes))


def granule_at(epsg: int, ulx: float, uly: float,
               when: datetime = datetime(2018, 6, 1, 10, 20, tzinfo=UTC)) -> str:
    """``MTD_TL.xml`` of a tile with its upper-left corner at (``ulx``, ``uly``) [m] in
    ``EPSG:epsg``, sensed at ``when`` (sun angles by SPA, ground track at the tile centre).

    The tile id is a label (``"<zone>XXX"``), not a real MGRS name.
    """
    tile = Tile(f"{epsg % 100:02d}XXX", epsg, float(ulx), float(uly))
    proc = _processing(when, tile.tile_id)
    quality = scene_quality(np.full((1, 1), SCL.VEG, np.uint8))
    return granule_xml(tile, proc, viewing=viewing_angles_xml(tile), quality=quality)


@contextmanager
def serve_scenes(root: Path, items: list[pystac.Item], port: int | None = None
                 ) -> Iterator[str]:
    """Serve ``root`` over HTTP (on ``port``) and ``items`` by a STAC API; yields its URL.

    The items' hrefs must already point at the file server (``href_base`` of
    :func:`write_scenes` with the same port).
    """
    (root / "collection.json").write_text(json.dumps(collection()))
    feats = []
    for it in items:
        d = it.to_dict(transform_hrefs=False)
        d["collection"] = COLLECTION
        d["links"] = []
        feats.append(d)
    (root / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with serve_files(root, port=port), \
            serve_stac([root / "collection.json", root / "items.json"]) as stac:
        yield stac.url
