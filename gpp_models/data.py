"""Feature cubes -> standardised arrays -> sequence-to-one windows gathered on the device.

Reads the zarr stores of the gpp_cubes contract (:mod:`gpp_cubes.contract`, prose in
docs/architecture.md), checks the contract on read, standardises predictors with statistics
of the fitting years only and builds sample indices (site, day) for each split. Windows are
never built with Python loops: :func:`gather_windows` takes ``X[site, t + arange(-W+1, 1)]``
inside ``jax.jit``.

References
----------
Montero, D. et al. (2024), section 2.2: 90-day sequence-to-one samples, temporal split
2016-2018 / 2019-2020, predictors interpolated, GPP never interpolated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from gpp_cubes.contract import (  # the contract is defined once, on the writer's side
    COMPLETE_MARKER,
    MULTISITE_NAME,
    NO_TARGETS,
    NOT_OBSERVED_ATTR,
    SITE_ID_ATTR,
    TARGET,
    site_coordinates,
    validate,
)
from gpp_cubes.errors import InputFormatError


@dataclass(frozen=True)
class Cube:
    """A multi-site feature cube held as NumPy arrays (float32).

    Attributes
    ----------
    X : ndarray, shape (site, time, feature)
        Raw predictors in their units (NaN outside each predictor's data range).
    y : ndarray, shape (site, time)
        GPP [g C m-2 d-1], NaN where not observed.
    extreme : ndarray of bool, shape (site, time)
        Climate-induced extreme days.
    time : DatetimeIndex
        Daily calendar shared by all sites.
    sites : tuple of str
        Site ids.
    predictors : tuple of str
        Feature names, in the order of the last axis of ``X``.
    attrs : dict
        Dataset attributes (``provenance`` parsed to a dict when it is JSON).
    source : str
        Path the cube was read from (for messages and provenance).
    """

    X: np.ndarray
    y: np.ndarray
    extreme: np.ndarray
    time: pd.DatetimeIndex
    sites: tuple[str, ...]
    predictors: tuple[str, ...]
    attrs: dict[str, Any]
    source: str

    @property
    def years(self) -> np.ndarray:
        """Calendar year of each day [year]."""
        return self.time.year.to_numpy()


def _is_zarr_store(path: Path) -> bool:
    return any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zattrs"))


def _open_store(path: Path) -> xr.Dataset:
    if not (path / COMPLETE_MARKER).exists():
        raise InputFormatError(
            f"{path}: store is incomplete (no {COMPLETE_MARKER} marker); rebuild or finish it"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return xr.open_zarr(path)
    except Exception as err:  # zarr raises many types for a broken store
        raise InputFormatError(f"{path}: cannot open as a zarr store: {err}") from err


def validate_cube(ds: xr.Dataset, source: str) -> None:
    """Check a Dataset against the feature-cube contract (:func:`gpp_cubes.contract.validate`).

    A Dataset with a ``site`` dimension is checked as a multi-site store, else as a per-site
    store.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        Wrong/missing ``format_version``, a missing dataset attribute, variable, coordinate
        or predictor attribute, or an empty or non-daily time axis; names ``source``.
    """
    validate(ds, multisite="site" in ds.dims, source=source)


def _as_multisite(ds: xr.Dataset) -> xr.Dataset:
    if "site" in ds.dims:
        return ds
    out = ds.expand_dims(site=[str(ds.attrs[SITE_ID_ATTR])])
    return out.assign_coords(site_coordinates([ds.attrs]))


def _without_targets(ds: xr.Dataset) -> xr.Dataset:
    """A store opened with ``targets=False``: a missing target becomes all NaN and a missing
    ``extreme`` all False, each with the attribute saying why (nothing observed)."""
    dims = ("site", "time") if "site" in ds.dims else ("time",)
    shape = tuple(ds.sizes[d] for d in dims)
    why = {NOT_OBSERVED_ATTR: "not in the store: opened without targets"}
    target = str(ds.attrs.get("target", TARGET))
    if target not in ds.data_vars:
        ds[target] = xr.DataArray(np.full(shape, np.nan, np.float32), dims=dims, attrs=why)
    if "extreme" not in ds.data_vars:
        ds["extreme"] = xr.DataArray(np.zeros(shape, bool), dims=dims, attrs=why)
    return ds


def open_cube(path: str | Path, sites: Sequence[str] | None = None, *,
              targets: bool = True) -> Cube:
    """Open a multi-site ``features.zarr``, one ``<SITE>.zarr``, or a directory of them.

    Parameters
    ----------
    path : path
        A zarr store (multi- or per-site) or a directory holding per-site ``*.zarr`` stores.
    sites : sequence of str, optional
        Keep only these site ids (in this order).
    targets : bool, default True
        The cube must hold observed GPP (to train or evaluate). False: predictors only (to
        predict): a store whose GPP is all NaN (``gpp build --no-targets``) or missing
        opens, with ``y`` all NaN where nothing was observed (and ``extreme`` all False if
        missing).

    Returns
    -------
    Cube

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        The path is missing, a store breaks the contract, or (with ``targets=True``) a
        predictor holds no finite value at some site or GPP holds no observed value.
    """
    path = Path(path)
    if not path.exists():
        raise InputFormatError(f"{path}: feature cube not found")
    if _is_zarr_store(path):
        ds = _open_store(path)
        if not targets:
            ds = _without_targets(ds)
        validate_cube(ds, str(path))
        ds = _as_multisite(ds)
    else:
        stores = sorted(p for p in path.glob("*.zarr") if p.name != MULTISITE_NAME)
        if not stores:
            if (path / MULTISITE_NAME).exists():
                return open_cube(path / MULTISITE_NAME, sites, targets=targets)
            raise InputFormatError(f"{path}: no zarr feature stores found")
        parts = []
        for store in stores:
            one = _open_store(store)
            if not targets:
                one = _without_targets(one)
            validate_cube(one, str(store))
            parts.append(_as_multisite(one))
        ds = xr.concat(parts, dim="site", join="exact", combine_attrs="override")
    if sites is not None:
        missing = sorted(set(sites) - {str(s) for s in ds["site"].values})
        if missing:
            raise InputFormatError(f"{path}: site(s) {', '.join(missing)} not in the cube")
        ds = ds.sel(site=list(sites))
    return _to_cube(ds, str(path), targets=targets)


def _to_cube(ds: xr.Dataset, source: str, *, targets: bool = True) -> Cube:
    predictors = tuple(str(p) for p in ds.attrs["predictors"])
    target = str(ds.attrs["target"])
    ds = ds.load()
    X = np.stack([ds[p].transpose("site", "time").values for p in predictors], axis=-1)
    X = X.astype(np.float32)
    site_ids = tuple(str(s) for s in ds["site"].values)
    finite = np.isfinite(X).any(axis=1)  # (site, feature)
    # Training needs every predictor at every site; prediction (targets=False) marks the
    # days of such a site NaN with a reason instead (gpp_models.predict).
    if targets and not finite.all():
        s, f = np.argwhere(~finite)[0]
        raise InputFormatError(
            f"{source}: predictor {predictors[f]!r} has no finite value at site {site_ids[s]} "
            "(all NaN); fix the cube or drop the site"
        )
    y = ds[target].transpose("site", "time").values.astype(np.float32)
    if targets and not np.isfinite(y).any():
        hint = ("; it was built without targets (gpp build --no-targets): open it with "
                "targets=False to predict" if ds.attrs.get("targets") == NO_TARGETS else "")
        raise InputFormatError(f"{source}: target {target!r} holds no observed value{hint}")
    extreme = ds["extreme"].transpose("site", "time").values.astype(bool)
    attrs = dict(ds.attrs)
    if isinstance(attrs.get("provenance"), str):
        with contextlib.suppress(json.JSONDecodeError):
            attrs["provenance"] = json.loads(attrs["provenance"])
    return Cube(X=X, y=y, extreme=extreme, time=pd.DatetimeIndex(ds["time"].values),
                sites=site_ids, predictors=predictors, attrs=attrs, source=source)


@dataclass(frozen=True)
class Standardizer:
    """Per-feature z-score with statistics of the fitting years, pooled over sites.

    Attributes
    ----------
    mean, std : ndarray, shape (feature,)
        Training mean and standard deviation in the predictors' units.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray, day_mask: np.ndarray) -> Standardizer:
        """Fit on the days where ``day_mask`` (shape (time,)) is True only.

        Parameters
        ----------
        X : ndarray, shape (site, time, feature)
            Raw predictors.
        day_mask : ndarray of bool, shape (time,)
            Days of the fitting years.
        """
        sub = X[:, day_mask, :].reshape(-1, X.shape[-1])
        mean = np.nanmean(sub, axis=0)
        std = np.nanstd(sub, axis=0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)  # constant feature: no scaling
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardise; NaN (outside a predictor's data range) becomes 0, the training mean."""
        Z = (X - self.mean) / self.std
        return np.nan_to_num(Z, nan=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready statistics."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


def sample_index(
    cube: Cube, years: Sequence[int] | np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample (site, day) indices: observed GPP, day in ``years``, a full window available.

    Parameters
    ----------
    cube : Cube
    years : sequence of int, or ndarray of bool with shape (time,)
        Calendar years whose days may be targets, or a day mask.
    window : int
        Sequence length [days]; days before index ``window - 1`` have no complete window.

    Returns
    -------
    site_idx, time_idx : ndarray of int32, shape (n,)
        Sorted by site then day.
    """
    days = (np.asarray(years) if np.asarray(years).dtype == bool
            else np.isin(cube.years, list(years)))
    ok = np.isfinite(cube.y) & days[None, :]
    ok[:, : window - 1] = False
    s, t = np.nonzero(ok)
    return s.astype(np.int32), t.astype(np.int32)


def gather_windows(X: jnp.ndarray, site_idx: jnp.ndarray, time_idx: jnp.ndarray,
                   window: int) -> jnp.ndarray:
    """The ``window`` days ending on each target day, by index arithmetic (no loop).

    Parameters
    ----------
    X : array, shape (site, time, feature)
        Standardised predictors (on the device).
    site_idx, time_idx : array of int, shape (n,)
        Target samples.
    window : int
        Sequence length [days] (static).

    Returns
    -------
    array, shape (n, window, feature)
        ``out[i, k] = X[site_idx[i], time_idx[i] - window + 1 + k]``.
    """
    steps = time_idx[:, None] + jnp.arange(-window + 1, 1)[None, :]
    return X[site_idx[:, None], steps]


def gather_windows_time_major(X: jnp.ndarray, site_idx: jnp.ndarray, time_idx: jnp.ndarray,
                              window: int) -> jnp.ndarray:
    """As :func:`gather_windows` but shaped (window, n, feature) for the scan."""
    steps = jnp.arange(-window + 1, 1)[:, None] + time_idx[None, :]
    return X[site_idx[None, :], steps]


@dataclass(frozen=True)
class Prepared:
    """Arrays ready for training: standardised predictors and the split sample indices."""

    cube: Cube
    Z: np.ndarray
    scaler: Standardizer
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    window: int
    y_mean: float = 0.0
    y_std: float = 1.0

    @property
    def y_scaled(self) -> np.ndarray:
        """GPP standardised with the fitting samples' mean and std (NaN -> 0, never a target)."""
        return np.nan_to_num((self.cube.y - self.y_mean) / self.y_std).astype(np.float32)


def prepare(cube: Cube, *, window: int, fit_years: Sequence[int] | np.ndarray,
            select_years: Sequence[int] | np.ndarray,
            test_years: Sequence[int] | np.ndarray) -> Prepared:
    """Standardise with ``fit_years`` statistics and index the fit/select/test samples.

    Each split is given as calendar years or as a boolean day mask of shape (time,).

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        A split holds no sample (e.g. the cube does not cover those years).
    """
    def mask(spec: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(spec)
        return arr if arr.dtype == bool else np.isin(cube.years, list(spec))

    scaler = Standardizer.fit(cube.X, mask(fit_years))
    splits = {
        "fit": sample_index(cube, fit_years, window),
        "select": sample_index(cube, select_years, window),
        "test": sample_index(cube, test_years, window),
    }
    for name, (s, _t) in splits.items():
        if s.size == 0:
            raise InputFormatError(
                f"{cube.source}: no observed GPP in the {name} years of the split "
                f"(years in the cube: {sorted(set(cube.years.tolist()))})"
            )
    # The network learns standardised GPP (fitting samples only) and predictions are mapped
    # back; this only rescales the MAE loss and spares the head from learning the units.
    s_fit, t_fit = splits["fit"]
    y_fit = cube.y[s_fit, t_fit]
    y_std = float(np.std(y_fit)) or 1.0
    return Prepared(cube=cube, Z=scaler.transform(cube.X), scaler=scaler, splits=splits,
                    window=window, y_mean=float(np.mean(y_fit)), y_std=y_std)


def recorded_scaling(meta: dict[str, Any]) -> tuple[tuple[str, ...], Standardizer, float,
                                                    float]:
    """The predictor names, their standardisation and GPP's scaling a run recorded.

    Parameters
    ----------
    meta : dict
        A run's ``config.json`` with ``predictors``, ``standardizer`` (``mean``, ``std`` in
        the predictors' units) and ``target_scaling`` (``y_mean``, ``y_std`` [gC m-2 d-1]).

    Returns
    -------
    (predictors, scaler, y_mean, y_std)
    """
    st, ts = meta["standardizer"], meta["target_scaling"]
    return (tuple(str(p) for p in meta["predictors"]),
            Standardizer(mean=np.asarray(st["mean"], np.float32),
                         std=np.asarray(st["std"], np.float32)),
            float(ts["y_mean"]), float(ts["y_std"]))


def with_recorded_scaling(prepared: Prepared, meta: dict[str, Any], where: str) -> Prepared:
    """``prepared`` (of any cube) scaled as the run was trained, not refitted on this cube.

    A network only makes sense of predictors standardised with its training statistics and
    gives GPP in its training scaling; refitting both on another cube (other sites or
    years) would shift every prediction without a word.

    Parameters
    ----------
    prepared : Prepared
        From :func:`prepare_for` on the cube to evaluate.
    meta : dict
        The run's ``config.json`` (:func:`recorded_scaling`).
    where : str
        The run, for messages.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        The run records no scaling (written before runs carried it), or the cube's
        predictors are not the run's, in the same order.
    """
    missing = [k for k in ("predictors", "standardizer", "target_scaling") if k not in meta]
    if missing:
        raise InputFormatError(f"{where}: its config.json records no {', '.join(missing)}; "
                               "evaluate it on its training cube only")
    predictors, scaler, y_mean, y_std = recorded_scaling(meta)
    have = tuple(prepared.cube.predictors)
    if have != predictors:
        raise InputFormatError(
            f"{where}: the cube {prepared.cube.source} has predictors {list(have)}, the run "
            f"was trained on {list(predictors)}")
    return dataclasses.replace(prepared, Z=scaler.transform(prepared.cube.X), scaler=scaler,
                               y_mean=y_mean, y_std=y_std)


def resolve_split(config: Any, cube: Cube) -> Any:
    """Adapt a TrainConfig's split to the years a cube actually holds.

    Training and test years are the config's where the cube has observed GPP in them, else the
    cube's own ``train_years``/``test_years`` attributes. Under ``holdout`` the validation
    year becomes the last available training year, or the blocked split (``val_year=None``)
    when only one training year is available.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        The cube has no observed GPP in any training or any test year.
    """
    present = set(cube.years[np.isfinite(cube.y).any(axis=0)].tolist())

    def pick(wanted: Sequence[int], attr: str) -> tuple[int, ...]:
        years = tuple(y for y in wanted if y in present)
        if not years:
            years = tuple(int(y) for y in cube.attrs.get(attr, ()) if int(y) in present)
        return years

    train = pick(config.train_years, "train_years")
    test = pick(config.test_years, "test_years")
    if not train or not test:
        raise InputFormatError(
            f"{cube.source}: no observed GPP in the training ({list(config.train_years)}) or "
            f"test ({list(config.test_years)}) years; the cube holds {sorted(present)}"
        )
    val = config.val_year
    if config.protocol == "holdout" and (val not in train or len(train) < 2):
        val = train[-1] if len(train) >= 2 else None
    return dataclasses.replace(config, train_years=train, test_years=test, val_year=val)


def prepare_for(config: Any, cube: Cube) -> tuple[Any, Prepared]:
    """:func:`resolve_split` then :func:`prepare` with the config's day masks."""
    config = resolve_split(config, cube)
    m = config.day_masks(cube.time)
    return config, prepare(cube, window=config.window, fit_years=m["fit"],
                           select_years=m["select"], test_years=m["test"])
