"""Sentinel-2 L2A products of the demo: bands, SCL classes, radiometry and STAC items.

One item is one processing of one tile window: a COG per band at the band's native
resolution (10 m: B02, B03, B04, B08; 20 m: B05, B06, B07, B8A, B11, B12, SCL; 60 m: B01,
B09), ``uint16`` DN with nodata 0, ``DN = 10000 * reflectance`` plus the BOA offset of +1000
for processing baseline >= 04.00, and the scene classification (SCL, ``uint8``) with the
real classes 0 no data, 3 cloud shadow, 4 vegetation, 5 not vegetated, 8/9 cloud
medium/high probability, 10 thin cirrus, 11 snow.

Items carry the real band, ``SCL``, ``granule-metadata`` and ``product-metadata`` assets and
all properties of a Planetary Computer item; the AOT, WVP, visual, preview and other
metadata assets are left out (nothing in the pipeline reads them). The offset is stated
where ESA states it, in the product's ``MTD_MSIL2A.xml`` (``BOA_ADD_OFFSET_VALUES_LIST``);
the granule's ``MTD_TL.xml`` has none.

The asset, granule and item-document builders are shared by the demo world
(:func:`write_item`) and the hand-specified scenes of :mod:`gpp_cubes.demo.scenes`, so every
cubes-side test reads one item format.

References
----------
ESA (2021). Sentinel-2 Products Specification Document (PSD), S2-PDGS-TAS-DI-PSD, issue 14.9.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .cog import write_cog
from .config import TileWindow
from .granule import Tile, granule_metadata_xml, product_metadata_xml

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
SCL_TITLE = "Scene classfication map (SCL)"  # sic, Planetary Computer's title


class SCL:
    """The scene-classification (SCL) codes the demo writes (ESA L2A product definition)."""

    SHADOW, VEG, NOT_VEG, CLOUD_MED, CLOUD_HIGH, CIRRUS, SNOW = 3, 4, 5, 8, 9, 10, 11

BOA_OFFSET_DN = 1000


def boa_offset_dn(baseline: str) -> int:
    """DN added to ``10000 * reflectance`` by a processing baseline (-BOA_ADD_OFFSET)."""
    return BOA_OFFSET_DN if baseline >= "04.00" else 0


def reflectance_conversion_factor(day: pd.Timestamp) -> float:
    """Sun-Earth distance correction d^-2 of the day (ESA L1C formula) [1]."""
    doy = pd.Timestamp(day).dayofyear
    return float(1.0 / (1.0 - 0.01673 * np.cos(0.0172 * (doy - 4))) ** 2)


def _percent(a: np.ndarray) -> float:
    return float(100.0 * a.mean())


def scene_quality(s20: np.ndarray) -> dict[str, float]:
    """``Image_Content_QI`` percentages of a window's SCL [%] (classes over valid pixels)."""
    valid = s20 != 0
    n = max(int(valid.sum()), 1)

    def pct(m: np.ndarray) -> float:
        return float(100.0 * (m & valid).sum() / n)

    cloudy = pct(np.isin(s20, (SCL.CLOUD_MED, SCL.CLOUD_HIGH, SCL.CIRRUS)))
    return {
        "CLOUDY_PIXEL_PERCENTAGE": cloudy, "CLOUDY_PIXEL_OVER_LAND_PERCENTAGE": cloudy,
        "DEGRADED_MSI_DATA_PERCENTAGE": 0.0, "NODATA_PIXEL_PERCENTAGE": _percent(~valid),
        "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE": 0.0, "DARK_FEATURES_PERCENTAGE": 0.0,
        "CLOUD_SHADOW_PERCENTAGE": pct(s20 == SCL.SHADOW),
        "VEGETATION_PERCENTAGE": pct(s20 == SCL.VEG),
        "NOT_VEGETATED_PERCENTAGE": pct(s20 == SCL.NOT_VEG), "WATER_PERCENTAGE": 0.0,
        "UNCLASSIFIED_PERCENTAGE": 0.0,
        "MEDIUM_PROBA_CLOUDS_PERCENTAGE": pct(s20 == SCL.CLOUD_MED),
        "HIGH_PROBA_CLOUDS_PERCENTAGE": pct(s20 == SCL.CLOUD_HIGH),
        "THIN_CIRRUS_PERCENTAGE": pct(s20 == SCL.CIRRUS),
        "SNOW_ICE_PERCENTAGE": pct(s20 == SCL.SNOW),
    }


