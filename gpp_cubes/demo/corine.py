"""A CORINE Land Cover 2018-like raster for the demo sites.

One COG per site in ETRS89-LAEA (EPSG:3035) at 100 m on the real CLC grid (origin on
multiples of 100 m), ``uint16`` three-digit CLC codes (as in the Earth Engine export
``COPERNICUS/CORINE/V20/100m/2018``; the EEA GeoTIFF stores GRID_CODE 1-44 instead, which
:func:`gpp_cubes.sites.corine.to_clc_codes` also reads), nodata 0, covering the demo area of the
site; and a VRT mosaic of all of them (``CLC2018_demo.vrt``) standing for the single
Europe-wide raster. Classes come from the same land-cover patches as the Sentinel-2
scenes (forest 311/312/313 by IGBP, grassland 231, cropland 211, urban 112), evaluated at
the 100 m pixel centres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import Transformer

from .cog import write_cog
from .config import DemoSite
from .landscape import landcover

RES = 100.0
CRS = "EPSG:3035"


def site_raster(site: DemoSite, margin_m: float = 500.0
                ) -> tuple[np.ndarray, Affine, tuple[float, float, float, float]]:
    """CLC codes of a site on the 100 m EPSG:3035 grid; (codes, transform, bounds)."""
    to_laea = Transformer.from_crs(site.epsg, 3035, always_xy=True)
    left, bottom, right, top = site.bounds
    xs, ys = to_laea.transform([left - margin_m, right + margin_m, right + margin_m,
                                left - margin_m],
                               [bottom - margin_m, bottom - margin_m, top + margin_m,
                                top + margin_m])
    x0, x1 = np.floor(min(xs) / RES) * RES, np.ceil(max(xs) / RES) * RES
    y0, y1 = np.floor(min(ys) / RES) * RES, np.ceil(max(ys) / RES) * RES
    cols, rows = round((x1 - x0) / RES), round((y1 - y0) / RES)
    cx = x0 + RES * (np.arange(cols) + 0.5)
    cy = y1 - RES * (np.arange(rows) + 0.5)
    gx, gy = np.meshgrid(cx, cy)
    to_utm = Transformer.from_crs(3035, site.epsg, always_xy=True)
    ux, uy = to_utm.transform(gx, gy)
    codes = landcover(ux, uy, site.forest_clc, site.patches)
    return codes, Affine(RES, 0.0, x0, 0.0, -RES, y1), (x0, y0, x1, y1)


def write_corine(root: Path, sites: tuple[DemoSite, ...]) -> Path:
    """Write ``corine/CLC2018_<SITE>_100m.tif`` per site and the ``CLC2018_demo.vrt`` mosaic."""
    out = root / "corine"
    parts = []
    for s in sites:
        codes, transform, bounds = site_raster(s)
        path = out / f"CLC2018_{s.site_id}_100m.tif"
        write_cog(path, codes, transform=transform, crs=CRS, nodata=0, blocksize=512)
        parts.append((path.name, bounds, codes.shape))
    x0 = min(b[0] for _, b, _ in parts)
    y0 = min(b[1] for _, b, _ in parts)
    x1 = max(b[2] for _, b, _ in parts)
    y1 = max(b[3] for _, b, _ in parts)
    width, height = round((x1 - x0) / RES), round((y1 - y0) / RES)
    from pyproj import CRS as PCRS

    wkt = PCRS.from_epsg(3035).to_wkt().replace("&", "&amp;").replace("<", "&lt;")
    sources = []
    for name, (bx0, _, _, by1), (rows, cols) in parts:
        xoff, yoff = round((bx0 - x0) / RES), round((y1 - by1) / RES)
        sources.append(
            f'    <SimpleSource>\n'
            f'      <SourceFilename relativeToVRT="1">{name}</SourceFilename>\n'
            f'      <SourceBand>1</SourceBand>\n'
            f'      <SrcRect xOff="0" yOff="0" xSize="{cols}" ySize="{rows}"/>\n'
            f'      <DstRect xOff="{xoff}" yOff="{yoff}" xSize="{cols}" ySize="{rows}"/>\n'
            f'    </SimpleSource>')
    vrt = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
           f'  <SRS>{wkt}</SRS>\n'
           f'  <GeoTransform>{float(x0)!r}, {RES!r}, 0.0, {float(y1)!r}, 0.0, {-RES!r}'
           '</GeoTransform>\n'
           f'  <VRTRasterBand dataType="UInt16" band="1">\n'
           f'    <NoDataValue>0</NoDataValue>\n' + "\n".join(sources) +
           '\n  </VRTRasterBand>\n</VRTDataset>\n')
    path = out / "CLC2018_demo.vrt"
    path.write_text(vrt)
    return path
