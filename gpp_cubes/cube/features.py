"""The daily site feature cube: one calendar, predictors interpolated, GPP never.

Stage of the data flow (paper section 2.2, first paragraph)::

    S2 PCs + S1 + LST + clear-sky GHI + GPP/extremes ──> daily calendar
        ──> predictors linearly interpolated in time, GPP left as observed ──> zarr store

This module writes the contract that ``gpp_models`` reads; its names, units, attributes and
version are defined once in :mod:`gpp_cubes.contract` (prose: ``docs/architecture.md``).

Gap filling of predictors
-------------------------
* Inside the observed range of a predictor, gaps are filled by linear interpolation in time
  (pandas ``interpolate(method="time")``). Observations just outside the calendar (e.g. a
  scene on 2015-12-30) are used as interpolation anchors, so the calendar's first days are
  interpolated rather than extrapolated when data exist before ``start``.
* Leading and trailing gaps (before the first / after the last observation available) have
  nothing to interpolate between; they are filled with the nearest observed value
  (constant extension) and counted separately in ``n_edge_filled``. Linear extrapolation
  was rejected because it runs away over long gaps.
* ``n_observed`` counts calendar days with an observation; ``n_interpolated`` counts every
  filled day (inside gaps *and* edges), so ``n_observed + n_interpolated`` is the calendar
  length. A predictor with no observation at all cannot be filled and raises
  :class:`~gpp_cubes.errors.BuildError`.
* GPP is never filled: a missing or filtered day stays NaN.

References
----------
Montero, D. et al. (2024). Recurrent neural networks for modelling gross primary production
    from remote sensing data. Section 2.2: "We interpolated missing data in the predictor
    features linearly, while we did not interpolate GPP values, even when missing."
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gpp_cubes.contract import (  # re-exported: the contract is defined in one place
    CF_GLOBAL_ATTRS,
    COORDINATE_ATTRS,
    FIXED_PREDICTORS,
    FORMAT_VERSION,
    MULTISITE_NAME,
    NO_TARGETS,
    NO_TARGETS_REASON,
    NOT_OBSERVED_ATTR,
    PREDICTOR_COUNT_ATTRS,
    SITE_ATTRS,
    SITE_ID_ATTR,
    TARGET,
    predictor_metadata,
    predictor_order,
    site_coordinates,
    site_scalar_coordinates,
    variable_attrs,
)
from gpp_cubes.errors import BuildError
from gpp_cubes.paper import STUDY_END, STUDY_START, TEST_YEARS, TRAIN_YEARS
from gpp_cubes.sites.catalog import Site, as_site
from gpp_cubes.storage import as_location

__all__ = [
    "FIXED_PREDICTORS",
    "FORMAT_VERSION",
    "MULTISITE_NAME",
    "SITE_COORDS",
    "FillCounts",
    "SiteInputs",
    "assemble_site",
    "combine_sites",
    "daily_calendar",
    "fill_predictor",
    "predictor_metadata",
    "predictor_order",
    "provenance_json",
    "site_attributes",
    "write_multisite_store",
    "write_site_store",
]


def daily_calendar(start: str = STUDY_START, end: str = STUDY_END) -> pd.DatetimeIndex:
    """The gap-free daily calendar ``start..end`` (inclusive), ``datetime64[ns]``, named time."""
    cal = pd.date_range(pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize(),
                        freq="D", name="time")
    if len(cal) == 0:
        raise BuildError(f"empty calendar: start {start} is after end {end}")
    return cal.astype("datetime64[ns]")


@dataclass(frozen=True)
class FillCounts:
    """How a predictor's calendar was filled [days]."""

    n_observed: int
    n_interpolated: int
    n_edge_filled: int


