"""``gpp predict`` from the run alone, NaN with a reason where a predictor is missing, and
predictor cubes without GPP."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from gpp_cubes.cli.app import app
from gpp_cubes.errors import InputFormatError
from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import open_cube
from gpp_models.predict import (
    NO_FULL_WINDOW,
    PARTLY_FILLED,
    PREDICTED,
    PREDICTOR_MISSING,
    STATUS,
    log_status,
    predict_gpp,
    predict_run,
    to_dataset,
)
from gpp_models.run_io import load_model
from gpp_models.testing import write_store
from gpp_models.train import load_run, train_and_evaluate

W = 30  # the tiny run's window [days]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, features: Path) -> tuple[Path, Path]:
    """A tiny 2-member RNN trained on its own copy of the world's cube: (run, cube copy)."""
    tmp = tmp_path_factory.mktemp("runio")
    cube = tmp / "train" / "features.zarr"
    shutil.copytree(features, cube)
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=4), epochs=2, window=W,
                      ensemble=2)
    train_and_evaluate(cfg, tmp / "run", cube)
    return tmp / "run", cube


@pytest.fixture()
def cube_moved(trained: tuple[Path, Path]) -> Iterator[Path]:
    """The training cube moved away for the test, moved back afterwards."""
    _run, cube = trained
    away = cube.parent.parent / "moved.zarr"
    cube.rename(away)
    try:
        yield away
    finally:
        away.rename(cube)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, parse_dates=["time"], keep_default_na=False,
                       na_values={"gpp_pred": [""], "gpp_spread": [""], "gpp_obs": [""]})


# --- 1. the run carries its own target scaling -------------------------------------------------


def test_config_records_the_scaling(trained: tuple[Path, Path]) -> None:
    run, cube = trained
    meta = json.loads((run / "config.json").read_text())
    prep = load_run(run).prepared  # re-derived from the cube, independently of the record
    assert meta["target_scaling"]["y_mean"] == pytest.approx(prep.y_mean, rel=1e-12)
    assert meta["target_scaling"]["y_std"] == pytest.approx(prep.y_std, rel=1e-12)
    # the fitting samples' GPP by hand: holdout fits on 2016-2017 (2018 selects)
    y = prep.cube.y[:, W - 1:][:, np.isin(prep.cube.years[W - 1:], [2016, 2017])]
    y = y[np.isfinite(y)]
    assert meta["target_scaling"]["y_mean"] == pytest.approx(float(y.mean()), rel=1e-6)
    assert meta["target_scaling"]["y_std"] == pytest.approx(float(y.std()), rel=1e-6)
    assert meta["predictors"] == list(open_cube(cube).predictors)


def test_predict_without_the_training_cube_equals_with_it(
        trained: tuple[Path, Path], features: Path, tmp_path: Path) -> None:
    run, cube = trained
    with_cube = predict_run(run, features, tmp_path / "with")
    assert load_model(run).scaling_from.startswith("training cube")
    cube_gone = cube.parent.parent / "gone.zarr"
    cube.rename(cube_gone)
    try:
        model = load_model(run)
        assert model.scaling_from.endswith("config.json")
        without = predict_run(run, features, tmp_path / "without")
    finally:
        cube_gone.rename(cube)
    a, b = _csv(with_cube["csv"]), _csv(without["csv"])
    assert a["gpp_pred"].notna().sum() > 0
    pd.testing.assert_frame_equal(a, b)
    za, zb = xr.open_zarr(with_cube["zarr"]), xr.open_zarr(without["zarr"])
    np.testing.assert_array_equal(za["GPP_pred"].values, zb["GPP_pred"].values)


def test_changed_training_cube_fails_naming_the_run(trained: tuple[Path, Path],
                                                    features: Path, tmp_path: Path) -> None:
    run, cube = trained
    ds = xr.open_zarr(cube).load()
    ds["GPP"] = ds["GPP"] * 1.5  # a rebuilt cube: other target statistics
    changed = write_store(ds, tmp_path / "changed.zarr")
    with pytest.raises(InputFormatError, match="GPP scaling") as err:
        predict_run(run, features, tmp_path / "o", training_features=changed)
    assert f"run {run}" in str(err.value) and "changed since training" in str(err.value)


