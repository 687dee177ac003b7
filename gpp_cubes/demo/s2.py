"""Demo Sentinel-2 L2A scenes of a site: one rendering per datatake, one item per tile
window and processing.

Each scene is a small window (the site's demo area) of a real MGRS tile grid. The work is
split by what it decides:

- :mod:`~gpp_cubes.demo.s2_archive`: which acquisitions the archive holds and how (sun
  limit, swath edges, tiles of two UTM zones, processing baselines and duplicates);
- :mod:`~gpp_cubes.demo.s2_render`: the landscape's reflectance and SCL of one scene
  (spectra, clouds, shadows, cirrus, snow, the planted bright block);
- :mod:`~gpp_cubes.demo.s2_items`: the files and STAC item of one processing (COGs,
  ``MTD_TL.xml``, ``MTD_MSIL2A.xml``, Planetary Computer's properties).

This module ties them together. The landscape is rendered once per datatake on the site's
zone over an area covering every window; a pixel of a window holds the rendered value of
the cell (same resolution) containing its centre, so the tiles of two zones agree on the
ground. At a swath edge, pixels beyond each band's edge are nodata (DN 0), SCL is nodata
wherever a 20 m band is, the granule's viewing angle grids are NaN beyond each band's swath
(more than one 5 km grid step out, as in real files), the item geometry is the data
footprint, and ``s2:nodata_pixel_percentage`` is the window's. The truth tables record,
per item, the planted conditions and what a correct pipeline must see in the 1 km circle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.paper import RADIUS_M

from .cog import clipped_footprint_wgs84, footprint_wgs84
from .config import DemoConfig, DemoSite, TileWindow
from .granule import sun_angle_grids_many, viewing_angles_xml
from .landscape import site_rng
from .s2_archive import SWATH_EDGE_OFFSET_M, plan_datatakes
from .s2_items import (
    BAND_NAMES,
    BANDS,
    COLLECTION,
    SCL,
    Processing,
    boa_offset_dn,
    collection,
    scene_quality,
    write_item,
)
from .s2_render import (
    BRIGHT,
    block_mean,
    forest_ndvi,
    render_scene,
    scenario,
    site_rasters,
    to_dn,
)

__all__ = ["COLLECTION", "collection", "write_site_scenes"]


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
        circle[res] = np.hypot(x - site.tower_x, y - site.tower_y) <= RADIUS_M
    return _WindowPixels(window, take, circle)


def _dn(q: dict[str, np.ndarray], valid: dict[str, np.ndarray] | None, offset: int
        ) -> dict[str, np.ndarray]:
    """L2A DN of every band (``10000 * reflectance`` + offset, 1..65535; 0 where no data)."""
    out = {}
    for band in BAND_NAMES:
        arr = np.clip(q[band] + offset, 1, 65535).astype(np.uint16)
        if valid is not None:
            arr[~valid[band]] = 0
        out[band] = arr
    return out


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
    circle = np.hypot(fx10 - site.tower_x, fy10 - site.tower_y) <= RADIUS_M
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
        sc = scenario(rng, site, day, dt.index)
        green = float(daily["greenness"].asof(day))
        refl, scl = render_scene(frame, static, green, sc, dt.sun_azimuth, dt.sun_zenith,
                                 seed_key=int(rng.integers(0, 2**31)))
        # 10000 * reflectance at each band's resolution, and where each band has data
        q: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] | None = {} if dt.swath else None
        for i, band in enumerate(BAND_NAMES):
            res = BANDS[band][0]
            k = res // 10
            q[band] = np.rint((refl[i] if k == 1 else block_mean(refl[i], k)) * 10000.0)
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
        cloudy = np.isin(s10, (SCL.CLOUD_MED, SCL.CLOUD_HIGH, SCL.CIRRUS))
        scene_truth = {
            "relative_orbit": dt.relative_orbit, "fully_cloudy": sc["full"],
            "snow": bool((s10 == SCL.SNOW).any()),
            "cloud_fraction_1km": float(cloudy[circle].mean()),
            "shadow_fraction_1km": float((s10 == SCL.SHADOW)[circle].mean()),
            "snow_fraction_1km": float((s10 == SCL.SNOW)[circle].mean()),
            "clear_forest_fraction_1km": float(
                (np.isin(s10, (SCL.VEG, SCL.NOT_VEG)) & forest)[circle].sum()
                / max(forest[circle].sum(), 1)),
            "greenness": green, "forest_ndvi": forest_ndvi(site.forest_clc, green),
            "sun_zenith": dt.sun_zenith, "sun_azimuth": dt.sun_azimuth,
            "clouds": json.dumps([[round(v, 1) for v in d] for d in sc["discs"]]),
            "cirrus": json.dumps([[round(v, 1) for v in d] for d in sc["cirrus"]]),
            "partial_swath": dt.swath is not None,
            "swath_edge_x": dt.swath.edge_x if dt.swath else np.nan,
            "swath_side": ("east" if dt.swath.side > 0 else "west") if dt.swath else "",
            "swath_edges": json.dumps({b: round(dt.swath.band_edge(b), 3)
                                       for b in BAND_NAMES}) if dt.swath else "",
        }
        procs = {(w, b): Processing(dt.platform, when, site.s2_windows[w].tile.tile_id,
                                    dt.relative_orbit, b, g)
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
            quality = scene_quality(s20)
            nodata_1km = {f"nodata_1km_{b}": 0.0 if vw is None
                          else float((~vw[b])[px.circle[BANDS[b][0]]].mean())
                          for b in BAND_NAMES}
            nodata_1km["nodata_1km_SCL"] = float((s20 == 0)[px.circle[20]].mean())
            for baseline in dt.baselines:
                proc = procs[(w, baseline)]
                other = [procs[(w, b)].item_id for b in dt.baselines if b != baseline]
                item = write_item(
                    root, window, proc, dn=_dn(qw, vw, boa_offset_dn(baseline)), scl=s20,
                    quality=quality, viewing=viewing,
                    sun=(sun[w][0][pos], sun[w][1][pos]), geometry=geometry, bbox=bbox)
                items.append(item)
                props = item["properties"]
                scenes.append({
                    "item_id": item["id"], "site": site.site_id,
                    "datetime": props["datetime"], "date": day.strftime("%Y-%m-%d"),
                    "platform": dt.platform, "mgrs_tile": window.tile.tile_id,
                    "epsg": window.epsg,
                    "datatake": f"G{proc.pcode}_{proc.sensing}_{proc.abs_orbit:06d}",
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
                    "scl": SCL.VEG,
                })
    return items, scenes, planted
