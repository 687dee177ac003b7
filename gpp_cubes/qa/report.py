"""The per-site QA record: the provenance ``qa`` sections and the build log's QA table.

:func:`s2_section` accounts for every STAC item the S2 search found (used, dropped by the
stage and why, dropped or flagged by the QA), so the counts of a site always add up to what
was found; :func:`sensor_section` records the per-value sensors. :func:`qa_rows` and
:func:`format_qa_table` flatten a site's sections into one line per reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from gpp_cubes.contract import QA_SECTIONS, reason_category
from gpp_cubes.qa.checks import Finding, QAConfig

__all__ = ["SECTIONS", "format_qa_table", "qa_rows", "s2_section", "sensor_section"]


def _counts(findings: Iterable[Finding]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for f in findings:
        d = out.setdefault(f.rule, {})
        d[f.variable] = d.get(f.variable, 0) + 1
    return {r: dict(sorted(v.items())) for r, v in sorted(out.items())}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 6) if math.isfinite(f) else None


_S2_DATE = re.compile(r"_(\d{8})T\d{6}_")


def _item_date(item_id: str) -> str | None:
    m = _S2_DATE.search(item_id)
    return None if m is None else f"{m[1][:4]}-{m[1][4:6]}-{m[1][6:]}"


def s2_section(steps: pd.DataFrame, findings: Mapping[pd.Timestamp, list[Finding]],
               cfg: QAConfig, *, n_found: int, stac_items: Sequence[str] = (),
               dropped_items: Mapping[str, str] | None = None,
               excluded_items: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The S2 QA section of a site: item accounting by reason, findings, per-scene list.

    Parameters
    ----------
    steps : pandas.DataFrame
        The time steps the S2 stage kept (time index): ``items`` (space-separated ids) and
        any index columns (:data:`KEY_INDICES` are listed per scene).
    findings : mapping
        Output of :func:`check_s2_steps`.
    cfg : QAConfig
    n_found : int
        Items found by the search.
    stac_items : sequence of str
        Items the stage loaded (provenance ``stac_items``).
    dropped_items, excluded_items : mapping, optional
        Item -> reason of the stage: read failures (category ``unreadable``) and rule
        exclusions (``"category: detail"``). Items loaded but in no kept step and not
        excluded are counted as ``clear_fraction`` (the 1 % clear-pixel rule).

    Returns
    -------
    dict
        ``items`` {found, used, dropped {reason: n}} [STAC items], ``steps`` {kept,
        dropped, flagged} [time steps], ``findings`` {rule: {variable: n}}, ``action``,
        ``scenes``: one entry per time step and per item dropped by the stage: ``date``,
        ``items``, key index values (None when not computed), ``status`` (used, flagged,
        dropped) and ``reason``.
    """
    dropped_items = dict(dropped_items or {})
    excluded_items = dict(excluded_items or {})
    keys = [k for k in ("NDVI", "NIRv", "kNDVI") if k in steps]
    dropped: dict[str, int] = {}
    scenes: list[dict[str, Any]] = []
    in_steps: set[str] = set()
    n_used = n_steps_dropped = n_flagged = 0
    for t, row in steps.iterrows():
        ids = [i for i in str(row.get("items", "") or "").split() if i]
        in_steps.update(ids)
        fs = findings.get(pd.Timestamp(t), [])
        entry: dict[str, Any] = {"date": str(pd.Timestamp(t).date()), "items": ids,
                                 **{k: _num(row[k]) for k in keys}}
        if not fs:
            status, reason = "used", ""
        else:
            rule = "qa_range" if any(f.rule == "range" for f in fs) else "qa_outlier"
            reason = f"{rule}: " + "; ".join(f.detail for f in fs)
            status = "dropped" if cfg.action == "drop" else "flagged"
            if status == "dropped":
                dropped[rule] = dropped.get(rule, 0) + max(1, len(ids))
                n_steps_dropped += 1
            else:
                n_flagged += 1
        if status != "dropped":
            n_used += max(1, len(ids))
        scenes.append({**entry, "status": status, "reason": reason})
    stage: dict[str, str] = {}
    for iid in dropped_items:  # read failures; their messages stay in the S2 provenance
        stage[iid] = "unreadable"
    for iid, why in excluded_items.items():
        stage.setdefault(iid, reason_category(why, "excluded"))
    for iid in stac_items:
        if iid not in in_steps and iid not in stage:
            stage[iid] = "clear_fraction"
    for iid in sorted(set(stage) - in_steps, key=lambda i: (_item_date(i) or "", i)):
        cat = stage[iid]
        dropped[cat] = dropped.get(cat, 0) + 1
        scenes.append({"date": _item_date(iid), "items": [iid], **{k: None for k in keys},
                       "status": "dropped", "reason": cat})
    accounted = n_used + sum(dropped.values())
    if n_found > accounted:
        dropped["unaccounted"] = n_found - accounted
    scenes.sort(key=lambda s: (s["date"] or "", s["items"]))
    return {"action": cfg.action,
            "items": {"found": int(n_found), "used": int(n_used),
                      "dropped": dict(sorted(dropped.items()))},
            "steps": {"kept": int(len(steps) - n_steps_dropped), "dropped": n_steps_dropped,
                      "flagged": n_flagged},
            "findings": _counts(f for fs in findings.values() for f in fs),
            "key_indices": keys, "scenes": scenes}


