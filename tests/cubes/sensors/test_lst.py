"""MODIS LST: QC decoding, scaling, 3x3 smoothing and the sinusoidal window, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gpp_cubes.errors import ConfigError
from gpp_cubes.sensors.modis import (
    MODIS_PIXEL_M,
    decode_qc,
    modis_grid,
    nan_mean_3x3,
    qc_accept,
    scale_lst,
    tower_lst_series,
)


def test_decode_qc_hand_worked_bits():
    # 0b01_10_01_01: LST error 01, emissivity error 10, data quality 01, mandatory 01
    f = decode_qc(np.array([0b01100101]))
    assert f["mandatory"][0] == 1
    assert f["data_quality"][0] == 1
    assert f["emis_error"][0] == 2
    assert f["lst_error"][0] == 1
    f = decode_qc(np.array([0b11000010]))
    assert (f["mandatory"][0], f["data_quality"][0], f["emis_error"][0], f["lst_error"][0]) \
        == (2, 0, 0, 3)


@pytest.mark.parametrize(
    ("qc", "accept_2k", "accept_3k"),
    [
        (0b00000000, True, True),     # good quality
        (0b00110000, True, True),     # good mandatory flag: detailed flags not consulted
        (0b00000001, True, True),     # other quality, good data, LST error <= 1 K
        (0b01000001, True, True),     # other quality, LST error <= 2 K
        (0b10000001, False, True),    # LST error <= 3 K: only with the 3 K rule
        (0b11000001, False, False),   # LST error > 3 K
        (0b00000101, False, False),   # data quality "other"
        (0b00000010, False, False),   # not produced, cloud
        (0b00000011, False, False),   # not produced, other reasons
    ],
)
def test_qc_rule(qc, accept_2k, accept_3k):
    assert bool(qc_accept(np.array([qc]))[0]) is accept_2k
    assert bool(qc_accept(np.array([qc]), max_lst_error_k=3)[0]) is accept_3k


def test_qc_rule_rejects_bad_parameter():
    with pytest.raises(ConfigError, match="max_lst_error_k"):
        qc_accept(np.array([0]), max_lst_error_k=5)


def test_scale_fill_range_and_qc():
    dn = np.array([14500, 0, 7000, 15000, 15000, np.nan])
    qc = np.array([0, 0, 0, 2, 0, 0])
    out = scale_lst(dn, qc)
    assert out[0] == pytest.approx(290.0)
    assert np.isnan(out[1]) and np.isnan(out[2])   # fill, below valid range
    assert np.isnan(out[3])                        # cloud
    assert out[4] == pytest.approx(300.0)
    assert np.isnan(out[5])                        # loader nodata


def test_smoothing_equals_hand_computed_mean_with_missing_pixel():
    a = np.array([
        [1.0, 2.0, 3.0, 4.0],
        [5.0, np.nan, 7.0, 8.0],
        [9.0, 10.0, 11.0, 12.0],
    ])
    out = nan_mean_3x3(a)
    # centre (1, 1) is missing: mean of its 8 valid neighbours
    assert out[1, 1] == pytest.approx((1 + 2 + 3 + 5 + 7 + 9 + 10 + 11) / 8)
    # (1, 2): 9-pixel window with the missing (1, 1) left out
    assert out[1, 2] == pytest.approx((2 + 3 + 4 + 7 + 8 + 10 + 11 + 12) / 8)
    # corner (0, 0): only 4 in-grid pixels, one missing
    assert out[0, 0] == pytest.approx((1 + 2 + 5) / 3)
    # edge (2, 3): 6 in-grid pixels, none missing
    assert out[2, 3] == pytest.approx((7 + 8 + 11 + 12) / 4)
    # min_valid: the corner has 3 valid pixels
    assert np.isnan(nan_mean_3x3(a, min_valid=4)[0, 0])


def test_smoothing_all_missing_stays_missing_and_leading_axes_are_independent():
    a = np.full((2, 3, 3), np.nan)
    a[1] = 300.0
    out = nan_mean_3x3(a)
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], 300.0)


def test_modis_grid_tile_and_tower_pixel():
    # DE-Hai (51.0792 N, 10.4522 E) lies in MODIS tile h18v03.
    g = modis_grid(51.0792, 10.4522, size=5)
    r, c = g.tower_index
    assert (g.col0 + c) // 1200 == 18
    assert (g.row0 + r) // 1200 == 3
    left, _bottom, right, top = g.bounds
    assert right - left == pytest.approx(5 * MODIS_PIXEL_M)
    # the tower lies inside the centre pixel
    assert left + c * MODIS_PIXEL_M <= g.tower_x < left + (c + 1) * MODIS_PIXEL_M
    assert top - (r + 1) * MODIS_PIXEL_M < g.tower_y <= top - r * MODIS_PIXEL_M
    assert g.geobox.shape == (5, 5)


def test_tower_series_from_dn_and_qc():
    g = modis_grid(51.0792, 10.4522, size=5)
    dn = np.full((2, 5, 5), 15000.0)      # 300 K
    dn[0, 2, 2] = 15500.0                 # 310 K at the tower
    dn[0, 1, 1] = 0.0                     # fill next to it
    qc = np.zeros((2, 5, 5))
    qc[1] = 2                             # day 2 all cloudy
    t = pd.to_datetime(["2018-07-01", "2018-07-02"])
    da = xr.DataArray(dn, dims=("time", "y", "x"), coords={"time": t})
    qa = xr.DataArray(qc, dims=("time", "y", "x"), coords={"time": t})
    s = tower_lst_series(da, qa, g)
    assert s.iloc[0] == pytest.approx((310 + 7 * 300) / 8)
    assert np.isnan(s.iloc[1])


def test_two_granules_on_one_day_are_mosaicked_before_smoothing():
    g = modis_grid(51.0792, 10.4522, size=5)
    west = np.full((5, 5), np.nan)
    east = np.full((5, 5), np.nan)
    west[:, :3] = 14500.0      # 290 K, columns 0-2 (the tower's column is 2)
    east[:, 3:] = 15500.0      # 310 K, columns 3-4 from the neighbouring tile
    t = pd.to_datetime(["2018-07-01T00:00", "2018-07-01T00:00"])
    da = xr.DataArray(np.stack([west, east]), dims=("time", "y", "x"), coords={"time": t})
    qa = xr.DataArray(np.zeros((2, 5, 5)), dims=("time", "y", "x"), coords={"time": t})
    s = tower_lst_series(da, qa, g)
    assert len(s) == 1
    assert s.iloc[0] == pytest.approx((6 * 290 + 3 * 310) / 9)