def test_old_run_without_scaling_needs_its_cube(trained: tuple[Path, Path], features: Path,
                                                cube_moved: Path, tmp_path: Path) -> None:
    run, _cube = trained
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    meta = json.loads((old / "config.json").read_text())
    del meta["target_scaling"]
    (old / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InputFormatError, match="target_scaling") as err:
        predict_run(old, features, tmp_path / "o")
    assert f"run {old}" in str(err.value) and "--training-features" in str(err.value)
    res = CliRunner().invoke(app, ["predict", str(old), str(features), "--out",
                                   str(tmp_path / "cli")])
    assert res.exit_code == 1 and "--training-features" in " ".join(res.output.split())
    # given the moved cube, the old run predicts what the new one does from config.json
    got = predict_run(old, features, tmp_path / "old", training_features=cube_moved)
    want = predict_run(run, features, tmp_path / "new")
    pd.testing.assert_frame_equal(_csv(got["csv"]), _csv(want["csv"]))


# --- 2. no silent garbage: a predictor without any value in the window -----------------------


def test_predictor_missing_for_one_site_gives_nan_with_reason(
        trained: tuple[Path, Path], features: Path, caplog: pytest.LogCaptureFixture) -> None:
    run, _ = trained
    model = load_model(run)
    cube = open_cube(features)
    f = cube.predictors.index("S1_VV")
    X = cube.X.copy()
    X[1, :, f] = np.nan  # BE-Vie: no Sentinel-1 VV at all (a new site without S1 coverage)
    X[0, :200, f] = np.nan  # DE-Hai: S1 VV only from day 200 on
    gappy = dataclasses.replace(cube, X=X)
    ref, got = predict_gpp(model, cube), predict_gpp(model, gappy)
    reasons = got.reasons()
    # BE-Vie: every day with a full window is NaN, the reason names the predictor
    assert np.isnan(got.mean[1]).all() and np.isnan(got.spread[1]).all()
    assert (got.status[1, W - 1:] == PREDICTOR_MISSING).all()
    assert set(reasons[1, W - 1:]) == {f"no S1_VV value in the {W}-day window"}
    assert (got.status[:, : W - 1] == NO_FULL_WINDOW).all()
    # DE-Hai by hand: days 0..199 have no S1_VV; the window of day t is t-29..t, so it holds
    # none up to t = 199, some (filled as in training) up to t = 228, all from t = 229 on
    t = np.arange(X.shape[1])
    np.testing.assert_array_equal(got.status[0, (t >= W - 1) & (t <= 199)], PREDICTOR_MISSING)
    np.testing.assert_array_equal(got.status[0, (t >= 200) & (t <= 228)], PARTLY_FILLED)
    np.testing.assert_array_equal(got.status[0, t >= 229], PREDICTED)
    assert np.isnan(got.mean[0, :200]).all() and np.isfinite(got.mean[0, 200:]).all()
    np.testing.assert_array_equal(got.mean[0, 229:], ref.mean[0, 229:])  # same windows
    # the third site is untouched
    np.testing.assert_array_equal(got.mean[2], ref.mean[2])
    np.testing.assert_array_equal(got.spread[2], ref.spread[2])
    # the reference: S1 starts 6 days late in the synthetic world, so its first windows are
    # partly filled and still predicted, as in training
    assert (ref.status[:, W - 1: W - 1 + 6] == PARTLY_FILLED).all()
    assert (ref.status[:, W + 5:] == PREDICTED).all()
    # the reasons reach the CSV frame, the zarr flags and the log
    frame = got.frame
    be = frame[frame["site"] == "BE-Vie"]
    assert be["gpp_pred"].isna().all()
    assert (be["reason"].iloc[W - 1:] == f"no S1_VV value in the {W}-day window").all()
    assert (frame.loc[frame["gpp_pred"].notna(), "reason"] == "").all()
    ds = to_dataset(got)
    flags = ds["GPP_pred_status"]
    assert flags.dtype == np.int8 and list(flags.attrs["flag_values"]) == sorted(STATUS)
    assert flags.attrs["flag_meanings"].split() == [STATUS[k] for k in sorted(STATUS)]
    counts = json.loads(flags.attrs["status_counts"])
    n_days = X.shape[1]
    assert counts["BE-Vie"][f"no S1_VV value in the {W}-day window"] == n_days - (W - 1)
    assert counts["DE-Hai"][f"no S1_VV value in the {W}-day window"] == 200 - (W - 1)
    assert counts["DE-Hai"]["predicted_partly_filled"] == 29
    assert ds["GPP_pred"].attrs["ancillary_variables"] == "GPP_pred_status"
    with caplog.at_level(logging.INFO, logger="gpp_models"):
        log_status(got)
    lines = {r.getMessage().split(":")[0]: r for r in caplog.records}
    assert lines["BE-Vie"].levelno == logging.WARNING
    assert (f"{n_days - (W - 1)} days NaN: no S1_VV value in the {W}-day window"
            in lines["BE-Vie"].getMessage())
    assert lines["FI-Var"].levelno == logging.INFO
    assert f"{n_days - (W - 1)} days predicted (6 with" in lines["FI-Var"].getMessage()


