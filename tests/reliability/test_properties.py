"""Property-based tests of the pure functions not already covered elsewhere (extremes, NRMSE,
windowing and interpolation have theirs in test_extremes.py, models/test_evaluate.py,
models/test_data.py and build/test_features.py): cloud/shadow and snow masks, and the spatial
reduction, each against an independent NumPy reference."""

from __future__ import annotations

import numpy as np
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gpp_cubes.reduce import masked_mean
from gpp_cubes.s2.cloud import scl_masks
from gpp_cubes.s2.snow import fmask_snow

SHAPES = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6))
refl = st.one_of(st.floats(-0.125, 1.25, allow_nan=False, width=32), st.just(np.nan))


@settings(max_examples=60, deadline=None)
@given(scl=arrays(np.uint8, SHAPES, elements=st.integers(0, 11)))
def test_scl_masks_match_the_sen2cor_classes(scl):
    cloud, shadow = scl_masks(xr.DataArray(scl, dims=("time", "y", "x")))
    # Sen2Cor classes: 3 cloud shadow; 8, 9 cloud medium/high probability; 10 thin cirrus
    want_cloud = np.vectorize(lambda c: c in (8, 9, 10))(scl)
    np.testing.assert_array_equal(cloud.values, want_cloud)
    np.testing.assert_array_equal(shadow.values, scl == 3)
    assert not (cloud.values & shadow.values).any()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=SHAPES)
def test_fmask_snow_matches_the_scalar_rule(data, shape):
    g, n, s = (data.draw(arrays(np.float32, shape, elements=refl)) for _ in range(3))
    got = fmask_snow(*(xr.DataArray(a, dims=("time", "y", "x")) for a in (g, n, s))).values

    f32 = np.float32

    def rule(green: f32, nir: f32, swir: f32) -> bool:  # Zhu & Woodcock (2012), eq. 20
        if np.isnan(green) or np.isnan(nir) or np.isnan(swir) or green + swir == 0:
            return False
        with np.errstate(all="ignore"):  # float32 throughout, as the cube is
            ndsi = f32(green - swir) / f32(green + swir)
        return bool(ndsi > f32(0.15) and nir > f32(0.11) and green > f32(0.10))

    want = np.array([rule(*v) for v in zip(g.ravel(), n.ravel(), s.ravel(), strict=True)])
    np.testing.assert_array_equal(got.ravel(), want)
    assert got.dtype == bool


@settings(max_examples=80, deadline=None)
@given(data=st.data(), shape=SHAPES)
def test_masked_mean_equals_numpy(data, shape):
    vals = data.draw(arrays(np.float64, shape, elements=st.one_of(
        st.floats(-1e3, 1e3, allow_nan=False), st.just(np.nan))))
    mask = data.draw(arrays(np.bool_, shape[1:]))
    got = masked_mean(xr.DataArray(vals, dims=("time", "y", "x")),
                      xr.DataArray(mask, dims=("y", "x"))).values
    for t in range(shape[0]):
        sel = vals[t][mask]
        sel = sel[~np.isnan(sel)]
        if sel.size == 0:
            assert np.isnan(got[t])  # no clear pixel: NaN, never 0
        else:
            np.testing.assert_allclose(got[t], sel.mean(), rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=SHAPES)
def test_masked_mean_with_time_varying_mask_and_bounds(data, shape):
    vals = data.draw(arrays(np.float64, shape, elements=st.floats(0, 1)))
    mask = data.draw(arrays(np.bool_, shape))
    got = masked_mean(xr.DataArray(vals, dims=("time", "y", "x")),
                      xr.DataArray(mask, dims=("time", "y", "x"))).values
    for t in range(shape[0]):
        if mask[t].any():
            assert vals[t][mask[t]].min() - 1e-12 <= got[t] <= vals[t][mask[t]].max() + 1e-12
        else:
            assert np.isnan(got[t])
