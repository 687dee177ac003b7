"""Demo MODIS LST items (``modis-11A1-061``, MOD11A1 Terra / MYD11A1 Aqua, collection 6.1).

One item per product, day and sinusoidal tile (``MOD11A1.A<yyyy><ddd>.h<hh>v<vv>.061``, as
on Planetary Computer), holding a small window of the real global 1 km sinusoidal grid
around the demo towers of that tile (sites sharing a tile share items). Assets
``LST_Day_1km``/``LST_Night_1km`` (``uint16``, scale 0.02 K, 0 = fill) and
``QC_Day``/``QC_Night`` (``uint8``; bits 1-0 = 00 good quality), ``datetime`` null with
``start_datetime``/``end_datetime``, ``proj:epsg`` null and ``proj:wkt2`` sinusoidal.

LST at a pixel is the truth LST of the nearest tower (Aqua 1.5 K warmer by day and 1 K
colder at night than Terra, with its overpass 3 h later) plus a static spatial pattern.
Cloudy days (QC 2 = "not produced, cloud", DN 0) cover the whole window; on other days
~8 % of the pixels are cloudy and ~5 % carry QC 0b11000001 (LST error > 3 K, biased by
-4 K) that the QC rule must drop. The tower pixel's DN and QC are recorded in the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .cog import write_cog
from .config import DemoConfig, DemoSite
from .landscape import site_rng
from .s2_items import collection_document

COLLECTION = "modis-11A1-061"
WINDOW = 7
QC_GOOD, QC_CLOUD, QC_BAD_ERROR = 0, 2, 0b11000001
PRODUCTS = {"terra": "MOD11A1", "aqua": "MYD11A1"}
#: Aqua minus Terra LST [K] (day, night): 13:30 vs 10:30, 01:30 vs 22:30 local solar time
AQUA_OFFSET_K = {"day": 1.5, "night": -1.0}
#: proj:wkt2 of Planetary Computer's MODIS items (stactools-modis), verbatim
WKT2 = ('PROJCRS["unnamed",BASEGEOGCRS["Unknown datum based upon the custom spheroid",'
        'DATUM["Not specified (based on custom spheroid)",ELLIPSOID["Custom spheroid",'
        '6371007.181,0,LENGTHUNIT["metre",1,ID["EPSG",9001]]]],PRIMEM["Greenwich",0,'
        'ANGLEUNIT["degree",0.0174532925199433,ID["EPSG",9122]]]],CONVERSION["unnamed",'
        'METHOD["Sinusoidal"],PARAMETER["Longitude of natural origin",0,ANGLEUNIT["degree",'
        '0.0174532925199433],ID["EPSG",8802]],PARAMETER["False easting",0,LENGTHUNIT["metre",'
        '1],ID["EPSG",8806]],PARAMETER["False northing",0,LENGTHUNIT["metre",1],'
        'ID["EPSG",8807]]],CS[Cartesian,2],AXIS["easting",east,ORDER[1],LENGTHUNIT["metre",1,'
        'ID["EPSG",9001]]],AXIS["northing",north,ORDER[2],LENGTHUNIT["metre",1,'
        'ID["EPSG",9001]]]]')


def tile_groups(sites: tuple[DemoSite, ...]) -> dict[tuple[int, int], list[DemoSite]]:
    """Sites grouped by MODIS sinusoidal tile (h, v)."""
    from gpp_cubes.sensors.modis import modis_grid

    groups: dict[tuple[int, int], list[DemoSite]] = {}
    for s in sites:
        g = modis_grid(s.latitude, s.longitude, size=WINDOW)
        r, c = g.row0 + WINDOW // 2, g.col0 + WINDOW // 2
        h, v = c // 1200, r // 1200  # 1200 x 1200 pixels per tile
        groups.setdefault((h, v), []).append(s)
    return groups


def write_group(root: Path, tile: tuple[int, int], sites: list[DemoSite], platform: str,
                config: DemoConfig, dailies: dict[str, pd.DataFrame]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write the items of one tile and platform; returns (items, truth rows)."""
    from affine import Affine

    from gpp_cubes.sensors.modis import MODIS_ORIGIN_X, MODIS_ORIGIN_Y, MODIS_PIXEL_M, modis_grid

    from .cog import footprint_wgs84

    h, v = tile
    product = PRODUCTS[platform]
    grids = {s.site_id: modis_grid(s.latitude, s.longitude, size=WINDOW) for s in sites}
    r0 = min(g.row0 for g in grids.values())
    c0 = min(g.col0 for g in grids.values())
    r1 = max(g.row0 + WINDOW for g in grids.values())
    c1 = max(g.col0 + WINDOW for g in grids.values())
    shape = (r1 - r0, c1 - c0)
    left, top = MODIS_ORIGIN_X + c0 * MODIS_PIXEL_M, MODIS_ORIGIN_Y - r0 * MODIS_PIXEL_M
    transform = Affine(MODIS_PIXEL_M, 0.0, left, 0.0, -MODIS_PIXEL_M, top)
    bounds = (left, top - shape[0] * MODIS_PIXEL_M, left + shape[1] * MODIS_PIXEL_M, top)
    geometry, bbox = footprint_wgs84(bounds, WKT2)
    # nearest tower of every pixel (window coordinates)
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    centres = {sid: (g.row0 + WINDOW // 2 - r0, g.col0 + WINDOW // 2 - c0)
               for sid, g in grids.items()}
    ids = list(centres)
    d2 = np.stack([(rr - centres[s][0]) ** 2 + (cc - centres[s][1]) ** 2 for s in ids])
    nearest = np.argmin(d2, axis=0)
    key = "".join(s.site_id for s in sites)
    rng = site_rng(config.seed, key, f"modis-{platform}")
    pattern = {p: rng.normal(0, 0.4, shape) for p in ("day", "night")}
    days = pd.date_range(config.start, config.end, freq=f"{config.modis_step_days}D")
    items, truth = [], []
    for day in days:
        doy = day.dayofyear
        item_id = f"{product}.A{day.year}{doy:03d}.h{h:02d}v{v:02d}.061"
        base = f"{COLLECTION}/{item_id}"
        assets: dict[str, Any] = {}
        per_site: dict[str, dict[str, Any]] = {s: {} for s in ids}
        cloud_pixels = 0
        for period, lst_asset, qc_asset, col in (("day", "LST_Day_1km", "QC_Day", "lst_day_k"),
                                                  ("night", "LST_Night_1km", "QC_Night",
                                                   "lst_night_k")):
            truth_k = np.array([float(dailies[s][col].asof(day)) for s in ids])
            lst = truth_k[nearest] + pattern[period]
            if platform == "aqua":
                lst = lst + AQUA_OFFSET_K[period]
            qc = np.zeros(shape, np.uint8)
            cloudy_day = rng.uniform(size=len(ids)) < 0.3
            qc[cloudy_day[nearest]] = QC_CLOUD
            qc[(rng.uniform(size=shape) < 0.08)] = QC_CLOUD
            bad = (rng.uniform(size=shape) < 0.05) & (qc == QC_GOOD)
            qc[bad] = QC_BAD_ERROR
            lst = np.where(bad, lst - 4.0, lst)
            dn = np.where(qc == QC_CLOUD, 0, np.clip(np.rint(lst / 0.02), 7500, 65535)
                          ).astype(np.uint16)
            cloud_pixels += int((qc == QC_CLOUD).sum())
            for asset, arr, nodata in ((lst_asset, dn, 0), (qc_asset, qc, None)):
                rel = f"{base}/{item_id}_{asset}.tif"
                write_cog(root / rel, arr, transform=transform, crs=WKT2, nodata=nodata,
                          blocksize=512)
                is_lst = asset.startswith("LST")
                band: dict[str, Any] = {"data_type": arr.dtype.name, "spatial_resolution": 1000}
                if is_lst:
                    band.update({"unit": "Kelvin", "scale": 0.02})
                title = {"LST_Day_1km": "Daily daytime 1km grid Land-surface Temperature",
                         "LST_Night_1km": "Daily nighttime 1km grid Land-surface Temperature",
                         "QC_Day": "Quality control for daytime LST and emissivity",
                         "QC_Night": "Quality control for nighttime LST and emissivity"}[asset]
                assets[asset] = {
                    "href": rel, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "title": title, "raster:bands": [band],
                    "roles": ["data", "temperature"] if is_lst else ["data"],
                }
            for i, s in enumerate(ids):
                r, c = centres[s]
                win = (slice(r - 1, r + 2), slice(c - 1, c + 2))
                per_site[s].update({
                    f"{period}_truth_k": float(truth_k[i]
                                               + (AQUA_OFFSET_K[period] if platform == "aqua"
                                                  else 0.0)),
                    f"{period}_dn_tower": int(dn[r, c]), f"{period}_qc_tower": int(qc[r, c]),
                    f"{period}_good_3x3": int((qc[win] == QC_GOOD).sum()),
                })
        props = {
            "start_datetime": f"{day:%Y-%m-%d}T00:00:00Z",
            "end_datetime": f"{day:%Y-%m-%d}T23:59:59Z", "instruments": ["modis"],
            "platform": platform, "created": f"{day + pd.Timedelta(days=1):%Y-%m-%d}T09:55:44Z",
            "updated": f"{day + pd.Timedelta(days=1):%Y-%m-%d}T04:04:50.881000Z",
            "modis:horizontal-tile": h, "modis:vertical-tile": v,
            "modis:tile-id": f"51{h:03d}{v:03d}", "proj:epsg": None, "proj:wkt2": WKT2,
            "proj:geometry": {"type": "Polygon", "coordinates": [[
                [bounds[2], bounds[1]], [bounds[2], bounds[3]], [bounds[0], bounds[3]],
                [bounds[0], bounds[1]], [bounds[2], bounds[1]]]]},
            "proj:shape": list(shape),
            "proj:transform": [transform.a, transform.b, transform.c, transform.d,
                               transform.e, transform.f],
            "eo:cloud_cover": round(100.0 * cloud_pixels / (2 * shape[0] * shape[1])),
            "datetime": None,
        }
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties": props,
            "geometry": geometry, "links": [], "assets": assets, "bbox": bbox,
            "stac_extensions": [
                "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
                "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
            "collection": COLLECTION,
        })
        for s in ids:
            r, c = centres[s]
            truth.append({"item_id": item_id, "site": s, "date": f"{day:%Y-%m-%d}",
                          "platform": platform, "product": product, "tower_row": r,
                          "tower_col": c, **per_site[s]})
    return items, truth


def collection() -> dict[str, Any]:
    """The ``modis-11A1-061`` collection."""
    return collection_document(
        COLLECTION, "MODIS Land Surface Temperature/Emissivity Daily",
        "Demo-world MOD11A1/MYD11A1 v6.1 LST in Planetary Computer's item schema (synthetic).",
        ["https://stac-extensions.github.io/raster/v1.1.0/schema.json"])
