"""``gpp predict``: gap-filling predictions against `gpp evaluate` and the planted truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from gpp_cubes.cli.app import app
from gpp_cubes.contract import variable_attrs
from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import open_cube
from gpp_models.evaluate import evaluate_runs, nrmse
from gpp_models.predict import predict_gpp, predict_run
from gpp_models.testing import write_store
from gpp_models.train import load_run, train_and_evaluate


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, features: Path) -> Path:
    """A tiny 2-member GRU ensemble trained on the synthetic world (90-day windows)."""
    workdir = tmp_path_factory.mktemp("predict") / "run"
    cfg = TrainConfig(model=ModelConfig(cell="gru", layers=1, units=16), epochs=8,
                      ensemble=2, learning_rate=1e-2)
    train_and_evaluate(cfg, workdir, features)
    return workdir


@pytest.fixture(scope="module")
def withheld(tmp_path_factory: pytest.TempPathFactory, features: Path
             ) -> tuple[Path, np.ndarray]:
    """The world's features.zarr with GPP set to NaN on every 3rd observed test day.

    Returns the store and the (site, time) mask of the withheld days.
    """
    ds = xr.open_zarr(features).load()
    gpp = ds["GPP"].transpose("site", "time").values
    test = ds["time"].dt.year.values >= 2019
    s, t = np.nonzero(np.isfinite(gpp) & test[None, :])
    mask = np.zeros(gpp.shape, bool)
    mask[s[::3], t[::3]] = True
    ds["GPP"] = ds["GPP"].transpose("site", "time").where(~mask)
    out = write_store(ds, tmp_path_factory.mktemp("withheld") / "features.zarr")
    return out, mask


def test_observed_days_equal_evaluate(run: Path, features: Path, tmp_path: Path) -> None:
    paths = predict_run(run, features, tmp_path / "pred")
    got = pd.read_csv(paths["csv"], parse_dates=["time"])
    evaluate_runs([load_run(run)], tmp_path / "eval")  # what `gpp evaluate RUN` writes
    want = pd.read_csv(tmp_path / "eval" / "predictions_GRU.csv", parse_dates=["time"])
    both = want.merge(got, on=["site", "time"], how="left", validate="one_to_one")
    assert len(both) == len(want) > 0
    np.testing.assert_allclose(both["gpp_pred"], both["pred"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(both["gpp_spread"], both["pred_std"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(both["gpp_obs"], both["obs"])
    # one row per site and day; every day with a full 90-day window is predicted, observed
    # or not; the 89 days before have the reason instead
    n_days = len(pd.date_range("2016-01-01", "2020-12-31"))
    assert len(got) == 3 * n_days
    done = got[got["gpp_pred"].notna()]
    assert len(done) == 3 * (n_days - 89) and done["reason"].isna().all()  # "" reads as NaN
    assert done["gpp_obs"].isna().sum() > 0
    assert (done["gpp_spread"] > 0).all()  # two members disagree somewhere on every day
    first = got.groupby("site").head(89)
    assert first["gpp_pred"].isna().all()
    assert (first["reason"] == "no full 90-day window of predictors up to this day").all()


def test_withheld_days_are_filled(run: Path, features: Path,
                                  withheld: tuple[Path, np.ndarray]) -> None:
    store, mask = withheld
    result = load_run(run)
    full, gappy = open_cube(features), open_cube(store)
    p_full, p_gappy = predict_gpp(result, full), predict_gpp(result, gappy)
    assert np.isnan(p_gappy.obs[mask]).all() and np.isfinite(p_gappy.mean[mask]).all()
    # GPP is not an input: withholding it changes no prediction
    np.testing.assert_array_equal(p_gappy.mean, p_full.mean)
    np.testing.assert_array_equal(p_gappy.spread, p_full.spread)
    # error on the withheld days against the planted GPP, vs the observed test days
    truth = full.y
    observed = np.isfinite(p_gappy.obs) & (full.years >= 2019)[None, :]
    e_withheld = nrmse(truth[mask], p_gappy.mean[mask])
    e_observed = nrmse(truth[observed], p_gappy.mean[observed])
    print(f"NRMSE withheld {e_withheld:.4f} (n={mask.sum()}), "
          f"observed test days {e_observed:.4f} (n={observed.sum()})")
    assert 0 < e_withheld < 0.15 and 0 < e_observed < 0.15
    # and against the noise-free planted GPP, recomputed from the predictors by the formula of
    # gpp_models.testing: max(0, 8 g + 1.5 mean15(PC1) - 0.25 (LST_dt - 278 - 18 g))
    name = {p: i for i, p in enumerate(full.predictors)}
    g = full.X[..., name["clear_sky_ghi"]].astype(np.float64) / 300.0
    pc1 = pd.DataFrame(full.X[..., name["S2_PC1"]].T).rolling(15, min_periods=1).mean()
    lst_anom = full.X[..., name["MOD11A1_dt"]] - (278.0 + 18.0 * g)
    clean = np.maximum(0.0, 8.0 * g + 1.5 * pc1.to_numpy().T - 0.25 * lst_anom)
    assert nrmse(truth[mask], clean[mask]) < 0.05  # the reference reproduces the planted GPP
    e_clean = nrmse(clean[mask], p_gappy.mean[mask])
    print(f"NRMSE withheld vs noise-free truth {e_clean:.4f}")
    assert 1 / 2 < e_clean / e_observed < 2
    assert 1 / 2 < e_withheld / e_observed < 2


def test_cli_writes_csv_and_cf_store(run: Path, withheld: tuple[Path, np.ndarray],
                                     tmp_path: Path) -> None:
    store, mask = withheld
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["predict", str(run), str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out / "gpp_pred.csv", parse_dates=["time"])
    assert list(frame.columns) == ["site", "time", "gpp_pred", "gpp_spread", "gpp_obs",
                                   "reason"]
    ds = xr.open_zarr(out / "gpp_pred.zarr")
    contract = variable_attrs("GPP")
    assert ds["GPP_pred"].attrs["units"] == contract["units"]
    assert ds["GPP_pred"].attrs["standard_name"] == contract["standard_name"]
    assert ds["GPP_spread"].attrs["units"] == contract["units"]
    assert ds["site"].attrs["cf_role"] == "timeseries_id"
    src = xr.open_zarr(store)
    np.testing.assert_array_equal(ds["time"].values, src["time"].values)
    np.testing.assert_array_equal(ds["latitude"].values, src["latitude"].values)
    # the store and the CSV hold the same numbers; the first 89 days have no window
    grid = ds["GPP_pred"].transpose("site", "time").values
    assert np.isnan(grid[:, :89]).all() and np.isfinite(grid[:, 89:]).all()
    first = frame[frame["site"] == str(ds["site"].values[0])]
    np.testing.assert_allclose(first["gpp_pred"], grid[0], rtol=1e-6)  # NaN where NaN
    assert np.isnan(ds["GPP_obs"].transpose("site", "time").values[mask]).all()


def test_cli_bad_run_is_one_line(tmp_path: Path, features: Path) -> None:
    res = CliRunner().invoke(app, ["predict", str(tmp_path), str(features),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not a finished training run" in lines[0]
    assert str(tmp_path.name) in lines[0]