def sensor_section(findings: Sequence[Finding], cfg: QAConfig, *, n_found: int | None = None,
                   n_used: int | None = None, dropped: Mapping[str, int] | None = None,
                   values_dropped: int = 0, details: int = 50) -> dict[str, Any]:
    """The QA section of a per-value sensor (S1, LST, clear-sky GHI).

    Parameters
    ----------
    findings : sequence of Finding
    cfg : QAConfig
    n_found, n_used : int, optional
        Items found and used by the stage [STAC items].
    dropped : mapping, optional
        Items not used, by the stage's reason.
    values_dropped : int
        Values set to NaN by the QA.
    details : int, default 50
        Findings listed one by one (date, variable, rule, value), the first ``details``.

    Returns
    -------
    dict
        ``items``, ``findings`` {rule: {variable: n}}, ``values_dropped``,
        ``values_flagged``, ``action`` and ``list`` (the first findings).
    """
    out: dict[str, Any] = {"action": cfg.action}
    if n_found is not None:
        out["items"] = {"found": int(n_found), "used": int(n_used or 0),
                        "dropped": {k: int(v) for k, v in sorted((dropped or {}).items())
                                    if v}}
    out["findings"] = _counts(findings)
    out["values_dropped"] = int(values_dropped)
    out["values_flagged"] = len(findings) if cfg.action == "flag" else 0
    out["list"] = [{"date": str(f.time.date()), "variable": f.variable, "rule": f.rule,
                    "value": _num(f.value), "detail": f.detail}
                   for f in sorted(findings, key=lambda f: (f.time, f.variable))[:details]]
    return out


#: Sensor sections of a site's ``qa`` provenance, in display order (the contract's).
SECTIONS = QA_SECTIONS


def qa_rows(qa: Mapping[str, Any]) -> pd.DataFrame:
    """One line per count of a site's ``qa`` provenance section.

    Returns
    -------
    pandas.DataFrame
        Columns ``sensor``, ``what`` (e.g. ``scenes found``, ``dropped: sun_zenith``,
        ``outlier: NIRv``) and ``count``; lines with a zero count are left out except
        found/used.
    """
    rows: list[tuple[str, str, int]] = []
    for sensor in SECTIONS:
        sec = qa.get(sensor)
        if not isinstance(sec, Mapping):
            continue
        items = sec.get("items")
        if isinstance(items, Mapping):
            rows.append((sensor, "scenes found", int(items.get("found", 0))))
            rows.append((sensor, "scenes used", int(items.get("used", 0))))
            for reason, n in items.get("dropped", {}).items():
                rows.append((sensor, f"scenes dropped: {reason}", int(n)))
        for rule, per_var in sec.get("findings", {}).items():
            unit = "scenes" if sensor == "s2" else "values"
            verb = "dropped" if sec.get("action") == "drop" else "flagged"
            for var, n in per_var.items():
                rows.append((sensor, f"{unit} {verb}, {rule}: {var}", int(n)))
    return pd.DataFrame(rows, columns=["sensor", "what", "count"])


def format_qa_table(qa: Mapping[str, Any], site_id: str = "") -> str:
    """A site's QA as a plain-text table for its build log (one line per reason).

    S2 finding lines count the time steps with a finding on that variable (a step may
    fail several), S1/LST/GHI lines count values.
    """
    cfg = qa.get("config", {})
    head = (f"feature QA{' of ' + site_id if site_id else ''} (action {cfg.get('action', '?')}"
            f", outliers > {cfg.get('outlier_sigma', '?')} robust sigmas over "
            f"{cfg.get('window', '?')} observations)")
    rows = qa_rows(qa)
    if rows.empty:
        return head + ": nothing recorded"
    width = max(len(w) for w in rows["what"])
    lines = [head, f"  {'sensor':<13} {'':<{width}} {'count':>6}"]
    lines += [f"  {r.sensor:<13} {r.what:<{width}} {r.count:>6}" for r in rows.itertuples()]
    return "\n".join(lines)
