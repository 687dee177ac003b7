"""Phase 2 of a batch build: the shared PCA, each site's cube, the multi-site store.

Three kinds of Dask task, each reading the complete stores phase 1 left in ``<out>/.work``:

* :func:`run_fit_pca` fits the S2 PCA on the pooled training years of every site with an S2
  store (:func:`gpp_cubes.s2.pca.fit_pca_model`) and keeps it in ``<out>/.work/pca.json``,
  reused by every later run into the same directory, so all stores of a directory share it;
  with ``BuildConfig.pca_from`` (``gpp build --pca FROM``) it copies another build's PCA
  there instead, so the sites land in that build's feature space;
* :func:`run_phase2` applies it to one site, joins the sensors on the daily calendar
  (:func:`gpp_cubes.cube.features.assemble_site`) and writes ``<out>/<SITE>.zarr`` with the
  merged provenance and the store's fingerprint;
* :func:`run_combine` stacks the complete site stores into ``<out>/features.zarr``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from gpp_cubes.batch.cluster import worker_threads
from gpp_cubes.batch.config import BuildConfig
from gpp_cubes.batch.fingerprint import Fingerprint
from gpp_cubes.batch.logs import fail, log, site_log, stage
from gpp_cubes.batch.tasks import SENSORS
from gpp_cubes.errors import BuildError
from gpp_cubes.sites.catalog import Site

#: Predictors each non-S2 phase-1 store contributes, by store (and its time coordinate).
S1_FEATURES = ("S1_VV", "S1_VH", "S1_DpRVIVV")
LST_FEATURES = ("MOD11A1_dt", "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt")


def read_phase1(cfg: BuildConfig, site_id: str, sensor: str) -> tuple[Any, dict[str, Any]]:
    """The complete phase-1 store of ``sensor`` (loaded) and its provenance."""
    import xarray as xr

    from gpp_cubes.cube.store import is_complete

    path = cfg.phase1_store(site_id, sensor)
    if not is_complete(path):
        raise BuildError(f"site {site_id}: phase-1 store {path} is missing or incomplete")
    with xr.open_zarr(str(path), chunks=None) as ds:  # a local path or a URL
        ds = ds.load()
    return ds, json.loads(ds.attrs.get("provenance", "{}"))


def s2_frame(ds: Any) -> pd.DataFrame:
    """The index table of an S2 phase-1 store (rows: clear days, columns: indices) [1]."""
    return pd.DataFrame(ds["s2_indices"].values, index=pd.DatetimeIndex(ds["s2_time"].values),
                        columns=[str(c) for c in ds["s2_index"].values])


def run_fit_pca(site_ids: Sequence[str], cfg: BuildConfig, *, refit: bool = False
                ) -> dict[str, Any]:
    """Fit (or reuse) the S2 PCA on the pooled training years of ``site_ids`` (a Dask task).

    The fitted PCA is saved to ``<out>/.work/pca.json`` and reused by every later run into
    the same directory (so all stores of a directory share one PCA); ``refit`` fits anew.
    Its fingerprint (:func:`gpp_cubes.batch.fingerprint.pca_fingerprint`) holds the train
    years and the fingerprints of the S2 stores it was fitted on, as those stores recorded
    them; it is kept in the PCA's sidecar with the sites.

    With ``cfg.pca_from`` the PCA is not fitted: that file (another build's PCA, whose
    SHA-256 must still be ``cfg.pca_sha256``) is copied to ``<out>/.work/pca.json``, its
    sidecar naming the sites it was fitted on and where it came from.

    Returns
    -------
    dict
        ``{"path": str, "sites": [...], "reused": bool}``.
    """
    from gpp_cubes.batch.fingerprint import (
        KEY,
        pca_fingerprint,
        pca_sidecar_content,
        read_pca_sidecar,
    )
    from gpp_cubes.s2.pca import fit_pca_model, save_pca_model

    path = cfg.pca_path()
    if path.is_file() and not refit:
        return {"path": str(path), "reused": True, "sites": read_pca_sidecar(path)[0]}
    if cfg.pca_from:
        return _import_pca(cfg)
    with worker_threads():
        tables: dict[str, pd.DataFrame] = {}
        used: dict[str, Fingerprint | None] = {}
        for sid in sorted(site_ids):
            ds, prov = read_phase1(cfg, sid, "s2")
            tables[sid] = s2_frame(ds)
            used[sid] = Fingerprint.from_record(prov.get(KEY))
        model = fit_pca_model(tables, cfg.train_years, variance=cfg.pca_variance,
                              n_components=cfg.pca_components)
        save_pca_model(model, path, pca_sidecar_content(site_ids, pca_fingerprint(cfg, used)))
    return {"path": str(path), "sites": sorted(site_ids), "reused": False}


def _import_pca(cfg: BuildConfig) -> dict[str, Any]:
    """Copy the PCA ``cfg.pca_from`` into this build (``--pca``); see :func:`run_fit_pca`."""
    from gpp_cubes.batch.fingerprint import pca_fingerprint, pca_sidecar_content
    from gpp_cubes.s2.pca import load_pca, pca_file_sha256, read_sidecar, save_pca_model

    src = cfg.pca_from
    assert src is not None
    if pca_file_sha256(src) != cfg.pca_sha256:
        raise BuildError(f"the PCA {src} (--pca) changed since the build started (its SHA-256 "
                         "differs); rerun the build")
    fitted_on = (read_sidecar(src) or {}).get("sites", [])
    save_pca_model(load_pca(src), cfg.pca_path(), pca_sidecar_content(
        fitted_on, pca_fingerprint(cfg, {}), {"path": src, "sha256": cfg.pca_sha256}))
    log.info("PCA imported from %s (SHA-256 %s, fitted on %s)", src, cfg.pca_sha256,
             fitted_on)
    return {"path": str(cfg.pca_path()), "sites": fitted_on, "reused": False,
            "imported": src}


def _merge_provenance(cfg: BuildConfig, site_id: str,
                      parts: dict[str, tuple[Any, dict[str, Any]]]
                      ) -> tuple[dict[str, Any], dict[str, Fingerprint | None]]:
    """The site store's provenance from its phase-1 stores', and their fingerprints."""
    from gpp_cubes.batch.fingerprint import KEY
    from gpp_cubes.cube.store import provenance_base

    prov: dict[str, Any] = {**provenance_base(), "site_id": site_id,
                            "parameters": cfg.provenance_params(), "summary": {}}
    qa: dict[str, Any] = {}
    used: dict[str, Fingerprint | None] = {}
    for sensor, (_, p) in parts.items():
        prov["summary"].update(p.pop("summary", {}))
        for k in ("site_id", "sensor", "parameters"):
            p.pop(k, None)
        # the site store's fingerprint names them all
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
                int(prov["summary"].get(f"{k}_qa_{kind}") or 0) for k in ("s1", "lst", "ghi"))
        log.info("%s: %s", site_id, format_qa_table(qa, site_id))
    return prov, used


def run_phase2(site: Site, cfg: BuildConfig) -> dict[str, Any]:
    """Phase 2 of one site (a Dask task): apply the PCA, join, interpolate, write the store.

    Returns
    -------
    dict
        Summary (``status`` "ok"/"failed", the phase-1 counts, ``error``).
    """
    from gpp_cubes.batch.fingerprint import KEY, read_pca_sidecar, site_fingerprint
    from gpp_cubes.cube.features import SiteInputs, assemble_site, daily_calendar, write_site_store
    from gpp_cubes.s2.pca import apply_pca, load_pca, pca_provenance

    sid = site.id
    summary: dict[str, Any] = {"site": sid, "status": "ok", "error": None}
    with site_log(cfg.log_path(sid)), worker_threads():
        try:
            with stage(sid, "assemble", summary):
                cal = daily_calendar(cfg.start, cfg.end)
                parts = {s: read_phase1(cfg, sid, s) for s in SENSORS}
                prov, used = _merge_provenance(cfg, sid, parts)
                model = load_pca(cfg.pca_path())
                pcs = apply_pca(model, s2_frame(parts["s2"][0]))
                prov["pca"] = pca_provenance(model, cfg.pca_path())
                used["pca"] = read_pca_sidecar(cfg.pca_path())[1]
                prov[KEY] = site_fingerprint(cfg, site, used).record()
                s1, lst, target = parts["s1"][0], parts["lst"][0], parts["target"][0]
                s1_idx = pd.DatetimeIndex(s1["s1_time"].values)
                series: dict[str, pd.Series] = {c: pcs[c] for c in pcs.columns}
                for f in S1_FEATURES:
                    series[f] = pd.Series(s1[f].values, index=s1_idx)
                for f in LST_FEATURES:
                    series[f] = pd.Series(lst[f].values, index=cal)
                series["clear_sky_ghi"] = pd.Series(target["clear_sky_ghi"].values, index=cal)
                inputs = SiteInputs(
                    site=site, predictors=pd.DataFrame(series),
                    gpp=pd.Series(target["GPP"].values, index=cal),
                    extreme=pd.Series(target["extreme"].values, index=cal),
                    provenance=prov)
                ds = assemble_site(inputs, cal, train_years=cfg.train_years,
                                   test_years=cfg.test_years, targets=cfg.targets)
                summary.update(prov["summary"])
            with stage(sid, "write", summary):
                write_site_store(ds, cfg.out)
        except Exception as err:
            fail(summary, sid, err)
    return summary


def run_combine(site_ids: Sequence[str], cfg: BuildConfig) -> str:
    """Write the multi-site store from the complete per-site stores (a Dask task)."""
    from gpp_cubes.cube.features import write_multisite_store

    return str(write_multisite_store([cfg.site_store(s) for s in site_ids], cfg.out))
