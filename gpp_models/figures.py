"""The paper's three figures with matplotlib, each saved as PNG and SVG.

* Fig. 1: per-site NRMSE per model as box plots for the full period, the growing season and
  the extremes (line: median; box: Q1-Q3; whiskers: 5th-95th percentile).
* Fig. 2: median (over sites) permutation importance per feature, sorted, one panel per model.
* Fig. 3: observed and predicted GPP at three sites (DE-Hai, BE-Vie, FI-Var when present,
  else the first three) with ensemble bands and a zoom on the longest extreme event.
* Gap-filled tower series (not in the paper; :func:`fig_gap_filled`): per site, observed
  daily GPP as points and the prediction of :func:`gpp_models.predict.predict_gpp` (what
  ``gpp predict`` writes) as a line over every day with a full predictor window, the
  ensemble spread as a band, the days without an observation marked as gap-filled, the days
  not predicted marked with their reason, the test years shaded.
* Feature QA (not in the paper): per site, the S2 NIRv (or NDVI) of every scene against its
  date, used scenes as dots, scenes dropped by the feature QA (:mod:`gpp_cubes.qa`) at their
  value, scenes the S2 stage did not use (cloudy, low sun, ...) as ticks under the series,
  coloured by reason: why one site has fewer scenes than another, in one look.

References
----------
Montero, D. et al. (2024), Figures 1-3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from gpp_models.evaluate import SETTINGS
from gpp_models.explain import median_importance, summarize_importance

if TYPE_CHECKING:  # predict imports JAX; the figures of files do not need it
    from gpp_models.predict import Prediction

EXAMPLE_SITES = ("DE-Hai", "BE-Vie", "FI-Var")
MODEL_ORDER = ("RNN", "GRU", "LSTM", "seasonal_cycle", "linear")
SETTING_TITLES = {"full": "a) full period", "growing_season": "b) growing season (May-Sep)",
                  "extremes": "c) climate-induced extremes"}
SCOPE_WORDS = {"site": "within each site", "pooled": "across all sites pooled"}
COLORS = {"RNN": "#1b9e77", "GRU": "#d95f02", "LSTM": "#7570b3", "seasonal_cycle": "#999999",
          "linear": "#bbbbbb"}


def _save(fig: Figure, out_dir: Path, name: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext in ("png", "svg"):
        paths[ext] = out_dir / f"{name}.{ext}"
        fig.savefig(paths[ext], dpi=150, bbox_inches="tight",
                    metadata={"Date": None} if ext == "svg" else None)
    return paths


def _ordered(models: Sequence[str]) -> list[str]:
    known = [m for m in MODEL_ORDER if m in models]
    return known + sorted(m for m in models if m not in known)


def fig1_nrmse(long: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Box plots of per-site NRMSE per model for the three settings.

    Parameters
    ----------
    long : DataFrame
        Columns ``model``, ``site``, ``setting``, ``nrmse`` [1]; ``norm``, when present, is
        named in the title.
    out_dir : path

    Returns
    -------
    dict
        ``{"png": path, "svg": path}``.
    """
    models = _ordered(long["model"].unique())
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, setting in zip(axes, SETTINGS, strict=True):
        sub = long[long["setting"] == setting]
        data = [sub.loc[sub["model"] == m, "nrmse"].dropna().to_numpy() for m in models]
        bp = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True,
                        medianprops={"color": "black"})
        ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right")
        for patch, m in zip(bp["boxes"], models, strict=True):
            patch.set_facecolor(COLORS.get(m, "#cccccc"))
        ax.set_title(SETTING_TITLES[setting], fontsize=10)
        ax.set_ylabel("NRMSE per site")
        ax.grid(axis="y", alpha=0.3)
    norms = _recorded(long, "norm")
    fig.suptitle("Model performance on the test years (box Q1-Q3, whiskers 5th-95th pct.)"
                 + (f"; NRMSE by the {' / '.join(norms)} range" if norms else ""))
    return _save(fig, Path(out_dir), "fig1_nrmse")