def fill_predictor(series: pd.Series, calendar: pd.DatetimeIndex, *,
                   name: str = "predictor", site_id: str | None = None
                   ) -> tuple[np.ndarray, FillCounts]:
    """Put a predictor on the calendar, interpolating linearly and filling edges.

    Parameters
    ----------
    series : pandas.Series
        Observations [predictor units] indexed by date (may extend beyond the calendar;
        duplicate dates are averaged; NaN = not observed).
    calendar : pandas.DatetimeIndex
        Daily target calendar (:func:`daily_calendar`).
    name, site_id : str
        Named in errors.

    Returns
    -------
    values : numpy.ndarray of float32, shape (len(calendar),)
        No NaN.
    counts : FillCounts
        See the module docstring.

    Raises
    ------
    BuildError
        The predictor has no observation at all.
    """
    s = pd.Series(series, dtype="float64").dropna()
    s.index = pd.DatetimeIndex(s.index).normalize()
    s = s.groupby(level=0).mean()
    if s.empty:
        where = f" at site {site_id}" if site_id else ""
        raise BuildError(f"predictor {name!r}{where} has no observation to interpolate from")
    observed = calendar.isin(s.index)
    full = s.reindex(s.index.union(calendar))
    inside = full.interpolate(method="time", limit_area="inside")
    edge_missing = inside.reindex(calendar).isna().to_numpy()
    filled = inside.ffill().bfill().reindex(calendar).to_numpy(dtype=np.float64)
    n_obs = int(observed.sum())
    counts = FillCounts(n_observed=n_obs, n_interpolated=len(calendar) - n_obs,
                        n_edge_filled=int(edge_missing.sum()))
    return filled.astype(np.float32), counts


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (pd.Timestamp, np.datetime64)):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def provenance_json(provenance: Mapping[str, Any]) -> str:
    """Provenance as the JSON string stored in the ``provenance`` attribute (sorted keys)."""
    return json.dumps(provenance, sort_keys=True, default=_json_default)


def site_attributes(site: Site | Any) -> dict[str, Any]:
    """The site attributes a per-site store carries (:data:`SITE_ID_ATTR`, :data:`SITE_ATTRS`).

    Parameters
    ----------
    site : Site or anything :func:`gpp_cubes.sites.catalog.as_site` accepts

    Returns
    -------
    dict
        ``site_id``; ``latitude``, ``longitude`` [degrees, WGS84] and ``elevation_m``
        [m a.s.l.] as float (elevation NaN when unknown); ``igbp`` ("" when unknown).
    """
    site = as_site(site)
    elev = site.elevation_m
    return {SITE_ID_ATTR: str(site.id), "latitude": float(site.latitude),
            "longitude": float(site.longitude),
            "elevation_m": float("nan") if elev is None else float(elev),
            "igbp": str(site.igbp or "")}


@dataclass(frozen=True)
class SiteInputs:
    """Everything joined into one site's cube.

    Attributes
    ----------
    site : Site
        The station (:func:`site_attributes` are written from it).
    predictors : pandas.DataFrame
        One column per predictor (``S2_PC*``, ``S1_*``, ``MOD11A1_*``, ``MYD11A1_*``,
        ``clear_sky_ghi``) [units of :func:`predictor_metadata`], indexed by date; NaN where
        not observed.
    gpp : pandas.Series
        Daily GPP [g C m-2 d-1; stored as "g m-2 d-1", the CF unit], NaN where missing
        or filtered.
    extreme : pandas.Series of bool
        Climate-induced extreme days.
    provenance : dict
        Item ids, versions and parameters (stored as JSON).
    """

    site: Site
    predictors: pd.DataFrame
    gpp: pd.Series
    extreme: pd.Series
    provenance: dict[str, Any] = field(default_factory=dict)


