"""The QA options, the Hampel outlier scan, findings, and applying ``drop``/``flag``.

Outlier scan
------------
A Hampel identifier per site and variable on the *observation* series (never the
interpolated daily series): the median and the scaled median absolute deviation (MAD x
1.4826, a standard-deviation estimate for Gaussian noise) of a centred window of
:data:`DEFAULT_WINDOW` neighbouring observations; an observation more than
:data:`DEFAULT_OUTLIER_SIGMA` robust sigmas from the window's median is an outlier. S2 is
scanned on its 10 m band means (:data:`~gpp_cubes.qa.rules.S2_SCAN_BANDS`) and
:data:`KEY_INDICES`, S1 and LST on every feature; clear-sky GHI, a smooth model output, only
gets its range rule.

The sigma is floored per variable (:data:`~gpp_cubes.qa.rules.OUTLIER_FLOORS`): at least an
absolute floor and, for reflectance-like variables whose errors are multiplicative, 10 % of
the window median. A flat series (an evergreen NDVI of 0.80 +- 0.002) therefore does not
flag noise, and the smallest flagged deviation is 5 floors: 50 % of a band mean (at least
0.05), 0.15 NDVI, 5 dB, 15 K. The floors sit above the largest real change one observation
can show alone (a drought browns a forest by ~20 % in NIR) and below the garbage to catch
(c-factor blow-ups multiply NBAR: NIRv 0.54 between 0.14s; cloud-contaminated LST is 15-30 K
too cold).

Why window 7 and 5 sigmas: the median of a window is its middle value on any monotone
stretch, so a green-up or senescence ramp never deviates from it, and a step (snow melt,
leaf-out, a harvest) that lasts at least 4 of the 7 observations moves the median with it
and is not flagged; only episodes of 1-3 observations are. On Gaussian noise whose sigma
equals the floor, 5 robust sigmas flags about 5e-6 of the observations (3 sigmas: 3e-3);
without the floor the same window flags about 1 %. A series with fewer than 4 observations
gets no verdict.

Actions
-------
``drop`` (default): an S2 time step with any finding is removed from the index table (every
index derives from the same band means, so one broken value breaks them all); an S1 day
with a range finding loses its three values (all derive from the same two linear means); any
other finding sets that one value to NaN. ``flag``: every value is kept and the finding
recorded. ``off``: no rule runs; the scene accounting is still recorded. Findings are the
same under ``drop`` and ``flag`` (the outlier scan never sees values that failed a range
rule).

References
----------
Hampel, F. R. (1974). The influence curve and its role in robust estimation. Journal of the
    American Statistical Association 69(346), 383-393.
Pearson, R. K. et al. (2016). Generalized Hampel filters. EURASIP Journal on Advances in
    Signal Processing 2016, 87. doi:10.1186/s13634-016-0383-6
Rousseeuw, P. J., Croux, C. (1993). Alternatives to the median absolute deviation. Journal
    of the American Statistical Association 88(424), 1273-1283.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.errors import ConfigError
from gpp_cubes.qa.rules import OUTLIER_FLOORS, S2_BANDS, S2_SCAN_BANDS, range_rule

__all__ = [
    "ACTIONS", "DEFAULT_OUTLIER_SIGMA", "DEFAULT_WINDOW", "KEY_INDICES", "MAD_TO_SIGMA",
    "Finding", "QAConfig", "apply_to_series", "check_s2_steps", "check_series", "hampel",
]

ACTIONS = ("drop", "flag", "off")
DEFAULT_WINDOW = 7
DEFAULT_OUTLIER_SIGMA = 5.0
#: MAD -> standard deviation of Gaussian noise (1 / Phi^-1(3/4)).
MAD_TO_SIGMA = 1.4826
#: Indices scanned for outliers besides the band means, when computed: the greenness
#: indices the S2 PCs are read by (the paper reads PC1 as kNDVI).
KEY_INDICES = ("NDVI", "NIRv", "kNDVI")


@dataclass(frozen=True)
class QAConfig:
    """Options of the feature QA of a build (``BuildConfig.qa``, ``gpp build --qa``).

    Attributes
    ----------
    action : {"drop", "flag", "off"}, default "drop"
        What a finding does (module docstring, "Actions").
    outlier_sigma : float, default 5
        Hampel threshold [robust sigmas]; > 0.
    window : int, default 7
        Hampel window [observations, odd, >= 3].
    """

    action: str = "drop"
    outlier_sigma: float = DEFAULT_OUTLIER_SIGMA
    window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"QA action must be one of {', '.join(ACTIONS)}, got "
                              f"{self.action!r}")
        if not (isinstance(self.outlier_sigma, int | float) and self.outlier_sigma > 0):
            raise ConfigError(f"QA outlier_sigma must be a positive number of robust sigmas, "
                              f"got {self.outlier_sigma!r}")
        if not (isinstance(self.window, int) and self.window >= 3 and self.window % 2 == 1):
            raise ConfigError(f"QA window must be an odd number of observations >= 3, got "
                              f"{self.window!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None
                     ) -> QAConfig:
        """From a mapping or (key, value) pairs (``BuildConfig.qa``); unknown keys raise.

        Raises
        ------
        ConfigError
            Unknown option or invalid value.
        """
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"action", "outlier_sigma", "window"})
        if unknown:
            raise ConfigError(f"unknown QA options {unknown}; known: action, outlier_sigma, "
                              "window")
        if "outlier_sigma" in opts and opts["outlier_sigma"] is not None:
            opts["outlier_sigma"] = float(opts["outlier_sigma"])
        return cls(**{k: v for k, v in opts.items() if v is not None})

    @property
    def enabled(self) -> bool:
        return self.action != "off"

    def options(self) -> dict[str, Any]:
        """The options as :meth:`from_options` takes them."""
        return asdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": "range rules + Hampel identifier (median, "
                                          "1.4826 MAD, floored)",
                "floors": dict(OUTLIER_FLOORS)}


# --------------------------------------------------------------------------------------
# Outlier scan
# --------------------------------------------------------------------------------------


def hampel(series: pd.Series, window: int = DEFAULT_WINDOW,
           n_sigma: float = DEFAULT_OUTLIER_SIGMA, floor: float = 0.0,
           rel_floor: float = 0.0) -> pd.DataFrame:
    """Hampel identifier of an observation series (window counted in observations).

    Parameters
    ----------
    series : pandas.Series
        Observations [any units], in time order; NaN (unobserved) are left out first.
    window : int, default 7
        Centred window [observations, odd]; at the ends the window is truncated, and a
        point whose window holds fewer than ``window // 2 + 1`` observations gets no
        verdict.
    n_sigma : float, default 5
        Threshold [robust sigmas].
    floor : float, default 0
        Lower bound of the sigma [series units]; > 0 keeps flat stretches from flagging
        noise.
    rel_floor : float, default 0
        Lower bound of the sigma relative to the window's median [1] (for variables whose
        errors are multiplicative, such as reflectance).

    Returns
    -------
    pandas.DataFrame
        Indexed like the non-NaN observations: ``value``, ``median`` (of the window),
        ``sigma`` (``max(1.4826 MAD, floor, rel_floor |median|)``), ``score``
        (``|value - median| / sigma`` [robust sigmas]) and ``outlier`` (bool,
        ``score > n_sigma``).
    """
    s = pd.Series(series, dtype="float64").dropna()
    roll = s.rolling(window, center=True, min_periods=window // 2 + 1)
    med = roll.median()
    mad = roll.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True)
    sigma = np.maximum(np.maximum(MAD_TO_SIGMA * mad, floor), rel_floor * med.abs())
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (s - med).abs() / sigma
    return pd.DataFrame({"value": s, "median": med, "sigma": sigma, "score": score,
                         "outlier": (score > n_sigma).fillna(False).astype(bool)})


# --------------------------------------------------------------------------------------
# Findings on stage outputs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One value that failed a rule.

    Attributes
    ----------
    time : pandas.Timestamp
        Observation (S2 time step, S1 day, LST day).
    variable : str
    rule : {"range", "outlier"}
    value : float
        [variable units]
    detail : str
        Human-readable: the value and what it was compared with.
    """

    time: pd.Timestamp
    variable: str
    rule: str
    value: float
    detail: str


