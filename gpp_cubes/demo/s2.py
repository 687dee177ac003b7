"""Demo Sentinel-2 L2A scenes: COGs, granule metadata and Planetary Computer-schema items.

Each scene is a small window (the site's demo area) of a real MGRS tile grid, written as
one COG per band at the band's native resolution (10 m: B02, B03, B04, B08; 20 m: B05, B06,
B07, B8A, B11, B12, SCL; 60 m: B01, B09), ``uint16`` DN with nodata 0,
``DN = 10000 * reflectance`` plus the BOA offset of +1000 for processing baseline >= 04.00
(acquisitions from 2022-01-25 on), and the scene classification (SCL, ``uint8``) with the
real classes 3 cloud shadow, 4 vegetation, 5 not vegetated, 8/9 cloud medium/high
probability, 10 thin cirrus, 11 snow.

Reflectance is a linear mix of a dormant and a peak spectrum per land-cover class, weighted
by the site's greenness of the day, times a static canopy texture. Clouds (discs, bright,
SCL 9 core / 8 rim), their shadows (cast away from the sun, dark, SCL 3), thin cirrus and
snow (bright visible, dark SWIR, SCL 11) are placed at known pixels and dates recorded in
the world's truth, as are a 60 m bright block outside the 1 km circle but inside the site
grid (the circle test) that every scene carries.

Items carry the real band, ``SCL`` and ``granule-metadata`` assets and all properties of a
Planetary Computer item; the AOT, WVP, visual, preview and other metadata assets are left
out (nothing in the pipeline reads them, and they would add 3 files per scene).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .cog import footprint_wgs84, write_cog
from .config import DemoConfig, DemoSite
from .granule import granule_metadata_xml, viewing_angles_xml
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
    """Processing baseline of the Planetary Computer item of a sensing day."""
    return "04.00" if pd.Timestamp(day).normalize() >= BASELINE_04_START else "02.12"


@dataclass(frozen=True)
class SiteRasters:
    """Static per-site 10 m fields: land cover, spectral class and canopy texture."""

    clc: np.ndarray  # CLC code at 10 m
    kind: np.ndarray  # object array of class names
    texture: np.ndarray  # multiplicative, mean 1
    block: tuple[float, float, float, float]  # planted bright block bounds (UTM)


def site_rasters(site: DemoSite, seed: int) -> SiteRasters:
    """The static fields of a site (land cover from the same patches as CORINE)."""
    x, y = site.centres(10)
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
    from gpp_cubes.grid import site_grid

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


def render_scene(site: DemoSite, static: SiteRasters, greenness: float, sc: dict[str, Any],
                 sun_azimuth: float, sun_zenith: float, seed_key: int
                 ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Reflectance at 10 m (band, row, col) in BAND_NAMES order and SCL at 10 and 20 m."""
    x, y = site.centres(10)
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
        xr_, yr_ = site.centres(res)
        shape = site.shape(res)
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
        xr_, yr_ = site.centres(res)
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


