"""Sentinel-2 tile naming, granule (``MTD_TL.xml``) and product (``MTD_MSIL2A.xml``)
metadata in ESA's L2A format.

The demo scenes are small windows of a full 109.8 km MGRS tile. The granule metadata
describe the full tile exactly as ESA's ``MTD_TL.xml`` does (``Tile_Geocoding`` with the 10,
20 and 60 m sizes and upper-left corners, ``Tile_Angles`` with the 23 x 23 sun angle grid at
5000 m steps, the mean sun angle and per-band, per-detector viewing incidence angle grids),
so the NBAR code reads them through ``sen2nbar.c_factor.c_factor_from_metadata`` unchanged.

Sun angles are computed for the scene's sensing time at every grid node with the NREL SPA
(:func:`gpp_cubes.sensors.clearsky.solar_position`). Viewing angles follow a simple push-broom
geometry: a straight north-south ground track (in the site's UTM CRS, so one track on the
ground for the tiles of two zones) at a fixed offset per relative orbit, the view zenith
``atan(d / 786 km)`` of the across-track distance ``d``, the view azimuth pointing
across-track towards the satellite, and 12 staggered detectors of 24.2 km each across the
290 km swath (NaN outside a detector's strip and beyond the swath, as in real files).

The product metadata state the radiometry where ESA states it: the quantification value and,
from processing baseline 04.00 on, the ``BOA_ADD_OFFSET`` of every band.

References
----------
ESA (2021). Sentinel-2 Products Specification Document (PSD), S2-PDGS-TAS-DI-PSD, issue 14.9.
US Army (1989). TM 8358.1, Datums, ellipsoids, grids and grid reference systems (MGRS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
from pyproj import Transformer

from gpp_cubes.sites.grid import utm_epsg

TILE_SIZE_M = 109800.0
ANGLE_STEP_M = 5000.0
ANGLE_NODES = 23
ORBIT_ALTITUDE_M = 786000.0
SWATH_M = 290000.0
N_DETECTORS = 12
#: bandId -> band name, the order of ESA's metadata (B10 exists in L1C/L2A angle grids).
BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
            "B11", "B12")
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd"

_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWXX"
_COL_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # set 0 (= 3, 6), 1 (= 1, 4), 2 (= 2, 5)
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


@dataclass(frozen=True)
class Tile:
    """An MGRS-named Sentinel-2 tile: its id, CRS and upper-left corner.

    Attributes
    ----------
    tile_id : str
        MGRS tile id, e.g. ``"32UPB"``.
    epsg : int
        UTM EPSG code.
    ulx, uly : float
        Upper-left corner [m, UTM], on the 60 m lattice.
    """

    tile_id: str
    epsg: int
    ulx: float
    uly: float

    @property
    def utm_zone_name(self) -> str:
        hemi = "N" if self.epsg < 32700 else "S"
        return f"WGS84 / UTM zone {self.epsg % 100:02d}{hemi}"


def mgrs_tile(latitude: float, longitude: float, zone: int | None = None) -> Tile:
    """The Sentinel-2 (MGRS 100 km square) tile containing a point, well inside it.

    The tile's upper-left corner is the square's north-west corner moved onto the 60 m
    lattice (west by ``easting mod 60``, north up to the next multiple of 60 m), as in real
    Sentinel-2 tiles (e.g. 399960 / 6800040 for 06VVN).

    Parameters
    ----------
    latitude, longitude : float
        The point [degrees, WGS84].
    zone : int, optional
        UTM zone (1-60) of the tile; default the zone containing the point. A neighbouring
        zone gives that zone's tile over the point: Sentinel-2 tiles are full 109.8 km
        squares, so those at a zone's edge reach tens of km beyond it (e.g. 34V tiles cover
        Hyytiala at 24.29 E, east of the 34/35 boundary at 24 E).
    """
    if zone is None:
        epsg = utm_epsg(latitude, longitude)
        zone = epsg % 100
    else:
        if not 1 <= zone <= 60:
            raise ValueError(f"UTM zone {zone} is not in 1..60")
        epsg = (32600 if latitude >= 0 else 32700) + zone
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    e, n = to_utm.transform(longitude, latitude)
    band = _LAT_BANDS[min(int((latitude + 80) // 8), len(_LAT_BANDS) - 1)]
    col = int(e // 100000)
    row = int(n // 100000)
    # Tiles overlap by 9.8 km (east and south of their 100 km square): near the square's
    # west or north edge, take the neighbouring tile in which the point lies well inside,
    # so the 5 km angle grids surround it.
    if e - col * 100000 < TILE_SIZE_M - 100000 and col > 1:
        col -= 1
    if (row + 1) * 100000 - n < TILE_SIZE_M - 100000:
        row += 1
    if not 1 <= col <= 8:
        raise ValueError(f"({latitude}, {longitude}) is {e / 1000:.0f} km east in UTM zone "
                         f"{zone}: no MGRS column there")
    col_letter = _COL_SETS[zone % 3][col - 1]
    row_letter = _ROW_LETTERS[(row + (5 if zone % 2 == 0 else 0)) % 20]
    e0 = col * 100000
    n_top = (row + 1) * 100000
    ulx = e0 - e0 % 60
    uly = n_top + (-n_top) % 60
    return Tile(f"{zone:02d}{band}{col_letter}{row_letter}", epsg, float(ulx), float(uly))


def _values_list(grid: np.ndarray) -> str:
    # formatting Python floats (tolist) is 4x faster than numpy scalars one by one
    rows = "\n".join(
        "            <VALUES>" + " ".join([f"{v:.6g}" if math.isfinite(v) else "NaN"
                                           for v in row]) + "</VALUES>"
        for row in np.asarray(grid, dtype=float).tolist()
    )
    return f"          <Values_List>\n{rows}\n          </Values_List>"


def _angle_block(tag: str, zen: np.ndarray, azi: np.ndarray, attrs: str = "") -> str:
    parts = [f"      <{tag}{attrs}>"]
    for name, grid in (("Zenith", zen), ("Azimuth", azi)):
        parts += [
            f"        <{name}>",
            f'          <COL_STEP unit="m">{int(ANGLE_STEP_M)}</COL_STEP>',
            f'          <ROW_STEP unit="m">{int(ANGLE_STEP_M)}</ROW_STEP>',
            _values_list(grid),
            f"        </{name}>",
        ]
    parts.append(f"      </{tag}>")
    return "\n".join(parts)


def node_coordinates(tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """UTM x and y [m] of the 23 x 23 angle-grid nodes (row-major, north to south)."""
    x = tile.ulx + ANGLE_STEP_M * np.arange(ANGLE_NODES)
    y = tile.uly - ANGLE_STEP_M * np.arange(ANGLE_NODES)
    return np.meshgrid(x, y)


def sun_angle_grids(tile: Tile, time: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """Sun zenith and azimuth [degrees] at the tile's angle-grid nodes at ``time`` (UTC)."""
    zen, azi = sun_angle_grids_many(tile, [time])
    return zen[0], azi[0]