def _range_findings(frame: pd.DataFrame, columns: Sequence[str],
                    highs: Mapping[str, np.ndarray] | None = None) -> list[Finding]:
    out: list[Finding] = []
    for c in columns:
        rule = range_rule(c)
        if rule is None or c not in frame:
            continue
        bad = rule.outside(frame[c].to_numpy(), None if highs is None else highs.get(c))
        hi = None if highs is None or c not in highs else np.asarray(highs[c])
        for i in np.flatnonzero(bad):
            v = float(frame[c].iloc[i])
            shown = rule.text() if hi is None else f"[{rule.low:g}, {hi[i]:.4g}]"
            out.append(Finding(pd.Timestamp(frame.index[i]), c, "range", v,
                               f"{c} = {v:.4g} outside {shown} {rule.units}"))
    return out


def _outlier_findings(frame: pd.DataFrame, columns: Sequence[str], cfg: QAConfig
                      ) -> list[Finding]:
    out: list[Finding] = []
    for c in columns:
        if c not in frame:
            continue
        h = hampel(frame[c], cfg.window, cfg.outlier_sigma, *OUTLIER_FLOORS.get(c, (0.0, 0.0)))
        for t, r in h[h["outlier"]].iterrows():
            out.append(Finding(pd.Timestamp(t), c, "outlier", float(r["value"]),
                               f"{c} = {r['value']:.4g} is {r['score']:.1f} robust sigmas "
                               f"(sigma {r['sigma']:.3g}) from the median {r['median']:.4g} "
                               f"of its {cfg.window} neighbouring observations"))
    return out