def write_site_scenes(root: Path, site: DemoSite, config: DemoConfig, daily: pd.DataFrame
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Write all Sentinel-2 scenes of a site.

    Returns
    -------
    items : list of dict
        STAC items with hrefs relative to ``root``.
    scenes : list of dict
        Truth rows, one per item.
    planted : list of dict
        Truth rows of the planted bright block (one per item).
    """
    from gpp_cubes.clearsky import solar_position

    static = site_rasters(site, config.seed)
    rng = site_rng(config.seed, site.site_id, "s2scenes")
    viewing = viewing_angles_xml(site.tile, site.nadir_offset_m)
    circle = np.hypot(*np.broadcast_arrays(site.centres(10)[0] - site.tower_x,
                                           site.centres(10)[1] - site.tower_y)) <= 1000.0
    forest = np.isin(static.clc, (311, 312, 313))
    geometry, bbox = footprint_wgs84(site.bounds, f"EPSG:{site.epsg}")
    items, scenes, planted = [], [], []
    for index, when in enumerate(scene_dates(site, config)):
        day = when.normalize()
        platform = "Sentinel-2A" if (when < S2B_START or index % 2 == 0) else "Sentinel-2B"
        sc = _scenario(rng, site, day, index)
        sp = solar_position(pd.DatetimeIndex([when]), site.latitude, site.longitude,
                            site.elevation_m)
        sza, saa = float(sp["zenith"].iloc[0]), float(sp["azimuth"].iloc[0])
        green = float(daily["greenness"].asof(day))
        refl, scl = render_scene(site, static, green, sc, saa, sza,
                                 seed_key=int(rng.integers(0, 2**31)))
        baseline = processing_baseline(day)
        offset = BOA_OFFSET_DN if baseline >= "04.00" else 0
        dn10 = to_dn(refl, offset)
        sensing = when.strftime("%Y%m%dT%H%M%S")
        proc = (when + pd.Timedelta(days=1 + int(rng.integers(0, 5)), hours=3)).floor("s")
        pcode = "S2A" if platform.endswith("A") else "S2B"
        item_id = (f"{pcode}_MSIL2A_{sensing}_R{site.s2_relative_orbit:03d}_T{site.tile.tile_id}"
                   f"_{proc.strftime('%Y%m%dT%H%M%S')}")
        abs_orbit = int((when - pd.Timestamp("2015-06-23")).days * 14.3) + 1
        nb = baseline.replace(".", "")
        ptime = proc.strftime("%Y%m%dT%H%M%S")
        granule_id = (f"{pcode}_OPER_MSI_L2A_TL_DEMO_{ptime}_A{abs_orbit:06d}"
                      f"_T{site.tile.tile_id}_N{baseline}")
        datastrip_id = f"{pcode}_OPER_MSI_L2A_DS_DEMO_{ptime}_S{sensing}_N{baseline}"
        product_uri = (f"{pcode}_MSIL2A_{sensing}_N{nb}_R{site.s2_relative_orbit:03d}_"
                       f"T{site.tile.tile_id}_{proc.strftime('%Y%m%dT%H%M%S')}.SAFE")
        base = f"{COLLECTION}/{item_id}"
        assets: dict[str, Any] = {}

        def add(key: str, rel: str, res: int, title: str, extra: dict[str, Any] | None = None,
                _base: str = base, assets: dict[str, Any] = assets) -> None:
            rows, cols = site.shape(res)
            t = site.transform(res)
            assets[key] = {
                "href": f"{_base}/{rel}",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "title": title, "gsd": float(res), **(extra or {}),
                "proj:bbox": list(site.bounds), "proj:shape": [rows, cols],
                "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f], "roles": ["data"],
            }

        crs = f"EPSG:{site.epsg}"
        stem = f"T{site.tile.tile_id}_{sensing}"
        for i, band in enumerate(BAND_NAMES):
            res, title, common, wl, fwhm = BANDS[band]
            k = res // 10
            arr = dn10[i] if k == 1 else to_dn(_block_mean(refl[i], k), offset)
            rel = f"IMG_DATA/R{res}m/{stem}_{band}_{res}m.tif"
            write_cog(root / base / rel, arr, transform=site.transform(res), crs=crs, nodata=0,
                      blocksize=256 if res == 10 else 512, overview_resampling="average")
            eo = {"name": band, "description": title.rsplit(" - ", 1)[0],
                  "center_wavelength": wl, "full_width_half_max": fwhm}
            if common:
                eo["common_name"] = common
            add(band, rel, res, title, {"eo:bands": [eo]})
        rel = f"IMG_DATA/R20m/{stem}_SCL_20m.tif"
        write_cog(root / base / rel, scl[20], transform=site.transform(20), crs=crs, nodata=0,
                  blocksize=512)
        add("SCL", rel, 20, "Scene classfication map (SCL)")
        s20 = scl[20]
        quality = {
            "CLOUDY_PIXEL_PERCENTAGE": _percent(np.isin(s20, (8, 9, 10))),
            "CLOUDY_PIXEL_OVER_LAND_PERCENTAGE": _percent(np.isin(s20, (8, 9, 10))),
            "DEGRADED_MSI_DATA_PERCENTAGE": 0.0, "NODATA_PIXEL_PERCENTAGE": 0.0,
            "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE": 0.0, "DARK_FEATURES_PERCENTAGE": 0.0,
            "CLOUD_SHADOW_PERCENTAGE": _percent(s20 == 3),
            "VEGETATION_PERCENTAGE": _percent(s20 == 4),
            "NOT_VEGETATED_PERCENTAGE": _percent(s20 == 5), "WATER_PERCENTAGE": 0.0,
            "UNCLASSIFIED_PERCENTAGE": 0.0,
            "MEDIUM_PROBA_CLOUDS_PERCENTAGE": _percent(s20 == 8),
            "HIGH_PROBA_CLOUDS_PERCENTAGE": _percent(s20 == 9),
            "THIN_CIRRUS_PERCENTAGE": _percent(s20 == 10),
            "SNOW_ICE_PERCENTAGE": _percent(s20 == 11),
        }
        xml = granule_metadata_xml(
            tile=site.tile, sensing_time=when, tile_id_l2a=granule_id,
            tile_id_l1c=granule_id.replace("L2A", "L1C"), datastrip_id=datastrip_id,
            archiving_time=proc, viewing_xml=viewing, quality=quality)
        rel = f"GRANULE/L2A_T{site.tile.tile_id}_A{abs_orbit:06d}_{sensing}/MTD_TL.xml"
        (root / base / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / base / rel).write_text(xml, encoding="utf-8")
        assets["granule-metadata"] = {"href": f"{base}/{rel}", "type": "application/xml",
                                      "title": "Granule metadata", "roles": ["metadata"]}
        mean_zen, mean_azi = _mean_sun(xml)
        props = {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
            "platform": platform, "proj:epsg": site.epsg, "instruments": ["msi"],
            "s2:mgrs_tile": site.tile.tile_id, "constellation": "Sentinel 2",
            "s2:granule_id": granule_id,
            "eo:cloud_cover": round(quality["CLOUDY_PIXEL_PERCENTAGE"], 6),
            "s2:datatake_id": f"G{pcode}_{sensing}_{abs_orbit:06d}_N{baseline}",
            "s2:product_uri": product_uri, "s2:datastrip_id": datastrip_id,
            "s2:product_type": "S2MSI2A", "sat:orbit_state": "descending",
            "s2:datatake_type": "INS-NOBS",
            "s2:generation_time": proc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "sat:relative_orbit": site.s2_relative_orbit,
            "s2:water_percentage": 0.0,
            "s2:mean_solar_zenith": mean_zen, "s2:mean_solar_azimuth": mean_azi,
            "s2:processing_baseline": baseline,
            "s2:snow_ice_percentage": round(quality["SNOW_ICE_PERCENTAGE"], 6),
            "s2:vegetation_percentage": round(quality["VEGETATION_PERCENTAGE"], 6),
            "s2:thin_cirrus_percentage": round(quality["THIN_CIRRUS_PERCENTAGE"], 6),
            "s2:cloud_shadow_percentage": round(quality["CLOUD_SHADOW_PERCENTAGE"], 6),
            "s2:nodata_pixel_percentage": 0.0, "s2:unclassified_percentage": 0.0,
            "s2:dark_features_percentage": 0.0,
            "s2:not_vegetated_percentage": round(quality["NOT_VEGETATED_PERCENTAGE"], 6),
            "s2:degraded_msi_data_percentage": 0.0,
            "s2:high_proba_clouds_percentage": round(quality["HIGH_PROBA_CLOUDS_PERCENTAGE"], 6),
            "s2:reflectance_conversion_factor": reflectance_conversion_factor(day),
            "s2:medium_proba_clouds_percentage":
                round(quality["MEDIUM_PROBA_CLOUDS_PERCENTAGE"], 6),
            "s2:saturated_defective_pixel_percentage": 0.0,
        }
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "properties": props, "geometry": geometry, "links": [], "assets": assets,
            "bbox": bbox, "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
                "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
            "collection": COLLECTION,
        })
        s10 = scl[10]
        cloudy = np.isin(s10, (8, 9, 10))
        scenes.append({
            "item_id": item_id, "site": site.site_id, "datetime": props["datetime"],
            "date": day.strftime("%Y-%m-%d"), "platform": platform,
            "processing_baseline": baseline, "boa_offset_dn": offset,
            "eo_cloud_cover": props["eo:cloud_cover"], "fully_cloudy": sc["full"],
            "snow": bool((s10 == SCL_SNOW).any()),
            "cloud_fraction_1km": float(cloudy[circle].mean()),
            "shadow_fraction_1km": float((s10 == SCL_SHADOW)[circle].mean()),
            "snow_fraction_1km": float((s10 == SCL_SNOW)[circle].mean()),
            "clear_forest_fraction_1km": float(
                (np.isin(s10, (4, 5)) & forest)[circle].sum() / max(forest[circle].sum(), 1)),
            "greenness": green,
            "forest_ndvi": ndvi("broadleaf" if site.forest_clc == 311 else "conifer", green)
            if site.forest_clc != 313 else 0.5 * (ndvi("broadleaf", green)
                                                  + ndvi("conifer", green)),
            "sun_zenith": sza, "sun_azimuth": saa,
            "clouds": json.dumps([[round(v, 1) for v in d] for d in sc["discs"]]),
        })
        bl, bb, br, bt = static.block
        planted.append({
            "item_id": item_id, "site": site.site_id, "kind": "bright_block_outside_circle",
            "left": bl, "bottom": bb, "right": br, "top": bt,
            "x": (bl + br) / 2, "y": (bb + bt) / 2,
            "distance_m": float(np.hypot((bl + br) / 2 - site.tower_x,
                                         (bb + bt) / 2 - site.tower_y)),
            "reflectance": BRIGHT, "dn": int(to_dn(np.array([BRIGHT]), offset)[0]),
            "scl": SCL_VEG,
        })
    return items, scenes, planted


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
