"""Daily GPP from a trained run for every day of a predictor cube: gap-filling and new sites.

A trained run (a ``gpp train`` / ``gpp tune`` run directory, read by
:func:`gpp_models.run_io.load_model`) predicts GPP on every day ``t`` of every site that has a
full window of ``window`` days (the run's sequence length, 90 by default) ending on ``t`` in
the predictor cube, whether or not GPP was observed that day: GPP is never an input of the
network, so the observed target only travels along as ``gpp_obs``.

Predictors are standardised with the run's statistics (the fitting years of the cube the run
was trained on, recorded in ``config.json``), never with statistics of the predictor cube,
and GPP is mapped back with the run's target scaling; a run whose ``config.json`` records
both predicts without its training cube (:mod:`gpp_models.run_io`).

Missing predictor values
    Training replaces a missing predictor value (NaN in the cube, which the contract allows
    outside a predictor's data range; ``gpp build`` edge-fills instead) by the training mean
    (:meth:`gpp_models.data.Standardizer.transform`), and so does prediction where the window
    still holds some values of every predictor (status ``predicted_partly_filled``). A day
    whose window holds *no* value of some predictor (a new site without Sentinel-1 or LST
    coverage, a predictor starting later) is not predicted: the network would see only means.
    It is NaN with the reason naming the predictor(s) (status
    ``predictor_missing_in_window``). Days before the first full window have status
    ``no_full_window``.

Outputs (:func:`predict_run`)
    ``gpp_pred.csv``: one row per site and day of the cube: ``site``, ``time``, ``gpp_pred``
    (ensemble mean), ``gpp_spread`` (standard deviation across the ensemble members; NaN for
    a single model, which gives no spread estimate), ``gpp_obs`` (the cube's GPP, NaN where
    not observed) [g C m-2 d-1] and ``reason`` (why ``gpp_pred`` is NaN; empty where
    predicted).
    ``gpp_pred.zarr``: ``GPP_pred``, ``GPP_spread``, ``GPP_obs`` and the flag variable
    ``GPP_pred_status`` (CF ``flag_values`` / ``flag_meanings`` of :data:`STATUS`; the days
    per site and reason in its ``status_counts`` attribute, JSON) on the cube's ``time`` axis
    and ``site`` coordinates (latitude, longitude, elevation, IGBP) in the CF timeSeries
    layout; units and ``standard_name`` of ``GPP_pred`` are the contract's for ``GPP``
    (:func:`gpp_cubes.contract.variable_attrs`).
    ``gpp_pred_status.csv``: days per site, status and reason (also logged, one line a site).
"""

from __future__ import annotations

import json
import logging
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
from gpp_models.data import Cube, open_cube
from gpp_models.run_io import TrainedModel, load_model
from gpp_models.step import predict
from gpp_models.train import TrainResult

logger = logging.getLogger("gpp_models")

CSV_NAME = "gpp_pred.csv"
ZARR_NAME = "gpp_pred.zarr"
STATUS_CSV_NAME = "gpp_pred_status.csv"
#: Columns of the CSV (and of :attr:`Prediction.frame`).
COLUMNS: tuple[str, ...] = ("site", "time", "gpp_pred", "gpp_spread", "gpp_obs", "reason")
#: Status codes of every (site, day): the flag values of ``GPP_pred_status``.
PREDICTED, PARTLY_FILLED, NO_FULL_WINDOW, PREDICTOR_MISSING = 0, 1, 2, 3
STATUS: dict[int, str] = {PREDICTED: "predicted", PARTLY_FILLED: "predicted_partly_filled",
                          NO_FULL_WINDOW: "no_full_window",
                          PREDICTOR_MISSING: "predictor_missing_in_window"}


