"""The QA of each sensor stage's output, as :mod:`gpp_cubes.batch` calls it.

Each entry point runs the range rules and the outlier scan on what a stage produced, applies
the action and returns the kept data with the stage's provenance section: S2 per time step
(:func:`qa_s2_features`), S1 and LST per value (:func:`qa_s1_frame`, :func:`qa_lst_frame`),
clear-sky GHI per day, range rule only (:func:`qa_clear_sky_ghi`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.qa.checks import Finding, QAConfig, apply_to_series, check_s2_steps, check_series
from gpp_cubes.qa.report import s2_section, sensor_section
from gpp_cubes.qa.rules import LST_FEATURES, S1_FEATURES, S2_BANDS, ghi_upper_bound

log = logging.getLogger("gpp_cubes.qa")  # one logger for the whole QA stage

__all__ = ["qa_clear_sky_ghi", "qa_lst_frame", "qa_s1_frame", "qa_s2_features"]


def _mapping(v: Any) -> dict[str, str]:
    """A provenance field that may be a dict or its JSON text."""
    if isinstance(v, str):
        import json

        try:
            v = json.loads(v)
        except ValueError:
            return {}
    return dict(v) if isinstance(v, Mapping) else {}


def qa_s2_features(ds: Any, cfg: QAConfig, site_id: str = "") -> tuple[np.ndarray, dict[str, Any]]:
    """QA of :func:`gpp_cubes.s2.s2_features` output: which time steps to keep, and why not.

    Parameters
    ----------
    ds : xarray.Dataset
        ``s2_features`` output: (time) band means, ``items``, indices named by its
        ``index_list`` attribute, ``provenance`` (JSON: ``n_items_found``, ``stac_items``,
        ``dropped_items`` and, when the stage records them, ``excluded_items``).
    cfg : QAConfig
    site_id : str
        Named in the log.

    Returns
    -------
    (keep, section)
        ``keep``: bool per time step (all True unless ``cfg.action == "drop"``);
        ``section``: :func:`s2_section`.
    """
    import json

    prov = json.loads(ds.attrs.get("provenance", "{}"))
    names = [n for n in str(ds.attrs.get("index_list", "")).split(",") if n]
    times = pd.DatetimeIndex(ds["time"].values, name="time")
    cols = [b for b in S2_BANDS if b in ds] + [n for n in names if n in ds]
    table = pd.DataFrame({c: np.asarray(ds[c].values, dtype=np.float64) for c in cols},
                         index=times)
    findings = check_s2_steps(table, cfg)
    verb = "dropped" if cfg.action == "drop" else "flagged"
    for t, fs in findings.items():
        log.warning("%s: S2 time step %s %s by QA: %s", site_id, t.date(), verb,
                    "; ".join(f.detail for f in fs))
    items = ds["items"].values if "items" in ds.variables else [""] * len(times)
    steps = table.assign(items=[str(i) for i in items])
    section = s2_section(
        steps, findings, cfg,
        n_found=int(prov.get("n_items_found", len(prov.get("stac_items", [])))),
        stac_items=prov.get("stac_items", []),
        dropped_items=_mapping(prov.get("dropped_items")),
        excluded_items=_mapping(prov.get("excluded_items")))
    keep = np.ones(len(times), dtype=bool)
    if cfg.action == "drop":
        keep &= ~times.isin(list(findings))
    return keep, section


def qa_s1_frame(frame: pd.DataFrame, cfg: QAConfig, *, n_found: int, n_loaded: int,
                n_kept: int, site_id: str = "") -> tuple[pd.DataFrame, dict[str, Any]]:
    """QA of the daily S1 features (a ``SensorResult`` frame).

    A range finding in ``S1_VV``/``S1_VH``/``S1_DpRVIVV`` drops the day's three values
    (they derive from the same two linear means); an outlier drops that value only.

    Parameters
    ----------
    frame : pandas.DataFrame
        Days with a pass: ``S1_VV``, ``S1_VH`` [dB], ``S1_DpRVIVV`` [1], ...
    cfg : QAConfig
    n_found, n_loaded, n_kept : int
        Items found, loaded (the rest could not be read) and kept (their pass covered the
        forest annulus) [STAC items].
    site_id : str

    Returns
    -------
    (frame, section)
    """
    findings = check_series(frame, S1_FEATURES, cfg)
    _log_values(findings, cfg, site_id, "S1")
    out, n = apply_to_series(frame, findings, cfg, coupled=S1_FEATURES)
    dropped = {"unreadable": n_found - n_loaded, "valid_fraction": n_loaded - n_kept}
    return out, sensor_section(findings, cfg, n_found=n_found, n_used=n_kept,
                               dropped=dropped, values_dropped=n)


def qa_lst_frame(frame: pd.DataFrame, cfg: QAConfig, *, n_found: int, n_kept: int,
                 site_id: str = "") -> tuple[pd.DataFrame, dict[str, Any]]:
    """QA of the daily MODIS LST features [K] (a ``SensorResult`` frame).

    Items without any tower value (QC, fill or unreadable) are counted as ``no_value``.

    Returns
    -------
    (frame, section)
    """
    cols = [c for c in LST_FEATURES if c in frame]
    findings = check_series(frame, cols, cfg)
    _log_values(findings, cfg, site_id, "LST")
    out, n = apply_to_series(frame, findings, cfg)
    return out, sensor_section(findings, cfg, n_found=n_found, n_used=n_kept,
                               dropped={"no_value": n_found - n_kept}, values_dropped=n)


def qa_clear_sky_ghi(ghi: pd.Series, latitude: float, cfg: QAConfig, site_id: str = ""
                     ) -> tuple[pd.Series, dict[str, Any]]:
    """QA of daily clear-sky GHI [W m-2]: the range rule only (a smooth model output has
    no outliers to scan for).

    Returns
    -------
    (series, section)
    """
    frame = ghi.rename("clear_sky_ghi").to_frame()
    highs = {"clear_sky_ghi": ghi_upper_bound(latitude, pd.DatetimeIndex(frame.index))}
    findings = check_series(frame, ["clear_sky_ghi"], cfg, highs=highs, outliers=False)
    _log_values(findings, cfg, site_id, "clear-sky GHI")
    out, n = apply_to_series(frame, findings, cfg)
    return out["clear_sky_ghi"], sensor_section(findings, cfg, values_dropped=n)


def _log_values(findings: Sequence[Finding], cfg: QAConfig, site_id: str, what: str) -> None:
    verb = "dropped" if cfg.action == "drop" else "flagged"
    for f in findings[:50]:
        log.warning("%s: %s value of %s %s by QA (%s): %s", site_id, what, f.time.date(),
                    verb, f.rule, f.detail)
    if len(findings) > 50:
        log.warning("%s: ... and %d more %s values %s by QA", site_id, len(findings) - 50,
                    what, verb)