def assemble_site(inputs: SiteInputs, calendar: pd.DatetimeIndex, *,
                  train_years: Sequence[int] = TRAIN_YEARS,
                  test_years: Sequence[int] = TEST_YEARS, targets: bool = True) -> xr.Dataset:
    """One site's daily feature cube, in the format_version "1" contract.

    Parameters
    ----------
    inputs : SiteInputs
    calendar : pandas.DatetimeIndex
        Daily calendar.
    train_years, test_years : sequence of int
        The temporal split recorded in the attributes [years].
    targets : bool, default True
        False: built without targets (no tower data): ``GPP`` all NaN and ``extreme`` all
        False whatever ``inputs`` holds, both with the attribute
        :data:`gpp_cubes.contract.NOT_OBSERVED_ATTR`, and the dataset attribute ``targets``
        :data:`gpp_cubes.contract.NO_TARGETS`.

    Returns
    -------
    xarray.Dataset
        ``time`` dimension; float32 predictors without NaN, ``GPP`` float32 (NaN kept),
        ``extreme`` bool, attributes as in ``docs/architecture.md``; CF-1.8 single time
        series: variable attributes of :func:`gpp_cubes.contract.variable_attrs`, scalar
        coordinates ``site``, ``latitude``, ``longitude``, ``elevation_m``, ``igbp``
        (:func:`gpp_cubes.contract.site_scalar_coordinates`).
    """
    site = site_attributes(inputs.site)
    names = predictor_order(list(inputs.predictors.columns))
    data_vars: dict[str, xr.DataArray] = {}
    fill_summary: dict[str, dict[str, int]] = {}
    for name in names:
        values, counts = fill_predictor(inputs.predictors[name], calendar, name=name,
                                        site_id=site[SITE_ID_ATTR])
        predictor_metadata(name)  # raises naming a name that is not a predictor
        data_vars[name] = xr.DataArray(values, dims="time", attrs={
            **variable_attrs(name), "n_observed": counts.n_observed,
            "n_interpolated": counts.n_interpolated, "n_edge_filled": counts.n_edge_filled})
        fill_summary[name] = {"n_observed": counts.n_observed,
                              "n_interpolated": counts.n_interpolated,
                              "n_edge_filled": counts.n_edge_filled}
    gpp = pd.Series(inputs.gpp, dtype="float64")
    gpp.index = pd.DatetimeIndex(gpp.index).normalize()
    gpp_values = gpp.reindex(calendar).to_numpy(dtype=np.float32)  # reindex only: no fill
    ext = pd.Series(inputs.extreme).astype("boolean")
    ext.index = pd.DatetimeIndex(ext.index).normalize()
    ext_values = ext.reindex(calendar).fillna(False).to_numpy(dtype=bool)
    unobserved: dict[str, str] = {}
    if not targets:
        gpp_values = np.full(len(calendar), np.nan, dtype=np.float32)
        ext_values = np.zeros(len(calendar), dtype=bool)
        unobserved = {NOT_OBSERVED_ATTR: NO_TARGETS_REASON}
    data_vars[TARGET] = xr.DataArray(gpp_values, dims="time", attrs={
        **variable_attrs(TARGET), "n_observed": int(np.isfinite(gpp_values).sum()),
        **unobserved})
    data_vars["extreme"] = xr.DataArray(ext_values, dims="time",
                                        attrs={**variable_attrs("extreme"), **unobserved})
    prov = dict(inputs.provenance)
    prov["fill"] = fill_summary
    prov["calendar"] = [str(calendar[0].date()), str(calendar[-1].date())]
    ds = xr.Dataset(data_vars, coords={"time": ("time", calendar.values,
                                                 dict(COORDINATE_ATTRS["time"]))})
    ds = ds.assign_coords(site_scalar_coordinates(site))
    ds.attrs = {
        "format_version": FORMAT_VERSION,
        **site,
        "predictors": names,
        "target": TARGET,
        "train_years": [int(y) for y in train_years],
        "test_years": [int(y) for y in test_years],
        "provenance": provenance_json(prov),
        "title": f"{site[SITE_ID_ATTR]} daily feature cube",
        **CF_GLOBAL_ATTRS,
        **({} if targets else {"targets": NO_TARGETS}),
    }
    return ds


SITE_COORDS = SITE_ATTRS  # former name, kept for importers


