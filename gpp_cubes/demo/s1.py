"""Demo Sentinel-1 RTC scenes (Planetary Computer ``sentinel-1-rtc`` schema).

Radiometrically terrain-corrected gamma0 in linear power, ``float32``, nodata -32768, on the
site's 10 m UTM grid, assets ``vv`` and ``vh``; the grid is described at item level
(``proj:epsg``, ``proj:shape`` [rows, cols], 9-element ``proj:transform``, ``s1:shape``
[cols, rows]) as in the real items. One ascending and one descending pass per
``s1_revisit_days``.

Backscatter per land-cover class in dB (forest about -8 dB VV / -14 dB VH, rising with
greenness, 0.7 dB lower in droughts; grassland, cropland and urban differ), times a static
texture and a mild speckle-like per-scene pattern. A 3 x 3 block of very bright pixels
(VV 2.0, VH 0.5 linear) centred on the tower, all within 50 m of it, stands for the tower's
own signal that the 50-1000 m annulus must exclude; it is recorded in the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .cog import footprint_wgs84, write_cog
from .config import DemoConfig, DemoSite
from .landscape import landcover, site_rng
from .s2_items import collection_document

COLLECTION = "sentinel-1-rtc"
NODATA = -32768.0
TOWER_VV, TOWER_VH = 2.0, 0.5
S1B_LIFE = (pd.Timestamp("2016-09-26"), pd.Timestamp("2021-12-23"))

# (VV, VH) [dB] at greenness 0 and the change per unit greenness
_DB = {311: ((-8.6, -15.0), (1.0, 1.6)), 312: ((-8.2, -14.2), (0.4, 0.6)),
       313: ((-8.4, -14.6), (0.7, 1.1)), 231: ((-11.5, -18.5), (1.5, 2.0)),
       211: ((-13.0, -20.0), (3.0, 4.0)), 112: ((1.0, -7.0), (0.0, 0.0))}


def class_db(clc: int, greenness: float, drought: float) -> tuple[float, float]:
    """Noise-free (VV, VH) gamma0 [dB] of a land-cover class."""
    (vv0, vh0), (dvv, dvh) = _DB[clc]
    return (vv0 + dvv * greenness - 0.7 * drought, vh0 + dvh * greenness - 0.7 * drought)


def write_site_scenes(root: Path, site: DemoSite, config: DemoConfig, daily: pd.DataFrame
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                 list[dict[str, Any]]]:
    """Write all Sentinel-1 RTC scenes of a site; returns (items, scene truth, planted)."""
    rng = site_rng(config.seed, site.site_id, "s1")
    x, y = site.centres(10)
    clc = landcover(x, y, site.forest_clc, site.patches)
    dist = np.hypot(x - site.tower_x, y - site.tower_y)
    annulus_forest = (dist >= 50) & (dist <= 1000) & np.isin(clc, (311, 312, 313))
    texture = 10 ** (ndimage.gaussian_filter(rng.normal(size=clc.shape), 1.5) * 0.15)
    col, row = int((site.tower_x - site.bounds[0]) // 10), int((site.bounds[3] - site.tower_y)
                                                              // 10)
    tower = np.zeros(clc.shape, bool)
    tower[row - 1: row + 2, col - 1: col + 2] = True
    geometry, bbox = footprint_wgs84(site.bounds, f"EPSG:{site.epsg}")
    rows, cols = site.shape(10)
    t = site.transform(10)
    passes = []
    for state, orbit, local_hour in (("ascending", site.s1_orbits[0], 17.7),
                                     ("descending", site.s1_orbits[1], 5.8)):
        first = pd.Timestamp(config.start) + pd.Timedelta(
            days=int(rng.integers(0, config.s1_revisit_days)))
        for day in pd.date_range(first, config.end, freq=f"{config.s1_revisit_days}D"):
            passes.append((day + pd.Timedelta(hours=local_hour - site.longitude / 15.0), state,
                           orbit))
    passes.sort()
    items, scenes, planted = [], [], []
    for when, state, orbit in passes:
        when = when + pd.Timedelta(seconds=int(rng.integers(0, 60)))
        day = when.normalize()
        g = float(daily["greenness"].asof(day))
        w = float(daily["drought"].asof(day))
        vv = np.empty(clc.shape, np.float32)
        vh = np.empty(clc.shape, np.float32)
        for code in np.unique(clc):
            dvv, dvh = class_db(int(code), g, w)
            vv[clc == code] = 10 ** (dvv / 10)
            vh[clc == code] = 10 ** (dvh / 10)
        # per-scene variation: a smooth pattern (speckle after multi-looking)
        pattern = 10 ** (ndimage.gaussian_filter(rng.normal(size=clc.shape), 3.0) * 0.1)
        vv *= (texture * pattern).astype(np.float32)
        vh *= (texture * pattern).astype(np.float32)
        vv[tower], vh[tower] = TOWER_VV, TOWER_VH
        # quantise to 2**-16 (< 0.002 dB at -14 dB): the zeroed low mantissa bits halve the
        # compressed size of these float32 files
        vv = (np.rint(vv * 2.0**16) / 2.0**16).astype(np.float32)
        vh = (np.rint(vh * 2.0**16) / 2.0**16).astype(np.float32)
        unit = "S1B" if (S1B_LIFE[0] <= day <= S1B_LIFE[1] and state == "descending") else "S1A"
        abs_orbit = int((when - pd.Timestamp("2014-04-03")).days * 175 / 12) + 1
        take = int(rng.integers(0, 2**20))
        stop = when + pd.Timedelta(seconds=25)
        item_id = (f"{unit}_IW_GRDH_1SDV_{when:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_"
                   f"{abs_orbit:06d}_{take:06X}_rtc")
        base = f"{COLLECTION}/{item_id}/measurement"
        assets = {}
        for pol, arr in (("vv", vv), ("vh", vh)):
            path = root / base / f"iw-{pol}.rtc.tiff"
            write_cog(path, arr, transform=t, crs=f"EPSG:{site.epsg}", nodata=NODATA,
                      blocksize=256, overview_resampling="average")
            p1, p2 = pol.upper()[0], pol.upper()[1]
            name = {"V": "vertical", "H": "horizontal"}
            assets[pol] = {
                "href": f"{base}/iw-{pol}.rtc.tiff", "file:size": path.stat().st_size,
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "title": f"{pol.upper()}: {name[p1]} transmit, {name[p2]} receive",
                "description": ("Terrain-corrected gamma naught values of signal transmitted "
                                f"with {name[p1]} polarization and received with {name[p2]} "
                                "polarization with radiometric terrain correction applied."),
                "raster:bands": [{"nodata": NODATA, "data_type": "float32",
                                  "spatial_resolution": 10.0}],
            }
        props = {
            "datetime": (when + pd.Timedelta(seconds=12)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
            "platform": f"SENTINEL-1{unit[-1]}", "s1:shape": [cols, rows],
            "proj:bbox": list(site.bounds), "proj:epsg": site.epsg, "proj:shape": [rows, cols],
            "end_datetime": f"{stop:%Y-%m-%d %H:%M:%S.%f}+00:00",
            "constellation": "Sentinel-1", "s1:resolution": "high",
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f, 0.0, 0.0, 1.0],
            "s1:datatake_id": str(take), "start_datetime": f"{when:%Y-%m-%d %H:%M:%S.%f}+00:00",
            "s1:orbit_source": "RESORB", "s1:slice_number": "5", "s1:total_slices": "20",
            "sar:looks_range": 5, "sat:orbit_state": state, "sar:product_type": "GRD",
            "sar:looks_azimuth": 1, "sar:polarizations": ["VV", "VH"],
            "sar:frequency_band": "C", "sat:absolute_orbit": abs_orbit,
            "sat:relative_orbit": orbit, "s1:processing_level": "1",
            "sar:instrument_mode": "IW", "sar:center_frequency": 5.405,
            "sar:resolution_range": 20, "s1:product_timeliness": "Fast-24h",
            "sar:resolution_azimuth": 22, "sar:pixel_spacing_range": 10,
            "sar:observation_direction": "right", "sar:pixel_spacing_azimuth": 10,
            "sar:looks_equivalent_number": 4.4, "s1:instrument_configuration_ID": "6",
            "sat:platform_international_designator":
                "2014-016A" if unit == "S1A" else "2016-025A",
        }
        items.append({
            "id": item_id, "bbox": bbox, "type": "Feature", "links": [], "assets": assets,
            "geometry": geometry, "collection": COLLECTION, "properties": props,
            "stac_version": "1.0.0", "stac_extensions": [
                "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
                "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                "https://stac-extensions.github.io/file/v2.0.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        })
        fvv, fvh = class_db(site.forest_clc, g, w)
        scenes.append({
            "item_id": item_id, "site": site.site_id, "datetime": props["datetime"],
            "date": day.strftime("%Y-%m-%d"), "orbit_state": state, "relative_orbit": orbit,
            "forest_vv_db": fvv, "forest_vh_db": fvh,
            # exact linear mean over forest pixels 50-1000 m from the tower (10 m land cover)
            "annulus_vv_linear": float(vv[annulus_forest].astype(np.float64).mean()),
            "annulus_vh_linear": float(vh[annulus_forest].astype(np.float64).mean()),
        })
    ys, xs = np.nonzero(tower)
    for r, c in zip(ys, xs, strict=True):
        px, py = site.bounds[0] + 10 * (c + 0.5), site.bounds[3] - 10 * (r + 0.5)
        planted.append({"site": site.site_id, "kind": "tower", "x": px, "y": py,
                        "distance_m": float(np.hypot(px - site.tower_x, py - site.tower_y)),
                        "vv_linear": TOWER_VV, "vh_linear": TOWER_VH})
    return items, scenes, planted


def collection() -> dict[str, Any]:
    """The ``sentinel-1-rtc`` collection."""
    return collection_document(
        COLLECTION, "Sentinel 1 Radiometrically Terrain Corrected (RTC)",
        "Demo-world Sentinel-1 RTC gamma0 in Planetary Computer's item schema (synthetic).",
        ["https://stac-extensions.github.io/sar/v1.0.0/schema.json"])
