"""The client side of a batch build: check, settle the output directory, run, summarise.

:func:`build_sites` does, in order: resolve the sites (:func:`resolve_sites`), check the
input files (:func:`check_inputs`), settle the output directory before any worker starts
(remove what killed runs left; compare every complete store's fingerprint with this run's),
start or join the Dask cluster, run the two phases (:class:`~gpp_cubes.batch.schedule.
PhaseSchedule`), rewrite ``features.zarr`` unless it already combines exactly these site
stores, publish the STAC collection, and write the summary table.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gpp_cubes.atomic import write_atomic
from gpp_cubes.batch.cluster import dask_client
from gpp_cubes.batch.config import (
    CATALOG_DIR,
    LOG_DIR,
    SUMMARY_FILE,
    WORK_DIR,
    BuildConfig,
    config_default,
)
from gpp_cubes.batch.fingerprint import Fingerprint
from gpp_cubes.batch.logs import PROGRESS_TOPIC, ProgressFn, log
from gpp_cubes.batch.tasks import SENSORS
from gpp_cubes.contract import MULTISITE_NAME
from gpp_cubes.errors import ConfigError
from gpp_cubes.sites.catalog import Site
from gpp_cubes.storage import Location, as_location, display, remove_tree

#: Columns of the table :func:`build_sites` returns (and writes to ``logs/build-summary.csv``).
TABLE_COLUMNS = ("site", "status", "s2_found", "s2_kept", "s1_found", "s1_kept",
                 "lst_found", "lst_kept", "clear_fraction", "gpp_valid_fraction",
                 # feature QA (gpp_cubes.qa): S2 time steps and S1/LST/GHI values
                 "s2_qa_dropped", "s2_qa_flagged", "qa_values_dropped", "qa_values_flagged",
                 # the build's protocol (ours/paper) and targets (FLUXNET/none)
                 "protocol", "targets", "error")


def build_sites(
    sites: Sequence[str | Site | Any],
    out_dir: str | Path,
    *,
    start: str = config_default("start"),
    end: str = config_default("end"),
    provider: str = config_default("provider"),
    stac_url: str | None = None,
    corine_source: str | Path | None = None,
    fluxnet_dir: str | Path | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    memory_limit: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    engine: str = config_default("engine"),
    lst_source: str = config_default("lst_source"),
    s2_options: Mapping[str, Any] | None = None,
    qa: Mapping[str, Any] | None = None,
    client: Any = None,
    rebuild_changed: bool = False,
    stac_identity: str | None = None,
    radius_m: float = config_default("radius_m"),
    train_years: Sequence[int] | None = None,
    test_years: Sequence[int] | None = None,
    pca_variance: float | None = None,
    pca_components: int | None = None,
    extremes_method: str | None = None,
    protocol: str = config_default("protocol"),
    targets: bool = True,
    pca_from: str | Path | None = None,
) -> pd.DataFrame:
    """Build the feature cubes of many sites on Dask (resumable, failure-isolated).

    Before the Dask cluster starts, the inputs are checked (:func:`check_inputs`) and every
    complete store is compared with what this run would build
    (:func:`gpp_cubes.batch.resume.plan_resume`): a store built from other inputs or
    parameters (or by an older version, without a fingerprint) is never reused silently.

    Parameters
    ----------
    sites : sequence of str or Site
        Catalog site ids (``"DE-Hai"``) or site records (:class:`gpp_cubes.sites.Site`, or
        anything :func:`gpp_cubes.sites.as_site` accepts, e.g. the demo world's sites).
    out_dir : path or URL
        Output directory; per-site ``<SITE>.zarr``, ``features.zarr``, ``logs/``, ``.work/``,
        ``catalog/``. A local path, or object storage (``s3://bucket/prefix``; ``gs://``,
        ``az://`` with gcsfs/adlfs; credentials from the environment): see
        :mod:`gpp_cubes.storage`.
    start, end : str
        Calendar [ISO dates]; default the study period (:mod:`gpp_cubes.paper`).
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
        LocalCluster per-worker memory limit (default
        :func:`gpp_cubes.batch.cluster.default_memory_limit`).
    force : bool, default False
        Rebuild complete stores, redo phase 1 and refit the PCA.
    progress : callable, optional
        ``progress(site_id, stage, state)`` called on the client for every stage event.
    engine, lst_source, s2_options
        Passed to the stages (see :class:`BuildConfig`); the S2 scene rules
        (``max_sun_zenith``, ``c_factor_range``) and the cloud mask (``cloud_mask``,
        default "scl"; "cloudsen12" with ``cloud_model`` local weights) are recorded with
        their defaults filled in, an ``index_list`` file as the names it lists.
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
    radius_m : float, default 1000
        S2 circle and outer S1 annulus radius [m] (paper and ours: 1000).
    train_years, test_years : sequence of int, optional
        The temporal split (default, the paper's: 2016-2018 and 2019-2020).
    pca_variance : float, optional
        Share of the index variance the kept components explain at least [1] (ours: 0.99,
        the default).
    pca_components : int, optional
        A fixed number of components instead (the paper: 18).
    extremes_method : {"negative_tail", "quantile"}, optional
        Threshold reading of :func:`gpp_cubes.targets.extremes.detect_extremes` (default
        "negative_tail", ours).
    protocol : {"ours", "paper"}, default "ours"
        "paper" gives the options left at None (and the S2 options not given) the paper's
        data choices: 18 PCs, the all-anomalies extremes reading, the ``paper-122`` index
        list, CloudSEN12 when ``s2_options`` has ``cloud_model`` weights (else SCL, with a
        warning); explicit options win, with a note
        (:func:`gpp_cubes.batch.config.resolve_protocol`). The notes are logged and
        recorded in every store's provenance (``parameters.protocol_notes``).
    targets : bool, default True
        False: build without FLUXNET (any catalog site or a ``(lat, lon)`` point); ``GPP``
        is all NaN and ``extreme`` all False, with a ``not_observed`` attribute, and the
        stores say ``targets: none``; ``fluxnet_dir`` is ignored.
    pca_from : path, optional
        Project onto another build's PCA instead of fitting one: its output directory, one
        of its stores or its PCA JSON (:func:`gpp_cubes.s2.pca.find_pca_file`). Its SHA-256
        is in the fingerprints; this build must compute every index it uses.

    Returns
    -------
    pandas.DataFrame
        One row per site: :data:`TABLE_COLUMNS` (status "built", "skipped" or "failed").

    Raises
    ------
    StaleStoreError
        A complete store differs from this run's (without ``rebuild_changed``/``force``).
    ConfigError, InputFormatError
        A FLUXNET file or the CORINE raster is missing or unreadable; an option is invalid
        (e.g. ``cloud_mask="s2cloudless"`` without the s2cloudless package, or
        "cloudsen12" without a weights file); all before the cluster starts.
    """
    cfg = BuildConfig.create(out_dir, start=start, end=end, provider=provider,
                             stac_url=stac_url, stac_identity=stac_identity,
                             corine_source=corine_source, fluxnet_dir=fluxnet_dir,
                             engine=engine, lst_source=lst_source, s2_options=s2_options,
                             qa=qa, radius_m=float(radius_m), train_years=train_years,
                             test_years=test_years,
                             pca_variance=None if pca_variance is None else float(pca_variance),
                             pca_components=pca_components, extremes_method=extremes_method,
                             protocol=protocol, targets=targets, pca_from=pca_from)
    for note in cfg.protocol_notes:
        log.warning("protocol %s: %s", cfg.protocol, note)
    resolved = resolve_sites(sites)
    check_inputs(cfg, resolved)
    cfg.out.mkdir(parents=True, exist_ok=True)
    _prepare_out(cfg, resolved, force=force, rebuild_changed=rebuild_changed)
    if client is not None:
        return _build_with_client(client, resolved, cfg, force, progress)
    with dask_client(scheduler, n_workers, memory_limit) as c:
        return _build_with_client(c, resolved, cfg, force, progress)


def resolve_sites(sites: Sequence[str | Site | Any]) -> list[Site]:
    """Site ids (catalog), :class:`~gpp_cubes.sites.Site` or site-like records -> Site
    (:func:`gpp_cubes.sites.as_site`); duplicates are an error."""
    from gpp_cubes.sites.catalog import as_site

    out = [as_site(s) for s in sites]
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate sites in {ids}")
    return out


def check_inputs(cfg: BuildConfig, sites: Sequence[Site]) -> None:
    """Check, before any task runs, that the input files a build reads are there.

    The FLUXNET directory must exist and hold a daily file (or archive) of every site; a
    local CORINE raster must exist and open with rasterio (URLs and GDAL virtual paths are
    left to the stages). Inputs that are not given are not checked: the stages that need
    them fail per site, naming them. An ad hoc point (a ``(lat, lon)`` site) must lie in
    Europe (:func:`check_points`): the forest mask needs CORINE. A point in Europe but
    outside the CORINE raster's data fails alone, in its forest and S2 stages ("site
    XX-Pnt is outside CORINE coverage of ..."), like any site whose stage fails.

    Raises
    ------
    ConfigError
        A directory or file is missing, or a point is outside Europe; the message names it
        (and the sites).
    InputFormatError
        The CORINE raster does not open.
    """
    from gpp_cubes.errors import InputFormatError

    check_points(sites)

    if cfg.fluxnet_dir:
        from gpp_cubes.targets.fluxnet import find_fluxnet_file

        d = as_location(cfg.fluxnet_dir)  # a local directory or an object-storage prefix
        if not d.is_dir():
            raise ConfigError(f"FLUXNET directory {display(d)} does not exist (--fluxnet)")
        missing = [s.id for s in sites if find_fluxnet_file(d, s.id) is None]
        if missing:
            raise ConfigError(
                f"no FLUXNET daily file of site{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} in {display(d)} (expected FLX_<SITE>_FLUXNET2015_FULLSET_DD_"
                "<y0>-<y1>_<version>.csv or its FULLSET zip archive; --fluxnet; "
                "--no-targets builds without GPP)")
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


def check_points(sites: Sequence[Site], corine_source: str | None = None,
                 radius_m: float = config_default("radius_m")) -> None:
    """Check the ad hoc points among ``sites`` (``(lat, lon)`` sites, status "adhoc"), naming
    the first bad one: it must lie in Europe (:data:`gpp_cubes.sites.catalog.EUROPE_BBOX`)
    and, given a local ``corine_source``, inside the raster's data around it (``radius_m``
    [m]): the forest mask and the S2 stage need CORINE.

    :func:`check_inputs` checks Europe only: in a build of many sites, a point outside the
    raster fails alone in its stages, like any site. ``gpp build --at`` checks both for the
    points typed on its command line, before the build starts.

    Raises
    ------
    ConfigError
        A point outside Europe.
    SiteError
        A point outside the CORINE raster's data ("site XX-Pnt is outside CORINE coverage").
    """
    from gpp_cubes.sites.catalog import EUROPE_BBOX, in_europe

    points = [s for s in sites if s.status == "adhoc"]
    for s in points:
        if not in_europe(s.latitude, s.longitude):
            raise ConfigError(
                f"point {s.id} at latitude {s.latitude}, longitude {s.longitude} is outside "
                f"Europe (west, south, east, north = {EUROPE_BBOX}): the forest mask needs "
                "CORINE Land Cover 2018, which covers Europe only")
    if corine_source and "://" not in corine_source and Path(corine_source).is_file():
        from gpp_cubes.sites.corine import read_corine

        for s in points:
            read_corine(corine_source, s.grid(buffer_m=radius_m), site_id=s.id)


def _remove_pca(path: Location) -> None:
    from gpp_cubes.s2.pca import pca_sidecar

    path.unlink(missing_ok=True)
    pca_sidecar(path).unlink(missing_ok=True)


def _prepare_out(cfg: BuildConfig, sites: Sequence[Site], *, force: bool,
                 rebuild_changed: bool) -> None:
    """Settle the output directory before the cluster starts: remove what killed runs
    left, and the stores this run rebuilds (all of them with ``force``, those whose
    fingerprint changed with ``rebuild_changed``); stop if a changed store would be reused.
    """
    from gpp_cubes.batch.resume import plan_resume, stale_message
    from gpp_cubes.cube.store import remove_stale_temporaries
    from gpp_cubes.errors import StaleStoreError

    if force:
        for s in sites:
            remove_tree(cfg.out / WORK_DIR / s.id)
        _remove_pca(cfg.pca_path())
    # A run killed earlier leaves hidden half-written stores (.<name>.tmp-*): remove them
    # now, since stores that are skipped are never rewritten (and rewrites would only
    # clean their own); a store killed mid-swap comes back before it is judged.
    for p in [cfg.out / MULTISITE_NAME, *(
            q for s in sites for q in (cfg.site_store(s.id), *(
                cfg.phase1_store(s.id, sensor) for sensor in SENSORS)))]:
        remove_stale_temporaries(p)
    if force:
        return
    stale = plan_resume(cfg, sites)
    if stale and not rebuild_changed:
        raise StaleStoreError(stale_message(stale))
    for st in stale:  # removed, not overwritten: a failed rebuild must not leave it to reuse
        log.warning("rebuilding %s", st.describe())
        if st.path == cfg.pca_path():
            _remove_pca(st.path)
        else:
            remove_tree(st.path)


def _build_with_client(client: Any, sites: list[Site], cfg: BuildConfig, force: bool,
                       progress: ProgressFn | None) -> pd.DataFrame:
    from gpp_cubes.batch.phase2 import run_combine
    from gpp_cubes.batch.schedule import PhaseSchedule
    from gpp_cubes.cube.store import is_complete
    from gpp_cubes.stac.gdal import gdal_worker_plugin

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
    todo = [s for s in sites if force or not is_complete(cfg.site_store(s.id))]
    for s in sites:
        if s not in todo:
            rows[s.id] = {**_summary_from_store(cfg.site_store(s.id)),
                          "site": s.id, "status": "skipped", "error": None}
            note(s.id, "write", "skip")

    stamp = time.time_ns()  # one per build: the keys of its Dask tasks
    rows.update(PhaseSchedule(client, todo, sites, cfg, force=force, note=note,
                              stamp=stamp).run())

    done = [s.id for s in sites if rows.get(s.id, {}).get("status") in ("built", "skipped")]
    if done:
        multi = cfg.out / MULTISITE_NAME
        # rewritten unless it combines exactly these site stores, as they are
        if not (is_complete(multi) and all(rows[s]["status"] == "skipped" for s in done)
                and _multisite_fingerprints(multi) == _site_fingerprints(cfg, done)):
            client.submit(run_combine, done, cfg, pure=False, key=f"combine-{stamp}").result()
        # every build leaves a STAC collection of its cubes, so other tools can find them
        from gpp_cubes.cube.publish import update_cube_catalog

        update_cube_catalog(cfg.out / CATALOG_DIR, [cfg.site_store(s) for s in done])
    return _summary_table(cfg, sites, rows)


def _summary_table(cfg: BuildConfig, sites: list[Site], rows: Mapping[str, dict[str, Any]]
                   ) -> pd.DataFrame:
    """The returned table, also written to ``logs/build-summary.csv``."""
    table = pd.DataFrame([{c: rows.get(s.id, {}).get(c) for c in TABLE_COLUMNS}
                          for s in sites], columns=list(TABLE_COLUMNS))
    table["site"] = [s.id for s in sites]
    # skipped stores were built with this run's protocol and targets (their fingerprints)
    table["protocol"], table["targets"] = cfg.protocol, cfg.targets_label
    write_atomic(cfg.out / LOG_DIR / SUMMARY_FILE, table.to_csv(index=False))
    return table


def _summary_from_store(path: Location) -> dict[str, Any]:
    from gpp_cubes.cube.store import read_provenance

    return dict((read_provenance(path) or {}).get("summary", {}))


def _multisite_fingerprints(path: Location) -> list[tuple[str, str | None]]:
    """(site, fingerprint hash) of the site stores a multi-site store combines, in order."""
    import xarray as xr

    from gpp_cubes.batch.fingerprint import KEY

    try:
        with xr.open_zarr(str(path), chunks=None) as ds:
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


def any_failed(table: pd.DataFrame) -> bool:
    """True if a site of a :func:`build_sites` table failed."""
    return bool((table["status"] == "failed").any())
