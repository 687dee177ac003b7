"""Spatial reductions: circle/annulus masks, masked means, the clear rule."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gpp_cubes.reduce import apply_clear_rule, clear_fraction, masked_mean, radial_mask


# ---------------------------------------------------------------------------- reduce
def test_radial_mask_circle_and_annulus(mini_world):
    g = mini_world.grid
    d = g.distance_to_tower()
    m = radial_mask(g, 1000.0)
    assert m.dims == ("y", "x") and m.dtype == bool
    assert int(m.sum()) == int((d <= 1000).sum())
    # a circle, not the bounding box: about pi r^2 / pixel area pixels
    assert abs(int(m.sum()) - np.pi * 1000**2 / 100) / (np.pi * 1e4) < 0.01
    corner = (np.abs(g.x[None, :] - g.tower_x) > 800) & (np.abs(g.y[:, None] - g.tower_y) > 800)
    assert not m.values[corner].any()
    ann = radial_mask(g, 1000.0, 50.0)
    assert int(ann.sum()) == int(((d <= 1000) & (d >= 50)).sum())
    with pytest.raises(ValueError):
        radial_mask(g, 50, 100)


def test_masked_mean_and_clear_rule():
    rng = np.random.default_rng(0)
    vals = rng.random((3, 4, 5))
    da = xr.DataArray(vals, dims=("time", "y", "x"))
    region = xr.DataArray(rng.random((4, 5)) > 0.3, dims=("y", "x"))
    valid = xr.DataArray(rng.random((3, 4, 5)) > 0.5, dims=("time", "y", "x"))
    valid[2] = False
    mean = masked_mean(da, valid & region)
    for t in range(2):
        sel = valid.values[t] & region.values
        assert mean.values[t] == pytest.approx(vals[t][sel].mean())
    assert np.isnan(mean.values[2])
    frac = clear_fraction(valid, region)
    assert frac.values[0] == pytest.approx((valid.values[0] & region.values).sum()
                                           / region.values.sum())
    assert frac.values[2] == 0
    kept = apply_clear_rule(da.assign_coords(time=[10, 20, 30]), valid, region)
    assert list(kept.time.values) == [10, 20]
    # 1 % rule boundary: 1 clear pixel of 100 is kept, 0 is not
    region = xr.DataArray(np.ones((10, 10), bool), dims=("y", "x"))
    v = np.zeros((2, 10, 10), bool)
    v[0, 3, 3] = True
    out = apply_clear_rule(xr.DataArray(np.zeros((2, 10, 10)), dims=("time", "y", "x")),
                           xr.DataArray(v, dims=("time", "y", "x")), region, 0.01)
    assert out.sizes["time"] == 1
