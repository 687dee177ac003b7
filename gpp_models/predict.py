"""Daily GPP from a trained run for every day of a predictor cube: gap-filling and new sites.

A trained run (a ``gpp train`` / ``gpp tune`` run directory, read by
:func:`gpp_models.train.load_run`, the loader ``gpp evaluate`` uses) predicts GPP on every day
``t`` of every site that has a full window of ``window`` days (the run's sequence length, 90 by
default) ending on ``t`` in the predictor cube, whether or not GPP was observed that day: GPP is
never an input of the network, so the observed target only travels along as ``gpp_obs``.

Predictors are standardised with the run's statistics (the fitting years of the cube the run
was trained on, recorded in ``config.json`` as ``standardizer``), never with statistics of the
predictor cube, and GPP is mapped back with the run's target scaling. Missing predictor values
(outside a predictor's data range) become the training mean, as in training and evaluation.

Outputs (:func:`predict_run`)
    ``gpp_pred.csv``: ``site``, ``time``, ``gpp_pred`` (ensemble mean), ``gpp_spread``
    (standard deviation across the ensemble members; NaN for a single model, which gives no
    spread estimate), ``gpp_obs`` (the cube's GPP, NaN where not observed) [g C m-2 d-1].
    ``gpp_pred.zarr``: ``GPP_pred``, ``GPP_spread`` and ``GPP_obs`` on the cube's ``time`` axis
    and ``site`` coordinates (latitude, longitude, elevation, IGBP) in the CF timeSeries layout;
    units and ``standard_name`` of ``GPP_pred`` are the contract's for ``GPP``
    (:func:`gpp_cubes.contract.variable_attrs`). Days without a full window are NaN.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from gpp_cubes.atomic import atomic_directory
from gpp_cubes.contract import (
    CF_GLOBAL_ATTRS,
    COORDINATE_ATTRS,
    MULTISITE_NAME,
    SITE_ATTRS,
    TARGET,
    variable_attrs,
)
from gpp_cubes.errors import InputFormatError
from gpp_models.data import Cube, Standardizer, open_cube
from gpp_models.train import TrainResult, load_run, predict

CSV_NAME = "gpp_pred.csv"
ZARR_NAME = "gpp_pred.zarr"
#: Columns of the CSV (and of :attr:`Prediction.frame`).
COLUMNS: tuple[str, ...] = ("site", "time", "gpp_pred", "gpp_spread", "gpp_obs")


@dataclass(frozen=True)
class Prediction:
    """Predicted GPP on the (site, time) grid of a predictor cube.

    Attributes
    ----------
    mean, spread, obs : ndarray, shape (site, time)
        Ensemble mean, ensemble standard deviation (NaN for one member) and observed GPP
        [g C m-2 d-1]; ``mean`` and ``spread`` are NaN on days without a full window.
    cube : Cube
        The predictor cube.
    members : int
        Ensemble members K of the run.
    window : int
        Sequence length [days].
    run : str
        The run directory (or "" for an in-memory run).
    """

    mean: np.ndarray
    spread: np.ndarray
    obs: np.ndarray
    cube: Cube
    members: int
    window: int
    run: str

    @property
    def frame(self) -> pd.DataFrame:
        """Long table of the days with a prediction: :data:`COLUMNS`, sorted by site, day."""
        s, t = np.nonzero(np.isfinite(self.mean))
        return pd.DataFrame({
            "site": np.asarray(self.cube.sites)[s], "time": self.cube.time[t],
            "gpp_pred": self.mean[s, t], "gpp_spread": self.spread[s, t],
            "gpp_obs": self.obs[s, t]})


def run_standardizer(result: TrainResult) -> Standardizer:
    """The predictor statistics of a run, as recorded in its ``config.json``.

    Falls back to the statistics the loaded run re-fitted (identical when the training cube is
    unchanged) for an in-memory run.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        ``config.json`` and the re-fitted statistics disagree: the training cube changed since
        training, so the run's target scaling cannot be trusted (names the run).
    """
    fitted = result.prepared.scaler
    if result.workdir is None:
        return fitted
    cfg_path = Path(result.workdir) / "config.json"
    stats = json.loads(cfg_path.read_text()).get("standardizer")
    if stats is None:
        return fitted
    recorded = Standardizer(mean=np.asarray(stats["mean"], np.float32),
                            std=np.asarray(stats["std"], np.float32))
    if not (np.allclose(recorded.mean, fitted.mean, rtol=1e-5, atol=1e-6)
            and np.allclose(recorded.std, fitted.std, rtol=1e-5, atol=1e-6)):
        raise InputFormatError(
            f"{cfg_path}: the recorded standardisation differs from the training cube "
            f"{result.prepared.cube.source} as it is now; the cube changed since training")
    return recorded


def predict_gpp(result: TrainResult, cube: Cube) -> Prediction:
    """Predict GPP on every day of ``cube`` that has a full predictor window.

    Parameters
    ----------
    result : TrainResult
        A trained run (e.g. :func:`gpp_models.train.load_run`).
    cube : Cube
        Predictor cube holding (at least) the run's predictors; its GPP is not read except to
        be reported as ``obs``.

    Returns
    -------
    Prediction

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        A predictor of the run is missing from the cube, or the cube is shorter than the
        window (both name the cube).
    """
    run_predictors = result.prepared.cube.predictors
    missing = [p for p in run_predictors if p not in cube.predictors]
    if missing:
        raise InputFormatError(f"{cube.source}: predictor(s) {', '.join(missing)} of the run "
                               "are missing from the cube")
    window = result.config.window
    n_time = len(cube.time)
    if n_time < window:
        raise InputFormatError(f"{cube.source}: {n_time} days, fewer than the run's "
                               f"{window}-day window")
    cols = [cube.predictors.index(p) for p in run_predictors]
    Z = run_standardizer(result).transform(cube.X[:, :, cols])
    s, t = np.meshgrid(np.arange(len(cube.sites), dtype=np.int32),
                       np.arange(window - 1, n_time, dtype=np.int32), indexing="ij")
    s, t = s.ravel(), t.ravel()
    P = predict(result.params, jnp.asarray(Z), s, t, model_cfg=result.config.model,
                window=window)
    P = P.astype(np.float64) * result.prepared.y_std + result.prepared.y_mean  # (K, n)
    mean = np.full((len(cube.sites), n_time), np.nan, np.float32)
    spread = np.full_like(mean, np.nan)
    mean[s, t] = P.mean(0)
    if P.shape[0] > 1:
        spread[s, t] = P.std(0)
    return Prediction(mean=mean, spread=spread, obs=cube.y.astype(np.float32), cube=cube,
                      members=int(P.shape[0]), window=window,
                      run=str(result.workdir) if result.workdir else "")


def _is_store(path: Path) -> bool:
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs"))


def _site_coordinates(path: Path, cube: Cube) -> dict[str, tuple[str, np.ndarray, dict]]:
    """``site``-indexed coordinates (latitude, longitude, elevation, IGBP) of the cube's store."""
    if _is_store(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(path)
        if "site" in ds.dims:
            ds = ds.sel(site=list(cube.sites))
            return {k: ("site", ds[k].values, dict(COORDINATE_ATTRS[k]))
                    for k in SITE_ATTRS if k in ds.coords}
        attrs = [ds.attrs]
    else:  # a directory of per-site stores
        attrs = []
        for site in cube.sites:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                attrs.append(xr.open_zarr(path / f"{site}.zarr").attrs)
    out: dict[str, tuple[str, np.ndarray, dict]] = {}
    for k in SITE_ATTRS:
        vals = [a.get(k) for a in attrs]
        arr = (np.asarray(vals, dtype=object).astype(str) if k == "igbp"
               else np.asarray(vals, dtype=np.float64))
        out[k] = ("site", arr, dict(COORDINATE_ATTRS[k]))
    return out


def to_dataset(pred: Prediction, coords: dict | None = None) -> xr.Dataset:
    """The prediction as a CF timeSeries Dataset (dims ``site``, ``time``).

    Parameters
    ----------
    pred : Prediction
    coords : dict, optional
        Extra ``site``-indexed coordinates (``{name: ("site", values, attrs)}``).

    Returns
    -------
    xarray.Dataset
        ``GPP_pred`` (contract attributes of ``GPP``: units, standard_name, cell_methods),
        ``GPP_spread`` and ``GPP_obs`` [g C m-2 d-1], float32.
    """
    gpp = variable_attrs(TARGET)
    units = gpp["units"]
    pred_attrs = {**gpp, "long_name": (
        f"predicted gross primary production as carbon mass, g C m-2 d-1 (mean of "
        f"{pred.members} ensemble member(s), {pred.window}-day predictor windows)"),
        "comment": "predicted for every day with a full predictor window, observed or not "
                   "(gap-filling); NaN before the first full window"}
    spread_attrs = {"units": units, "long_name": (
        "standard deviation of the predicted GPP across the ensemble members "
        "(NaN for a single model)"), "cell_methods": gpp.get("cell_methods", "time: mean")}
    obs_attrs = {**gpp, "long_name": "observed gross primary production (the cube's GPP)"}
    dims = ("site", "time")
    ds = xr.Dataset(
        {"GPP_pred": (dims, pred.mean, pred_attrs),
         "GPP_spread": (dims, pred.spread, spread_attrs),
         "GPP_obs": (dims, pred.obs, obs_attrs)},
        coords={"site": ("site", np.asarray(pred.cube.sites, dtype=object).astype(str),
                         dict(COORDINATE_ATTRS["site"])),
                "time": ("time", pred.cube.time.values.astype("datetime64[ns]"),
                         dict(COORDINATE_ATTRS["time"]))})
    if coords:
        ds = ds.assign_coords(coords)
    ds.attrs = {**CF_GLOBAL_ATTRS, "title": "daily GPP predicted by gpp-models",
                "source": "gpp-models recurrent network (run below) on a gpp-cubes feature cube",
                "run": pred.run, "features": pred.cube.source, "members": pred.members,
                "window_days": pred.window}
    return ds


def _write_zarr(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` atomically (:func:`gpp_cubes.atomic.atomic_directory`)."""
    with atomic_directory(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 string dtype notices
        ds.to_zarr(tmp, mode="w", consolidated=True)
    return path


def write_prediction(pred: Prediction, out_dir: str | Path,
                     coords: dict | None = None) -> dict[str, Path]:
    """Write ``gpp_pred.csv`` and ``gpp_pred.zarr`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / CSV_NAME
    pred.frame.to_csv(csv, index=False)
    return {"csv": csv, "zarr": _write_zarr(to_dataset(pred, coords), out / ZARR_NAME)}


def predict_run(run: str | Path, cube: str | Path, out_dir: str | Path, *,
                training_features: str | Path | None = None) -> dict[str, Path]:
    """``gpp predict``: load a run, predict on a cube, write the CSV and the zarr store.

    Parameters
    ----------
    run : path
        Run directory of ``gpp train`` / ``gpp tune`` (``WORKDIR/run``).
    cube : path
        Predictor cube: a site store ``<SITE>.zarr``, ``features.zarr`` or a directory of
        site stores (the feature-cube contract).
    out_dir : path
        Output directory.
    training_features : path, optional
        The cube the run was trained on, when it moved since training (default: the path
        recorded in the run's ``config.json``); the run's target scaling is read from it.

    Returns
    -------
    dict
        ``{"csv": path, "zarr": path}``.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        Not a finished run, a cube breaking the contract or lacking the run's predictors.
    """
    result = load_run(run, training_features)
    cube_path = Path(cube)
    pred = predict_gpp(result, open_cube(cube_path))
    if not _is_store(cube_path) and not [
            p for p in cube_path.glob("*.zarr") if p.name != MULTISITE_NAME]:
        cube_path = cube_path / MULTISITE_NAME  # as open_cube falls back to it
    return write_prediction(pred, out_dir, _site_coordinates(cube_path, pred.cube))
