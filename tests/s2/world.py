"""A tiny hand-made Sentinel-2 world for the S2 stage tests (independent of the demo world).

Writes real COGs at the real band resolutions (10/20/60 m) with values that are a known
function of band, scene and pixel, builds pystac Items after the real Planetary Computer
schema, and can serve them on 127.0.0.1 (the demo file server and ``rustac serve``).
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from gpp_cubes.demo.serve import serve_files, serve_stac, serve_world
from gpp_cubes.sites.grid import SiteGrid, site_grid

REF = Path(__file__).resolve().parents[1] / "data" / "reference"

LAT, LON = 51.0792, 10.4522  # DE-Hai
RES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
       "B08": 10, "B8A": 20, "B09": 60, "B11": 20, "B12": 20, "SCL": 20}
BASE = {"B01": 300, "B02": 400, "B03": 600, "B04": 500, "B05": 900, "B06": 1800,
        "B07": 2200, "B08": 2600, "B8A": 2700, "B09": 2800, "B11": 1600, "B12": 800}


def band_values(band: str, scene: int, rows: int, cols: int, offset: int = 0) -> np.ndarray:
    """DN of a band at native resolution: base + 7*scene + (row + 2*col) % 40 (+ offset)."""
    r, c = np.mgrid[0:rows, 0:cols]
    return (BASE[band] + 7 * scene + (r + 2 * c) % 40 + offset).astype(np.uint16)


@dataclass
class Scene:
    id: str
    when: datetime
    baseline: str = "02.12"
    scl: dict[tuple[int, int], int] = field(default_factory=dict)  # (row20, col20) -> class
    scl_fill: int = 4  # vegetation
    cloud_cover: float = 5.0


def write_cog(path: Path, data: np.ndarray, left: float, top: float, res: float,
              epsg: int) -> None:
    profile = dict(driver="COG", width=data.shape[1], height=data.shape[0], count=1,
                   dtype=data.dtype, crs=f"EPSG:{epsg}", nodata=0,
                   transform=from_origin(left, top, res, res), blocksize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


@dataclass
class MiniWorld:
    root: Path
    grid: SiteGrid
    tile_bounds: tuple[float, float, float, float]
    items: list[pystac.Item]
    scenes: list[Scene]

    def native(self, scene: int, band: str) -> np.ndarray:
        with rasterio.open(self.items[scene].assets[band].href) as src:
            return src.read(1)


def make_world(root: Path, scenes: list[Scene], *, margin_m: float = 600.0,
               proj_code: bool = True, href_base: str | None = None,
               bands: tuple[str, ...] = tuple(RES)) -> MiniWorld:
    """Write COGs and items of ``scenes`` under ``root``; hrefs are paths or ``href_base/...``."""
    root.mkdir(parents=True, exist_ok=True)
    grid = site_grid(LAT, LON)
    left, bottom, right, top = grid.bounds
    tb = (left - margin_m, bottom - margin_m, right + margin_m, top + margin_m)
    template = json.loads((REF / "pc-sentinel-2-l2a-item-2019.json").read_text())
    to_geo = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    xs = [tb[0], tb[2], tb[2], tb[0], tb[0]]
    ys = [tb[1], tb[1], tb[3], tb[3], tb[1]]
    lon, lat = to_geo.transform(xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    items = []
    for k, sc in enumerate(scenes):
        d = root / sc.id
        d.mkdir(exist_ok=True)
        offset = 1000 if float(sc.baseline) >= 4.0 else 0
        props = {p: v for p, v in template["properties"].items() if not p.startswith("proj:")}
        props.update({"s2:processing_baseline": sc.baseline, "eo:cloud_cover": sc.cloud_cover,
                      "datetime": sc.when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
        props["proj:code" if proj_code else "proj:epsg"] = (
            f"EPSG:{grid.epsg}" if proj_code else grid.epsg)
        item = pystac.Item(sc.id, {"type": "Polygon", "coordinates": [ring]},
                           [min(lon), min(lat), max(lon), max(lat)], sc.when, props)
        for band in bands:
            res = RES[band]
            rows, cols = round((tb[3] - tb[1]) / res), round((tb[2] - tb[0]) / res)
            if band == "SCL":
                data = np.full((rows, cols), sc.scl_fill, np.uint8)
                for (r, c), v in sc.scl.items():
                    data[r, c] = v
            else:
                data = band_values(band, k, rows, cols, offset)
            write_cog(d / f"{band}.tif", data, tb[0], tb[3], res, grid.epsg)
            href = str(d / f"{band}.tif") if href_base is None \
                else f"{href_base}/{sc.id}/{band}.tif"
            asset = copy.deepcopy(template["assets"][band])
            asset["href"] = href
            asset["proj:shape"] = [rows, cols]
            asset["proj:transform"] = [res, 0.0, tb[0], 0.0, -res, tb[3]]
            asset["proj:bbox"] = list(tb)
            item.add_asset(band, pystac.Asset.from_dict(asset))
        mtd = d / "MTD_TL.xml"
        if not mtd.exists():
            mtd.write_text(mtd_tl_for(grid.epsg, tb[0], tb[3]))
        item.add_asset("granule-metadata", pystac.Asset(
            str(mtd) if href_base is None else f"{href_base}/{sc.id}/MTD_TL.xml",
            media_type="application/xml", roles=["metadata"]))
        items.append(item)
    return MiniWorld(root, grid, tb, items, scenes)


def mtd_tl_for(epsg: int, ulx: float, uly: float) -> str:
    """The reference MTD_TL.xml with its geocoding moved to our tile (angles unchanged)."""
    import re

    text = (REF / "S2-L2A-granule-MTD_TL-N0509.xml").read_text()
    text = re.sub(r"<HORIZONTAL_CS_CODE>EPSG:\d+</HORIZONTAL_CS_CODE>",
                  f"<HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>", text)
    text = re.sub(r"<ULX>[-\d.]+</ULX>", f"<ULX>{int(ulx)}</ULX>", text)
    text = re.sub(r"<ULY>[-\d.]+</ULY>", f"<ULY>{int(uly)}</ULY>", text)
    return text


def when(day: str, hour: int = 10, minute: int = 20) -> datetime:
    y, m, d = map(int, day.split("-"))
    return datetime(y, m, d, hour, minute, tzinfo=UTC)


# ----------------------------------------------------------------- serving on 127.0.0.1
@contextlib.contextmanager
def serve(root: Path, items: list[pystac.Item], fport: int,
          collection: str = "sentinel-2-l2a"):
    """Serve ``root`` over HTTP on ``fport`` and ``items`` as a STAC API; yields the API URL."""
    coll = {"type": "Collection", "stac_version": "1.1.0", "id": collection,
            "description": "test", "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [[None, None]]}}}
    (root / "collection.json").write_text(json.dumps(coll))
    feats = []
    for it in items:
        d = it.to_dict(transform_hrefs=False)
        d["collection"] = collection
        d["links"] = []
        feats.append(d)
    (root / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    with serve_files(root, port=fport), \
            serve_stac([root / "collection.json", root / "items.json"]) as stac:
        yield stac.url


@contextlib.contextmanager
def serve_demo(world):
    """Serve a :class:`gpp_cubes.demo.World`; yields ``(stac_url, files_url)``."""
    with serve_world(world) as served:
        yield served.stac_url, served.files_url
