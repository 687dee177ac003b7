"""NRMSE and permutation importance against hand-worked numbers and second implementations."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression
from sklearn.metrics import root_mean_squared_error

from gpp_models.config import ModelConfig
from gpp_models.data import gather_windows_time_major, open_cube, prepare
from gpp_models.evaluate import (
    linear_baseline,
    nrmse,
    nrmse_by_site,
    seasonal_cycle_baseline,
)
from gpp_models.explain import model_predictor, permutation_importance, summarize_importance
from gpp_models.models import build_model, init_params


def test_nrmse_hand_worked() -> None:
    # errors 0, 1, 0, -2 -> RMSE sqrt(5/4); observed range 5 - 1 = 4
    assert nrmse([1, 2, 3, 5], [1, 3, 3, 3]) == pytest.approx(np.sqrt(1.25) / 4)
    assert nrmse([1, np.nan, 3], [2, 100, 3]) == pytest.approx(np.sqrt(0.5) / 2)
    assert np.isnan(nrmse([2.0, 2.0], [1.0, 3.0]))  # zero range
    assert np.isnan(nrmse([1.0], [1.0]))


finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=40),
       st.floats(0.1, 10), st.floats(-5, 5))
def test_nrmse_matches_sklearn_and_is_affine_invariant(pairs, a, b) -> None:
    obs, pred = (np.array(v, np.float64) for v in zip(*pairs, strict=True))
    span = obs.max() - obs.min()
    if span < 1e-3:
        assert np.isnan(nrmse(obs, pred)) or span > 0
        return
    want = root_mean_squared_error(obs, pred) / np.ptp(obs)
    assert nrmse(obs, pred) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert nrmse(a * obs + b, a * pred + b) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_settings_select_growing_season_and_extremes() -> None:
    frame = pd.DataFrame({
        "site": ["A"] * 6,
        "time": pd.to_datetime(["2019-01-10", "2019-05-01", "2019-07-01", "2019-09-30",
                                "2019-10-01", "2019-06-15"]),
        "obs": [0.0, 2.0, 6.0, 4.0, 1.0, 5.0],
        "pred": [1.0, 2.0, 5.0, 4.0, 1.0, 7.0],
        "extreme": [False, False, True, False, False, True],
    })
    got = nrmse_by_site(frame, "m").set_index("setting")["nrmse"]
    assert got["full"] == pytest.approx(np.sqrt((1 + 1 + 4) / 6) / 6)
    # May-Sep: obs 2, 6, 4, 5 (range 4), errors 0, -1, 0, 2
    assert got["growing_season"] == pytest.approx(np.sqrt(5 / 4) / 4)
    # extremes: obs 6, 5 (range 1), errors -1, 2
    assert got["extremes"] == pytest.approx(np.sqrt(5 / 2) / 1)


def test_permutation_importance_hand_worked() -> None:
    x = np.array([[1.0, 9.0], [2.0, 8.0], [3.0, 7.0], [4.0, 6.0]])  # (sample, feature)
    obs = np.array([1.0, 2.0, 3.0, 4.0])
    sites = np.array(["A", "A", "B", "B"])

    def predict(f, perm):  # the model reads feature 0 only
        xp = x.copy()
        if f is not None:
            xp[:, f] = x[perm, f]
        return xp[:, 0]

    perms = np.array([[[1, 0, 3, 2], [1, 0, 3, 2]], [[3, 2, 1, 0], [3, 2, 1, 0]]])
    # Repeat 1 moves sequences between sites: only the pooled scope allows it.
    fi = permutation_importance(predict, obs, sites, ["f0", "f1"], permutations=perms,
                                scope="pooled")
    s = summarize_importance(fi).set_index(["site", "feature"])
    # repeat 0: A pred (2,1) -> RMSE 1, range 1 -> FI 1; repeat 1: A pred (4,3) -> sqrt(5)
    assert s.loc[("A", "f0"), "fi_mean"] == pytest.approx((1 + np.sqrt(5)) / 2)
    assert s.loc[("B", "f0"), "fi_mean"] == pytest.approx((1 + np.sqrt(5)) / 2)
    assert s.loc[("A", "f0"), "fi_std"] == pytest.approx((np.sqrt(5) - 1) / np.sqrt(2))
    assert s.loc[("A", "f1"), "fi_mean"] == 0.0
    assert (fi["baseline_nrmse"] == 0).all() and len(fi) == 2 * 2 * 2
    assert (fi["scope"] == "pooled").all()


def test_model_predictor_permutes_whole_sequences(features: Path) -> None:
    cube = open_cube(features)
    prep = prepare(cube, window=20, fit_years=[2016, 2017], select_years=[2018],
                   test_years=[2019, 2020])
    cfg = ModelConfig(cell="gru", layers=1, units=5)
    params = jax.tree_util.tree_map(lambda a: a[None], init_params(cfg, jax.random.PRNGKey(0),
                                                                    11, 20))
    s, t = prep.splits["test"]
    s, t = s[:40], t[:40]
    fn = model_predictor(params, prep.Z, s, t, model_cfg=cfg, window=20, y_mean=2.0,
                         y_std=3.0, batch=16)
    perm = np.random.default_rng(0).permutation(40)
    xw = np.array(gather_windows_time_major(jnp.asarray(prep.Z), s, t, 20))
    xw[:, :, 4] = xw[:, perm, 4]  # feature 4's whole sequence from another sample
    one = jax.tree_util.tree_map(lambda a: a[0], params)
    want = np.asarray(build_model(cfg).apply({"params": one}, jnp.asarray(xw))) * 3.0 + 2.0
    np.testing.assert_allclose(fn(4, perm), want, rtol=1e-5, atol=1e-5)
    base = np.asarray(build_model(cfg).apply(
        {"params": one}, gather_windows_time_major(jnp.asarray(prep.Z), s, t, 20))) * 3 + 2
    np.testing.assert_allclose(fn(None, None), base, rtol=1e-5, atol=1e-5)


def test_baselines_against_independent_computations(features: Path) -> None:
    cube = open_cube(features)
    prep = prepare(cube, window=90, fit_years=[2016, 2017], select_years=[2018],
                   test_years=[2019, 2020])
    s, t = prep.splits["test"]
    # Seasonal cycle without smoothing = mean of the same calendar day in the training years.
    clim = seasonal_cycle_baseline(prep, [2016, 2017, 2018], smooth_days=1)
    frame = pd.DataFrame({"site": s, "md": cube.time[t].strftime("%m-%d"), "clim": clim})
    row = frame[(frame["md"] == "07-15")].iloc[0]
    days = [np.flatnonzero(cube.time == pd.Timestamp(f"{y}-07-15"))[0] for y in (2016, 2017, 2018)]
    vals = cube.y[int(row["site"]), days]
    assert row["clim"] == pytest.approx(np.nanmean(vals), rel=1e-5)
    # The linear baseline equals scikit-learn's least squares on the target day's features.
    sf, tf = prep.splits["fit"]
    lr = LinearRegression().fit(prep.Z[sf, tf], cube.y[sf, tf])
    np.testing.assert_allclose(linear_baseline(prep), lr.predict(prep.Z[s, t]), rtol=1e-4,
                               atol=1e-4)