@dataclass(frozen=True)
class Prediction:
    """Predicted GPP on the (site, time) grid of a predictor cube.

    Attributes
    ----------
    mean, spread, obs : ndarray, shape (site, time)
        Ensemble mean, ensemble standard deviation (NaN for one member) and observed GPP
        [g C m-2 d-1]; ``mean`` and ``spread`` are NaN on days not predicted (``status``).
    status : ndarray of int8, shape (site, time)
        A key of :data:`STATUS` per day.
    missing : ndarray of bool, shape (site, time, predictor)
        Predictor (in the order of ``predictors``) without any value in the day's window.
    cube : Cube
        The predictor cube.
    predictors : tuple of str
        The run's predictors.
    members : int
        Ensemble members K of the run.
    window : int
        Sequence length [days].
    run : str
        The run directory (or "" for an in-memory run).
    model : str
        The run's cell in capitals (``GRU``).
    """

    mean: np.ndarray
    spread: np.ndarray
    obs: np.ndarray
    status: np.ndarray
    missing: np.ndarray
    cube: Cube
    predictors: tuple[str, ...]
    members: int
    window: int
    run: str
    model: str

    def reasons(self) -> np.ndarray:
        """Why each day is not predicted, shape (site, time), object; "" where predicted."""
        out = np.full(self.status.shape, "", dtype=object)
        out[self.status == NO_FULL_WINDOW] = (
            f"no full {self.window}-day window of predictors up to this day")
        names = np.asarray(self.predictors)
        text: dict[bytes, str] = {}
        for s, t in zip(*np.nonzero(self.status == PREDICTOR_MISSING), strict=True):
            key = self.missing[s, t].tobytes()
            if key not in text:
                text[key] = (f"no {', '.join(names[self.missing[s, t]])} value in the "
                             f"{self.window}-day window")
            out[s, t] = text[key]
        return out

    @property
    def frame(self) -> pd.DataFrame:
        """Long table of every site and day: :data:`COLUMNS`, sorted by site, day."""
        n_site, n_time = self.mean.shape
        return pd.DataFrame({
            "site": np.repeat(np.asarray(self.cube.sites), n_time),
            "time": np.tile(self.cube.time.values, n_site),
            "gpp_pred": self.mean.ravel(), "gpp_spread": self.spread.ravel(),
            "gpp_obs": self.obs.ravel(), "reason": self.reasons().ravel()})

    def status_counts(self) -> pd.DataFrame:
        """Days per site, status and reason (``reason`` empty for predicted days).

        Returns
        -------
        DataFrame
            Columns ``site``, ``status`` (a value of :data:`STATUS`), ``reason``, ``days``;
            only combinations that occur.
        """
        n_site, n_time = self.status.shape
        frame = pd.DataFrame({"site": np.repeat(np.arange(n_site), n_time),
                              "code": self.status.ravel(), "reason": self.reasons().ravel()})
        counts = frame.groupby(["site", "code", "reason"]).size().rename("days").reset_index()
        return pd.DataFrame({
            "site": np.asarray(self.cube.sites)[counts["site"].to_numpy()],
            "status": [STATUS[int(c)] for c in counts["code"]],
            "reason": counts["reason"].to_numpy(), "days": counts["days"].to_numpy()})


def window_counts(X: np.ndarray, window: int) -> np.ndarray:
    """Finite values of each predictor in the ``window`` days ending on each day.

    Parameters
    ----------
    X : ndarray, shape (site, time, predictor)
    window : int
        [days]

    Returns
    -------
    ndarray of int32, shape (site, time, predictor)
        Counts in 0..window; -1 on the first ``window - 1`` days (no full window).
    """
    n_site, n_time, n_pred = X.shape
    cum = np.zeros((n_site, n_time + 1, n_pred), np.int32)
    np.cumsum(np.isfinite(X), axis=1, out=cum[:, 1:])
    out = np.full(X.shape, -1, np.int32)
    out[:, window - 1:] = cum[:, window:] - cum[:, :n_time - window + 1]
    return out


