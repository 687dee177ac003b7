"""The demo's Sentinel-2 landscape: spectra, static site fields and one scene's rendering.

Reflectance is a linear mix of a dormant and a peak spectrum per land-cover class, weighted
by the site's greenness of the day, times a static canopy texture. Clouds (discs, bright,
SCL 9 core / 8 rim), their shadows (cast away from the sun, dark, SCL 3), thin cirrus and
snow (bright visible, dark SWIR, SCL 11) are drawn per scene from a recorded random
scenario, so the world's truth can state where they are. Every scene also carries a 60 m
bright block outside the 1 km circle but inside the site grid, on forest, so that only the
circle can exclude it (the circle test).

A scene is rendered at 10 m on the site's render frame (:attr:`DemoSite.render_frame`), in
:data:`~gpp_cubes.demo.s2_items.BAND_NAMES` order; :mod:`gpp_cubes.demo.s2` cuts the tile
windows out of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .config import DemoSite, TileWindow
from .landscape import landcover, site_rng
from .s2_items import (
    BAND_NAMES,
    SCL,
)

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


def forest_ndvi(forest_clc: int, greenness: float) -> float:
    """Noise-free NDVI of the site's forest class (mixed forest: mean of both) [1]."""
    if forest_clc == 313:
        return 0.5 * (ndvi("broadleaf", greenness) + ndvi("conifer", greenness))
    return ndvi("broadleaf" if forest_clc == 311 else "conifer", greenness)


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


def _discs_mask(x: np.ndarray, y: np.ndarray, discs: list[tuple[float, float, float]],
                scale: float = 1.0) -> np.ndarray:
    m = np.zeros(np.broadcast_shapes(x.shape, y.shape), bool)
    for cx, cy, r in discs:
        m |= np.hypot(x - cx, y - cy) <= r * scale
    return m


def cast_shadows(discs: list[tuple[float, float, float]], sun_azimuth: float,
                 sun_zenith: float) -> list[tuple[float, float, float]]:
    """The shadow discs of cloud discs at :data:`CLOUD_HEIGHT_M`, cast away from the sun.

    Parameters
    ----------
    discs : list of (x, y, radius)
        Cloud discs [m, site CRS].
    sun_azimuth, sun_zenith : float
        Sun position [degrees].

    Returns
    -------
    list of (x, y, radius)
        Shadow discs on the ground [m].
    """
    sh = CLOUD_HEIGHT_M * np.tan(np.radians(sun_zenith))
    dx, dy = -sh * np.sin(np.radians(sun_azimuth)), -sh * np.cos(np.radians(sun_azimuth))
    return [(cx + dx, cy + dy, r) for cx, cy, r in discs]


def planted_cloud_masks(scene: Any, x: np.ndarray, y: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Where a scene's planted clouds and cloud shadows are, from its truth row.

    The geometry :func:`render_scene` draws: cloud discs (SCL 9 core and 8 rim) and thin
    cirrus discs (SCL 10) are cloud, everything is cloud in a fully cloudy scene; the cloud
    discs' shadows (:func:`cast_shadows`) outside any cloud are shadow. The planted bright
    block (:func:`bright_block`, outside the 1 km circle) is neither.

    Parameters
    ----------
    scene : mapping
        A row of the world's ``truth.s2_scenes``: ``clouds`` and ``cirrus`` (JSON lists of
        [x, y, radius] discs [m, site CRS]), ``fully_cloudy``, ``sun_azimuth`` and
        ``sun_zenith`` [degrees].
    x, y : numpy.ndarray
        Pixel centres [m, the site's UTM CRS], broadcastable (e.g. ``x[None, :]`` and
        ``y[:, None]``).

    Returns
    -------
    (cloud, shadow) : tuple of numpy.ndarray
        bool, the broadcast shape of ``x`` and ``y``; disjoint.
    """
    import json

    shape = np.broadcast_shapes(np.shape(x), np.shape(y))
    if bool(scene["fully_cloudy"]):
        return np.ones(shape, bool), np.zeros(shape, bool)
    discs = [tuple(d) for d in json.loads(scene["clouds"])]
    cirrus = [tuple(d) for d in json.loads(scene["cirrus"])]
    cloud = _discs_mask(x, y, discs) | _discs_mask(x, y, cirrus)
    shadow = _discs_mask(x, y, cast_shadows(discs, float(scene["sun_azimuth"]),
                                            float(scene["sun_zenith"]))) & ~cloud
    return cloud, shadow


def scenario(rng: np.random.Generator, site: DemoSite, day: pd.Timestamp, index: int
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


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of the last two axes (10 m -> 20 or 60 m)."""
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
    shadow_discs = cast_shadows(sc["discs"], sun_azimuth, sun_zenith)
    rng = np.random.default_rng(seed_key)
    snow_field = ndimage.gaussian_filter(rng.normal(size=static.clc.shape), 8.0)
    snow_field /= snow_field.std()
    for res in (10, 20):
        xr_, yr_ = frame.centres(res)
        shape = frame.shape(res)
        clc = static.clc if res == 10 else static.clc[::2, ::2]
        base = np.where(np.isin(clc, (112,)), SCL.NOT_VEG, SCL.VEG).astype(np.uint8)
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
        s[snow] = SCL.SNOW
        s[shadow] = SCL.SHADOW
        s[cirrus] = SCL.CIRRUS
        s[rim] = SCL.CLOUD_MED
        s[core] = SCL.CLOUD_HIGH
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
        scl[res][inb] = SCL.VEG
    inb10 = (x > bl) & (x < br) & (y > bb) & (y < bt)
    refl[:, inb10] = BRIGHT
    return refl, scl


def to_dn(refl: np.ndarray, offset: int) -> np.ndarray:
    """Reflectance -> L2A DN (uint16), 1..65535 so that 0 stays nodata."""
    return np.clip(np.rint(refl * 10000.0) + offset, 1, 65535).astype(np.uint16)
