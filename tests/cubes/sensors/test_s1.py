"""Sentinel-1 reduction on hand-made gamma0 cubes: annulus, forest mask, linear mean, dB, DpRVI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gpp_cubes.sensors.s1 import dprvi_vv, linear_to_db, s1_features_from_cube
from gpp_cubes.sites.grid import site_grid

LAT, LON = 51.0792, 10.4522  # DE-Hai


@pytest.fixture(scope="module")
def grid():
    return site_grid(LAT, LON)


def _distance(grid):
    # independent of SiteGrid.distance_to_tower: pixel centres from the bounds
    left, _bottom, _right, top = grid.bounds
    ny, nx = grid.shape
    xc = left + 5.0 + 10.0 * np.arange(nx)
    yc = top - 5.0 - 10.0 * np.arange(ny)
    return np.sqrt((xc[None, :] - grid.tower_x) ** 2 + (yc[:, None] - grid.tower_y) ** 2)


def _cube(grid, layers, times):
    return xr.DataArray(np.stack(layers).astype(np.float32), dims=("time", "y", "x"),
                        coords={"time": pd.to_datetime(times), "y": grid.y, "x": grid.x})


def _scene(grid, d, forest, vv_forest, vh_forest):
    vv = np.where(forest, vv_forest, 1.0)        # non-forest: much brighter
    vh = np.where(forest, vh_forest, 0.5)
    vv = np.where(d < 50, 50.0, vv)              # tower and mast: corner reflectors
    vh = np.where(d < 50, 30.0, vh)
    vv = np.where(d > 1000, 5.0, vv)             # beyond the buffer
    vh = np.where(d > 1000, 2.0, vh)
    return vv, vh


def test_annulus_forest_linear_mean_db_and_dprvi(grid):
    d = _distance(grid)
    forest = np.ones(grid.shape, dtype=bool)
    forest[:, :40] = False                       # a non-forest strip in the west
    # the planted tower pixels exist and would dominate a plain mean
    assert (d < 50).sum() >= 70
    desc_vv, desc_vh = _scene(grid, d, forest, 0.1, 0.02)
    asc_vv, asc_vh = _scene(grid, d, forest, 0.3, 0.04)
    # a third pass (next day) with 70 % of the annulus missing is dropped
    part_vv, part_vh = _scene(grid, d, forest, 0.2, 0.05)
    part_vv[: int(grid.shape[0] * 0.7)] = np.nan
    vv = _cube(grid, [desc_vv, asc_vv, part_vv],
               ["2018-06-01T05:20", "2018-06-01T17:10", "2018-06-02T05:20"])
    vh = _cube(grid, [desc_vh, asc_vh, part_vh],
               ["2018-06-01T05:20", "2018-06-01T17:10", "2018-06-02T05:20"])
    out = s1_features_from_cube(vv, vh, forest, grid)

    assert list(out.index) == [pd.Timestamp("2018-06-01")]
    row = out.iloc[0]
    assert row["n_passes"] == 2
    # same-day passes: linear mean of the two passes' linear means
    vv_lin, vh_lin = (0.1 + 0.3) / 2, (0.02 + 0.04) / 2
    assert row["S1_VV_linear"] == pytest.approx(vv_lin, rel=1e-6)
    assert row["S1_VH_linear"] == pytest.approx(vh_lin, rel=1e-6)
    assert row["S1_VV"] == pytest.approx(10 * math.log10(0.2), rel=1e-6)
    assert row["S1_VH"] == pytest.approx(10 * math.log10(0.03), rel=1e-6)
    # DpRVIVV = 4 VH / (VV + VH), computed by hand
    assert row["S1_DpRVIVV"] == pytest.approx(4 * 0.03 / (0.2 + 0.03), rel=1e-6)


def test_mean_is_linear_not_db(grid):
    d = _distance(grid)
    forest = np.ones(grid.shape, dtype=bool)
    vv = np.where((np.arange(grid.shape[1]) % 2 == 0)[None, :], 0.05, 0.2) * np.ones(grid.shape)
    vh = np.full(grid.shape, 0.01)
    vv = np.where(d < 50, 100.0, vv)
    ring = (d >= 50) & (d <= 1000)
    expected = vv[ring].mean()                   # arithmetic mean of powers
    out = s1_features_from_cube(_cube(grid, [vv], ["2019-03-03T17:00"]),
                                _cube(grid, [vh], ["2019-03-03T17:00"]), forest, grid)
    assert out["S1_VV"].iloc[0] == pytest.approx(10 * math.log10(expected), rel=1e-6)
    geometric = np.mean(10 * np.log10(vv[ring]))
    assert abs(out["S1_VV"].iloc[0] - geometric) > 0.5


def test_nodata_and_nonpositive_pixels_are_skipped(grid):
    d = _distance(grid)
    forest = np.ones(grid.shape, dtype=bool)
    vv = np.full(grid.shape, 0.08)
    vh = np.full(grid.shape, 0.016)
    vv[100:110, :] = -32768.0
    vh[120:125, :] = 0.0
    out = s1_features_from_cube(_cube(grid, [vv], ["2017-01-05T05:00"]),
                                _cube(grid, [vh], ["2017-01-05T05:00"]), forest, grid)
    assert d.shape == vv.shape
    assert out["S1_VV_linear"].iloc[0] == pytest.approx(0.08, rel=1e-6)
    assert out["S1_VH_linear"].iloc[0] == pytest.approx(0.016, rel=1e-6)


def test_helpers_match_hand_values():
    np.testing.assert_allclose(linear_to_db([1.0, 0.1, 0.01]), [0.0, -10.0, -20.0])
    assert np.isnan(linear_to_db(0.0)) and np.isnan(linear_to_db(-1.0))
    np.testing.assert_allclose(dprvi_vv(np.array([0.1, 0.2]), np.array([0.02, 0.05])),
                               [4 * 0.02 / 0.12, 4 * 0.05 / 0.25])
