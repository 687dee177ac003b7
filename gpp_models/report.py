"""One self-contained HTML page: method choices, NRMSE tables, feature importances, figures,
feature QA, configs, provenance.

The "Method choices" section (:func:`method_choices`) lists the models side's choices as the
run recorded them (``runs.json``, the ``norm`` column of ``nrmse.csv``, the ``scope`` and
``repeat`` columns of ``fi_<MODEL>.csv``), each beside the paper's value and the option that
switches it; nothing in it is fixed prose about what the code does by default.

The "Gap-filled tower series" section (:func:`gap_filled_prediction`) reloads the best
network from its run directory and predicts every day of the evaluated cube through
:func:`gpp_models.predict.predict_gpp`, the code ``gpp predict`` runs; when the run or the
cube is gone, the section says so instead.

Figures are embedded as base64 SVG data URIs (no external files, no id clashes between
figures), so the page can be mailed or archived alone. The "Feature QA" section shows what
:mod:`gpp_cubes.qa` recorded in the cubes' provenance (read with
:func:`gpp_models.figures.feature_qa`): per site, the scenes found, used and not used by
reason, the values the QA dropped or flagged, and the S2 greenness series with every scene
marked.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import html
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import gpp_cubes.paper as paper
from gpp_cubes.contract import QA_SECTIONS
from gpp_cubes.errors import GppError, InputFormatError
from gpp_models import __version__
from gpp_models.config import OPTION_SOURCE, PROTOCOL_READINGS
from gpp_models.evaluate import NRMSE_NORM_DESCRIPTIONS, SETTINGS, nrmse_tables
from gpp_models.explain import SCOPE_DESCRIPTIONS, summarize_importance
from gpp_models.figures import all_figures, feature_qa

logger = logging.getLogger("gpp_models")

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:2px 8px;text-align:right}th{background:#f0f0f0}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:0.6em}
table.choices td{text-align:left;vertical-align:top}
img{max-width:100%}pre{background:#f7f7f7;padding:0.6em;overflow:auto;font-size:12px}
"""