def test_cli_reports_reasons_in_csv_zarr_and_console(trained: tuple[Path, Path],
                                                     features: Path, tmp_path: Path) -> None:
    run, _ = trained
    ds = xr.open_zarr(features).load()
    vv = ds["S1_VV"].transpose("site", "time").values.copy()
    vv[2, :365] = np.nan  # FI-Var: no S1_VV in 2016 (the contract allows NaN at the edges)
    ds["S1_VV"] = (("site", "time"), vv, ds["S1_VV"].attrs)
    store = write_store(ds, tmp_path / "features.zarr")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["predict", str(run), str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    reason = f"no S1_VV value in the {W}-day window"
    assert reason in " ".join(res.output.split())
    frame = _csv(out / "gpp_pred.csv")
    assert list(frame.columns) == ["site", "time", "gpp_pred", "gpp_spread", "gpp_obs",
                                   "reason"]
    fi = frame[frame["site"] == "FI-Var"].reset_index(drop=True)
    assert (fi.loc[W - 1:364, "reason"] == reason).all() and fi.loc[:364, "gpp_pred"].isna().all()
    assert fi.loc[365:, "gpp_pred"].notna().all() and (fi.loc[365 + W - 1:, "reason"] == "").all()
    status = pd.read_csv(out / "gpp_pred_status.csv", keep_default_na=False)
    row = status[(status["site"] == "FI-Var") & (status["reason"] == reason)]
    assert row["days"].item() == 365 - (W - 1)
    z = xr.open_zarr(out / "gpp_pred.zarr")
    flags = z["GPP_pred_status"].sel(site="FI-Var").values
    assert (flags[W - 1:365] == PREDICTOR_MISSING).all() and (flags[365 + W - 1:] <= 1).all()
    # the other sites are predicted as on the untouched cube
    ref = predict_gpp(load_model(run), open_cube(features))
    np.testing.assert_array_equal(z["GPP_pred"].values[:2], ref.mean[:2])


# --- 3. predictor cubes without observed GPP ---------------------------------------------------


def test_cube_without_gpp_predicts_with_obs_nan(trained: tuple[Path, Path], features: Path,
                                                tmp_path: Path) -> None:
    run, _ = trained
    ds = xr.open_zarr(features).load()
    ds["GPP"] = ds["GPP"] * np.nan  # a site without a tower
    store = write_store(ds, tmp_path / "no_tower.zarr")
    paths = predict_run(run, store, tmp_path / "out")
    frame = _csv(paths["csv"])
    assert frame["gpp_obs"].isna().all()
    ref = _csv(predict_run(run, features, tmp_path / "ref")["csv"])
    np.testing.assert_array_equal(frame["gpp_pred"], ref["gpp_pred"])
    assert frame["gpp_pred"].notna().sum() == 3 * (len(ds["time"]) - (W - 1))


def test_evaluating_on_another_cube_keeps_the_training_scaling(
        trained: tuple[Path, Path]) -> None:
    """``gpp evaluate --features OTHER``: the run's recorded standardisation and GPP scaling
    are applied to the other cube, never refitted on it (that would shift every prediction
    silently); a cube with other predictors is refused, naming both lists."""
    run, cube = trained
    meta = json.loads((run / "config.json").read_text())
    base = open_cube(cube)
    # the same sites in other units: a refit would standardise it to the same Z
    other = dataclasses.replace(base, X=base.X * 2.0 + 1.0, y=base.y * 1.5, source="other")
    refit = load_run(run, other).prepared
    kept = load_run(run, other, recorded_scaling=True).prepared
    mean = np.asarray(meta["standardizer"]["mean"], np.float32)
    std = np.asarray(meta["standardizer"]["std"], np.float32)
    seen = np.isfinite(other.X)  # gaps are filled by the standardiser
    np.testing.assert_allclose(kept.Z[seen], ((other.X - mean) / std)[seen], rtol=1e-5,
                               atol=1e-5)
    assert (kept.y_mean, kept.y_std) == (meta["target_scaling"]["y_mean"],
                                         meta["target_scaling"]["y_std"])
    assert refit.y_std == pytest.approx(1.5 * kept.y_std, rel=1e-6)  # what the refit did
    swapped = dataclasses.replace(base, predictors=tuple(reversed(base.predictors)))
    with pytest.raises(InputFormatError, match="was trained on"):
        load_run(run, swapped, recorded_scaling=True)
