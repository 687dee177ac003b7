"""NRMSE per site on the test years in three settings, for the models and two baselines.

Settings (Montero et al. 2024, section 2.2): ``full`` (all test days with observed GPP),
``growing_season`` (May-September) and ``extremes`` (days flagged ``extreme`` in the cube).
NRMSE = RMSE / (y_max - y_min), with y_max and y_min the largest and smallest *observed* GPP.
The paper does not say over which days y_max and y_min are taken, so both readings are
available (``norm``, recorded in the ``norm`` column of ``nrmse.csv`` and in ``runs.json``):

``subset`` (default)
    y_max - y_min of the evaluated subset at that site: each setting is normalised by its own
    range. Extremes span a narrow range of GPP, so their NRMSE can be ten times the
    full-period NRMSE for the same error in GPP units: each setting measures the error
    relative to the variability the model had to follow in it, and the settings are not on
    one scale.
``full-period``
    y_max - y_min of the site's whole test period, for every setting: the three settings share
    one scale per site, so a larger extremes NRMSE means a larger error in GPP units.

:func:`evaluate_runs` takes the reading from the runs' recorded protocol unless it is given
(:data:`gpp_models.config.PROTOCOL_READINGS`: ``holdout`` -> ``subset``, ``paper`` ->
``full-period``, the paper's "maximum and minimum observed values"); ``runs.json`` records
the reading and its source (``nrmse_norm_source``: ``option`` or ``protocol <name>``).

Baselines that need no network: the site's mean seasonal cycle from the training years and an
ordinary least-squares model on the standardised predictors of the target day (the last day
of the 90-day window), fitted on the fitting samples of all sites pooled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from gpp_models.config import NRMSE_NORMS, NrmseNorm, check_choice, protocol_reading
from gpp_models.data import Prepared
from gpp_models.train import TrainResult

SETTINGS: tuple[str, ...] = ("full", "growing_season", "extremes")
GROWING_MONTHS = (5, 6, 7, 8, 9)
#: What each reading means, for reports and the command line.
NRMSE_NORM_DESCRIPTIONS: dict[str, str] = {
    "subset": "RMSE / (max - min of the observed GPP of the evaluated subset at the site)",
    "full-period": "RMSE / (max - min of the observed GPP of the site's whole test period)",
}


def check_nrmse_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`NRMSE_NORMS`; otherwise a ConfigError naming them."""
    return check_choice(norm, NRMSE_NORMS, "NRMSE normalisation")


def observed_range(obs: np.ndarray) -> float:
    """max - min of the finite observations [units of ``obs``]; NaN with fewer than two."""
    obs = np.asarray(obs, np.float64)
    obs = obs[np.isfinite(obs)]
    return float(obs.max() - obs.min()) if obs.size >= 2 else float("nan")


def nrmse(obs: np.ndarray, pred: np.ndarray, span: float | None = None) -> float:
    """Normalised root mean squared error RMSE / (max(obs) - min(obs)) [1].

    Parameters
    ----------
    obs, pred : array_like
        Observed and predicted GPP [g C m-2 d-1]; pairs with a NaN observation are dropped.
    span : float, optional
        Range to divide by [g C m-2 d-1] (e.g. the site's full-period observed range);
        default the range of ``obs`` itself.

    Returns
    -------
    float
        NaN when no observation remains, when ``span`` is not given and fewer than two
        observations remain, or when the range is zero or NaN.

    References
    ----------
    Montero, D. et al. (2024), section 2.2.
    """
    obs = np.asarray(obs, np.float64)
    pred = np.asarray(pred, np.float64)
    ok = np.isfinite(obs)
    obs, pred = obs[ok], pred[ok]
    if obs.size < (1 if span is not None else 2):
        return float("nan")
    if span is None:
        span = float(obs.max() - obs.min())
    if not span > 0:  # zero or NaN
        return float("nan")
    return float(np.sqrt(np.mean((pred - obs) ** 2)) / span)


def setting_mask(frame: pd.DataFrame, setting: str) -> np.ndarray:
    """Rows of a predictions frame (columns ``time``, ``extreme``) belonging to ``setting``."""
    if setting == "full":
        return np.ones(len(frame), bool)
    if setting == "growing_season":
        return pd.DatetimeIndex(frame["time"]).month.isin(GROWING_MONTHS)
    if setting == "extremes":
        return frame["extreme"].to_numpy(bool)
    raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")


