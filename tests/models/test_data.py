"""Contract checks on read, training-only standardisation, windows against a naive loop."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from gpp_cubes.errors import InputFormatError
from gpp_models.data import (
    Standardizer,
    gather_windows,
    gather_windows_time_major,
    open_cube,
    prepare,
    sample_index,
)
from gpp_models.testing import DEFAULT_SITES, synthetic_site, write_store


def test_open_multisite_and_per_site_agree(world: Path) -> None:
    multi = open_cube(world / "features.zarr")
    single = open_cube(world / "FI-Var.zarr")
    directory = open_cube(world, sites=["FI-Var", "DE-Hai"])
    assert multi.sites == ("DE-Hai", "BE-Vie", "FI-Var")
    assert single.sites == ("FI-Var",)
    assert directory.sites == ("FI-Var", "DE-Hai")
    i = multi.sites.index("FI-Var")
    np.testing.assert_array_equal(single.X[0], multi.X[i])
    np.testing.assert_array_equal(directory.y[0], multi.y[i])
    assert multi.predictors[-1] == "clear_sky_ghi" and multi.X.shape[-1] == 11


def _write(ds: xr.Dataset, tmp_path: Path) -> Path:
    return write_store(ds, tmp_path / f"{ds.attrs.get('site_id', 'X')}.zarr")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda ds: ds.attrs.pop("format_version"), "format_version"),
        (lambda ds: ds.attrs.update(format_version="2"), "format_version '2'"),
        (lambda ds: ds.attrs.pop("train_years"), "train_years"),
        (lambda ds: ds.attrs.pop("igbp"), "igbp"),
        (lambda ds: ds["S1_VH"].attrs.pop("units"), "'S1_VH' lacks attribute 'units'"),
    ],
)
def test_contract_violations_name_store_and_field(tmp_path: Path, mutate, needle: str) -> None:
    ds = synthetic_site(DEFAULT_SITES[0], end="2016-12-31")
    mutate(ds)
    path = _write(ds, tmp_path)
    with pytest.raises(InputFormatError, match=needle) as err:
        open_cube(path)
    assert str(path) in str(err.value)


def test_missing_variable_and_marker(tmp_path: Path) -> None:
    ds = synthetic_site(DEFAULT_SITES[0], end="2016-12-31").drop_vars("MYD11A1_nt")
    path = _write(ds, tmp_path)
    with pytest.raises(InputFormatError, match="missing variable 'MYD11A1_nt'"):
        open_cube(path)
    good = _write(synthetic_site(DEFAULT_SITES[1], end="2016-12-31"), tmp_path)
    (good / ".gpp-complete").unlink()
    with pytest.raises(InputFormatError, match="incomplete"):
        open_cube(good)


def test_nan_only_feature_is_a_clear_error(tmp_path: Path) -> None:
    ds = synthetic_site(DEFAULT_SITES[2], end="2016-12-31")
    ds["S2_PC2"][:] = np.nan
    path = _write(ds, tmp_path)
    with pytest.raises(InputFormatError, match="'S2_PC2' has no finite value at site FI-Var"):
        open_cube(path)
    shutil.rmtree(path)


def test_standardisation_uses_fit_years_only(features: Path) -> None:
    cube = open_cube(features)
    prep = prepare(cube, window=90, fit_years=[2016, 2017], select_years=[2018],
                   test_years=[2019, 2020])
    fit = np.isin(cube.time.year, [2016, 2017])
    sub = cube.X[:, fit, :].reshape(-1, cube.X.shape[-1]).astype(np.float64)
    np.testing.assert_allclose(prep.scaler.mean, np.nanmean(sub, 0), rtol=1e-5)
    np.testing.assert_allclose(prep.scaler.std, np.nanstd(sub, 0), rtol=1e-4)
    # Changing the test years' predictors must not move the statistics.
    X2 = cube.X.copy()
    X2[:, np.isin(cube.time.year, [2019, 2020]), :] += 100.0
    again = Standardizer.fit(X2, fit)
    np.testing.assert_array_equal(again.mean, prep.scaler.mean)
    # ...whereas fitting on all years would.
    assert not np.allclose(Standardizer.fit(X2, np.ones_like(fit)).mean, prep.scaler.mean)
    # Leading NaN of Sentinel-1 become the training mean (0) after scaling.
    assert np.isnan(cube.X[0, 0, cube.predictors.index("S1_VV")])
    assert prep.Z[0, 0, cube.predictors.index("S1_VV")] == 0.0
    assert np.isfinite(prep.Z).all()


def test_sample_index_rules(features: Path) -> None:
    cube = open_cube(features)
    s, t = sample_index(cube, [2016], window=90)
    assert t.min() >= 89
    assert np.isfinite(cube.y[s, t]).all()
    assert set(cube.time[t].year) == {2016}
    n_obs = sum(np.isfinite(cube.y[i, 89:366]).sum() for i in range(len(cube.sites)))
    assert len(s) == n_obs


def naive_windows(X: np.ndarray, s: np.ndarray, t: np.ndarray, w: int) -> np.ndarray:
    out = np.empty((len(s), w, X.shape[-1]), X.dtype)
    for i in range(len(s)):
        for k in range(w):
            out[i, k] = X[s[i], t[i] - w + 1 + k]
    return out


@settings(max_examples=25, deadline=None)
@given(
    n_sites=st.integers(1, 3), n_time=st.integers(5, 30), n_feat=st.integers(1, 4),
    window=st.integers(1, 5), n=st.integers(1, 8), seed=st.integers(0, 10_000),
)
def test_windows_equal_naive_reference(n_sites: int, n_time: int, n_feat: int, window: int,
                                       n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_sites, n_time, n_feat)).astype(np.float32)
    s = rng.integers(0, n_sites, n).astype(np.int32)
    t = rng.integers(window - 1, n_time, n).astype(np.int32)
    want = naive_windows(X, s, t, window)
    np.testing.assert_array_equal(np.asarray(gather_windows(jnp.asarray(X), s, t, window)), want)
    tm = np.asarray(gather_windows_time_major(jnp.asarray(X), s, t, window))
    np.testing.assert_array_equal(tm.transpose(1, 0, 2), want)


def test_split_adapts_to_a_cube_with_one_training_year(tmp_path: Path, features: Path) -> None:
    from gpp_models.config import TrainConfig
    from gpp_models.data import prepare_for, resolve_split
    from gpp_models.testing import write_synthetic_world

    path = write_synthetic_world(tmp_path, DEFAULT_SITES[:1], start="2018-01-01",
                                 per_site=False)
    cube = open_cube(path)
    cfg = resolve_split(TrainConfig(), cube)
    assert cfg.train_years == (2018,) and cfg.test_years == (2019, 2020)
    assert cfg.val_year is None  # blocked split: every fourth ISO week of 2018 validates
    cfg, prep = prepare_for(TrainConfig(), cube)
    masks = cfg.day_masks(cube.time)
    assert not (masks["fit"] & masks["select"]).any()
    np.testing.assert_array_equal(masks["fit"] | masks["select"], cube.time.year == 2018)
    weeks = cube.time[prep.splits["select"][1]].isocalendar().week.to_numpy()
    assert set(weeks % 4) == {3}
    assert set(cube.time[prep.splits["test"][1]].year) == {2019, 2020}
    # Standardisation statistics come from the fitting days only.
    sub = cube.X[:, masks["fit"], :].reshape(-1, cube.X.shape[-1])
    np.testing.assert_allclose(prep.scaler.mean, np.nanmean(sub, 0), rtol=1e-5)
    # A cube with several training years keeps the last one for validation.
    full = resolve_split(TrainConfig(val_year=2016), open_cube(features))
    assert full.val_year == 2016 and full.fit_years == (2017, 2018)
    cube5 = open_cube(features)
    assert resolve_split(TrainConfig(train_years=(2015, 2016, 2017, 2018)), cube5).val_year == 2018
