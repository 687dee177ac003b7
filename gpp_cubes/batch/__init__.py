"""Batch builds of site feature cubes on Dask: two phases, resumable, one log per site.

Stage of the data flow: the last one of ``gpp_cubes``. For every site it runs the sensor
stages (:mod:`gpp_cubes.s2`, :mod:`gpp_cubes.sensors.s1`, :mod:`gpp_cubes.sensors.lst`,
:mod:`gpp_cubes.sensors.clearsky`, :mod:`gpp_cubes.targets.fluxnet` +
:mod:`gpp_cubes.targets.extremes`) and joins
them into the daily cube of :mod:`gpp_cubes.cube.features`.

Two phases, because the Sentinel-2 PCA is fitted on *all* sites' training years:

1. per site, in parallel: forest mask, S2 spectral-index table, S1, LST, clear-sky GHI, GPP
   and extremes -> an intermediate store ``<out>/.work/<SITE>.phase1.zarr``;
2. fit the PCA on the pooled training years of every site that has phase-1 results (saved
   in ``<out>/.work/pca.json`` and reused by later runs into the same directory), then per
   site in parallel: apply it, interpolate, write ``<out>/<SITE>.zarr``; finally the
   multi-site ``<out>/features.zarr``. Phase 2 does not wait for all of phase 1: the PCA
   starts when the last S2 task ends, a site's assembly when its own phase-1 tasks and the
   PCA are done.

Resumable: every store (intermediate or final) is written atomically with a completion
marker (:func:`gpp_cubes.cube.store.write_zarr_atomic`) and the fingerprint of what it was built
from (:mod:`gpp_cubes.batch.fingerprint`); a site whose final store is complete is skipped, a site
whose phase-1 store is complete skips phase 1. Before the cluster starts, a build checks its
input files (:func:`check_inputs`), removes the hidden temporaries a killed earlier run left
(:func:`gpp_cubes.cube.store.remove_stale_temporaries`), and compares every complete store's
fingerprint with this run's: a store built from other inputs or parameters stops the build
(:class:`~gpp_cubes.errors.StaleStoreError`), or is rebuilt with what depends on it when
``rebuild_changed=True``. ``force=True`` rebuilds the requested sites and refits the PCA.

Nothing assumes one machine: the tasks are plain functions of picklable arguments
(absolute paths and URLs, no client state); workers read the STAC API and the COGs
themselves and write the stores themselves, into ``out_dir``, which must therefore be a
path every worker can reach (a shared file system on a multi-machine cluster). Only small
per-site summaries travel back to the client. GDAL settings reach the workers through a
``WorkerPlugin`` (:func:`gpp_cubes.stac.providers.gdal_worker_plugin`), progress through Dask
events (topic ``gpp-build``), logs into ``<out>/logs/<SITE>.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.batch.fingerprint import Fingerprint
from gpp_cubes.cube.features import (
    DEFAULT_END,
    DEFAULT_START,
    MULTISITE_NAME,
    TEST_YEARS,
    TRAIN_YEARS,
    SiteMeta,
)
from gpp_cubes.errors import BuildError, ConfigError

log = logging.getLogger(__name__)

PROGRESS_TOPIC = "gpp-build"
WORK_DIR = ".work"
LOG_DIR = "logs"
PCA_FILE = "pca.json"
#: Stages reported to the progress callback, in order.
STAGES = ("forest", "s2", "s1", "lst", "clearsky", "gpp", "pca", "assemble", "write")
#: Stages covered by one phase-1 task (a skipped task skips all of them).
SENSOR_PRIORITY = {"s2": 30, "lst": 20, "s1": 10, "target": 0}
#: Dask priority of the PCA and the per-site assemblies: above every phase-1 task.
PHASE2_PRIORITY = 100
SENSOR_STAGES = {"s2": ("s2",), "s1": ("forest", "s1"), "lst": ("lst",),
                 "target": ("clearsky", "gpp")}

#: Callback ``progress(site_id, stage, state)``; state is "start", "done", "skip" or "fail".
ProgressFn = Callable[[str, str, str], None]


@dataclass(frozen=True)
class BuildConfig:
    """Everything a worker needs to build a site (picklable, absolute paths only).

    Attributes
    ----------
    out_dir : str
        Output directory, absolute, reachable by every worker.
    start, end : str
        Calendar [ISO dates, inclusive].
    provider, stac_url : str
        STAC endpoint (:func:`gpp_cubes.stac.providers.resolve_provider`).
    stac_identity : str, optional
        Stable name of the STAC endpoint in the stores' fingerprints, instead of
        ``stac_url`` without its query: for a server started on a fresh port every run
        (the demo world's), so a rerun with the same inputs reuses the stores.
    corine_source : str
        CORINE raster (path or URL) for the forest mask.
    fluxnet_dir : str
        Directory holding the FLUXNET2015-format daily files.
    engine : {"odc", "stackstac"}
        Raster loader.
    lst_source : {"stac", "ee"}
        MODIS LST source.
    train_years, test_years : tuple of int
        The temporal split (PCA is fitted on ``train_years``).
    s2_options : tuple of (str, value)
        Extra keyword arguments of :func:`gpp_cubes.s2.s2_features` (e.g. the cloud mask).
    qa : tuple of (str, value)
        Feature QA options (:class:`gpp_cubes.qa.QAConfig`: ``action`` drop/flag/off,
        ``outlier_sigma``, ``window``); empty: the defaults.
    """

    out_dir: str
    start: str = DEFAULT_START
    end: str = DEFAULT_END
    provider: str = "planetary-computer"
    stac_url: str | None = None
    stac_identity: str | None = None
    corine_source: str | None = None
    fluxnet_dir: str | None = None
    engine: str = "odc"
    lst_source: str = "stac"
    train_years: tuple[int, ...] = TRAIN_YEARS
    test_years: tuple[int, ...] = TEST_YEARS
    s2_options: tuple[tuple[str, Any], ...] = ()
    qa: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not Path(self.out_dir).is_absolute():
            raise ConfigError(f"out_dir must be absolute (workers do not share the client's "
                              f"working directory): {self.out_dir}")
        for name in ("corine_source", "fluxnet_dir"):
            v = getattr(self, name)
            if v and "://" not in v and not Path(v).is_absolute():
                raise ConfigError(f"{name} must be an absolute path or a URL: {v}")

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def site_store(self, site_id: str) -> Path:
        return self.out / f"{site_id}.zarr"

    def phase1_store(self, site_id: str, sensor: str) -> Path:
        return self.out / WORK_DIR / site_id / f"{sensor}.zarr"

    def pca_path(self) -> Path:
        return self.out / WORK_DIR / PCA_FILE

    def log_path(self, site_id: str) -> Path:
        return self.out / LOG_DIR / f"{site_id}.log"

    def provenance_params(self) -> dict[str, Any]:
        """The parameters recorded in every store (no credentials: URLs lose queries)."""
        d = asdict(self)
        d.pop("out_dir")
        d["s2_options"] = dict(self.s2_options)
        d["qa"] = dict(self.qa)
        return d


# --------------------------------------------------------------------------------------
# Worker-side helpers: progress events and per-site log files
# --------------------------------------------------------------------------------------


def _emit(site_id: str, stage: str, state: str) -> None:
    """Send a progress event to the client (no-op outside a Dask worker)."""
    try:
        from distributed import get_worker

        get_worker().log_event(PROGRESS_TOPIC, {"site": site_id, "stage": stage,
                                                "state": state})
    except (ImportError, ValueError):
        pass


class _ThreadFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def site_log(path: Path) -> Iterator[logging.Logger]:
    """Route this thread's ``gpp_cubes`` log records to a per-site file while active."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger("gpp_cubes")
    old_level = root.level
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield root
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@contextlib.contextmanager
def _stage(site_id: str, stage: str, summary: dict[str, Any]) -> Iterator[None]:
    summary["stage"] = stage
    _emit(site_id, stage, "start")
    t0 = time.perf_counter()
    log.info("%s: stage %s started", site_id, stage)
    yield
    log.info("%s: stage %s done in %.1f s", site_id, stage, time.perf_counter() - t0)
    _emit(site_id, stage, "done")


def _fail(summary: dict[str, Any], site_id: str, err: BaseException) -> dict[str, Any]:
    summary["status"] = "failed"
    summary["error"] = f"[{summary.get('stage', '?')}] {type(err).__name__}: {err}"[:500]
    log.error("%s: failed in stage %s: %s\n%s", site_id, summary.get("stage"), err,
              "".join(traceback.format_exception(err)))
    _emit(site_id, summary.get("stage", "?"), "fail")
    return summary


# --------------------------------------------------------------------------------------
# Phase 1: per-site sensor stages -> intermediate store
# --------------------------------------------------------------------------------------


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
    ext = detect_extremes(full).flags
    cal = pd.date_range(cfg.start, cfg.end, freq="D")
    return full.reindex(cal), ext.reindex(cal).fillna(False).astype(bool), str(path)


SENSORS = ("s2", "s1", "lst", "target")


@contextlib.contextmanager
def _task_env() -> Iterator[int]:
    """Inner Dask computations of a task use as many threads as the worker has (one by
    default): a worker stands for a core, and parallelism comes from running tasks side by
    side on many workers. Yields that number of threads."""
    import dask

    n = 1
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        n = int(get_worker().state.nthreads)
    with dask.config.set(scheduler="threads" if n > 1 else "synchronous", num_workers=n):
        yield n


def _sensor_dataset(sensor: str, meta: SiteMeta, cfg: BuildConfig, summary: dict[str, Any],
                    threads: int = 1) -> tuple[Any, dict[str, Any]]:
    """Run one sensor stage of a site with ``threads`` cores; return its intermediate
    Dataset and provenance."""
    import xarray as xr

    from gpp_cubes.qa import QAConfig, qa_clear_sky_ghi, qa_lst_frame, qa_s1_frame
    from gpp_cubes.sites.grid import site_grid

    sid = meta.site_id
    cal = pd.date_range(cfg.start, cfg.end, freq="D", name="time")
    grid = site_grid(meta.latitude, meta.longitude)
    qa_cfg = QAConfig.from_options(cfg.qa)

    def qa_prov(section: str, qa: dict[str, Any], key: str) -> dict[str, Any]:
        # counts for the build summary (per sensor: phase-1 summaries are merged by key)
        summary[f"{key}_qa_dropped"] = int(qa.get("values_dropped", qa.get(
            "steps", {}).get("dropped", 0)))
        summary[f"{key}_qa_flagged"] = int(qa.get("values_flagged", qa.get(
            "steps", {}).get("flagged", 0)))
        return {"qa": {"config": qa_cfg.to_dict(), section: qa}}

    if sensor == "s1":
        from gpp_cubes.sites.forest import forest_mask

        with _stage(sid, "forest", summary):
            if not cfg.corine_source:
                raise ConfigError("no CORINE source given (corine_source / --corine)")
            forest = forest_mask(grid, cfg.corine_source, site_id=sid)
            summary["forest_fraction"] = float(forest.mean())
    if sensor == "s2":
        with _stage(sid, "s2", summary):
            s2 = _s2_index_table(meta, grid, cfg, threads)  # reads CORINE itself
            summary.update(s2_found=s2.scenes_found, s2_kept=s2.scenes_kept,
                           clear_fraction=s2.clear_fraction)
        ds = xr.Dataset(
            {"s2_indices": (("s2_time", "s2_index"), s2.table.to_numpy(dtype=np.float64))},
            coords={"s2_time": pd.DatetimeIndex(s2.table.index).values.astype("datetime64[ns]"),
                    "s2_index": [str(c) for c in s2.table.columns]})
        return ds, {"item_ids": list(s2.item_ids), "params": s2.params,
                    **qa_prov("s2", s2.qa, "s2")}
    if sensor == "s1":
        from gpp_cubes.sensors.s1 import FEATURES, s1_features

        with _stage(sid, "s1", summary):
            s1 = s1_features(grid, forest, cfg.start, cfg.end, provider=cfg.provider,
                             stac_url=cfg.stac_url, site_id=sid, engine=cfg.engine)
            summary.update(s1_found=s1.scenes_found, s1_kept=s1.scenes_kept)
            f, qa = qa_s1_frame(s1.frame, qa_cfg, n_found=s1.scenes_found,
                                n_loaded=len(s1.item_ids), n_kept=s1.scenes_kept, site_id=sid)
        ds = xr.Dataset({c: ("s1_time", f[c].to_numpy(dtype=np.float64)) for c in FEATURES},
                        coords={"s1_time": pd.DatetimeIndex(f.index).values.astype(
                            "datetime64[ns]")})
        return ds, {"item_ids": list(s1.item_ids), "params": s1.params,
                    **qa_prov("s1", qa, "s1")}
    if sensor == "lst":
        from gpp_cubes.sensors.lst import lst_features

        with _stage(sid, "lst", summary):
            lst = lst_features(meta.latitude, meta.longitude, cfg.start, cfg.end,
                               source=cfg.lst_source, provider=cfg.provider,
                               stac_url=cfg.stac_url, site_id=sid)
            summary.update(lst_found=lst.scenes_found, lst_kept=lst.scenes_kept)
            f, qa = qa_lst_frame(lst.frame, qa_cfg, n_found=lst.scenes_found,
                                 n_kept=lst.scenes_kept, site_id=sid)
        ds = xr.Dataset({c: ("time", f[c].reindex(cal).to_numpy(np.float64))
                         for c in f.columns}, coords={"time": cal.values})
        return ds, {"item_ids": list(lst.item_ids), "params": lst.params,
                    **qa_prov("lst", qa, "lst")}
    if sensor == "target":
        from gpp_cubes.sensors.clearsky import daily_clear_sky_ghi

        with _stage(sid, "clearsky", summary):
            elev = 0.0 if np.isnan(meta.elevation_m) else meta.elevation_m
            if np.isnan(meta.elevation_m):
                log.warning("%s: elevation unknown; clear-sky GHI computed at sea level", sid)
            ghi = daily_clear_sky_ghi(meta.latitude, meta.longitude, elev, cfg.start, cfg.end)
            ghi, qa = qa_clear_sky_ghi(ghi, meta.latitude, qa_cfg, site_id=sid)
        with _stage(sid, "gpp", summary):
            gpp, extreme, flux_path = _gpp_and_extremes(sid, cfg)
            summary["gpp_valid_fraction"] = float(gpp.notna().mean())
        ds = xr.Dataset({"clear_sky_ghi": ("time", ghi.reindex(cal).to_numpy(np.float64)),
                         "GPP": ("time", gpp.reindex(cal).to_numpy(np.float64)),
                         "extreme": ("time", extreme.reindex(cal).to_numpy(bool))},
                        coords={"time": cal.values})
        return ds, {"clear_sky_ghi": {"model": "pvlib SPA + Ineichen (Linke climatology)",
                                      "elevation_m": elev},
                    "gpp": {"file": Path(flux_path).name, "variable": "GPP_NT_VUT_REF",
                            "qc_min": 0.7, "extremes": "gpp_cubes.targets.extremes defaults"},
                    **qa_prov("clear_sky_ghi", qa, "ghi")}
    raise ConfigError(f"unknown sensor stage {sensor!r}; known: {', '.join(SENSORS)}")


def run_sensor(meta: SiteMeta, cfg: BuildConfig, sensor: str) -> dict[str, Any]:
    """Phase 1 of one site and one sensor (a Dask task), written to its intermediate store.

    Parameters
    ----------
    meta : SiteMeta
        The site.
    cfg : BuildConfig
    sensor : {"s2", "s1", "lst", "target"}
        ``target`` is clear-sky GHI, GPP and extremes.

    Returns
    -------
    dict
        Summary: ``status`` ("ok" or "failed"), scene counts, clear fraction, GPP valid
        fraction, ``error``.
    """
    from gpp_cubes.batch.fingerprint import KEY, phase1_fingerprint
    from gpp_cubes.cube.store import write_zarr_atomic
    from gpp_cubes.stac.providers import configure_gdal

    sid = meta.site_id
    summary: dict[str, Any] = {"site": sid, "status": "ok", "error": None}
    t0 = time.perf_counter()
    with site_log(cfg.log_path(sid)), _task_env() as threads:
        try:
            configure_gdal()
            log.info("%s: phase 1 %s, %s..%s, provider %s %s", sid, sensor, cfg.start,
                     cfg.end, cfg.provider, cfg.stac_url or "")
            # taken before the stage reads its inputs: what this store is built from
            fingerprint = phase1_fingerprint(cfg, meta, sensor)
            ds, prov = _sensor_dataset(sensor, meta, cfg, summary, threads)
            summary[f"seconds_{sensor}"] = round(time.perf_counter() - t0, 2)
            log.info("%s: %s took %.1f s", sid, sensor, summary[f"seconds_{sensor}"])
            write_zarr_atomic(ds, cfg.phase1_store(sid, sensor), provenance={
                "site_id": sid, "sensor": sensor, "parameters": cfg.provenance_params(),
                KEY: fingerprint.record(),
                # run times stay in the log, so equal inputs give byte-equal stores
                "summary": {k: v for k, v in summary.items()
                            if k != "stage" and not k.startswith("seconds_")}, **prov})
        except Exception as err:  # one site failing must not stop the others
            _fail(summary, sid, err)
    return summary


# --------------------------------------------------------------------------------------
# The Sentinel-2 adapters (stage owned by gpp_cubes.s2 / gpp_cubes.s2.pca)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S2Table:
    """Per-site S2 spectral indices on clear days, before the PCA.

    Attributes
    ----------
    table : pandas.DataFrame
        Index values [1], one row per kept (clear) solar day, one column per index.
    scenes_found, scenes_kept : int
        STAC items found by the search; items behind the kept time steps (a mosaicked day
        counts each of its tiles), so both count the same thing.
    clear_fraction : float
        Mean clear-forest fraction of the 1 km circle over the kept days [0-1].
    qa : dict
        The S2 section of the feature QA (:func:`gpp_cubes.qa.s2_section`); ``table``,
        ``scenes_kept`` and ``item_ids`` exclude the time steps it dropped.
    """

    table: pd.DataFrame
    scenes_found: int
    scenes_kept: int
    clear_fraction: float
    item_ids: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    qa: dict[str, Any] = field(default_factory=dict)


def _s2_index_table(meta: SiteMeta, grid: Any, cfg: BuildConfig, threads: int = 1) -> S2Table:
    """Run :func:`gpp_cubes.s2.s2_features` and keep its daily spectral-index table.

    A batch build gets its parallelism from many tasks side by side, so each task keeps to
    its worker's threads: as many blocks in flight, and two read threads per thread (one
    decodes while the other waits on the network); ``s2_options`` may override both. With
    the interactive defaults (2 blocks x 4 read threads, ~1.3 cores per site) two workers on
    two cores measured each S2 task 1.3-1.4x slower than one worker alone.

    The feature QA (:func:`gpp_cubes.qa.qa_s2_features`) runs on the time steps before the
    table is returned: with ``action="drop"`` the steps it rejects are not in the table, so
    the PCA never sees them.
    """
    from types import SimpleNamespace

    from gpp_cubes.qa import QAConfig, qa_s2_features
    from gpp_cubes.s2 import s2_features, used_item_ids

    site = SimpleNamespace(id=meta.site_id, latitude=meta.latitude, longitude=meta.longitude)
    ds = s2_features(site, cfg.start, cfg.end, provider=cfg.provider, stac_url=cfg.stac_url,
                     corine=cfg.corine_source, engine=cfg.engine, grid=grid,
                     **{"blocks_in_flight": threads, "read_threads": 2 * threads,
                        **dict(cfg.s2_options)})
    names = [n for n in str(ds.attrs.get("index_list", "")).split(",") if n]
    prov = json.loads(ds.attrs.get("provenance", "{}"))
    table = pd.DataFrame({n: ds[n].values.astype(np.float64) for n in names},
                         index=pd.DatetimeIndex(ds["time"].values, name="time"))
    frac = ds["clear_fraction"].values if "clear_fraction" in ds else np.array([])
    keep, qa = qa_s2_features(ds, QAConfig.from_options(cfg.qa), meta.site_id)
    table = table[keep]
    frac = frac[keep] if frac.size else frac
    params = {k: v for k, v in prov.items()
              if k not in ("stac_items", "dropped_items", "created", "python", "packages")}
    used = tuple(used_item_ids(ds.isel(time=np.flatnonzero(keep))))  # the steps QA kept
    return S2Table(table=table, scenes_found=int(prov.get("n_items_found",
                                                          len(prov.get("stac_items", [])))),
                   scenes_kept=len(used),
                   clear_fraction=float(np.mean(frac)) if frac.size else float("nan"),
                   item_ids=used,
                   params={**params, "dropped_items": prov.get("dropped_items", {})}, qa=qa)


def fit_pca_model(tables: Mapping[str, pd.DataFrame], train_years: Sequence[int]) -> Any:
    """Fit :func:`gpp_cubes.s2.pca.fit_pca` on the pooled index tables of all sites.

    Parameters
    ----------
    tables : mapping of site id -> pandas.DataFrame
        Daily S2 index tables (clear days) [1]; pooled in sorted site order so the fit is
        deterministic.
    train_years : sequence of int
        Years the PCA is fitted on.
    """
    from gpp_cubes.s2.pca import fit_pca

    ids = sorted(tables)
    pooled = pd.concat([tables[s] for s in ids], keys=ids, names=["site", "time"])
    return fit_pca(pooled, train_years=train_years)


def apply_pca_model(model: Any, table: pd.DataFrame) -> pd.DataFrame:
    """``S2_PC1..k`` of a site's index table (:func:`gpp_cubes.s2.pca.apply_pca`)."""
    from gpp_cubes.s2.pca import apply_pca

    return apply_pca(model, table)


def save_pca_model(model: Any, path: Path, *, sites: Sequence[str],
                   fingerprint: Fingerprint | None = None) -> None:
    """Save the PCA (:func:`gpp_cubes.s2.pca.save_pca`) and, beside it, the sites it saw and
    its fingerprint (:func:`gpp_cubes.batch.fingerprint.write_pca_sidecar`)."""
    from gpp_cubes.batch.fingerprint import write_pca_sidecar
    from gpp_cubes.s2.pca import save_pca

    path.parent.mkdir(parents=True, exist_ok=True)
    # the previous PCA goes first, so a kill between the two writes never pairs it with
    # the new sidecar
    path.unlink(missing_ok=True)
    write_pca_sidecar(path, sites, fingerprint)
    save_pca(model, path)  # written last: its presence means the fit is complete


def load_pca_model(path: Path) -> Any:
    """Read the PCA saved by :func:`save_pca_model`."""
    from gpp_cubes.s2.pca import load_pca

    return load_pca(path)


def pca_provenance(model: Any, path: Path) -> dict[str, Any]:
    """What a store records about the PCA it used."""
    from gpp_cubes.batch.fingerprint import pca_sidecar, read_pca_sidecar

    return {"file": f"{WORK_DIR}/{path.name}", "n_components": len(model.components),
            "explained_variance_ratio": [round(v, 6) for v in model.explained_variance_ratio],
            "train_years": list(model.train_years), "n_samples": model.n_samples,
            "variance_threshold": model.variance_threshold,
            "dropped_indices": list(model.dropped_indices),
            "sites": read_pca_sidecar(path)[0] if pca_sidecar(path).is_file() else None}


# --------------------------------------------------------------------------------------
# Phase 2: PCA, assembly, stores
# --------------------------------------------------------------------------------------


def _read_phase1(cfg: BuildConfig, site_id: str, sensor: str) -> tuple[Any, dict[str, Any]]:
    import xarray as xr

    from gpp_cubes.cube.store import is_complete

    path = cfg.phase1_store(site_id, sensor)
    if not is_complete(path):
        raise BuildError(f"site {site_id}: phase-1 store {path} is missing or incomplete")
    with xr.open_zarr(path, chunks=None) as ds:
        ds = ds.load()
    return ds, json.loads(ds.attrs.get("provenance", "{}"))


def _s2_frame(ds: Any) -> pd.DataFrame:
    return pd.DataFrame(ds["s2_indices"].values, index=pd.DatetimeIndex(ds["s2_time"].values),
                        columns=[str(c) for c in ds["s2_index"].values])


def run_fit_pca(site_ids: Sequence[str], cfg: BuildConfig, *, refit: bool = False
                ) -> dict[str, Any]:
    """Fit (or reuse) the S2 PCA on the pooled training years of ``site_ids`` (a Dask task).

    The fitted PCA is saved to ``<out>/.work/pca.json`` and reused by every later run into
    the same directory (so all stores of a directory share one PCA); ``refit`` fits anew.

    Its fingerprint (:func:`gpp_cubes.batch.fingerprint.pca_fingerprint`) holds the train years
    and the fingerprints of the S2 stores it was fitted on, as those stores recorded them.

    Returns
    -------
    dict
        ``{"path": str, "sites": [...], "reused": bool}``.
    """
    from gpp_cubes.batch.fingerprint import KEY, pca_fingerprint, read_pca_sidecar

    path = cfg.pca_path()
    if path.is_file() and not refit:
        return {"path": str(path), "reused": True, "sites": read_pca_sidecar(path)[0]}
    with _task_env():
        tables: dict[str, pd.DataFrame] = {}
        used: dict[str, Fingerprint | None] = {}
        for sid in sorted(site_ids):
            ds, prov = _read_phase1(cfg, sid, "s2")
            tables[sid] = _s2_frame(ds)
            used[sid] = Fingerprint.from_record(prov.get(KEY))
        model = fit_pca_model(tables, cfg.train_years)
        save_pca_model(model, path, sites=sorted(site_ids),
                       fingerprint=pca_fingerprint(cfg, used))
    return {"path": str(path), "sites": sorted(site_ids), "reused": False}


def run_phase2(meta: SiteMeta, cfg: BuildConfig) -> dict[str, Any]:
    """Phase 2 of one site (a Dask task): apply the PCA, join, interpolate, write the store.

    Returns
    -------
    dict
        Summary (``status`` "ok"/"failed", the phase-1 counts, ``error``).
    """
    from gpp_cubes.batch.fingerprint import KEY, read_pca_sidecar, site_fingerprint
    from gpp_cubes.cube.features import SiteInputs, assemble_site, daily_calendar, write_site_store
    from gpp_cubes.cube.store import provenance_base

    sid = meta.site_id
    summary: dict[str, Any] = {"site": sid, "status": "ok", "error": None}
    with site_log(cfg.log_path(sid)), _task_env():
        try:
            with _stage(sid, "assemble", summary):
                cal = daily_calendar(cfg.start, cfg.end)
                parts = {s: _read_phase1(cfg, sid, s) for s in SENSORS}
                prov: dict[str, Any] = {**provenance_base(), "site_id": sid,
                                        "parameters": cfg.provenance_params(), "summary": {}}
                qa: dict[str, Any] = {}
                used: dict[str, Fingerprint | None] = {}
                for sensor, (_, p) in parts.items():
                    prov["summary"].update(p.pop("summary", {}))
                    for k in ("site_id", "sensor", "parameters"):
                        p.pop(k, None)
                    # the site store's fingerprint names them all (below)
                    used[sensor] = Fingerprint.from_record(p.pop(KEY, None))
                    qa.update(p.pop("qa", {}))  # config + this sensor's section
                    if sensor == "target":
                        prov.update(p)  # clear_sky_ghi and gpp sections
                    else:
                        prov[sensor] = p
                prov["summary"].pop("status", None)
                prov["summary"].pop("error", None)
                if qa:  # phase-1 stores of older builds have none
                    from gpp_cubes.qa import format_qa_table

                    prov["qa"] = qa
                    for kind in ("dropped", "flagged"):
                        prov["summary"][f"qa_values_{kind}"] = sum(
                            int(prov["summary"].get(f"{k}_qa_{kind}") or 0)
                            for k in ("s1", "lst", "ghi"))
                    log.info("%s: %s", sid, format_qa_table(qa, sid))
                model = load_pca_model(cfg.pca_path())
                pcs = apply_pca_model(model, _s2_frame(parts["s2"][0]))
                prov["pca"] = pca_provenance(model, cfg.pca_path())
                used["pca"] = read_pca_sidecar(cfg.pca_path())[1]
                prov[KEY] = site_fingerprint(cfg, meta, used).record()
                s1, lst, target = parts["s1"][0], parts["lst"][0], parts["target"][0]
                s1_idx = pd.DatetimeIndex(s1["s1_time"].values)
                series: dict[str, pd.Series] = {c: pcs[c] for c in pcs.columns}
                for f in ("S1_VV", "S1_VH", "S1_DpRVIVV"):
                    series[f] = pd.Series(s1[f].values, index=s1_idx)
                for f in ("MOD11A1_dt", "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt"):
                    series[f] = pd.Series(lst[f].values, index=cal)
                series["clear_sky_ghi"] = pd.Series(target["clear_sky_ghi"].values, index=cal)
                inputs = SiteInputs(
                    meta=meta, predictors=pd.DataFrame(series),
                    gpp=pd.Series(target["GPP"].values, index=cal),
                    extreme=pd.Series(target["extreme"].values, index=cal),
                    provenance=prov)
                ds = assemble_site(inputs, cal, train_years=cfg.train_years,
                                   test_years=cfg.test_years)
                summary.update(prov["summary"])
            with _stage(sid, "write", summary):
                write_site_store(ds, cfg.out)
        except Exception as err:
            _fail(summary, sid, err)
    return summary


def run_combine(site_ids: Sequence[str], cfg: BuildConfig) -> str:
    """Write the multi-site store from the complete per-site stores (a Dask task)."""
    from gpp_cubes.cube.features import write_multisite_store

    return str(write_multisite_store([cfg.site_store(s) for s in site_ids], cfg.out))


def _summary_from_store(path: Path) -> dict[str, Any]:
    from gpp_cubes.cube.store import read_provenance

    return dict((read_provenance(path) or {}).get("summary", {}))


# --------------------------------------------------------------------------------------
# The client side
# --------------------------------------------------------------------------------------


def default_workers() -> int:
    """Workers of the default LocalCluster: one per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def default_memory_limit(n_workers: int) -> str:
    """Per-worker memory limit: 80 % of the machine's memory split evenly, at most 4 GiB."""
    try:
        import psutil

        total = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    per = min(int(0.8 * total / max(1, n_workers)), 4 * 2**30)
    return f"{per // 2**20}MiB"


#: Dask settings of the LocalCluster that :func:`dask_client` starts.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    # The scheduler hands a phase-1 task (one Dask task group, so queued on the scheduler)
    # to a worker only when the worker is free, so no task waits in a busy worker's queue
    # while another worker idles (the default 1.1 assigns two at a time).
    "distributed.scheduler.worker-saturation": 1.0,
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
    # adaptive mmap threshold: every array above 128 KiB then comes from fresh mmap pages
    # and is unmapped when freed. Measured on the demo build: 5.2 million page faults per
    # worker instead of 0.44 million, and phase 1 took 1.36x as long (clear-sky GHI 2.4x).
    # None removes the variable (glibc's defaults); a value in the environment still wins.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None,
                memory_limit: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` if given, else a new LocalCluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``); any Dask deployment works
        (dask-gateway, dask-kubernetes, dask-jobqueue, Coiled: pass their scheduler address).
    n_workers : int, optional
        LocalCluster workers (default: one per core); each gets one thread, since a site
        task is one sequential chain and parallelism comes from running sites side by side.
    memory_limit : str, optional
        Per-worker memory limit of the LocalCluster (default :func:`default_memory_limit`).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    n = n_workers or default_workers()
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               memory_limit=memory_limit or default_memory_limit(n),
                               dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def resolve_sites(sites: Sequence[str | SiteMeta | Any]) -> list[SiteMeta]:
    """Site ids (catalog), :class:`SiteMeta` or catalog ``Site`` objects -> SiteMeta."""
    from gpp_cubes.sites.catalog import get_site

    out: list[SiteMeta] = []
    for s in sites:
        if isinstance(s, SiteMeta):
            out.append(s)
        elif isinstance(s, str):
            out.append(SiteMeta.from_site(get_site(s)))
        else:
            out.append(SiteMeta.from_site(s))
    ids = [m.site_id for m in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate sites in {ids}")
    return out


CATALOG_DIR = "catalog"  # <out>/catalog/cubes/collection.json

TABLE_COLUMNS = ("site", "status", "s2_found", "s2_kept", "s1_found", "s1_kept",
                 "lst_found", "lst_kept", "clear_fraction", "gpp_valid_fraction",
                 # feature QA (gpp_cubes.qa): S2 time steps and S1/LST/GHI values
                 "s2_qa_dropped", "s2_qa_flagged", "qa_values_dropped", "qa_values_flagged",
                 "error")


def _s2_options(options: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """S2 options as a sorted tuple, the scene rules of :mod:`gpp_cubes.s2` filled in with
    their defaults, so an explicit default and no option give the same fingerprint."""
    from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH

    opts = {"max_sun_zenith": MAX_SUN_ZENITH, "c_factor_range": C_FACTOR_RANGE,
            **(options or {})}
    opts["max_sun_zenith"] = float(opts["max_sun_zenith"])
    opts["c_factor_range"] = tuple(float(v) for v in opts["c_factor_range"])
    return tuple(sorted(opts.items()))


def build_sites(
    sites: Sequence[str | SiteMeta | Any],
    out_dir: str | Path,
    *,
    start: str = DEFAULT_START,
    end: str = DEFAULT_END,
    provider: str = "planetary-computer",
    stac_url: str | None = None,
    corine_source: str | Path | None = None,
    fluxnet_dir: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    engine: str = "odc",
    lst_source: str = "stac",
    s2_options: Mapping[str, Any] | None = None,
    qa: Mapping[str, Any] | None = None,
    client: Any = None,
    rebuild_changed: bool = False,
    stac_identity: str | None = None,
) -> pd.DataFrame:
    """Build the feature cubes of many sites on Dask (resumable, failure-isolated).

    Before the Dask cluster starts, the inputs are checked (:func:`check_inputs`) and every
    complete store is compared with what this run would build
    (:func:`gpp_cubes.batch.fingerprint.plan_resume`): a store built from other inputs or
    parameters (or by an older version, without a fingerprint) is never reused silently.

    Parameters
    ----------
    sites : sequence of str or SiteMeta
        Catalog site ids (``"DE-Hai"``) or site records (e.g. the demo world's sites).
    out_dir : path
        Output directory; per-site ``<SITE>.zarr``, ``features.zarr``, ``logs/``, ``.work/``.
    start, end : str
        Calendar [ISO dates].
    provider, stac_url : str
        STAC endpoint (Planetary Computer by default; a URL for any STAC API).
    corine_source : path or URL
        CORINE 2018 raster for the forest mask.
    fluxnet_dir : path
        FLUXNET2015-format daily files.
    scheduler : str, optional
        Address of an existing Dask scheduler; default: a LocalCluster sized to the machine.
    n_workers : int, optional
        LocalCluster workers (default: cores).
    memory_limit : str, optional
        LocalCluster per-worker memory limit (default :func:`default_memory_limit`).
    force : bool, default False
        Rebuild complete stores, redo phase 1 and refit the PCA.
    progress : callable, optional
        ``progress(site_id, stage, state)`` called on the client for every stage event.
    engine, lst_source, s2_options
        Passed to the stages (see :class:`BuildConfig`); the S2 scene rules
        (``max_sun_zenith``, ``c_factor_range``) are recorded with their defaults filled in.
    qa : mapping, optional
        Feature QA options (:class:`gpp_cubes.qa.QAConfig`), e.g. ``{"action": "flag",
        "outlier_sigma": 6}``; default: drop findings at 5 robust sigmas.
    client : distributed.Client, optional
        Use this client (overrides ``scheduler``/``n_workers``).
    rebuild_changed : bool, default False
        Rebuild the complete stores whose fingerprint differs from this run's, and what
        depends on them (the PCA and every site store if an S2 store it was fitted on
        changes; a site store if one of its phase-1 stores changes; ``features.zarr``).
        Without it such a store stops the build with :class:`~gpp_cubes.errors.StaleStoreError`.
    stac_identity : str, optional
        Stable name of the STAC endpoint in the fingerprints instead of ``stac_url`` (see
        :class:`BuildConfig`).

    Returns
    -------
    pandas.DataFrame
        One row per site: :data:`TABLE_COLUMNS` (status "built", "skipped" or "failed").

    Raises
    ------
    StaleStoreError
        A complete store differs from this run's (without ``rebuild_changed``/``force``).
    ConfigError, InputFormatError
        A FLUXNET file or the CORINE raster is missing or unreadable.
    """
    def _abs(p: str | Path | None) -> str | None:
        if p is None:
            return None
        s = str(p)
        return s if "://" in s else str(Path(s).expanduser().resolve())

    cfg = BuildConfig(out_dir=_abs(out_dir), start=start, end=end, provider=provider,
                      stac_url=stac_url, stac_identity=stac_identity,
                      corine_source=_abs(corine_source),
                      fluxnet_dir=_abs(fluxnet_dir), engine=engine, lst_source=lst_source,
                      s2_options=_s2_options(s2_options), qa=_qa_options(qa))
    metas = resolve_sites(sites)
    check_inputs(cfg, metas)
    cfg.out.mkdir(parents=True, exist_ok=True)
    _prepare_out(cfg, metas, force=force, rebuild_changed=rebuild_changed)
    if client is not None:
        return _build_with_client(client, metas, cfg, force, progress)
    with dask_client(scheduler, n_workers, memory_limit) as c:
        return _build_with_client(c, metas, cfg, force, progress)


def _qa_options(qa: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """All QA options, defaults filled in and validated on the client (a bad value fails
    before any task; an option given at its default value records the same parameters)."""
    from gpp_cubes.qa import QAConfig

    return tuple(sorted(QAConfig.from_options(qa).options().items()))


def check_inputs(cfg: BuildConfig, metas: Sequence[SiteMeta]) -> None:
    """Check, before any task runs, that the input files a build reads are there.

    The FLUXNET directory must exist and hold a daily file (or archive) of every site; a
    local CORINE raster must exist and open with rasterio (URLs and GDAL virtual paths are
    left to the stages). Inputs that are not given are not checked: the stages that need
    them fail per site, naming them.

    Raises
    ------
    ConfigError
        A directory or file is missing; the message names it (and the sites).
    InputFormatError
        The CORINE raster does not open.
    """
    from gpp_cubes.errors import InputFormatError

    if cfg.fluxnet_dir:
        from gpp_cubes.targets.fluxnet import find_fluxnet_file

        d = Path(cfg.fluxnet_dir)
        if not d.is_dir():
            raise ConfigError(f"FLUXNET directory {d} does not exist (--fluxnet)")
        missing = [m.site_id for m in metas if find_fluxnet_file(d, m.site_id) is None]
        if missing:
            raise ConfigError(
                f"no FLUXNET daily file of site{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} in {d} (expected FLX_<SITE>_FLUXNET2015_FULLSET_DD_"
                "<y0>-<y1>_<version>.csv or its FULLSET zip archive; --fluxnet)")
    src = cfg.corine_source
    if src and "://" not in src and not src.startswith("/vsi"):
        import rasterio

        if not Path(src).is_file():
            raise ConfigError(f"CORINE raster {src} does not exist (--corine)")
        try:
            with rasterio.open(src):
                pass
        except rasterio.errors.RasterioIOError as err:
            raise InputFormatError(f"CORINE raster {src} does not open with rasterio: "
                                   f"{err} (--corine)") from err


def _prepare_out(cfg: BuildConfig, metas: Sequence[SiteMeta], *, force: bool,
                 rebuild_changed: bool) -> None:
    """Settle the output directory before the cluster starts: remove what killed runs
    left, and the stores this run rebuilds (all of them with ``force``, those whose
    fingerprint changed with ``rebuild_changed``); stop if a changed store would be reused.
    """
    from gpp_cubes.batch.fingerprint import pca_sidecar, plan_resume, stale_message
    from gpp_cubes.cube.store import remove_stale_temporaries
    from gpp_cubes.errors import StaleStoreError

    if force:
        for m in metas:
            shutil.rmtree(cfg.out / WORK_DIR / m.site_id, ignore_errors=True)
        cfg.pca_path().unlink(missing_ok=True)
        pca_sidecar(cfg.pca_path()).unlink(missing_ok=True)
    # A run killed earlier leaves hidden half-written stores (.<name>.tmp-*): remove them
    # now, since stores that are skipped are never rewritten (and rewrites would only
    # clean their own); a store killed mid-swap comes back before it is judged.
    for p in [cfg.out / MULTISITE_NAME, *(
            q for m in metas for q in (cfg.site_store(m.site_id), *(
                cfg.phase1_store(m.site_id, sensor) for sensor in SENSORS)))]:
        remove_stale_temporaries(p)
    if force:
        return
    stale = plan_resume(cfg, metas)
    if stale and not rebuild_changed:
        raise StaleStoreError(stale_message(stale))
    for s in stale:  # removed, not overwritten: a failed rebuild must not leave it to reuse
        log.warning("rebuilding %s", s.describe())
        if s.path == cfg.pca_path():
            s.path.unlink(missing_ok=True)
            pca_sidecar(s.path).unlink(missing_ok=True)
        else:
            shutil.rmtree(s.path, ignore_errors=True)


def _build_with_client(client: Any, metas: list[SiteMeta], cfg: BuildConfig, force: bool,
                       progress: ProgressFn | None) -> pd.DataFrame:
    from gpp_cubes.cube.store import is_complete
    from gpp_cubes.stac.providers import gdal_worker_plugin

    def note(site: str, stage: str, state: str) -> None:
        if progress is not None:
            with contextlib.suppress(Exception):  # a display problem never fails a build
                progress(site, stage, state)

    if progress is not None:
        def handler(event: Any) -> None:
            msg = event[1] if isinstance(event, tuple) else event
            note(msg["site"], msg["stage"], msg["state"])
        client.subscribe_topic(PROGRESS_TOPIC, handler)
    client.register_plugin(gdal_worker_plugin())

    rows: dict[str, dict[str, Any]] = {}
    todo = [m for m in metas if force or not is_complete(cfg.site_store(m.site_id))]
    for m in metas:
        if m not in todo:
            rows[m.site_id] = {**_summary_from_store(cfg.site_store(m.site_id)),
                               "site": m.site_id, "status": "skipped", "error": None}
            note(m.site_id, "write", "skip")

    stamp = time.time_ns()  # one per build: the keys of its Dask tasks
    rows.update(_run_phases(client, todo, metas, cfg, force, note, stamp))

    done = [m.site_id for m in metas if rows.get(m.site_id, {}).get("status")
            in ("built", "skipped")]
    if done:
        multi = cfg.out / MULTISITE_NAME
        # rewritten unless it combines exactly these site stores, as they are
        if not (is_complete(multi) and all(rows[s]["status"] == "skipped" for s in done)
                and _multisite_fingerprints(multi) == _site_fingerprints(cfg, done)):
            client.submit(run_combine, done, cfg, pure=False, key=f"combine-{stamp}").result()
        # every build leaves a STAC collection of its cubes, so other tools can find them
        from gpp_cubes.cube.publish import update_cube_catalog

        update_cube_catalog(cfg.out / CATALOG_DIR, [cfg.site_store(s) for s in done])
    table = pd.DataFrame([{c: rows.get(m.site_id, {}).get(c) for c in TABLE_COLUMNS}
                          for m in metas], columns=list(TABLE_COLUMNS))
    table["site"] = [m.site_id for m in metas]
    (cfg.out / LOG_DIR).mkdir(parents=True, exist_ok=True)
    table.to_csv(cfg.out / LOG_DIR / "build-summary.csv", index=False)
    return table


def _run_phases(client: Any, todo: list[SiteMeta], metas: list[SiteMeta], cfg: BuildConfig,
                force: bool, note: ProgressFn, stamp: int) -> dict[str, dict[str, Any]]:
    """Run phase 1 and phase 2 of the ``todo`` sites; their table rows by site id.

    Phase 2 starts as soon as it can rather than after all of phase 1: the PCA once the last
    Sentinel-2 task has ended, and a site's assembly once its own phase-1 tasks and the PCA
    have ended, so the short phase-2 tasks fill the workers that phase 1's last long tasks
    leave idle.
    """
    from distributed import as_completed

    from gpp_cubes.cube.store import is_complete

    rows: dict[str, dict[str, Any]] = {}
    phase1 = {m.site_id: {"site": m.site_id, "status": "ok", "error": None} for m in todo}
    pending: dict[str, set[str]] = {m.site_id: set() for m in todo}  # phase-1 tasks running
    tasks: dict[Any, tuple[str, SiteMeta | None, str]] = {}  # future -> (kind, site, sensor)
    # Longest tasks first (S2 > LST > S1 > target): the least idle time at the end. Keys
    # "phase1-<stamp>-...": Dask names task groups by the key's leading alphabetic words, so
    # these make one group, which the scheduler queues and hands out by priority, one task
    # per free worker thread (see dask_client).
    for sensor in sorted(SENSORS, key=lambda s: -SENSOR_PRIORITY[s]):
        metas_s = []
        for m in todo:
            if is_complete(cfg.phase1_store(m.site_id, sensor)):
                for st in SENSOR_STAGES[sensor]:
                    note(m.site_id, st, "skip")
            else:
                metas_s.append(m)
                pending[m.site_id].add(sensor)
        if not metas_s:
            continue
        futs = client.map(run_sensor, metas_s, [cfg] * len(metas_s),
                          [sensor] * len(metas_s), pure=False,
                          priority=SENSOR_PRIORITY[sensor],
                          key=[f"phase1-{stamp}-{sensor}-{m.site_id}" for m in metas_s])
        tasks.update({f: ("phase1", m, sensor) for f, m in zip(futs, metas_s, strict=True)})
    queue = as_completed(list(tasks))
    by_id = {m.site_id: m for m in todo}
    pca: dict[str, Any] = {"submitted": False, "done": False, "error": None}
    assembling: set[str] = set()

    def submit(kind: str, site: SiteMeta | None, fn: Callable[..., Any], *args: Any,
               **kw: Any) -> None:
        # Phase-2 tasks go before the phase-1 tasks still queued: they are short, and the
        # multi-site store waits for all of them.
        key = f"{kind}-{stamp}" + (f"-{site.site_id}" if site else "")
        fut = client.submit(fn, *args, pure=False, key=key, priority=PHASE2_PRIORITY, **kw)
        tasks[fut] = (kind, site, "")
        queue.add(fut)

    def start_pca_when_s2_ended() -> None:
        if pca["submitted"] or any(kind == "phase1" and sensor == "s2" and not f.done()
                                   for f, (kind, _, sensor) in tasks.items()):
            return
        waiting = [sid for sid in pending if phase1[sid]["status"] != "failed"]
        if not waiting:  # every site failed in phase 1: nothing to fit the PCA for
            return
        for sid in waiting:
            note(sid, "pca", "start")
        # every site with S2 results, already built ones included, shares one PCA
        with_s2 = [m.site_id for m in metas if is_complete(cfg.phase1_store(m.site_id, "s2"))]
        pca["submitted"] = True
        submit("pca", None, run_fit_pca, with_s2, cfg, refit=force)

    def advance(sid: str) -> None:
        """Settle a site whose phase 1 has ended: a failure row, or its assembly task."""
        if sid in rows or sid in assembling or pending[sid]:
            return
        if phase1[sid]["status"] == "failed":
            rows[sid] = phase1[sid]
        elif pca["error"] is not None:
            rows[sid] = {**phase1[sid], "status": "failed", "error": pca["error"]}
            note(sid, "pca", "fail")
        elif pca["done"]:
            assembling.add(sid)
            submit("phase2", by_id[sid], run_phase2, by_id[sid], cfg)

    start_pca_when_s2_ended()  # no S2 task at all: every S2 intermediate is complete
    for fut in queue:
        kind, m, sensor = tasks[fut]
        if kind == "phase1":
            assert m is not None
            s = _result(fut, m.site_id, sensor)
            merged = phase1[m.site_id]
            if s["status"] == "failed" and merged["status"] != "failed":
                merged.update(status="failed", error=s["error"])
            merged.update({k: v for k, v in s.items() if k not in ("status", "error", "stage")})
            pending[m.site_id].discard(sensor)
            start_pca_when_s2_ended()
            advance(m.site_id)
        elif kind == "pca":
            try:
                info = fut.result()
                log.info("PCA %s on sites %s", "reused" if info["reused"] else "fitted",
                         info["sites"])
                pca["done"] = True
                for sid in pending:
                    if phase1[sid]["status"] != "failed":
                        note(sid, "pca", "done")
            except Exception as err:
                pca["error"] = f"[pca] {type(err).__name__}: {err}"[:500]
            for sid in pending:
                advance(sid)
        else:  # phase 2
            assert m is not None
            s = {**phase1[m.site_id], **_result(fut, m.site_id, "assemble")}
            if s["status"] == "ok":
                s["status"] = "built"
            rows[m.site_id] = s
    return rows


def _multisite_fingerprints(path: Path) -> list[tuple[str, str | None]]:
    """(site, fingerprint hash) of the site stores a multi-site store combines, in order."""
    import xarray as xr

    from gpp_cubes.batch.fingerprint import KEY

    try:
        with xr.open_zarr(path, chunks=None) as ds:
            sites = [str(s) for s in ds["site"].values]
            prov = json.loads(ds.attrs.get("provenance", "{}"))
    except Exception:
        return []
    return [(s, fp.hash if (fp := Fingerprint.from_record(prov.get(s, {}).get(KEY)))
             else None) for s in sites]


def _site_fingerprints(cfg: BuildConfig, site_ids: Sequence[str]
                       ) -> list[tuple[str, str | None]]:
    """(site, fingerprint hash) of the site stores of ``site_ids`` ("?" for a store
    without fingerprint, which no record equals)."""
    from gpp_cubes.batch.fingerprint import read_fingerprint

    return [(s, fp.hash if (fp := read_fingerprint(cfg.site_store(s))) else "?")
            for s in site_ids]


def _result(fut: Any, site_id: str, stage: str) -> dict[str, Any]:
    """A task's summary, or a failure row when the task itself died (e.g. worker killed)."""
    try:
        return fut.result()
    except Exception as err:
        return {"site": site_id, "status": "failed",
                "error": f"[{stage}] {type(err).__name__}: {err}"[:500]}


def any_failed(table: pd.DataFrame) -> bool:
    """True if a site of a :func:`build_sites` table failed."""
    return bool((table["status"] == "failed").any())