@dataclass(frozen=True)
class Processing:
    """One processing of an acquisition over one tile: the names of its files and item.

    Attributes
    ----------
    platform : str
        ``"Sentinel-2A"`` or ``"Sentinel-2B"``.
    time : pandas.Timestamp
        Sensing time (UTC).
    tile_id : str
        MGRS tile id.
    relative_orbit : int
        Relative orbit (1-143).
    baseline : str
        Processing baseline, e.g. ``"02.12"``.
    generated : pandas.Timestamp
        Generation time of the processing (UTC).
    """

    platform: str
    time: pd.Timestamp
    tile_id: str
    relative_orbit: int
    baseline: str
    generated: pd.Timestamp

    @property
    def pcode(self) -> str:
        return "S2A" if self.platform.endswith("A") else "S2B"

    @property
    def sensing(self) -> str:
        return self.time.strftime("%Y%m%dT%H%M%S")

    @property
    def abs_orbit(self) -> int:
        """Absolute orbit number (approximate: 14.3 orbits a day since launch)."""
        return int((self.time - pd.Timestamp("2015-06-23")).days * 14.3) + 1

    @property
    def item_id(self) -> str:
        """Planetary Computer's item id."""
        return (f"{self.pcode}_MSIL2A_{self.sensing}_R{self.relative_orbit:03d}_"
                f"T{self.tile_id}_{self.generated.strftime('%Y%m%dT%H%M%S')}")

    @property
    def granule_id(self) -> str:
        gen = self.generated.strftime("%Y%m%dT%H%M%S")
        return (f"{self.pcode}_OPER_MSI_L2A_TL_DEMO_{gen}_A{self.abs_orbit:06d}_"
                f"T{self.tile_id}_N{self.baseline}")

    @property
    def datastrip_id(self) -> str:
        gen = self.generated.strftime("%Y%m%dT%H%M%S")
        return f"{self.pcode}_OPER_MSI_L2A_DS_DEMO_{gen}_S{self.sensing}_N{self.baseline}"

    @property
    def datatake_id(self) -> str:
        return f"G{self.pcode}_{self.sensing}_{self.abs_orbit:06d}_N{self.baseline}"

    @property
    def product_uri(self) -> str:
        gen = self.generated.strftime("%Y%m%dT%H%M%S")
        return (f"{self.pcode}_MSIL2A_{self.sensing}_N{self.baseline.replace('.', '')}_"
                f"R{self.relative_orbit:03d}_T{self.tile_id}_{gen}.SAFE")


def data_asset(href: str, band: str, window: TileWindow) -> dict[str, Any]:
    """The asset of a band (or ``"SCL"``) written on a window, as Planetary Computer's."""
    if band == "SCL":
        res, title, extra = 20, SCL_TITLE, {}
    else:
        res, title, common, wl, fwhm = BANDS[band]
        eo = {"name": band, "description": title.rsplit(" - ", 1)[0],
              "center_wavelength": wl, "full_width_half_max": fwhm}
        if common:
            eo["common_name"] = common
        extra = {"eo:bands": [eo]}
    rows, cols = window.shape(res)
    t = window.transform(res)
    return {
        "href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "title": title, "gsd": float(res), **extra,
        "proj:bbox": list(window.bounds), "proj:shape": [rows, cols],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f], "roles": ["data"],
    }


def metadata_asset(href: str, title: str) -> dict[str, Any]:
    """An XML metadata asset (``granule-metadata``, ``product-metadata``)."""
    return {"href": href, "type": "application/xml", "title": title, "roles": ["metadata"]}


def write_band(path: Path, data: np.ndarray, band: str, window: TileWindow) -> None:
    """Write a band's DN (or the SCL) on a window as a COG with nodata 0."""
    res = 20 if band == "SCL" else BANDS[band][0]
    crs = f"EPSG:{window.epsg}"
    if band == "SCL":
        write_cog(path, data, transform=window.transform(20), crs=crs, nodata=0,
                  blocksize=512)
    else:
        write_cog(path, data, transform=window.transform(res), crs=crs, nodata=0,
                  blocksize=256 if res == 10 else 512, overview_resampling="average")


