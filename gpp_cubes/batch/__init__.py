"""Batch builds of site feature cubes on Dask: two phases, resumable, one log per site.

Stage of the data flow: the last one of ``gpp_cubes``. For every site it runs the sensor
stages (:mod:`gpp_cubes.s2`, :mod:`gpp_cubes.sensors.s1`, :mod:`gpp_cubes.sensors.lst`,
:mod:`gpp_cubes.sensors.clearsky`, :mod:`gpp_cubes.targets.fluxnet` +
:mod:`gpp_cubes.targets.extremes`) and joins them into the daily cube of
:mod:`gpp_cubes.cube.features`.

Two phases, because the Sentinel-2 PCA is fitted on *all* sites' training years:

1. per site and sensor, in parallel (:mod:`~gpp_cubes.batch.tasks`): forest mask and S1, the
   S2 spectral-index table, LST, clear-sky GHI with GPP and extremes -> one intermediate
   store each, ``<out>/.work/<SITE>/<task>.zarr``;
2. (:mod:`~gpp_cubes.batch.phase2`) fit the PCA on the pooled training years of every site
   that has S2 results (saved in ``<out>/.work/pca.json`` and reused by later runs into the
   same directory), then per site in parallel: apply it, interpolate, write
   ``<out>/<SITE>.zarr``; finally the multi-site ``<out>/features.zarr``. Phase 2 does not
   wait for all of phase 1 (:mod:`~gpp_cubes.batch.schedule`): the PCA starts when the last
   S2 task ends, a site's assembly when its own phase-1 tasks and the PCA are done.

Resumable: every store (intermediate or final) is written atomically with a completion
marker (:func:`gpp_cubes.cube.store.write_zarr_atomic`) and the fingerprint of what it was
built from (:mod:`~gpp_cubes.batch.fingerprint`); a site whose final store is complete is
skipped, a task whose phase-1 store is complete is not run. Before the cluster starts, a
build (:mod:`~gpp_cubes.batch.build`) checks its input files, removes the hidden temporaries
a killed earlier run left, and compares every complete store's fingerprint with this run's:
a store built from other inputs or parameters stops the build
(:class:`~gpp_cubes.errors.StaleStoreError`), or is rebuilt with what depends on it when
``rebuild_changed=True``. ``force=True`` rebuilds the requested sites and refits the PCA.

Nothing assumes one machine: the tasks are plain functions of picklable arguments
(:class:`~gpp_cubes.batch.config.BuildConfig`, :class:`gpp_cubes.sites.Site`); workers read
the STAC API and the COGs themselves and write the stores themselves, into ``out_dir``, which
must therefore be a location every worker can reach: a shared file system, or object storage
(``s3://bucket/prefix``, :mod:`gpp_cubes.storage`) for workers that share no disk. Only small
per-site summaries travel back to the client. GDAL settings reach the
workers through a ``WorkerPlugin`` (:func:`gpp_cubes.stac.gdal.gdal_worker_plugin`),
progress through Dask events, logs into ``<out>/logs/<SITE>.log``
(:mod:`~gpp_cubes.batch.logs`); the cluster is :mod:`~gpp_cubes.batch.cluster`.

The names below are imported lazily, so ``import gpp_cubes.batch`` (and the ``gpp`` command)
stays light until a build runs.
"""

from __future__ import annotations

from gpp_cubes.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "BuildConfig": "gpp_cubes.batch.config",
    "CATALOG_DIR": "gpp_cubes.batch.config",
    "config_default": "gpp_cubes.batch.config",
    "PROGRESS_TOPIC": "gpp_cubes.batch.logs",
    "STAGES": "gpp_cubes.batch.logs",
    "ProgressFn": "gpp_cubes.batch.logs",
    "site_log": "gpp_cubes.batch.logs",
    "LOCAL_CLUSTER_CONFIG": "gpp_cubes.batch.cluster",
    "dask_client": "gpp_cubes.batch.cluster",
    "default_memory_limit": "gpp_cubes.batch.cluster",
    "default_workers": "gpp_cubes.batch.cluster",
    "SENSORS": "gpp_cubes.batch.tasks",
    "TASKS": "gpp_cubes.batch.tasks",
    "run_sensor": "gpp_cubes.batch.tasks",
    "read_phase1": "gpp_cubes.batch.phase2",
    "run_combine": "gpp_cubes.batch.phase2",
    "run_fit_pca": "gpp_cubes.batch.phase2",
    "run_phase2": "gpp_cubes.batch.phase2",
    "TABLE_COLUMNS": "gpp_cubes.batch.build",
    "any_failed": "gpp_cubes.batch.build",
    "build_sites": "gpp_cubes.batch.build",
    "check_inputs": "gpp_cubes.batch.build",
    "resolve_sites": "gpp_cubes.batch.build",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