def combine_sites(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Stack per-site cubes along a ``site`` dimension (the multi-site contract).

    Site attributes become ``site``-indexed coordinates (the CF ``timeSeries`` orthogonal
    layout: ``site`` has ``cf_role = "timeseries_id"``); per-predictor counts
    (``n_observed``, ``n_interpolated``, ``n_edge_filled``) become lists in site order;
    ``provenance`` becomes a JSON object keyed by site id.

    Parameters
    ----------
    datasets : sequence of xarray.Dataset
        Outputs of :func:`assemble_site` with the same predictors and calendar.

    Returns
    -------
    xarray.Dataset
    """
    if not datasets:
        raise BuildError("no site cube to combine")
    first = datasets[0]
    for ds in datasets[1:]:
        if list(ds.attrs["predictors"]) != list(first.attrs["predictors"]):
            raise BuildError(f"site {ds.attrs['site_id']} has predictors "
                             f"{ds.attrs['predictors']}, {first.attrs['site_id']} has "
                             f"{first.attrs['predictors']}; cannot stack")
        if not ds.indexes["time"].equals(first.indexes["time"]):
            raise BuildError(f"site {ds.attrs['site_id']} has another calendar than "
                             f"{first.attrs['site_id']}")
    ids = [str(ds.attrs[SITE_ID_ATTR]) for ds in datasets]
    if len(set(ids)) != len(ids):
        raise BuildError(f"duplicate site ids: {ids}")
    # The per-site scalar site coordinates are rebuilt below, site-indexed, from the attrs.
    scalar = ("site", *SITE_ATTRS)
    stacked = xr.concat([ds.drop_attrs(deep=False).drop_vars(scalar, errors="ignore")
                         for ds in datasets], dim="site", coords="minimal",
                        combine_attrs="drop_conflicts")
    stacked = stacked.assign_coords(site=("site", ids, dict(COORDINATE_ATTRS["site"])))
    stacked = stacked.assign_coords(site_coordinates([ds.attrs for ds in datasets]))
    for name in first.attrs["predictors"]:
        attrs = dict(first[name].attrs)
        for k in PREDICTOR_COUNT_ATTRS:
            attrs[k] = [int(ds[name].attrs[k]) for ds in datasets]
        stacked[name].attrs = attrs
    stacked[TARGET].attrs = {**first[TARGET].attrs,
                             "n_observed": [int(ds[TARGET].attrs["n_observed"])
                                            for ds in datasets]}
    stacked["extreme"].attrs = dict(first["extreme"].attrs)
    # sites built without targets (gpp build --no-targets): said on the variables and dataset
    unobserved = [i for i, ds in zip(ids, datasets, strict=True)
                  if ds.attrs.get("targets") == NO_TARGETS]
    targets_attr: dict[str, str] = {}
    for name in (TARGET, "extreme"):
        stacked[name].attrs.pop(NOT_OBSERVED_ATTR, None)
        if unobserved:
            stacked[name].attrs[NOT_OBSERVED_ATTR] = NO_TARGETS_REASON + (
                "" if len(unobserved) == len(ids) else f" (sites {', '.join(unobserved)})")
    if unobserved:
        targets_attr["targets"] = (NO_TARGETS if len(unobserved) == len(ids)
                                   else f"{NO_TARGETS} at {', '.join(unobserved)}")
    stacked.attrs = {
        "format_version": FORMAT_VERSION,
        "predictors": list(first.attrs["predictors"]),
        "target": TARGET,
        "train_years": list(first.attrs["train_years"]),
        "test_years": list(first.attrs["test_years"]),
        "provenance": json.dumps({i: json.loads(ds.attrs["provenance"])
                                  for i, ds in zip(ids, datasets, strict=True)},
                                 sort_keys=True),
        "title": f"daily feature cubes of {len(ids)} sites",
        **CF_GLOBAL_ATTRS,
        **targets_attr,
    }
    return stacked


def write_site_store(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Write one site's cube to ``<out_dir>/<SITE>.zarr`` atomically (marker written last).

    Parameters
    ----------
    ds : xarray.Dataset
        Output of :func:`assemble_site`.
    out_dir : path or URL
        Output directory (absolute paths recommended on clusters), or object storage
        (``s3://bucket/prefix``, :mod:`gpp_cubes.storage`).

    Returns
    -------
    pathlib.Path or gpp_cubes.storage.ObjectPath
        The complete store.
    """
    from gpp_cubes.cube.store import write_zarr_atomic

    path = as_location(out_dir) / f"{ds.attrs[SITE_ID_ATTR]}.zarr"
    return write_zarr_atomic(ds, path, provenance=json.loads(ds.attrs["provenance"]))


def write_multisite_store(site_stores: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Combine complete per-site stores into ``<out_dir>/features.zarr`` atomically.

    Parameters
    ----------
    site_stores : sequence of path
        Per-site stores, in the order of the ``site`` dimension.
    out_dir : path
        Output directory.

    Returns
    -------
    pathlib.Path
    """
    from gpp_cubes.cube.store import is_complete, write_zarr_atomic

    datasets = []
    for p in site_stores:
        if not is_complete(p):
            raise BuildError(f"site store {p} is incomplete (no marker); cannot combine")
        datasets.append(xr.open_zarr(str(as_location(p)), chunks=None).load())
    combined = combine_sites(datasets)
    return write_zarr_atomic(combined, as_location(out_dir) / MULTISITE_NAME,
                             provenance=json.loads(combined.attrs["provenance"]))