def predict_gpp(model: TrainedModel | TrainResult, cube: Cube) -> Prediction:
    """Predict GPP on every day of ``cube`` that has a full window of every predictor.

    Parameters
    ----------
    model : TrainedModel or TrainResult
        A trained run (:func:`gpp_models.run_io.load_model`, or a
        :func:`gpp_models.train.load_run` / ``train_and_evaluate`` result).
    cube : Cube
        Predictor cube holding (at least) the run's predictors; its GPP is not read except to
        be reported as ``obs``.

    Returns
    -------
    Prediction
        Days whose window lacks every value of some predictor are NaN with that reason
        (module docstring).

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        A predictor of the run is missing from the cube, or the cube is shorter than the
        window (both name the cube), or the run's recorded scaling differs from its training
        cube (names the run).
    """
    if isinstance(model, TrainResult):
        model = TrainedModel.from_result(model)
    missing_vars = [p for p in model.predictors if p not in cube.predictors]
    if missing_vars:
        raise InputFormatError(f"{cube.source}: predictor(s) {', '.join(missing_vars)} of the "
                               "run are missing from the cube")
    window = model.config.window
    n_time = len(cube.time)
    if n_time < window:
        raise InputFormatError(f"{cube.source}: {n_time} days, fewer than the run's "
                               f"{window}-day window")
    X = cube.X[:, :, [cube.predictors.index(p) for p in model.predictors]]
    counts = window_counts(X, window)
    missing = counts == 0
    status = np.full(X.shape[:2], PREDICTED, np.int8)
    status[((counts > 0) & (counts < window)).any(-1)] = PARTLY_FILLED
    status[:, : window - 1] = NO_FULL_WINDOW
    status[missing.any(-1)] = PREDICTOR_MISSING
    s, t = (i.astype(np.int32) for i in np.nonzero(status <= PARTLY_FILLED))
    P = predict(model.params, jnp.asarray(model.scaler.transform(X)), s, t,
                model_cfg=model.config.model, window=window)
    P = P.astype(np.float64) * model.y_std + model.y_mean  # (K, n)
    mean = np.full(X.shape[:2], np.nan, np.float32)
    spread = np.full_like(mean, np.nan)
    mean[s, t] = P.mean(0)
    if P.shape[0] > 1:
        spread[s, t] = P.std(0)
    return Prediction(mean=mean, spread=spread, obs=cube.y.astype(np.float32), status=status,
                      missing=missing, cube=cube, predictors=tuple(model.predictors),
                      members=int(P.shape[0]), window=window,
                      run=str(model.workdir) if model.workdir else "",
                      model=model.config.model.cell.upper())


def status_lines(counts: pd.DataFrame) -> list[tuple[int, str]]:
    """One (logging level, text) line per site from :meth:`Prediction.status_counts`.

    The text gives the days predicted (with how many had predictor values filled) and the
    days NaN per reason; the level is WARNING when some days lack a predictor entirely.
    """
    lines = []
    for site, grp in counts.groupby("site", sort=False):
        days = dict(zip(grp["status"], grp["days"], strict=True))
        n_pred = days.get(STATUS[PREDICTED], 0) + days.get(STATUS[PARTLY_FILLED], 0)
        parts = [f"{site}: {n_pred} days predicted ({days.get(STATUS[PARTLY_FILLED], 0)} with "
                 "missing predictor values filled by the training mean, as in training)"]
        nan = grp[~grp["status"].isin([STATUS[PREDICTED], STATUS[PARTLY_FILLED]])]
        parts += [f"{d} days NaN: {r}" for r, d in zip(nan["reason"], nan["days"], strict=True)]
        lines.append((logging.WARNING if STATUS[PREDICTOR_MISSING] in days else logging.INFO,
                      "; ".join(parts)))
    return lines


def log_status(pred: Prediction) -> None:
    """Log :func:`status_lines` of a prediction (logger ``gpp_models``)."""
    for level, line in status_lines(pred.status_counts()):
        logger.log(level, line)


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