def check_s2_steps(table: pd.DataFrame, cfg: QAConfig) -> dict[pd.Timestamp, list[Finding]]:
    """Findings per S2 time step: range rules on band means and bounded indices, then the
    outlier scan on the 10 m band means (:data:`S2_SCAN_BANDS`) and :data:`KEY_INDICES` of
    the steps that passed.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per time step (time index, ascending): band means ``B01``..``B12`` [1]
        and index columns [1].
    cfg : QAConfig

    Returns
    -------
    dict
        Time step -> its findings (steps without findings are absent).
    """
    if not cfg.enabled or table.empty:
        return {}
    bands = [b for b in S2_BANDS if b in table]
    others = [c for c in table.columns if c not in bands]
    found = _range_findings(table, bands + others)
    # A missing band mean in a kept step is no reflectance (infinite ones are range findings).
    for b in bands:
        for t in table.index[np.isnan(table[b].to_numpy(np.float64))]:
            found.append(Finding(pd.Timestamp(t), b, "range", float("nan"),
                                 f"{b} mean is not finite"))
    bad = {f.time for f in found}
    clean = table.loc[[t not in bad for t in table.index]]
    scan = [b for b in S2_SCAN_BANDS if b in table] + [k for k in KEY_INDICES if k in table]
    found += _outlier_findings(clean, scan, cfg)
    by_step: dict[pd.Timestamp, list[Finding]] = {}
    for f in found:
        by_step.setdefault(f.time, []).append(f)
    return by_step


def check_series(frame: pd.DataFrame, columns: Sequence[str], cfg: QAConfig, *,
                 highs: Mapping[str, np.ndarray] | None = None,
                 outliers: bool = True) -> list[Finding]:
    """Findings of per-value series (S1, LST, clear-sky GHI): range, then outlier scan.

    Parameters
    ----------
    frame : pandas.DataFrame
        Observations (time index; NaN = not observed) [variable units].
    columns : sequence of str
        Variables to check.
    cfg : QAConfig
    highs : mapping, optional
        Variable -> per-row upper bound replacing the rule's (clear-sky GHI).
    outliers : bool, default True
        Run the outlier scan (off for model output such as clear-sky GHI).

    Returns
    -------
    list of Finding
    """
    if not cfg.enabled or frame.empty:
        return []
    found = _range_findings(frame, columns, highs)
    if outliers:
        masked = frame.copy()
        for f in found:  # values failing a range rule do not enter the scan
            masked.loc[f.time, f.variable] = np.nan
        found += _outlier_findings(masked, columns, cfg)
    return found


def apply_to_series(frame: pd.DataFrame, findings: Sequence[Finding], cfg: QAConfig, *,
                    coupled: Sequence[str] = ()) -> tuple[pd.DataFrame, int]:
    """Apply the action to per-value findings.

    Parameters
    ----------
    frame : pandas.DataFrame
        The observations the findings came from.
    findings : sequence of Finding
    cfg : QAConfig
    coupled : sequence of str
        Columns derived from the same measurement: a *range* finding in one of them sets
        all of them to NaN (S1: VV, VH and DpRVIVV of the same linear means).

    Returns
    -------
    (frame, n_dropped)
        A copy with the dropped values set to NaN (unchanged unless ``action == "drop"``)
        and the number of values set to NaN.
    """
    out = frame.copy()
    if cfg.action != "drop" or not findings:
        return out, 0
    before = int(out.isna().sum().sum())
    for f in findings:
        cols = list(coupled) if f.rule == "range" and f.variable in coupled else [f.variable]
        out.loc[f.time, [c for c in cols if c in out]] = np.nan
    return out, int(out.isna().sum().sum()) - before