def sun_angle_grids_many(tile: Tile, times: Sequence[pd.Timestamp]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Sun zenith and azimuth [degrees] at the angle-grid nodes, one grid per time.

    Returns
    -------
    zenith, azimuth : numpy.ndarray
        (time, 23, 23) geometric (not refracted) angles, as in ESA's metadata.
    """
    from scipy.ndimage import map_coordinates

    from gpp_cubes.sensors.clearsky import solar_position

    # SPA at every 4th node (7 x 7 of 23 x 23: nodes 0, 4, ..., 20 and 22), bilinear in
    # between: sun angles are smooth over 110 km (interpolation error < 0.001 deg) and the
    # SPA is the costliest step of writing a scene; all times in one call (its fixed cost,
    # the delta-T estimate, dominates a 49-point call).
    coarse = np.array([0, 4, 8, 12, 16, 20, 22])
    xx, yy = node_coordinates(tile)
    to_geo = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    cx, cy = np.meshgrid(xx[0, coarse], yy[coarse, 0])
    lon, lat = to_geo.transform(cx.ravel(), cy.ravel())
    n = len(times)
    stamps = pd.DatetimeIndex([pd.Timestamp(t) for t in times]).repeat(lon.size)
    sp = solar_position(stamps, np.tile(lat, n), np.tile(lon, n), 0.0, pressure_pa=101325.0)
    fine = np.interp(np.arange(ANGLE_NODES), coarse, np.arange(len(coarse)))
    rows, cols = np.meshgrid(fine, fine, indexing="ij")
    out = []
    for name in ("zenith", "azimuth"):
        grids = sp[name].to_numpy().reshape(n, *cx.shape)
        out.append(np.array([map_coordinates(g, [rows, cols], order=1, mode="nearest")
                             for g in grids]).reshape(n, ANGLE_NODES, ANGLE_NODES))
    return out[0], out[1]


def viewing_angles_xml(tile: Tile, nadir_offset_m: float = 0.0, *,
                       track_x: float | None = None, track_epsg: int | None = None,
                       edge_offsets_m: Mapping[str, float] | None = None) -> tuple[str, str]:
    """The ``Viewing_Incidence_Angles_Grids`` elements and the mean viewing angle list.

    The ground track is a north-south line: by default at ``nadir_offset_m`` east of the
    tile centre in the tile's CRS, or at ``x = track_x`` in the CRS ``track_epsg`` (one
    track on the ground for the tiles of two UTM zones that a datatake covers). Nodes more
    than one grid step beyond a band's swath edge are NaN in every detector's grid, as in
    real files of scenes at a swath edge.

    Parameters
    ----------
    tile : Tile
        The tile.
    nadir_offset_m : float, default 0
        East offset of the ground track from the tile centre [m] (used without ``track_x``).
    track_x : float, optional
        Easting of the ground track in ``track_epsg`` [m].
    track_epsg : int, optional
        CRS of ``track_x`` (default the tile's).
    edge_offsets_m : mapping of str to float, optional
        Band name -> outward shift of that band's swath edges [m] (detector footprints of
        the bands differ by up to a few hundred metres at the swath edge).
    """
    xx, yy = node_coordinates(tile)
    if track_x is None:
        d = xx - (tile.ulx + TILE_SIZE_M / 2 + nadir_offset_m)
    else:
        xf = xx
        if track_epsg is not None and track_epsg != tile.epsg:
            xf, _ = Transformer.from_crs(tile.epsg, track_epsg, always_xy=True).transform(xx, yy)
        d = np.asarray(xf) - track_x  # across-track distance, east positive
    rows = np.arange(ANGLE_NODES)[:, None] * np.ones((1, ANGLE_NODES))
    offsets = edge_offsets_m or {}
    grids, means = [], []
    for band_id, band in enumerate(BAND_IDS):
        half = SWATH_M / 2 + offsets.get(band, 0.0)
        det_width = 2 * half / N_DETECTORS  # detectors 1..12 west to east
        # focal-plane parallax: bands look slightly fore/aft, odd/even detectors staggered
        zen_all = np.degrees(np.arctan(np.abs(d) / ORBIT_ALTITUDE_M)) * 1.03 + 0.03 * band_id
        azi_all = np.where(d >= 0, 284.0, 104.0) - 0.04 * rows + 0.3 * band_id / 12
        zen_b, azi_b = [], []
        for k in range(1, N_DETECTORS + 1):
            # a detector's grid also holds the nodes one step beyond its edges (overlap)
            lo = -half + (k - 1) * det_width - ANGLE_STEP_M
            hi = -half + k * det_width + ANGLE_STEP_M
            inside = (d >= lo) & (d < hi)
            if not inside.any():
                continue
            stagger = 0.02 if k % 2 else -0.02
            zen = np.where(inside, zen_all + stagger, np.nan)
            azi = np.where(inside, azi_all, np.nan)
            zen_b.append(zen)
            azi_b.append(azi)
            grids.append(_angle_block("Viewing_Incidence_Angles_Grids", np.round(zen, 4),
                                      np.round(azi, 3),
                                      f' bandId="{band_id}" detectorId="{k}"'))
        if not zen_b:
            raise ValueError(f"tile {tile.tile_id} lies wholly outside the swath")
        zen_m = float(np.nanmean(np.array(zen_b)))
        azi_m = float(np.nanmean(np.array(azi_b)))
        means.append(
            f'        <Mean_Viewing_Incidence_Angle bandId="{band_id}">\n'
            f'          <ZENITH_ANGLE unit="deg">{zen_m!r}</ZENITH_ANGLE>\n'
            f'          <AZIMUTH_ANGLE unit="deg">{azi_m!r}</AZIMUTH_ANGLE>\n'
            f"        </Mean_Viewing_Incidence_Angle>"
        )
    mean_list = ("      <Mean_Viewing_Incidence_Angle_List>\n" + "\n".join(means)
                 + "\n      </Mean_Viewing_Incidence_Angle_List>")
    return "\n".join(grids), mean_list


def granule_metadata_xml(*, tile: Tile, sensing_time: pd.Timestamp, tile_id_l2a: str,
                         tile_id_l1c: str, datastrip_id: str, archiving_time: pd.Timestamp,
                         viewing_xml: tuple[str, str], quality: dict[str, float],
                         sun_grids: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """The text of an L2A ``MTD_TL.xml``.

    Parameters
    ----------
    tile : Tile
        The tile (CRS, upper-left corner).
    sensing_time : pandas.Timestamp
        Sensing time (UTC).
    tile_id_l2a, tile_id_l1c, datastrip_id : str
        ESA granule and datastrip identifiers.
    archiving_time : pandas.Timestamp
        Archiving time (UTC).
    viewing_xml : tuple of str
        Output of :func:`viewing_angles_xml`.
    quality : dict
        ``Image_Content_QI`` element name -> percentage [%].
    sun_grids : tuple of numpy.ndarray, optional
        Sun zenith and azimuth grids [degrees] (23 x 23) if already computed (see
        :func:`sun_angle_grids_many`); computed for ``sensing_time`` otherwise.
    """
    zen, azi = sun_grids if sun_grids is not None else sun_angle_grids(tile, sensing_time)
    sizes = "\n".join(
        f'      <Size resolution="{r}">\n        <NROWS>{int(TILE_SIZE_M / r)}</NROWS>\n'
        f"        <NCOLS>{int(TILE_SIZE_M / r)}</NCOLS>\n      </Size>" for r in (10, 20, 60))
    geopos = "\n".join(
        f'      <Geoposition resolution="{r}">\n        <ULX>{tile.ulx:.0f}</ULX>\n'
        f"        <ULY>{tile.uly:.0f}</ULY>\n        <XDIM>{r}</XDIM>\n"
        f"        <YDIM>-{r}</YDIM>\n      </Geoposition>" for r in (10, 20, 60))
    qi = "\n".join(f"      <{k}>{v:.6f}</{k}>" for k, v in quality.items())
    t = pd.Timestamp(sensing_time)
    schema = f"{NAMESPACE} S2_PDI_Level-2A_Tile_Metadata.xsd"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_Tile_ID xmlns:n1="{NAMESPACE}" xmlns:xsi="{XSI}" xsi:schemaLocation="{schema}">
  <n1:General_Info>
    <L1C_TILE_ID metadataLevel="Brief">{escape(tile_id_l1c)}</L1C_TILE_ID>
    <TILE_ID metadataLevel="Brief">{escape(tile_id_l2a)}</TILE_ID>
    <DATASTRIP_ID metadataLevel="Standard">{escape(datastrip_id)}</DATASTRIP_ID>
    <DOWNLINK_PRIORITY metadataLevel="Standard">NOMINAL</DOWNLINK_PRIORITY>
    <SENSING_TIME metadataLevel="Standard">{t.strftime("%Y-%m-%dT%H:%M:%S.%f")}Z</SENSING_TIME>
    <Archiving_Info metadataLevel="Expertise">
      <ARCHIVING_CENTRE>DEMO</ARCHIVING_CENTRE>
      <ARCHIVING_TIME>{pd.Timestamp(archiving_time).strftime("%Y-%m-%dT%H:%M:%S.%f")}Z</ARCHIVING_TIME>
    </Archiving_Info>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>{tile.utm_zone_name}</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{tile.epsg}</HORIZONTAL_CS_CODE>
{sizes}
{geopos}
    </Tile_Geocoding>
    <Tile_Angles metadataLevel="Standard">
{_angle_block("Sun_Angles_Grid", np.round(zen, 4), np.round(azi, 4))}
      <Mean_Sun_Angle>
        <ZENITH_ANGLE unit="deg">{float(zen.mean())!r}</ZENITH_ANGLE>
        <AZIMUTH_ANGLE unit="deg">{float(azi.mean())!r}</AZIMUTH_ANGLE>
      </Mean_Sun_Angle>
{viewing_xml[0]}
{viewing_xml[1]}
    </Tile_Angles>
  </n1:Geometric_Info>
  <n1:Quality_Indicators_Info metadataLevel="Standard">
    <Image_Content_QI>
{qi}
    </Image_Content_QI>
  </n1:Quality_Indicators_Info>
</n1:Level-2A_Tile_ID>
"""