def _recorded(frame: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of a method column (``norm``, ``scope``); empty when absent."""
    if column not in frame:
        return []
    return [str(v) for v in dict.fromkeys(frame[column].dropna())]


def fig2_importance(fi: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Median feature importance per feature and model, sorted decreasing.

    Parameters
    ----------
    fi : DataFrame
        Rows of :func:`gpp_models.explain.permutation_importance` with a ``model`` column;
        its ``scope`` column, when present, is named in the title.
    """
    models = _ordered(fi["model"].unique())
    n_feat = fi["feature"].nunique()
    fig = Figure(figsize=(4 * len(models), 0.3 * n_feat + 1.5), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        med = median_importance(summarize_importance(fi[fi["model"] == m]))
        ax.barh(med.index[::-1], med.to_numpy()[::-1], color=COLORS.get(m, "#777777"))
        ax.set_title(m)
        ax.set_xlabel("median FI [NRMSE increase]")
        ax.axvline(0, color="black", lw=0.5)
    scopes = _recorded(fi, "scope")
    fig.suptitle("Permutation feature importance per model"
                 + (f" (shuffled {' / '.join(SCOPE_WORDS.get(x, x) for x in scopes)})"
                    if scopes else ""))
    return _save(fig, Path(out_dir), "fig2_importance")


def _longest_event(times: pd.DatetimeIndex, flags: np.ndarray) -> tuple[pd.Timestamp, ...] | None:
    if not flags.any():
        return None
    idx = np.flatnonzero(flags)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]]
    k = int(np.argmax(ends - starts))
    return times[starts[k]], times[ends[k]]


def fig3_predictions(predictions: Mapping[str, pd.DataFrame], out_dir: str | Path,
                     sites: Sequence[str] | None = None) -> dict[str, Path]:
    """Observed vs predicted GPP at three sites, with zoom panels on extreme events.

    Parameters
    ----------
    predictions : mapping model -> DataFrame
        Test predictions (columns ``site``, ``time``, ``obs``, ``pred``, optional
        ``pred_min``/``pred_max`` ensemble range, ``extreme``) [g C m-2 d-1].
    sites : sequence of str, optional
        Default: DE-Hai, BE-Vie, FI-Var when present, else the first three sites.
    """
    first = next(iter(predictions.values()))
    available = list(dict.fromkeys(first["site"]))
    if sites is None:
        sites = [s for s in EXAMPLE_SITES if s in available] or available[:3]
        if len(sites) < 3:
            sites = list(dict.fromkeys([*sites, *available]))[:3]
    fig = Figure(figsize=(13, 3.2 * len(sites)), layout="constrained")
    axes = fig.subplots(len(sites), 2, squeeze=False, gridspec_kw={"width_ratios": [3, 1]})
    for row, site in enumerate(sites):
        obs = first[first["site"] == site].sort_values("time")
        times = pd.DatetimeIndex(obs["time"])
        event = _longest_event(times, obs["extreme"].to_numpy(bool))
        for col, ax in enumerate(axes[row]):
            for m, frame in predictions.items():
                f = frame[frame["site"] == site].sort_values("time")
                t = pd.DatetimeIndex(f["time"])
                color = COLORS.get(m)
                if "pred_min" in f and (f["pred_max"] > f["pred_min"]).any():
                    ax.fill_between(t, f["pred_min"], f["pred_max"], color=color, alpha=0.25,
                                    lw=0)
                ax.plot(t, f["pred"], color=color, lw=1, label=m)
            ax.plot(times, obs["obs"], "k.", ms=2, label="observed")
            if event is not None:
                ax.axvspan(event[0], event[1], color="red", alpha=0.1)
            if col == 1:
                if event is not None:
                    pad = pd.Timedelta(days=20)
                    ax.set_xlim(event[0] - pad, event[1] + pad)
                    ax.set_title("zoom: longest extreme event", fontsize=9)
                else:
                    ax.set_title("no extreme event in the test years", fontsize=9)
                ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=4))
                ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
            else:
                ax.set_title(site)
                ax.set_ylabel("GPP [g C m-2 d-1]")
        if row == 0:
            axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
    return _save(fig, Path(out_dir), "fig3_predictions")


#: At most this many sites get a panel of the gap-filled series; beyond, the example sites.
GAP_FILLED_MAX_SITES = 6
GAP_COLOR = "#e7298a"  # none of the models' COLORS


def gap_filled_sites(sites: Sequence[str]) -> list[str]:
    """Sites drawn by :func:`fig_gap_filled`: all up to :data:`GAP_FILLED_MAX_SITES`, else
    the example sites present (else the first three)."""
    sites = list(sites)
    if len(sites) <= GAP_FILLED_MAX_SITES:
        return sites
    return [s for s in EXAMPLE_SITES if s in sites] or sites[:3]