def status_attrs(pred: Prediction) -> dict[str, object]:
    """CF flag attributes of ``GPP_pred_status`` with the days per site and reason (JSON)."""
    counts: dict[str, dict[str, int]] = {}
    for row in pred.status_counts().itertuples(index=False):
        counts.setdefault(str(row.site), {})[str(row.reason or row.status)] = int(row.days)
    return {"long_name": "status of the GPP prediction of the day",
            "flag_values": np.asarray(sorted(STATUS), dtype=np.int8),
            "flag_meanings": " ".join(STATUS[k] for k in sorted(STATUS)),
            "comment": (f"{STATUS[PARTLY_FILLED]}: some predictor values of the window were "
                        "missing and filled with the training mean, as in training; "
                        f"{STATUS[PREDICTOR_MISSING]}: the window holds no value of some "
                        "predictor, so GPP_pred is NaN (named per site in status_counts)"),
            "status_counts": json.dumps(counts)}


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
        ``GPP_spread`` and ``GPP_obs`` [g C m-2 d-1], float32; ``GPP_pred_status`` (int8
        flags, :func:`status_attrs`).
    """
    gpp = variable_attrs(TARGET)
    units = gpp["units"]
    pred_attrs = {**gpp, "long_name": (
        f"predicted gross primary production as carbon mass, g C m-2 d-1 (mean of "
        f"{pred.members} ensemble member(s), {pred.window}-day predictor windows)"),
        "comment": "predicted for every day with a full window of every predictor, observed "
                   "or not (gap-filling); NaN elsewhere, the reason in GPP_pred_status",
        "ancillary_variables": "GPP_pred_status"}
    spread_attrs = {"units": units, "long_name": (
        "standard deviation of the predicted GPP across the ensemble members "
        "(NaN for a single model)"), "cell_methods": gpp.get("cell_methods", "time: mean")}
    obs_attrs = {**gpp, "long_name": "observed gross primary production (the cube's GPP)"}
    dims = ("site", "time")
    ds = xr.Dataset(
        {"GPP_pred": (dims, pred.mean, pred_attrs),
         "GPP_spread": (dims, pred.spread, spread_attrs),
         "GPP_obs": (dims, pred.obs, obs_attrs),
         "GPP_pred_status": (dims, pred.status.astype(np.int8), status_attrs(pred))},
        coords={"site": ("site", np.asarray(pred.cube.sites, dtype=object).astype(str),
                         dict(COORDINATE_ATTRS["site"])),
                "time": ("time", pred.cube.time.values.astype("datetime64[ns]"),
                         dict(COORDINATE_ATTRS["time"]))})
    if coords:
        ds = ds.assign_coords(coords)
    ds.attrs = {**CF_GLOBAL_ATTRS, "title": "daily GPP predicted by gpp-models",
                "source": "gpp-models recurrent network (run below) on a gpp-cubes feature cube",
                "run": pred.run, "features": pred.cube.source, "members": pred.members,
                "window_days": pred.window, "predictors": list(pred.predictors)}
    return ds


def _write_zarr(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` atomically (:func:`gpp_cubes.atomic.atomic_directory`)."""
    with atomic_directory(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 string dtype notices
        ds.to_zarr(tmp, mode="w", consolidated=True)
    return path


def write_prediction(pred: Prediction, out_dir: str | Path,
                     coords: dict | None = None) -> dict[str, Path]:
    """Write the CSV, the status CSV and the zarr store into ``out_dir``; return their paths.

    Returns
    -------
    dict
        ``{"csv": gpp_pred.csv, "status": gpp_pred_status.csv, "zarr": gpp_pred.zarr}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv, status = out / CSV_NAME, out / STATUS_CSV_NAME
    pred.frame.to_csv(csv, index=False)
    pred.status_counts().to_csv(status, index=False)
    return {"csv": csv, "status": status,
            "zarr": _write_zarr(to_dataset(pred, coords), out / ZARR_NAME)}


def predict_run(run: str | Path, cube: str | Path, out_dir: str | Path, *,
                training_features: str | Path | None = None, log: bool = True
                ) -> dict[str, Path]:
    """``gpp predict``: load a run, predict on a cube, write the CSVs and the zarr store.

    Parameters
    ----------
    run : path
        Run directory of ``gpp train`` / ``gpp tune`` (``WORKDIR/run``).
    cube : path
        Predictor cube: a site store ``<SITE>.zarr``, ``features.zarr`` or a directory of
        site stores (the feature-cube contract); GPP may be absent or all NaN (a site
        without a tower): ``gpp_obs`` is then NaN.
    out_dir : path
        Output directory.
    training_features : path, optional
        The cube the run was trained on, when it moved since training (default: the path
        recorded in the run's ``config.json``). When neither is there, the run's recorded
        scaling is used (:func:`gpp_models.run_io.load_model`).
    log : bool
        Log one line per site with the days predicted and NaN by reason
        (:func:`log_status`); the command prints them instead.

    Returns
    -------
    dict
        ``{"csv": path, "status": path, "zarr": path}`` (:func:`write_prediction`).

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        Not a finished run, a changed training cube, an old run without its training cube,
        a cube breaking the contract or lacking the run's predictors.
    """
    model = load_model(run, training_features)
    cube_path = Path(cube)
    pred = predict_gpp(model, open_cube(cube_path, targets=False))
    if log:
        log_status(pred)
    if not _is_store(cube_path) and not [
            p for p in cube_path.glob("*.zarr") if p.name != MULTISITE_NAME]:
        cube_path = cube_path / MULTISITE_NAME  # as open_cube falls back to it
    return write_prediction(pred, out_dir, _site_coordinates(cube_path, pred.cube))