#: ``Product_Info`` namespace of the L2A user product metadata (``MTD_MSIL2A.xml``).
PRODUCT_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"


def product_metadata_xml(*, product_uri: str, processing_baseline: str,
                         sensing_time: pd.Timestamp, generation_time: pd.Timestamp,
                         datatake_id: str, spacecraft: str, relative_orbit: int,
                         granule_id: str, datastrip_id: str, image_files: Sequence[str],
                         boa_add_offset: int, reflectance_u: float) -> str:
    """The text of an L2A user product's ``MTD_MSIL2A.xml`` (the elements a reader needs).

    Radiometry is stated where ESA states it, in ``Product_Image_Characteristics``: the
    NODATA (0) and SATURATED (65535) special values, ``BOA_QUANTIFICATION_VALUE`` 10000
    and, from processing baseline 04.00 on, ``BOA_ADD_OFFSET_VALUES_LIST`` (one value per
    band id, 0-12), so reflectance = (DN + BOA_ADD_OFFSET) / 10000. Products of earlier
    baselines have no such list (offset 0). The granule's ``MTD_TL.xml`` holds none of this.

    Parameters
    ----------
    product_uri : str
        SAFE name, e.g. ``S2B_MSIL2A_20190629T212529_N0500_R043_T06VVN_20230525T080531.SAFE``.
    processing_baseline : str
        e.g. ``"02.12"``, ``"05.00"``.
    sensing_time, generation_time : pandas.Timestamp
        Datatake sensing start and product generation time (UTC).
    datatake_id : str
        e.g. ``GS2B_20190629T212529_012081_N05.00``.
    spacecraft : str
        ``"Sentinel-2A"`` or ``"Sentinel-2B"``.
    relative_orbit : int
        Relative orbit (1-143).
    granule_id, datastrip_id : str
        Identifiers of the product's one granule and its datastrip.
    image_files : sequence of str
        ``IMAGE_FILE`` entries (paths inside the SAFE without extension).
    boa_add_offset : int
        BOA_ADD_OFFSET [DN] of every band (-1000 from baseline 04.00, else 0: not written).
    reflectance_u : float
        Sun-Earth distance correction ``U`` of the day [1].
    """
    def iso(t: pd.Timestamp) -> str:
        return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    files = "\n".join(f"            <IMAGE_FILE>{escape(f)}</IMAGE_FILE>" for f in image_files)
    offsets = ""
    if processing_baseline >= "04.00":
        rows = "\n".join(f'        <BOA_ADD_OFFSET band_id="{i}">{boa_add_offset}</BOA_ADD_OFFSET>'
                         for i in range(len(BAND_IDS)))
        offsets = (f"      <BOA_ADD_OFFSET_VALUES_LIST>\n{rows}\n"
                   "      </BOA_ADD_OFFSET_VALUES_LIST>\n")
    specials = "".join(
        f"      <Special_Values>\n        <SPECIAL_VALUE_TEXT>{t}</SPECIAL_VALUE_TEXT>\n"
        f"        <SPECIAL_VALUE_INDEX>{v}</SPECIAL_VALUE_INDEX>\n      </Special_Values>\n"
        for t, v in (("NODATA", 0), ("SATURATED", 65535)))
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="{PRODUCT_NAMESPACE}" xmlns:xsi="{XSI}" \
xsi:schemaLocation="{PRODUCT_NAMESPACE}">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{iso(sensing_time)}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{iso(sensing_time)}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{escape(product_uri)}</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{escape(processing_baseline)}</PROCESSING_BASELINE>
      <GENERATION_TIME>{iso(generation_time)}</GENERATION_TIME>
      <Datatake datatakeIdentifier="{escape(datatake_id)}">
        <SPACECRAFT_NAME>{escape(spacecraft)}</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{iso(sensing_time)}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>{relative_orbit}</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="{escape(datastrip_id)}" \
granuleIdentifier="{escape(granule_id)}" imageFormat="GeoTIFF">
{files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
{specials}      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
{offsets}      <Reflectance_Conversion>
        <U>{reflectance_u!r}</U>
      </Reflectance_Conversion>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""