def draw_gap_filled(pred: Prediction, sites: Sequence[str] | None = None,
                    test_years: Sequence[int] = ()) -> Figure:
    """The gap-filled tower series of a prediction, one panel per site.

    Parameters
    ----------
    pred : Prediction
        From :func:`gpp_models.predict.predict_gpp` [g C m-2 d-1].
    sites : sequence of str, optional
        Default :func:`gap_filled_sites` of the prediction's sites.
    test_years : sequence of int
        Calendar years shaded as test years.

    Returns
    -------
    matplotlib.figure.Figure
        Per panel: the line of the ensemble mean (``gid`` ``"prediction"``, NaN where not
        predicted), its gap-filled days over-drawn (``gid`` ``"gap-filled"``), observations
        as points (``gid`` ``"observed"``), the ±1 standard deviation band when K > 1, the
        days not predicted as ticks under the series.
    """
    from gpp_models.predict import NO_FULL_WINDOW, PARTLY_FILLED

    all_sites = list(pred.cube.sites)
    sites = list(sites) if sites is not None else gap_filled_sites(all_sites)
    fig = Figure(figsize=(13, 2.6 * len(sites) + 0.6), layout="constrained")
    axes = fig.subplots(len(sites), 1, squeeze=False, sharex=True)[:, 0]
    time = pred.cube.time
    color = COLORS.get(pred.model, "#7570b3")
    reasons = pred.reasons()
    for ax, site in zip(axes, sites, strict=True):
        i = all_sites.index(site)
        mean, obs, spread = pred.mean[i], pred.obs[i], pred.spread[i]
        predicted = pred.status[i] <= PARTLY_FILLED
        gap = predicted & ~np.isfinite(obs)
        for year in test_years:
            ax.axvspan(pd.Timestamp(f"{year}-01-01"), pd.Timestamp(f"{year}-12-31"),
                       color="#eeeeee", lw=0, zorder=0,
                       label="test years" if year == test_years[0] else None)
        if pred.members > 1:
            ax.fill_between(time, mean - spread, mean + spread, color=color, alpha=0.25, lw=0,
                            label=f"±1 s.d. of {pred.members} members")
        ax.plot(time, mean, color=color, lw=0.8, gid="prediction",
                label=f"{pred.model} prediction (ensemble mean)")
        # markers too: a one-day gap has no neighbour to draw a line segment to
        ax.plot(time, np.where(gap, mean, np.nan), "-o", color=GAP_COLOR, lw=1.4, ms=1.5,
                gid="gap-filled",
                label=f"gap-filled: no observation ({int(gap.sum())} days)")
        ax.plot(time, obs, "k.", ms=1.5, gid="observed",
                label=f"observed ({int(np.isfinite(obs).sum())} days)")
        skipped = ~predicted & (pred.status[i] != NO_FULL_WINDOW)
        for reason in dict.fromkeys(reasons[i][skipped]):
            days = skipped & (reasons[i] == reason)
            ax.plot(time[days], np.zeros(int(days.sum())), "|", color="#d62728", ms=6,
                    transform=ax.get_xaxis_transform(),
                    label=f"not predicted: {reason} ({int(days.sum())} days)")
        ax.set_title(f"{site}: {int(predicted.sum())} days predicted, {int(gap.sum())} of "
                     "them gap-filled", fontsize=10, loc="left")
        ax.set_ylabel("GPP [g C m-2 d-1]")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Gap-filled tower series: {pred.model}, {pred.window}-day windows")
    return fig


def fig_gap_filled(pred: Prediction, out_dir: str | Path, *,
                   sites: Sequence[str] | None = None,
                   test_years: Sequence[int] = ()) -> dict[str, Path]:
    """:func:`draw_gap_filled` saved as ``fig_gap_filled.{png,svg}`` in ``out_dir``."""
    return _save(draw_gap_filled(pred, sites, test_years), Path(out_dir), "fig_gap_filled")


#: Colours of the reasons a scene was not used (others cycle through QA_PALETTE).
QA_COLORS = {"used": "#222222", "flagged": "#e6a100", "qa_range": "#d62728",
             "qa_outlier": "#ff7f0e", "clear_fraction": "#9ecae1", "sun_zenith": "#756bb1",
             "c_factor": "#e377c2", "duplicate": "#bdbdbd", "no_coverage": "#8c564b",
             "unreadable": "#000000"}