def granule_xml(tile: Tile, proc: Processing, *, viewing: tuple[str, str],
                quality: dict[str, float],
                sun: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """The granule's ``MTD_TL.xml`` of a processing (sun grids computed unless given)."""
    return granule_metadata_xml(
        tile=tile, sensing_time=proc.time, tile_id_l2a=proc.granule_id,
        tile_id_l1c=proc.granule_id.replace("L2A", "L1C"), datastrip_id=proc.datastrip_id,
        archiving_time=proc.generated, viewing_xml=viewing, quality=quality, sun_grids=sun)


def mean_sun(xml: str) -> tuple[float, float]:
    """Mean sun zenith and azimuth [deg] stated in a granule's ``MTD_TL.xml``."""
    m = re.search(r"<Mean_Sun_Angle>\s*<ZENITH_ANGLE[^>]*>([^<]+)</ZENITH_ANGLE>\s*"
                  r"<AZIMUTH_ANGLE[^>]*>([^<]+)</AZIMUTH_ANGLE>", xml)
    assert m is not None
    return float(m.group(1)), float(m.group(2))


def item_document(item_id: str, proc: Processing, *, epsg: int, quality: dict[str, float],
                  granule: str, geometry: dict[str, Any], bbox: list[float],
                  assets: dict[str, Any]) -> dict[str, Any]:
    """A Planetary Computer ``sentinel-2-l2a`` item (properties from the processing, the
    SCL quality percentages and the granule's mean sun angle)."""
    mean_zen, mean_azi = mean_sun(granule)
    props = {
        "datetime": proc.time.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
        "platform": proc.platform, "proj:epsg": epsg, "instruments": ["msi"],
        "s2:mgrs_tile": proc.tile_id, "constellation": "Sentinel 2",
        "s2:granule_id": proc.granule_id,
        "eo:cloud_cover": round(quality["CLOUDY_PIXEL_PERCENTAGE"], 6),
        "s2:datatake_id": proc.datatake_id,
        "s2:product_uri": proc.product_uri, "s2:datastrip_id": proc.datastrip_id,
        "s2:product_type": "S2MSI2A", "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": proc.generated.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "sat:relative_orbit": proc.relative_orbit,
        "s2:water_percentage": 0.0,
        "s2:mean_solar_zenith": mean_zen, "s2:mean_solar_azimuth": mean_azi,
        "s2:processing_baseline": proc.baseline,
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
        "s2:reflectance_conversion_factor": reflectance_conversion_factor(
            proc.time.normalize()),
        "s2:medium_proba_clouds_percentage":
            round(quality["MEDIUM_PROBA_CLOUDS_PERCENTAGE"], 6),
        "s2:saturated_defective_pixel_percentage": 0.0,
    }
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "properties": props, "geometry": geometry, "links": [], "assets": assets,
        "bbox": bbox, "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
            "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
        "collection": COLLECTION,
    }


def write_item(root: Path, window: TileWindow, proc: Processing, *,
               dn: dict[str, np.ndarray], scl: np.ndarray, quality: dict[str, float],
               viewing: tuple[str, str], sun: tuple[np.ndarray, np.ndarray],
               geometry: dict[str, Any], bbox: list[float]) -> dict[str, Any]:
    """Write one item's COGs, granule and product metadata in the SAFE layout under
    ``root/sentinel-2-l2a/<item id>/``; returns the STAC item (hrefs relative to ``root``).

    ``dn`` holds each band's final ``uint16`` DN (offset applied, 0 where no data).
    """
    base = f"{COLLECTION}/{proc.item_id}"
    stem = f"T{proc.tile_id}_{proc.sensing}"
    assets: dict[str, Any] = {}
    image_files = []
    for band in (*BAND_NAMES, "SCL"):
        res = 20 if band == "SCL" else BANDS[band][0]
        rel = f"IMG_DATA/R{res}m/{stem}_{band}_{res}m.tif"
        write_band(root / base / rel, scl if band == "SCL" else dn[band], band, window)
        assets[band] = data_asset(f"{base}/{rel}", band, window)
        image_files.append(rel[:-4])
    xml = granule_xml(window.tile, proc, viewing=viewing, quality=quality, sun=sun)
    rel = f"GRANULE/L2A_T{proc.tile_id}_A{proc.abs_orbit:06d}_{proc.sensing}/MTD_TL.xml"
    (root / base / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / base / rel).write_text(xml, encoding="utf-8")
    assets["granule-metadata"] = metadata_asset(f"{base}/{rel}", "Granule metadata")
    (root / base / "MTD_MSIL2A.xml").write_text(product_metadata_xml(
        product_uri=proc.product_uri, processing_baseline=proc.baseline,
        sensing_time=proc.time, generation_time=proc.generated,
        datatake_id=proc.datatake_id, spacecraft=proc.platform,
        relative_orbit=proc.relative_orbit, granule_id=proc.granule_id,
        datastrip_id=proc.datastrip_id, image_files=image_files,
        boa_add_offset=-boa_offset_dn(proc.baseline),
        reflectance_u=reflectance_conversion_factor(proc.time.normalize())),
        encoding="utf-8")
    assets["product-metadata"] = metadata_asset(f"{base}/MTD_MSIL2A.xml", "Product metadata")
    return item_document(proc.item_id, proc, epsg=window.epsg, quality=quality, granule=xml,
                         geometry=geometry, bbox=bbox, assets=assets)


def collection() -> dict[str, Any]:
    """The ``sentinel-2-l2a`` collection (Planetary Computer's id, trimmed description)."""
    return collection_document(
        COLLECTION, "Sentinel-2 Level-2A",
        "Demo-world Sentinel-2 L2A surface reflectance in Planetary Computer's item schema "
        "(synthetic data; see gpp_cubes.demo).",
        ["https://stac-extensions.github.io/eo/v1.0.0/schema.json"])


def collection_document(cid: str, title: str, description: str, extensions: list[str]
                        ) -> dict[str, Any]:
    """A STAC collection of the demo (global extent, open-ended from 2015-06-27)."""
    return {
        "type": "Collection", "stac_version": "1.0.0", "id": cid, "title": title,
        "description": description, "license": "proprietary", "links": [],
        "stac_extensions": extensions,
        "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                   "temporal": {"interval": [["2015-06-27T10:25:31Z", None]]}},
    }
