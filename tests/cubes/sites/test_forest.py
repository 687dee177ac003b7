"""The CORINE forest mask on the site grid."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import from_origin


# ---------------------------------------------------------------------------- forest
def test_forest_mask_from_corine_raster(tmp_path, mini_world):
    from gpp_cubes.sites.forest import forest_mask

    g = mini_world.grid
    left, bottom, right, top = g.bounds
    # 100 m CLC raster in the grid's CRS: west half 312 (coniferous), east half 211 (arable)
    ncols, nrows = round((right - left + 400) / 100), round((top - bottom + 400) / 100)
    codes = np.full((nrows, ncols), 211, np.uint16)
    codes[:, : ncols // 2] = 312
    path = tmp_path / "clc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=ncols, height=nrows, count=1,
                       dtype="uint16", crs=f"EPSG:{g.epsg}", nodata=0,
                       transform=from_origin(left - 200, top + 200, 100, 100)) as dst:
        dst.write(codes, 1)
    m = forest_mask(g, path)
    assert m.dtype == bool and m.shape == g.shape
    boundary = left - 200 + 100 * (ncols // 2)
    assert np.array_equal(m.values, np.broadcast_to(g.x[None, :] < boundary, g.shape))