QA_PALETTE = ("#17becf", "#bcbd22", "#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd")


def _provenance_qa(prov: Any) -> dict[str, dict[str, Any]]:
    """Site id -> ``qa`` section of a store provenance (multi-site: keyed by site id)."""
    if isinstance(prov, str):
        try:
            prov = json.loads(prov)
        except ValueError:
            return {}
    if not isinstance(prov, Mapping):
        return {}
    if isinstance(prov.get("qa"), Mapping):  # one site's provenance
        return {str(prov.get("site_id", "site")): dict(prov["qa"])}
    return {str(k): dict(v["qa"]) for k, v in prov.items()
            if isinstance(v, Mapping) and isinstance(v.get("qa"), Mapping)}


def _store_qa(path: Path) -> dict[str, dict[str, Any]]:
    import xarray as xr

    try:
        with xr.open_zarr(path, chunks=None) as ds:
            return _provenance_qa(ds.attrs.get("provenance"))
    except Exception:  # a missing or foreign store just has no QA to show
        return {}


def feature_qa(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The feature-QA sections of the cubes a results directory was computed from.

    Read from the provenance ``runs.json`` recorded (:func:`gpp_models.evaluate.evaluate_runs`)
    and, for sites missing there, from the stores at its ``features`` path: a multi-site
    ``features.zarr`` (provenance keyed by site), one site store, or a directory of site
    stores (``features.zarr``'s siblings).

    Returns
    -------
    dict
        Site id -> ``qa`` section (:mod:`gpp_cubes.qa`), in the order of ``runs.json``'s
        sites; empty when the cubes carry no QA (built before it existed, synthetic).
    """
    runs_path = Path(results_dir) / "runs.json"
    if not runs_path.is_file():
        return {}
    runs = json.loads(runs_path.read_text())
    qa = _provenance_qa(runs.get("provenance"))
    sites = [str(s) for s in runs.get("sites", [])] or list(qa)
    src = Path(str(runs.get("features", "")))
    if any(s not in qa for s in sites) and str(src) and src.exists():
        stores = ([src] if src.suffix == ".zarr" else
                  [*sorted(src.glob("*.zarr"))])
        if src.name == "features.zarr":  # the per-site stores beside it
            stores += sorted(p for p in src.parent.glob("*.zarr") if p != src)
        for store in stores:
            for site, q in _store_qa(store).items():
                qa.setdefault(site, q)
    return {s: qa[s] for s in sites if s in qa}


def _qa_color(reason: str, seen: dict[str, str]) -> str:
    if reason not in seen:
        seen[reason] = QA_COLORS.get(reason, QA_PALETTE[len(seen) % len(QA_PALETTE)])
    return seen[reason]


def fig_feature_qa(qa_by_site: Mapping[str, Mapping[str, Any]], out_dir: str | Path
                   ) -> dict[str, Path]:
    """Per site, the S2 greenness series with every scene marked used or dropped, by reason.

    Parameters
    ----------
    qa_by_site : mapping
        Site id -> ``qa`` provenance section (:func:`feature_qa`); its ``s2.scenes`` list
        (date, items, index values [1], status, reason) is drawn.
    out_dir : path

    Returns
    -------
    dict
        ``{"png": path, "svg": path}``.
    """
    sites = [s for s, q in qa_by_site.items() if q.get("s2", {}).get("scenes") is not None]
    fig = Figure(figsize=(12, 2.3 * max(1, len(sites)) + 0.6), layout="constrained")
    axes = fig.subplots(max(1, len(sites)), 1, squeeze=False, sharex=True)[:, 0]
    colors: dict[str, str] = {}
    for ax, site in zip(axes, sites, strict=False):
        s2 = qa_by_site[site]["s2"]
        scenes = pd.DataFrame(s2["scenes"])
        # NIRv first: a multiplicative error (a c-factor blow-up) cancels in NDVI's ratio
        keys = [k for k in ("NIRv", "NDVI", "kNDVI") if k in scenes]
        key = keys[0] if keys else None
        scenes["date"] = pd.to_datetime(scenes["date"], errors="coerce")
        scenes = scenes.dropna(subset=["date"]).sort_values("date")
        cat = scenes["reason"].fillna("").str.split(":").str[0].str.strip()
        n_items = (scenes["items"].map(lambda v: max(1, len(v)) if isinstance(v, list) else 1)
                   if "items" in scenes else pd.Series(1, index=scenes.index))
        if key is not None:
            val = pd.to_numeric(scenes[key], errors="coerce")
            used = scenes["status"] == "used"
            ax.plot(scenes["date"][used], val[used], "-", color="#999999", lw=0.7)
            ax.plot(scenes["date"][used], val[used], "o", ms=3, color=QA_COLORS["used"],
                    label=f"used ({int(n_items[used].sum())})")
            flagged = scenes["status"] == "flagged"
            if flagged.any():
                ax.plot(scenes["date"][flagged], val[flagged], "o", ms=6, mfc="none",
                        color=QA_COLORS["flagged"],
                        label=f"flagged by QA, kept ({int(n_items[flagged].sum())})")
            for reason in sorted(set(cat[(scenes["status"] == "dropped") & val.notna()])):
                sel = (scenes["status"] == "dropped") & val.notna() & (cat == reason)
                ax.plot(scenes["date"][sel], val[sel], "X", ms=8,
                        color=_qa_color(reason, colors),
                        label=f"dropped: {reason} ({int(n_items[sel].sum())})")
            ax.set_ylabel(f"S2 {key} [1]")
        # scenes without a value (the S2 stage did not use them): ticks under the series
        novalue = scenes["status"].eq("dropped") & (
            pd.to_numeric(scenes[key], errors="coerce").isna() if key else True)
        ax2 = ax.twinx()
        ax2.set_ylim(0, 1)
        ax2.set_yticks([])
        for reason in sorted(set(cat[novalue])):
            sel = novalue & (cat == reason)
            ax2.vlines(scenes["date"][sel], 0.0, 0.08, color=_qa_color(reason, colors),
                       lw=1.5, label=f"not used: {reason} ({int(n_items[sel].sum())})")
        items = s2.get("items", {})
        ax.set_title(f"{site}: {items.get('used', '?')} of {items.get('found', '?')} S2 "
                     f"scenes (STAC items) used; QA action: {s2.get('action', '?')}",
                     fontsize=10, loc="left")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        if h1 or h2:
            ax.legend(h1 + h2, l1 + l2, loc="center left", bbox_to_anchor=(1.01, 0.5),
                      fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    if not sites:
        axes[0].text(0.5, 0.5, "no S2 scene list in the cubes' provenance", ha="center",
                     va="center", transform=axes[0].transAxes)
    fig.suptitle("Feature QA: S2 scenes used and not used, per site")
    return _save(fig, Path(out_dir), "fig_feature_qa")


def all_figures(results_dir: str | Path, out_dir: str | Path | None = None
                ) -> dict[str, dict[str, Path]]:
    """Draw the three figures from the files :mod:`gpp_models.pipeline` writes.

    Reads ``nrmse.csv``, ``fi_<MODEL>.csv``, ``predictions_<MODEL>.csv`` and the cubes'
    feature QA (:func:`feature_qa`) of ``results_dir``; writes into ``out_dir`` (default
    ``results_dir/figures``). Figures whose inputs are missing are skipped.
    """
    res = Path(results_dir)
    out = Path(out_dir) if out_dir else res / "figures"
    figs: dict[str, dict[str, Path]] = {}
    if (res / "nrmse.csv").exists():
        figs["fig1"] = fig1_nrmse(pd.read_csv(res / "nrmse.csv"), out)
    fi_files = sorted(res.glob("fi_*.csv"))
    if fi_files:
        figs["fig2"] = fig2_importance(pd.concat(pd.read_csv(p) for p in fi_files), out)
    preds = {p.stem.removeprefix("predictions_"): pd.read_csv(p, parse_dates=["time"])
             for p in sorted(res.glob("predictions_*.csv")) if "baselines" not in p.stem}
    if preds:
        ordered = {m: preds[m] for m in _ordered(list(preds))}
        figs["fig3"] = fig3_predictions(ordered, out)
    qa = feature_qa(res)
    if any(q.get("s2", {}).get("scenes") for q in qa.values()):
        figs["fig_qa"] = fig_feature_qa(qa, out)
    return figs
