"""Phase 1 of a batch build: one task per sensor and site, each writing one intermediate store.

Each task is a function ``task(ctx) -> (dataset, provenance)`` registered once in
:data:`TASKS` with its Dask priority and the progress stages it covers; the scheduler
(:mod:`gpp_cubes.batch.schedule`), the output clean-up and phase 2 follow the registry;
the fingerprints (:data:`gpp_cubes.batch.fingerprint.PHASE1`) name the same tasks.
:func:`run_sensor` is the Dask task around them: site log, fingerprint, QA counts, and the
store ``<out>/.work/<SITE>/<task>.zarr`` written atomically with its provenance.

==========  =========================================================  ========  =============
task        what                                                       priority  stages
==========  =========================================================  ========  =============
``s2``      the daily spectral-index table of clear days (before PCA)  30        s2
``s1``      forest mask, then S1 backscatter in the annulus            10        forest, s1
``lst``     MODIS Terra/Aqua day and night LST                         20        lst
``target``  clear-sky GHI, GPP and climate-induced extremes            0         clearsky, gpp
==========  =========================================================  ========  =============

A build without targets (``BuildConfig.targets`` False) reads no FLUXNET file: the
``target`` store holds clear-sky GHI, GPP all NaN and no extreme, and says why.

Priorities put the longest tasks first (S2 > LST > S1 > target), which leaves the least idle
time at the end of phase 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.batch.cluster import worker_threads
from gpp_cubes.batch.config import BuildConfig
from gpp_cubes.batch.logs import fail, log, site_log, stage
from gpp_cubes.contract import NO_TARGETS, NO_TARGETS_REASON
from gpp_cubes.errors import BuildError, ConfigError
from gpp_cubes.paper import EXTREME_MIN_DAYS, EXTREME_QUANTILE, QC_MIN
from gpp_cubes.sensors.result import SensorResult
from gpp_cubes.sites.catalog import Site
from gpp_cubes.stac.load import READ_THREADS


@dataclass
class TaskContext:
    """What a phase-1 task works with: the site, the build, the summary it fills in."""

    site: Site
    cfg: BuildConfig
    summary: dict[str, Any]
    threads: int = 1

    @property
    def calendar(self) -> pd.DatetimeIndex:
        return pd.date_range(self.cfg.start, self.cfg.end, freq="D", name="time")

    @cached_property
    def grid(self) -> Any:
        from gpp_cubes.sites.grid import site_grid

        return site_grid(self.site.latitude, self.site.longitude, buffer_m=self.cfg.radius_m)

    @cached_property
    def qa(self) -> Any:
        from gpp_cubes.qa import QAConfig

        return QAConfig.from_options(self.cfg.qa)

    def stage(self, name: str) -> Any:
        return stage(self.site.id, name, self.summary)

    def qa_provenance(self, section: str, qa: dict[str, Any], key: str) -> dict[str, Any]:
        """The ``qa`` provenance of a store; the counts go to the summary as ``<key>_qa_*``
        (phase-1 summaries are merged by key)."""
        steps = qa.get("steps", {})
        self.summary[f"{key}_qa_dropped"] = int(qa.get("values_dropped",
                                                       steps.get("dropped", 0)))
        self.summary[f"{key}_qa_flagged"] = int(qa.get("values_flagged",
                                                       steps.get("flagged", 0)))
        return {"qa": {"config": self.qa.to_dict(), section: qa}}


TaskFn = Callable[[TaskContext], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class Phase1Task:
    """A registered phase-1 task: its function, Dask priority and progress stages."""

    name: str
    run: TaskFn
    priority: int
    stages: tuple[str, ...]


#: The phase-1 tasks by name, in registration order.
TASKS: dict[str, Phase1Task] = {}


def task(name: str, *, priority: int, stages: tuple[str, ...]) -> Callable[[TaskFn], TaskFn]:
    """Register a phase-1 task (decorator)."""
    def register(fn: TaskFn) -> TaskFn:
        TASKS[name] = Phase1Task(name, fn, priority, stages)
        return fn
    return register


def _as_time(index: Any) -> np.ndarray:
    return pd.DatetimeIndex(index).values.astype("datetime64[ns]")


@task("s2", priority=30, stages=("s2",))
def s2_task(ctx: TaskContext) -> tuple[Any, dict[str, Any]]:
    import xarray as xr

    with ctx.stage("s2"):
        s2 = s2_index_table(ctx.site, ctx.grid, ctx.cfg, ctx.threads)  # reads CORINE itself
        ctx.summary.update(s2_found=s2.scenes_found, s2_kept=s2.scenes_kept,
                           clear_fraction=s2.clear_fraction)
    ds = xr.Dataset(
        {"s2_indices": (("s2_time", "s2_index"), s2.frame.to_numpy(dtype=np.float64))},
        coords={"s2_time": _as_time(s2.frame.index),
                "s2_index": [str(c) for c in s2.frame.columns]})
    return ds, {"item_ids": list(s2.item_ids), "params": s2.params,
                **ctx.qa_provenance("s2", s2.qa, "s2")}


@task("s1", priority=10, stages=("forest", "s1"))
def s1_task(ctx: TaskContext) -> tuple[Any, dict[str, Any]]:
    import xarray as xr

    from gpp_cubes.qa import qa_s1_frame
    from gpp_cubes.sensors.s1 import FEATURES, s1_features
    from gpp_cubes.sites.forest import forest_mask

    sid, cfg = ctx.site.id, ctx.cfg
    with ctx.stage("forest"):
        if not cfg.corine_source:
            raise ConfigError("no CORINE source given (corine_source / --corine)")
        forest = forest_mask(ctx.grid, cfg.corine_source, site_id=sid)
        ctx.summary["forest_fraction"] = float(forest.mean())
    with ctx.stage("s1"):
        s1 = s1_features(ctx.grid, forest, cfg.start, cfg.end, provider=cfg.provider,
                         stac_url=cfg.stac_url, site_id=sid, engine=cfg.engine,
                         outer_m=cfg.radius_m)
        ctx.summary.update(s1_found=s1.scenes_found, s1_kept=s1.scenes_kept)
        f, qa = qa_s1_frame(s1.frame, ctx.qa, n_found=s1.scenes_found,
                            n_loaded=len(s1.item_ids), n_kept=s1.scenes_kept, site_id=sid)
    ds = xr.Dataset({c: ("s1_time", f[c].to_numpy(dtype=np.float64)) for c in FEATURES},
                    coords={"s1_time": _as_time(f.index)})
    return ds, {"item_ids": list(s1.item_ids), "params": s1.params,
                **ctx.qa_provenance("s1", qa, "s1")}


@task("lst", priority=20, stages=("lst",))
def lst_task(ctx: TaskContext) -> tuple[Any, dict[str, Any]]:
    import xarray as xr

    from gpp_cubes.qa import qa_lst_frame
    from gpp_cubes.sensors.lst import lst_features

    site, cfg, cal = ctx.site, ctx.cfg, ctx.calendar
    with ctx.stage("lst"):
        lst = lst_features(site.latitude, site.longitude, cfg.start, cfg.end,
                           source=cfg.lst_source, provider=cfg.provider,
                           stac_url=cfg.stac_url, site_id=site.id)
        ctx.summary.update(lst_found=lst.scenes_found, lst_kept=lst.scenes_kept)
        f, qa = qa_lst_frame(lst.frame, ctx.qa, n_found=lst.scenes_found,
                             n_kept=lst.scenes_kept, site_id=site.id)
    ds = xr.Dataset({c: ("time", f[c].reindex(cal).to_numpy(np.float64)) for c in f.columns},
                    coords={"time": cal.values})
    return ds, {"item_ids": list(lst.item_ids), "params": lst.params,
                **ctx.qa_provenance("lst", qa, "lst")}


@task("target", priority=0, stages=("clearsky", "gpp"))
def target_task(ctx: TaskContext) -> tuple[Any, dict[str, Any]]:
    import xarray as xr

    from gpp_cubes.cube.features import site_attributes
    from gpp_cubes.qa import qa_clear_sky_ghi
    from gpp_cubes.sensors.clearsky import daily_clear_sky_ghi

    site, cfg, cal = ctx.site, ctx.cfg, ctx.calendar
    with ctx.stage("clearsky"):
        known = site_attributes(site)["elevation_m"]  # NaN when unknown
        elev = 0.0 if np.isnan(known) else known
        if np.isnan(known):
            log.warning("%s: elevation unknown; clear-sky GHI computed at sea level", site.id)
        ghi = daily_clear_sky_ghi(site.latitude, site.longitude, elev, cfg.start, cfg.end)
        ghi, qa = qa_clear_sky_ghi(ghi, site.latitude, ctx.qa, site_id=site.id)
    with ctx.stage("gpp"):
        if cfg.targets:
            gpp, extreme, flux_path = _gpp_and_extremes(site.id, cfg)
            ctx.summary["gpp_valid_fraction"] = float(gpp.notna().mean())
            gpp_prov = {"file": Path(flux_path).name, "variable": "GPP_NT_VUT_REF",
                        "qc_min": QC_MIN,
                        "extremes": {"method": cfg.extremes_method,
                                     "quantile": EXTREME_QUANTILE,
                                     "min_days": EXTREME_MIN_DAYS}}
        else:  # a site without a tower: nothing observed, and said so (not 0, not skipped)
            gpp = pd.Series(np.nan, index=cal)
            extreme = pd.Series(False, index=cal)
            ctx.summary["gpp_valid_fraction"] = float("nan")
            gpp_prov = {"targets": NO_TARGETS, "reason": NO_TARGETS_REASON}
            log.info("%s: GPP %s", site.id, NO_TARGETS_REASON)
    ds = xr.Dataset({"clear_sky_ghi": ("time", ghi.reindex(cal).to_numpy(np.float64)),
                     "GPP": ("time", gpp.reindex(cal).to_numpy(np.float64)),
                     "extreme": ("time", extreme.reindex(cal).to_numpy(bool))},
                    coords={"time": cal.values})
    return ds, {"clear_sky_ghi": {"model": "pvlib SPA + Ineichen (Linke climatology)",
                                  "elevation_m": elev},
                "gpp": gpp_prov, "targets": cfg.targets_label,
                **ctx.qa_provenance("clear_sky_ghi", qa, "ghi")}


#: Names of the phase-1 tasks (one intermediate store each per site).
SENSORS = tuple(TASKS)


def _gpp_and_extremes(site_id: str, cfg: BuildConfig) -> tuple[pd.Series, pd.Series, str]:
    from gpp_cubes.targets.extremes import detect_extremes
    from gpp_cubes.targets.fluxnet import find_fluxnet_file, gpp_targets, read_fluxnet

    if not cfg.fluxnet_dir:
        raise ConfigError("no FLUXNET directory given (fluxnet_dir / --fluxnet)")
    path = find_fluxnet_file(cfg.fluxnet_dir, site_id)
    if path is None:
        raise BuildError(f"site {site_id}: no FLUXNET daily file in {cfg.fluxnet_dir}")
    df = read_fluxnet(path)
    # The seasonal cycle of the extremes uses the whole record (all available years).
    full = gpp_targets(df, start=str(df.index[0].date()), end=str(df.index[-1].date()))
    ext = detect_extremes(full, method=cfg.extremes_method).flags
    cal = pd.date_range(cfg.start, cfg.end, freq="D")
    return full.reindex(cal), ext.reindex(cal).fillna(False).astype(bool), str(path)


def run_sensor(site: Site, cfg: BuildConfig, sensor: str) -> dict[str, Any]:
    """Phase 1 of one site and one task (a Dask task), written to its intermediate store.

    Parameters
    ----------
    site : gpp_cubes.sites.Site
    cfg : BuildConfig
    sensor : {"s2", "s1", "lst", "target"}
        A name of :data:`TASKS`; ``target`` is clear-sky GHI, GPP and extremes.

    Returns
    -------
    dict
        Summary: ``status`` ("ok" or "failed"), scene counts, clear fraction, GPP valid
        fraction, ``error``.
    """
    from gpp_cubes.batch.fingerprint import KEY, phase1_fingerprint
    from gpp_cubes.cube.store import write_zarr_atomic
    from gpp_cubes.stac.gdal import configure_gdal

    sid = site.id
    summary: dict[str, Any] = {"site": sid, "status": "ok", "error": None}
    t0 = time.perf_counter()
    with site_log(cfg.log_path(sid)), worker_threads() as threads:
        try:
            configure_gdal()
            log.info("%s: phase 1 %s, %s..%s, provider %s %s", sid, sensor, cfg.start,
                     cfg.end, cfg.provider, cfg.stac_url or "")
            if sensor not in TASKS:
                raise ConfigError(f"unknown sensor stage {sensor!r}; known: "
                                  f"{', '.join(SENSORS)}")
            # taken before the stage reads its inputs: what this store is built from
            fingerprint = phase1_fingerprint(cfg, site, sensor)
            ctx = TaskContext(site, cfg, summary, threads)
            ds, prov = TASKS[sensor].run(ctx)
            summary[f"seconds_{sensor}"] = round(time.perf_counter() - t0, 2)
            log.info("%s: %s took %.1f s", sid, sensor, summary[f"seconds_{sensor}"])
            write_zarr_atomic(ds, cfg.phase1_store(sid, sensor), provenance={
                "site_id": sid, "sensor": sensor, "parameters": cfg.provenance_params(),
                KEY: fingerprint.record(),
                # run times stay in the log, so equal inputs give byte-equal stores
                "summary": {k: v for k, v in summary.items()
                            if k != "stage" and not k.startswith("seconds_")}, **prov})
        except Exception as err:  # one site failing must not stop the others
            fail(summary, sid, err)
    return summary


# --------------------------------------------------------------------------------------
# The Sentinel-2 adapter (the stage itself is gpp_cubes.s2; its PCA runs in phase 2)
# --------------------------------------------------------------------------------------


def s2_index_table(site: Site, grid: Any, cfg: BuildConfig, threads: int = 1) -> SensorResult:
    """Run :func:`gpp_cubes.s2.s2_features` and keep its daily spectral-index table.

    A batch build gets its parallelism from many tasks side by side, so each task keeps to
    its worker's threads: as many blocks in flight, with reads of each block in flight on
    :data:`gpp_cubes.stac.load.READ_THREADS` threads (at least two per worker thread: the
    reads mostly wait on the network); ``s2_options`` may override both. The interactive
    defaults (two blocks in flight) would have tasks on neighbouring workers compete for
    cores.

    The feature QA (:func:`gpp_cubes.qa.qa_s2_features`) runs on the time steps before the
    table is returned: with ``action="drop"`` the steps it rejects are not in the table, so
    the PCA never sees them.
    """
    from gpp_cubes.qa import QAConfig, qa_s2_features
    from gpp_cubes.s2 import s2_features, used_item_ids

    ds = s2_features(site, cfg.start, cfg.end, provider=cfg.provider, stac_url=cfg.stac_url,
                     corine=cfg.corine_source, engine=cfg.engine, grid=grid,
                     radius_m=cfg.radius_m,
                     **{"blocks_in_flight": threads,
                        "read_threads": max(2 * threads, READ_THREADS),
                        **dict(cfg.s2_options)})
    names = [n for n in str(ds.attrs.get("index_list", "")).split(",") if n]
    prov = json.loads(ds.attrs.get("provenance", "{}"))
    table = pd.DataFrame({n: ds[n].values.astype(np.float64) for n in names},
                         index=pd.DatetimeIndex(ds["time"].values, name="time"))
    frac = ds["clear_fraction"].values if "clear_fraction" in ds else np.array([])
    keep, qa = qa_s2_features(ds, QAConfig.from_options(cfg.qa), site.id)
    table = table[keep]
    frac = frac[keep] if frac.size else frac
    params = {k: v for k, v in prov.items()
              if k not in ("stac_items", "dropped_items", "created", "python", "packages")}
    used = tuple(used_item_ids(ds.isel(time=np.flatnonzero(keep))))  # the steps QA kept
    return SensorResult(frame=table, scenes_found=int(prov.get("n_items_found",
                                                          len(prov.get("stac_items", [])))),
                   scenes_kept=len(used),
                   clear_fraction=float(np.mean(frac)) if frac.size else float("nan"),
                   item_ids=used,
                   params={**params, "dropped_items": prov.get("dropped_items", {})}, qa=qa)