def nrmse_by_site(frame: pd.DataFrame, model: str, pred_col: str = "pred",
                  norm: NrmseNorm = "subset") -> pd.DataFrame:
    """Long table of one model's test-period NRMSE per site and setting.

    Parameters
    ----------
    frame : DataFrame
        Test predictions: ``site``, ``time``, ``obs`` and ``pred_col`` [g C m-2 d-1],
        ``extreme`` (bool).
    model : str
        Label written to the ``model`` column.
    pred_col : str
        Column holding the predictions.
    norm : {"subset", "full-period"}
        Divide by the observed range of each setting's days (default) or of all the site's
        days in ``frame`` (module docstring).

    Returns
    -------
    DataFrame
        Columns ``model``, ``site``, ``setting``, ``nrmse`` [1], ``n`` (days in the
        setting, observed or not) and ``norm``.
    """
    check_nrmse_norm(norm)
    rows = []
    for site, grp in frame.groupby("site", sort=False):
        span = observed_range(grp["obs"]) if norm == "full-period" else None
        for setting in SETTINGS:
            sub = grp[setting_mask(grp, setting)]
            rows.append({"model": model, "site": site, "setting": setting,
                         "nrmse": nrmse(sub["obs"], sub[pred_col], span), "n": len(sub),
                         "norm": norm})
    return pd.DataFrame(rows)


def seasonal_cycle_baseline(prepared: Prepared, years: Iterable[int],
                            split: str = "test", smooth_days: int = 15) -> np.ndarray:
    """The site's mean seasonal cycle of GPP over ``years`` at the samples of ``split``.

    Day-of-year means (29 February folded onto 28 February) are smoothed with a centred
    circular moving average of ``smooth_days`` [days] so three years of gappy data give a
    usable climatology; days never observed fall back to the site's mean.

    Returns
    -------
    ndarray, shape (n_samples,)
        [g C m-2 d-1]
    """
    cube = prepared.cube
    doy = cube.time.dayofyear.to_numpy() - 1
    leap_shift = (cube.time.is_leap_year & (doy >= 59)).astype(int)
    doy = np.minimum(doy - leap_shift, 364)
    in_years = np.isin(cube.years, list(years))
    half = smooth_days // 2
    k = np.ones(2 * half + 1)  # odd length keeps the average centred

    def wrap(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[-half:], a, a[:half]]) if half else a

    clim = np.empty((len(cube.sites), 365))
    for i in range(len(cube.sites)):
        y = np.where(in_years, cube.y[i], np.nan)
        sums = np.bincount(doy, np.nan_to_num(y), minlength=365)
        cnt = np.bincount(doy, np.isfinite(y).astype(float), minlength=365)
        s_sum = np.convolve(wrap(sums), k, "valid")
        s_cnt = np.convolve(wrap(cnt), k, "valid")
        site_mean = np.nanmean(y) if np.isfinite(y).any() else 0.0
        clim[i] = np.where(s_cnt > 0, s_sum / np.maximum(s_cnt, 1), site_mean)
    s, t = prepared.splits[split]
    return clim[s, doy[t]]


def linear_baseline(prepared: Prepared, split: str = "test") -> np.ndarray:
    """Least-squares GPP from the target day's standardised predictors (fit split, pooled).

    Returns
    -------
    ndarray, shape (n_samples,)
        [g C m-2 d-1]
    """
    s_fit, t_fit = prepared.splits["fit"]
    A = np.column_stack([prepared.Z[s_fit, t_fit], np.ones(len(s_fit))])
    coef, *_ = np.linalg.lstsq(A, prepared.cube.y[s_fit, t_fit], rcond=None)
    s, t = prepared.splits[split]
    return np.column_stack([prepared.Z[s, t], np.ones(len(s))]) @ coef


def baseline_predictions(prepared: Prepared, train_years: Iterable[int]) -> pd.DataFrame:
    """Test-sample frame with ``obs``, ``seasonal_cycle`` and ``linear`` predictions."""
    s, t = prepared.splits["test"]
    cube = prepared.cube
    return pd.DataFrame({
        "site": np.asarray(cube.sites)[s], "time": cube.time[t], "obs": cube.y[s, t],
        "extreme": cube.extreme[s, t],
        "seasonal_cycle": seasonal_cycle_baseline(prepared, train_years),
        "linear": linear_baseline(prepared),
    })