def _img(svg: Path, alt: str) -> str:
    data = base64.b64encode(svg.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/svg+xml;base64,{data}">'


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_html(float_format=lambda v: f"{v:.{digits}f}", na_rep="-", border=0)


def qa_site_table(qa_by_site: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per site: scene accounting per sensor and the QA findings (the report's table).

    Parameters
    ----------
    qa_by_site : mapping
        Site id -> the ``qa`` provenance section of its store (:func:`feature_qa`).

    Returns
    -------
    pandas.DataFrame
        Index ``site``; columns ``QA action``, ``S2 found``, ``S2 used`` [items],
        ``S2 not used, by reason`` (``"clear_fraction 8, qa_outlier 1"``), ``S1 used/found``,
        ``LST used/found`` [items] and ``QA findings`` (``"s2 outlier NIRv 1"``).
    """
    def used_found(sec: Mapping[str, Any]) -> str:
        it = sec.get("items")
        return f"{it.get('used', 0)}/{it.get('found', 0)}" if it else ""

    rows = []
    for site, qa in qa_by_site.items():
        secs = {n: qa[n] for n in QA_SECTIONS if isinstance(qa.get(n), Mapping)}
        s2 = secs.get("s2", {}).get("items", {})
        findings = [f"{name} {rule} {var} {n}" for name, sec in secs.items()
                    for rule, per_var in sec.get("findings", {}).items()
                    for var, n in per_var.items()]
        rows.append({
            "site": site, "QA action": qa.get("config", {}).get("action", ""),
            "S2 found": s2.get("found"), "S2 used": s2.get("used"),
            "S2 not used, by reason": ", ".join(
                f"{k} {v}" for k, v in sorted(s2.get("dropped", {}).items(),
                                               key=lambda kv: -kv[1])),
            "S1 used/found": used_found(secs.get("s1", {})),
            "LST used/found": used_found(secs.get("lst", {})),
            "QA findings": "; ".join(findings) or "none"})
    return pd.DataFrame(rows).set_index("site") if rows else pd.DataFrame()


def _feature_qa_section(qa: Mapping[str, Mapping[str, Any]], figs: Mapping[str, Any]
                        ) -> list[str]:
    """HTML of the "Feature QA" section (empty when the cubes carry no QA)."""
    if not qa:
        return []
    parts = ["<h2>Feature QA</h2>",
             "<p>What the cube build did not use, per site: S2 scenes (STAC items) not "
             "used by the S2 stage (<i>clear_fraction</i>: fewer than 1 % clear forest "
             "pixels; <i>sun_zenith</i>, <i>c_factor</i>, <i>duplicate</i>, "
             "<i>no_coverage</i>: excluded by a rule; <i>unreadable</i>) or by the feature "
             "QA (<i>qa_range</i>: a value outside its physically plausible range; "
             "<i>qa_outlier</i>: more than the threshold in robust sigmas from the median of "
             "its neighbouring observations), and the S1/LST/clear-sky values the QA dropped "
             "(or flagged, with <code>gpp build --qa flag</code>). Rules: "
             "<code>gpp_cubes.qa</code>.</p>",
             qa_site_table(qa).reset_index().to_html(index=False, border=0, na_rep="-")]
    rows = [{"site": site, "date": sc.get("date"), "status": sc.get("status"),
             "reason": sc.get("reason")}
            for site, q in qa.items() for sc in q.get("s2", {}).get("scenes", [])
            if str(sc.get("reason", "")).startswith("qa_")]
    rows += [{"site": site, "date": f.get("date"), "status": q[name].get("action"),
              "reason": f"{name} {f.get('rule')}: {f.get('detail')}"}
             for site, q in qa.items() for name in ("s1", "lst", "clear_sky_ghi")
             if isinstance(q.get(name), Mapping) for f in q[name].get("list", [])]
    if rows:
        parts.append(f"<h3>Scenes and values the QA dropped or flagged ({len(rows)})</h3>")
        parts.append(pd.DataFrame(rows[:300]).to_html(index=False, border=0))
    if "fig_qa" in figs:
        parts.append("<h3>S2 scenes per site, used and not used</h3>"
                     + _img(figs["fig_qa"]["svg"], "Feature QA"))
    return parts


def _without_scene_lists(runs: dict[str, Any]) -> dict[str, Any]:
    """``runs`` with the per-scene QA lists replaced by their length (drawn, not dumped)."""
    out = copy.deepcopy(runs)
    prov = out.get("provenance")
    sites = prov.values() if isinstance(prov, dict) and "qa" not in prov else [prov]
    for p in sites:
        s2 = p.get("qa", {}).get("s2") if isinstance(p, dict) else None
        if isinstance(s2, dict) and isinstance(s2.get("scenes"), list):
            s2["scenes"] = f"{len(s2['scenes'])} scenes: see Feature QA"
    return out


#: The paper's value of each method choice (Montero et al. 2024) and the option switching it.
PAPER_CHOICES: dict[str, tuple[str, str]] = {
    "protocol": (
        "paper: its split, the checkpoint chosen on the test years, NRMSE by the max - min "
        "observed values (read: of the site's whole test period), importance by shuffling "
        "the feature array (read: all sites' test samples pooled)",
        "gpp train/tune --protocol holdout|paper; gpp demo --protocol ours|paper"),
    "model selection": (
        f"checkpoint best on the test years {paper.TEST_YEARS[0]}-{paper.TEST_YEARS[-1]} "
        "(section 2.2; leaks the test set into model selection)",
        "gpp train/tune --protocol holdout|paper"),
    "train / test years": (
        f"{paper.TRAIN_YEARS[0]}-{paper.TRAIN_YEARS[-1]} / "
        f"{paper.TEST_YEARS[0]}-{paper.TEST_YEARS[-1]} (section 2.2)",
        "TrainConfig.train_years / test_years"),
    "window (sequence length)": (f"{paper.SEQUENCE_LENGTH} days (section 2.2)",
                                 "gpp train/tune --window"),
    "search space": (
        f"Hyperband; 1-{paper.MAX_LAYERS} layers, up to {paper.MAX_UNITS} units, learning "
        f"rate {paper.LEARNING_RATE_RANGE[0]:g}-{paper.LEARNING_RATE_RANGE[1]:g} (log) "
        "(section 2.2)",
        "gpp tune --max-layers --units (learning rate: SearchSpace)"),
    "training epochs": (f"{paper.EPOCHS} (section 2.2)", "gpp train/tune --epochs"),
    "dropout / weight init": (
        f"{paper.DROPOUT:g} / U[-sqrt(n), sqrt(n)], n = number of features (section 2.2)",
        "gpp train --dropout --init"),
    "NRMSE normalisation": (
        "RMSE / (max - min of the observed values); over which days is not stated "
        "(section 2.2)",
        "gpp evaluate --nrmse-norm subset|full-period (default: the run's protocol)"),
    "permutation importance scope": (
        "\"the feature array was randomly shuffled\" over the test set; whether sites were "
        "pooled is not stated (section 2.3)",
        "gpp explain --importance-scope site|pooled (default: the run's protocol)"),
    "permutation repeats": ("10, mean per site (section 2.3)", "gpp explain --repeats"),
}


#: What each ``ModelConfig.init`` draws (:class:`gpp_models.config.ModelConfig`).
INIT_WORDS = {
    "paper_uniform": "paper_uniform: U[-1/sqrt(n), 1/sqrt(n)], n = fan-in (the paper's "
                     "sqrt(n) read as 1/sqrt(n))",
    "flax_default": "flax_default: LeCun-normal input, orthogonal recurrent kernels",
}


def _per_model(values: Mapping[str, str]) -> str:
    """One value when every model has it, else ``"RNN: a; GRU: b"``."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"{m}: {v}" for m, v in values.items())


def _years(years: Any) -> str:
    years = [int(y) for y in years]
    if years and years == list(range(years[0], years[-1] + 1)):
        return f"{years[0]}-{years[-1]}" if len(years) > 1 else str(years[0])
    return ", ".join(map(str, years))


def _protocol(cfg: Mapping[str, Any]) -> str:
    if cfg.get("protocol") == "paper":
        return "paper: checkpoint best on the test years (leaks; scores optimistic)"
    val = cfg.get("val_year")
    if val is None:
        return "holdout: checkpoint best on every fourth ISO week of the training years"
    return f"holdout: checkpoint best on the held-out training year {val}; test years unseen"


def _readings(cfg: Mapping[str, Any]) -> str:
    proto = str(cfg.get("protocol", "holdout"))
    read = PROTOCOL_READINGS.get(proto, {})
    return (f"{proto}: readings NRMSE {read.get('nrmse_norm', '?')}, importance scope "
            f"{read.get('importance_scope', '?')} unless given as options")


def _source(source: Any) -> str:
    """`` (from the runs' protocol paper)`` / `` (given as an option)`` / ""."""
    if not isinstance(source, str) or not source:
        return ""
    if source == OPTION_SOURCE:
        return " (given as an option)"
    return f" (from the runs' {source})"


def _space(space: Mapping[str, Any] | None, cfg: Mapping[str, Any]) -> str:
    model = cfg.get("model", {})
    chosen = (f"chosen {model.get('layers')}x{model.get('units')}, learning rate "
              f"{float(cfg.get('learning_rate', float('nan'))):.2g}")
    if not space:
        return f"no tuning study found next to the run; {chosen}"
    parts = []
    if "layers" in space:
        parts.append(f"{space['layers'][0]}-{space['layers'][1]} layers")
    if "units" in space:
        parts.append("units " + "/".join(map(str, space["units"])))
    if "learning_rate" in space:
        lo, hi = space["learning_rate"]
        parts.append(f"learning rate {lo:g}-{hi:g} (log)")
    return (f"Hyperband, {space.get('trials', '?')} trials; " + ", ".join(parts)
            + f"; {chosen}")


def method_choices(results_dir: str | Path) -> pd.DataFrame:
    """The models side's method choices a results directory records, beside the paper's.

    Parameters
    ----------
    results_dir : path
        Directory written by :func:`gpp_models.evaluate.evaluate_runs` (``runs.json``,
        ``nrmse.csv``) and, optionally, ``gpp explain`` (``fi_<MODEL>.csv``).

    Returns
    -------
    pandas.DataFrame
        Index ``choice`` (the keys of :data:`PAPER_CHOICES`); columns ``this run`` (read from
        the files; per model when the models differ; "not recorded" when a file lacks it),
        ``paper`` and ``switch`` (the option that changes it).
    """
    res = Path(results_dir)
    runs_json = res / "runs.json"
    recorded = json.loads(runs_json.read_text()) if runs_json.exists() else {}
    runs = recorded.get("runs", {})
    cfgs = {m: r.get("config", {}) for m, r in runs.items()}
    missing = "not recorded (no runs.json)"

    def per_model(fn: Any) -> str:
        return _per_model({m: fn(m, c) for m, c in cfgs.items()}) if cfgs else missing

    ours: dict[str, str] = {
        "protocol": per_model(lambda m, c: _readings(c)),
        "model selection": per_model(lambda m, c: _protocol(c)),
        "train / test years": per_model(
            lambda m, c: f"{_years(c.get('train_years', []))} / "
                         f"{_years(c.get('test_years', []))}"),
        "window (sequence length)": per_model(lambda m, c: f"{c.get('window')} days"),
        "search space": per_model(lambda m, c: _space(runs[m].get("search_space"), c)),
        "training epochs": per_model(
            lambda m, c: f"{c.get('epochs')} (best epoch {runs[m].get('best_epoch')}, "
                         f"ensemble of {c.get('ensemble')})"),
        "dropout / weight init": per_model(
            lambda m, c: f"{c.get('model', {}).get('dropout')} / "
                         + INIT_WORDS.get(str(c.get("model", {}).get("init")),
                                          str(c.get("model", {}).get("init")))),
    }
    norms: list[str] = []
    if (res / "nrmse.csv").exists():
        long = pd.read_csv(res / "nrmse.csv")
        if "norm" in long:
            norms = [str(v) for v in dict.fromkeys(long["norm"].dropna())]
    ours["NRMSE normalisation"] = ("; ".join(
        f"{n}: {NRMSE_NORM_DESCRIPTIONS.get(n, '?')}" for n in norms)
        + (_source(recorded.get("nrmse_norm_source")) if norms else "")
        or "not recorded (nrmse.csv has no norm column: written before the option, when "
           "the only reading was subset)")
    fi_files = sorted(res.glob("fi_*.csv"))
    if fi_files:
        fi = {p.stem.removeprefix("fi_"): pd.read_csv(p) for p in fi_files}
        order = {m: i for i, m in enumerate(cfgs)}  # models in the order of runs.json
        fi = dict(sorted(fi.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
        ours["permutation importance scope"] = _per_model({
            m: "; ".join(f"{s}: {SCOPE_DESCRIPTIONS.get(s, '?')}"
                         for s in dict.fromkeys(f["scope"].dropna().astype(str)))
            + "".join(_source(v) for v in dict.fromkeys(f.get("scope_source", pd.Series())
                                                        .dropna().astype(str)))
            if "scope" in f else "not recorded (fi file written before the option, when the "
                                 "only scope was pooled)"
            for m, f in fi.items()})
        ours["permutation repeats"] = _per_model({
            m: f"{f['repeat'].nunique()}, mean per site" for m, f in fi.items()})
    else:
        ours["permutation importance scope"] = "not run (no fi_<MODEL>.csv)"
        ours["permutation repeats"] = "not run (no fi_<MODEL>.csv)"
    rows = [{"choice": k, "this run": ours[k], "paper": paper_value, "switch": switch}
            for k, (paper_value, switch) in PAPER_CHOICES.items()]
    return pd.DataFrame(rows).set_index("choice")


def gap_filled_prediction(results_dir: str | Path) -> Any:
    """The prediction of the report's gap-filled series: best network on the evaluated cube.

    The network (of ``runs.json``) with the lowest median full-period NRMSE over sites in
    ``nrmse.csv`` predicts every day of the cube ``runs.json`` names, through
    :func:`gpp_models.predict.predict_gpp` (what ``gpp predict`` runs), the run loaded by
    :func:`gpp_models.run_io.load_model`.

    Returns
    -------
    (Prediction, TrainedModel)

    Raises
    ------
    gpp_cubes.errors.GppError
        No run recorded, a run directory or the cube not found (the message says which).
    """
    from gpp_models.data import open_cube
    from gpp_models.predict import predict_gpp
    from gpp_models.run_io import load_model

    res = Path(results_dir)
    recorded = json.loads((res / "runs.json").read_text()) if (res / "runs.json").exists() \
        else {}
    runs = {m: r for m, r in recorded.get("runs", {}).items() if r.get("workdir")}
    if not runs or not recorded.get("features"):
        raise InputFormatError(f"{res}: runs.json records no run directory or cube")
    long = pd.read_csv(res / "nrmse.csv")
    full = long[(long["setting"] == "full") & long["model"].isin(list(runs))]
    med = full.groupby("model")["nrmse"].median().dropna()
    best = str(med.idxmin()) if len(med) else next(iter(runs))
    model = load_model(runs[best]["workdir"])
    return predict_gpp(model, open_cube(recorded["features"])), model


def _gap_filled_section(res: Path, fig_dir: Path) -> list[str]:
    """HTML of the "Gap-filled tower series" section (the reason when it cannot be drawn)."""
    from gpp_models.figures import fig_gap_filled, gap_filled_sites
    from gpp_models.predict import NO_FULL_WINDOW, PARTLY_FILLED

    parts = ["<h2>Gap-filled tower series</h2>"]
    try:
        pred, model = gap_filled_prediction(res)
    except GppError as err:
        logger.warning("report: gap-filled series not drawn: %s", err)
        return [*parts, f"<p class='warn'>Not drawn: {html.escape(str(err))}</p>"]
    sites = gap_filled_sites(pred.cube.sites)
    fig = fig_gap_filled(pred, fig_dir, sites=sites, test_years=model.config.test_years)
    parts.append(
        f"<p>Daily GPP of the {pred.model} run <code>{html.escape(pred.run)}</code> (the "
        "network with the lowest median full-period NRMSE; ensemble mean of "
        f"{pred.members} member(s), band ±1 s.d.) for every day with a full "
        f"{pred.window}-day window of every predictor, computed by "
        "<code>gpp_models.predict.predict_gpp</code>, the code <code>gpp predict</code> "
        "runs: observed days as points, days without an observation (gap-filled) in pink, "
        "days not predicted marked with their reason, test years "
        f"{_years(model.config.test_years)} shaded.</p>")
    rows = []
    reasons = pred.reasons()
    for i, site in enumerate(pred.cube.sites):
        ok = pred.status[i] <= PARTLY_FILLED
        skipped = ~ok & (pred.status[i] != NO_FULL_WINDOW)
        rows.append({"site": site, "observed days": int(np.isfinite(pred.obs[i]).sum()),
                     "predicted days": int(ok.sum()),
                     "gap-filled days": int((ok & ~np.isfinite(pred.obs[i])).sum()),
                     "not predicted": "; ".join(
                         f"{r} ({int((skipped & (reasons[i] == r)).sum())} days)"
                         for r in dict.fromkeys(reasons[i][skipped])) or "-"})
    parts.append(pd.DataFrame(rows).to_html(index=False, border=0, classes="choices"))
    return [*parts, _img(fig["svg"], "Gap-filled tower series")]


def write_report(results_dir: str | Path, out: str | Path | None = None,
                 title: str = "GPP recurrent models: evaluation report") -> Path:
    """Write ``report.html`` for a results directory (drawing the figures if needed).

    Parameters
    ----------
    results_dir : path
        Directory with ``nrmse.csv``, ``predictions_*.csv``, optional ``fi_*.csv`` and
        ``runs.json`` (as written by :func:`gpp_models.evaluate.evaluate_runs`).
    out : path, optional
        Output file; default ``results_dir/report.html``.
    title : str

    Returns
    -------
    Path
    """
    res = Path(results_dir)
    if not (res / "nrmse.csv").exists():
        raise FileNotFoundError(f"{res}: no nrmse.csv; run `gpp evaluate` first")
    out = Path(out) if out else res / "report.html"
    figs = all_figures(res)
    long = pd.read_csv(res / "nrmse.csv")
    runs = json.loads((res / "runs.json").read_text()) if (res / "runs.json").exists() else {}
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} by gpp_models "
             f"{__version__} from <code>{html.escape(str(runs.get('features', res)))}</code>."
             "</p>"]
    leaking = [m for m, r in runs.get("runs", {}).items() if r.get("leaks_test")]
    if leaking:
        parts.append(f'<p class="warn"><b>Test-set leakage:</b> {", ".join(leaking)} used the '
                     "<code>paper</code> protocol (best checkpoint chosen on the test years); "
                     "their test scores are optimistic.</p>")
    choices = method_choices(res)
    parts.append("<h2>Method choices</h2>")
    parts.append("<p>The choices this run made, as its files record them, beside the paper's "
                 "(Montero et al. 2024) and the option that switches each.</p>")
    parts.append(choices.reset_index().to_html(index=False, border=0, na_rep="-",
                                               classes="choices"))
    parts.append("<h2>Median NRMSE over sites (test years)</h2>")
    med = long.pivot_table(index="model", columns="setting", values="nrmse", aggfunc="median")
    parts.append(_table(med[[s for s in SETTINGS if s in med]]))
    parts.append("<p>NRMSE per site and setting, normalised as "
                 f"<b>{html.escape(choices.loc['NRMSE normalisation', 'this run'])}</b>; "
                 "<i>seasonal_cycle</i> and <i>linear</i> are baselines without a network.</p>")
    if "fig1" in figs:
        parts.append("<h2>Figure 1. NRMSE per model</h2>" + _img(figs["fig1"]["svg"], "Fig 1"))
    fi_files = sorted(res.glob("fi_*.csv"))
    if fi_files:
        fi = pd.concat(pd.read_csv(p) for p in fi_files)
        summary = pd.concat(summarize_importance(fi[fi["model"] == m]).assign(model=m)
                            for m in fi["model"].unique())
        table = summary.pivot_table(index="feature", columns="model", values="fi_mean",
                                    aggfunc="median")
        table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
        parts.append("<h2>Median permutation feature importance [NRMSE increase]</h2>")
        scope = choices.loc["permutation importance scope", "this run"]
        parts.append(f"<p>Scope: <b>{html.escape(scope)}</b>.</p>")
        parts.append(_table(table, 4))
    if "fig2" in figs:
        parts.append("<h2>Figure 2. Feature importance</h2>" + _img(figs["fig2"]["svg"], "Fig 2"))
    if "fig3" in figs:
        parts.append("<h2>Figure 3. Observed and predicted GPP</h2>"
                     + _img(figs["fig3"]["svg"], "Fig 3"))
    parts += _gap_filled_section(res, res / "figures")
    parts.append("<h2>NRMSE per site</h2>")
    for setting, table in nrmse_tables(long).items():
        parts.append(f"<h3>{setting}</h3>" + _table(table))
    parts += _feature_qa_section(feature_qa(res), figs)
    parts.append("<h2>Runs and provenance</h2>")
    dump = json.dumps(_without_scene_lists(runs), indent=2, default=str)
    parts.append(f"<pre>{html.escape(dump)}</pre>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    out.write_text(page, encoding="utf-8")
    return out