def nrmse_tables(long: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One site x model table per setting from the long (model, site, setting, nrmse) table."""
    return {setting: long[long["setting"] == setting].pivot(index="site", columns="model",
                                                           values="nrmse")
            for setting in SETTINGS}


def write_tables(long: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``nrmse.csv`` (long) and ``nrmse_<setting>.csv`` tables; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"nrmse": out / "nrmse.csv"}
    long.to_csv(paths["nrmse"], index=False)
    for setting, table in nrmse_tables(long).items():
        paths[f"nrmse_{setting}"] = out / f"nrmse_{setting}.csv"
        table.to_csv(paths[f"nrmse_{setting}"])
    return paths


def tuned_search_space(result: TrainResult) -> dict[str, object] | None:
    """The search space a run's hyperparameters were tuned in, read from its Optuna study.

    ``gpp tune`` and :func:`gpp_models.pipeline.run_pipeline` keep the study in
    ``<workdir>/tune/optuna.db`` next to the run in ``<workdir>/run``; the space is read from
    the distributions its trials sampled (the union over trials, so a study resumed with
    another space shows both).

    Returns
    -------
    dict or None
        ``layers`` [low, high], ``units`` (candidates), ``learning_rate`` [low, high] (log
        scale), ``trials`` and ``study``; None when the run has no such study (trained with
        explicit hyperparameters, or tuned with another ``--storage``).
    """
    if result.workdir is None:
        return None
    db = Path(result.workdir).parent / "tune" / "optuna.db"
    if not db.exists():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"gpp-{result.config.model.cell}"
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db.absolute()}")
    except KeyError:  # the database holds no study of this cell
        return None
    space: dict[str, object] = {"study": f"{db}:{name}", "trials": len(study.trials)}
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    units: set[int] = set()
    for trial in study.trials:
        for key, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                units.update(int(c) for c in dist.choices)  # type: ignore[arg-type]
            elif hasattr(dist, "low"):
                lows[key] = min(lows.get(key, dist.low), dist.low)
                highs[key] = max(highs.get(key, dist.high), dist.high)
    for key in ("layers", "learning_rate"):
        if key in lows:
            space[key] = [lows[key], highs[key]]
    if units:
        space["units"] = sorted(units)
    return space


def model_label(cell: str) -> str:
    """Display name of a model (``lstm`` -> ``LSTM``)."""
    return cell.upper()


def resolve_nrmse_norm(results: Sequence[TrainResult], nrmse_norm: str | None = None
                       ) -> tuple[str, str]:
    """The NRMSE reading for ``results`` and its source (``option`` or ``protocol <name>``).

    Raises
    ------
    gpp_cubes.errors.ConfigError
        An unknown reading, or none given for runs of protocols that read it differently.
    """
    if nrmse_norm is not None:
        check_nrmse_norm(nrmse_norm)
    return protocol_reading("nrmse_norm", (r.config.protocol for r in results), nrmse_norm)


def evaluate_runs(results: Sequence[TrainResult], out_dir: str | Path,
                  nrmse_norm: NrmseNorm | None = None) -> pd.DataFrame:
    """Test-year NRMSE per site and setting for each run and for the two baselines.

    Writes ``predictions_<model>.csv`` per run, ``predictions_baselines.csv``, ``nrmse.csv``,
    ``nrmse_<setting>.csv`` and ``runs.json`` (configurations, the search space each run was
    tuned in when its study is found, the NRMSE normalisation, provenance) into ``out_dir``.

    Parameters
    ----------
    results : sequence of TrainResult
        Trained runs (e.g. RNN, GRU, LSTM) on the same cube and split.
    out_dir : path
    nrmse_norm : {"subset", "full-period"}, optional
        Range the NRMSE divides by (module docstring); default the one the runs' protocol
        implies (:func:`resolve_nrmse_norm`).

    Returns
    -------
    DataFrame
        Long table: ``model``, ``site``, ``setting``, ``nrmse``, ``n``, ``norm``.
    """
    if not results:
        raise ValueError("evaluate_runs needs at least one trained run")
    chosen, norm_source = resolve_nrmse_norm(results, nrmse_norm)
    norm = cast(NrmseNorm, chosen)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for res in results:
        label = model_label(res.config.model.cell)
        frame = res.predict("test")
        frame.to_csv(out / f"predictions_{label}.csv", index=False)
        parts.append(nrmse_by_site(frame, label, norm=norm))
    first = results[0]
    runs = {model_label(r.config.model.cell): {
        "workdir": str(r.workdir) if r.workdir else None, "config": r.config.to_dict(),
        "best_epoch": np.asarray(r.best_epoch).tolist(), "device": r.device,
        "leaks_test": r.leaks_test, "search_space": tuned_search_space(r)} for r in results}
    cube = first.prepared.cube
    (out / "runs.json").write_text(json.dumps(
        {"runs": runs, "nrmse_norm": norm, "nrmse_norm_source": norm_source,
         "features": cube.source,
         "sites": list(cube.sites), "predictors": list(cube.predictors),
         "provenance": cube.attrs.get("provenance")},
        indent=2, default=str))
    base = baseline_predictions(first.prepared, first.config.train_years)
    base.to_csv(out / "predictions_baselines.csv", index=False)
    parts.append(nrmse_by_site(base, "seasonal_cycle", "seasonal_cycle", norm=norm))
    parts.append(nrmse_by_site(base, "linear", "linear", norm=norm))
    long = pd.concat(parts, ignore_index=True)
    write_tables(long, out)
    return long
