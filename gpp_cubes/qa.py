"""Feature QA: physically plausible ranges and a robust outlier scan of every sensor feature.

Stage of the data flow: inside phase 1 of :mod:`gpp_cubes.batch`, after each sensor stage
and before its intermediate store is written::

    S2 band means + indices (per time step) ──> range rules ──> Hampel scan ──> drop | flag
    S1, LST (per observation), clear-sky GHI (per day) ──> range rules ──> Hampel ──> ...

The stages upstream screen what they can explain (cloud masks, the 1 % clear rule, MODIS QC,
scenes that cannot be read or are excluded by a rule). This module is the safety net behind
them: it checks the *values* a stage produced, so that a value no surface can have (a band
mean of 0.0, an NBAR above 1) or a single observation far from its neighbours (an NIRv of
0.54 in mid-November between 0.14s) never reaches the PCA or the interpolation silently.

Range rules
-----------
==================  ======  =====================  ==============================================
variable            units   plausible range        why
==================  ======  =====================  ==============================================
S2 B01..B12 means   1       (0, 1]                 a reflectance factor of a clear forest mean:
                                                   > 1 only for snow/glint (masked) or a c-factor
                                                   blow-up; <= 0 only from nodata or the 04.00
                                                   offset (DN 1000 -> 0.0) leaking into the mean
S2 indices          1       derived from spyndex   e.g. (a - b)/(a + b) of non-negative a, b is in
                            formula, or none       [-1, 1]; unbounded definitions (SR, EVI): none
S1_VV, S1_VH        dB      [-30, 5]               below the IW noise floor (NESZ <= -22 dB) there
                                                   is no signal; > 5 dB needs corner reflectors
S1_DpRVIVV          1       [0, 4]                 spyndex 4 VH / (VV + VH) of linear gamma0 >= 0
MOD11A1/MYD11A1     K       [200, 340]             European land-surface extremes with margin
clear_sky_ghi       W m-2   [0, TOA(lat, day)]     a clear sky cannot add energy to the daily-mean
                                                   top-of-atmosphere irradiance
==================  ======  =====================  ==============================================

Index ranges are derived, not typed in (:func:`formula_range`): the spyndex formula is
parsed and bounded with the bands in [0, 1] (the band rule), kernels in [0, 1] and the
constants at the values :mod:`gpp_cubes.s2.indices` passes. A ratio of linear forms is bounded
exactly when its denominator is positive on the box of inputs (a linear-fractional function
is quasilinear, so its extremes lie at corners of the box), or, when the denominator may
vanish, as a weighted mean of coefficient ratios when every input is non-negative and every
denominator coefficient positive (this gives [-1, 1] for every normalized difference);
anything else is bounded by interval arithmetic, or not at all (:func:`index_range` returns
None: such an index only gets the outlier scan). Since the bounds follow from the band
rule, an index outside its bound with in-range bands means a broken index computation.

Outlier scan
------------
A Hampel identifier per site and variable on the *observation* series (never the
interpolated daily series): the median and the scaled median absolute deviation (MAD x
1.4826, a standard-deviation estimate for Gaussian noise) of a centred window of
:data:`DEFAULT_WINDOW` = 7 neighbouring observations; an observation more than
:data:`DEFAULT_OUTLIER_SIGMA` = 5 robust sigmas from the window's median is an outlier.
S2 is scanned on its 10 m band means (:data:`S2_SCAN_BANDS`) and :data:`KEY_INDICES`, S1
and LST on every feature; clear-sky GHI, a smooth model output, only gets its range rule.

The sigma is floored per variable (:data:`OUTLIER_FLOORS`): at least an absolute floor and,
for reflectance-like variables whose errors are multiplicative, 10 % of the window median.
A flat series (an evergreen NDVI of 0.80 +- 0.002) therefore does not flag noise, and the
smallest flagged deviation is 5 floors: 50 % of a band mean (at least 0.05), 0.15 NDVI,
5 dB, 15 K. The floors sit above the largest real change one observation can show alone
(a drought browns a forest by ~20 % in NIR; in the test suite's demo world the 2020 drought
at DE-Hai falls on a single S2 observation, 2.4 robust sigmas off, and is kept) and below
the garbage to catch (c-factor blow-ups multiply NBAR: NIRv 0.54 between 0.14s;
cloud-contaminated LST is 15-30 K too cold).

Why window 7 and 5 sigmas: the median of a window is its middle value on any monotone
stretch, so a green-up or senescence ramp never deviates from it, and a step (snow melt,
leaf-out, a harvest) that lasts at least 4 of the 7 observations moves the median with it
and is not flagged; only episodes of 1-3 observations are. On Gaussian noise whose sigma
equals the floor, 5 robust sigmas flags 5e-6 of the observations (simulated; 3 sigmas:
3e-3), so 7 scanned S2 variables give ~4e-5 false scenes per scene; without the floor the
same window flags 1.4 %. A series with fewer than 4 observations gets no verdict.

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
Schaepman-Strub, G. et al. (2006). Reflectance quantities in optical remote sensing:
    definitions and case studies. Remote Sensing of Environment 103, 27-42.
Boyd, S., Vandenberghe, L. (2004). Convex Optimization, section 3.4.1 (quasilinear
    linear-fractional functions). Cambridge University Press.
ESA (2013). Sentinel-1 User Handbook, table 3-1 (IW NESZ <= -22 dB).
Wan, Z. (2019). MODIS Land Surface Temperature Products Users' Guide, Collection 6.1.
Duffie, J. A., Beckman, W. A. (2013). Solar Engineering of Thermal Processes, 4th ed.,
    eq. 1.10.3 (daily extraterrestrial radiation on a horizontal surface).
"""

from __future__ import annotations

import ast
import functools
import itertools
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from gpp_cubes.contract import QA_SECTIONS, reason_category
from gpp_cubes.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "ACTIONS", "DEFAULT_OUTLIER_SIGMA", "DEFAULT_WINDOW", "FIXED_RANGES", "KEY_INDICES",
    "OUTLIER_FLOORS", "S2_SCAN_BANDS", "Finding", "QAConfig", "RangeRule",
    "apply_to_series", "check_s2_steps", "check_series", "format_qa_table", "formula_range",
    "ghi_upper_bound", "hampel", "index_range", "qa_clear_sky_ghi", "qa_lst_frame",
    "qa_rows", "qa_s1_frame", "qa_s2_features", "range_rule",
    "reason_category", "s2_section", "sensor_section", "variable_table",
]

ACTIONS = ("drop", "flag", "off")
DEFAULT_WINDOW = 7
DEFAULT_OUTLIER_SIGMA = 5.0
#: MAD -> standard deviation of Gaussian noise (1 / Phi^-1(3/4)).
MAD_TO_SIGMA = 1.4826
#: Indices scanned for outliers besides the band means, when computed: the greenness
#: indices the S2 PCs are read by (the paper reads PC1 as kNDVI).
KEY_INDICES = ("NDVI", "NIRv", "kNDVI")
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
            "B12")
S1_FEATURES = ("S1_VV", "S1_VH", "S1_DpRVIVV")
LST_FEATURES = ("MOD11A1_dt", "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt")


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


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
# Range rules
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeRule:
    """A physically plausible range of one variable.

    Attributes
    ----------
    low, high : float
        Bounds [units]; ``high`` may be replaced per value (clear-sky GHI).
    units : str
    reason : str
        One line: why values outside cannot be real.
    low_open : bool
        The low bound itself is implausible (``(low, high]``).
    high_text : str
        Display of a per-value upper bound.
    """

    low: float
    high: float
    units: str
    reason: str
    low_open: bool = False
    high_text: str = ""

    def outside(self, values: np.ndarray | pd.Series, high: np.ndarray | None = None
                ) -> np.ndarray:
        """True where a finite value violates the rule (NaN = missing, never a finding).

        A relative tolerance of 1e-6 absorbs float32 rounding of values stored as float32.
        """
        v = np.asarray(values, dtype=np.float64)
        hi = np.asarray(self.high if high is None else high, dtype=np.float64)
        tol_lo = 1e-6 * max(1.0, abs(self.low))
        tol_hi = 1e-6 * np.maximum(1.0, np.abs(hi))
        with np.errstate(invalid="ignore"):
            below = (v <= self.low) if self.low_open else (v < self.low - tol_lo)
            bad = below | (v > hi + tol_hi) | np.isinf(v)
        return bad & ~np.isnan(v)

    def text(self) -> str:
        """``"(0, 1]"``-style display."""
        hi = self.high_text or f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {hi}]"


_BAND_RULE = RangeRule(
    0.0, 1.0, "1", low_open=True,
    reason="NBAR reflectance factor of a clear-forest mean: > 1 only for snow or glint "
           "(masked) or a c-factor blow-up; <= 0 only from nodata or the 04.00 offset "
           "(DN 1000 = 0.0) leaking into the mean (Schaepman-Strub et al. 2006)")
_S1_RULE_REASON = ("below the IW noise floor (NESZ <= -22 dB, ESA 2013) a forest mean has no "
                   "signal (zeros or nodata leaked in); above +5 dB gamma0 > 3x that of an "
                   "isotropic scatterer, only corner reflectors (excluded within 50 m)")
_LST_RULE = RangeRule(
    200.0, 340.0, "K",
    reason="beyond European land-surface extremes (about -60 and +60 deg C) with margin: "
           "a cloud top or a decoding error, not the canopy (Wan 2019)")
FIXED_RANGES: dict[str, RangeRule] = {
    **{b: _BAND_RULE for b in S2_BANDS},
    "S1_VV": RangeRule(-30.0, 5.0, "dB", reason=_S1_RULE_REASON),
    "S1_VH": RangeRule(-30.0, 5.0, "dB", reason=_S1_RULE_REASON),
    **{f: _LST_RULE for f in LST_FEATURES},
}
#: Margin of the clear-sky GHI bound above the daily-mean TOA irradiance: relative (the
#: clear-sky model averages a UTC day, the bound a solar day: declination differs by <=
#: 0.4 deg) and absolute [W m-2] (refraction lifts the sun over the horizon at the edge of
#: the polar night, where the geometric TOA mean is 0).
GHI_TOLERANCE = (0.02, 2.0)
_GHI_RULE = RangeRule(
    0.0, math.inf, "W m-2", high_text="TOA(lat, day)",
    reason="a clear sky transmits at most the daily-mean top-of-atmosphere irradiance on a "
           "horizontal surface (Duffie & Beckman 2013, eq. 1.10.3; +2 % + 2 W m-2)")

#: 10 m bands scanned for outliers: the resolution of the cloud and snow masks. The 20 and
#: 60 m bands, resampled to 10 m by nearest neighbour, carry sub-pixel snow and cloud edges
#: the masks cannot remove (on the demo world B01 means rise 3-10x in snow scenes whose
#: 10 m bands and indices are clean); that is a masking matter, not garbage to drop here.
S2_SCAN_BANDS = ("B02", "B03", "B04", "B08")
#: Floors of the Hampel sigma per variable: (absolute [variable units], relative [1] to the
#: window's median); the sigma is at least the larger, so the smallest flagged deviation is
#: outlier_sigma x floor. Set above the largest *real* change one observation can show
#: alone: a drought or heat spell browns a forest by ~20 % in NIR and ~0.07 in NDVI (the
#: demo world's 2020 drought at DE-Hai falls on a single S2 observation), a wet or frozen
#: canopy moves one S1 acquisition by 1-3 dB, weather moves clear-sky LST by several K. The
#: garbage they must catch is larger: c-factor blow-ups multiply NBAR (NIRv 0.54 between
#: 0.14s), cloud-contaminated LST is 15-30 K too cold.
OUTLIER_FLOORS: dict[str, tuple[float, float]] = {
    # multiplicative errors (c-factor, illumination): 10 % of the level, at least 0.01
    # (S2 L2A reflectance uncertainty ~0.005 + 5 %, CEOS ARD)
    **{b: (0.01, 0.10) for b in S2_BANDS},
    "NDVI": (0.03, 0.0), "kNDVI": (0.03, 0.0),
    "NIRv": (0.02, 0.10),  # NDVI x NIR: relative like the NIR band
    "S1_VV": (1.0, 0.0), "S1_VH": (1.0, 0.0),  # S1 radiometric accuracy ~1 dB
    "S1_DpRVIVV": (0.1, 0.0),  # a 1 dB change of VH at VH/VV = 0.2 moves DpRVIVV by 0.14
    # day-to-day weather variability of clear-sky LST (the QC rule accepts errors <= 2 K)
    **{f: (3.0, 0.0) for f in LST_FEATURES},
}


def _index_domain() -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Input box of the spyndex symbols: reflectances and kernels in [0, 1], linear gamma0
    >= 0; constants as :func:`gpp_cubes.s2.indices.index_params` passes them."""
    import spyndex

    from gpp_cubes.s2.indices import S2_WAVELENGTHS_NM, SPYNDEX_BANDS

    domain: dict[str, tuple[float, float]] = {s: (0.0, 1.0) for s in SPYNDEX_BANDS}
    domain.update({k: (0.0, 1.0) for k in ("kNN", "kNR", "kNB", "kNL", "kGG", "kGR", "kGB")})
    domain.update({"VV": (0.0, math.inf), "VH": (0.0, math.inf), "HV": (0.0, math.inf),
                   "HH": (0.0, math.inf)})
    consts = {k: float(c.default) for k, c in spyndex.constants.items()
              if isinstance(c.default, int | float)}
    consts.update(S2_WAVELENGTHS_NM)
    return domain, consts


_ONE = ""  # the constant term of a linear form


def formula_range(formula: str, domain: Mapping[str, tuple[float, float]],
                  constants: Mapping[str, float] | None = None
                  ) -> tuple[float, float, str] | None:
    """Bounds of a formula over a box of inputs, or None when the formula is unbounded.

    Parameters
    ----------
    formula : str
        Python arithmetic (``+ - * / **``, names, numbers), as in spyndex's ``formula``.
    domain : mapping
        Input symbol -> (low, high) [input units]; ``math.inf`` allowed.
    constants : mapping, optional
        Symbol -> fixed value.

    Returns
    -------
    (low, high, method) or None
        Sound bounds of the formula wherever it is defined; ``method`` names the argument
        used for the outermost division ("ratio of linear forms, extremes at the corners",
        "ratio of non-negative linear forms" or "interval arithmetic").

    Notes
    -----
    A quotient of two linear forms X / Y is bounded (1) exactly by its values at the
    corners of the box when Y > 0 on the whole box (quasilinearity, Boyd & Vandenberghe
    2004, 3.4.1), or (2) when every input is >= 0 and every coefficient of Y is > 0 (the
    constant term counting as an input fixed at 1), by the smallest and largest ratio of
    X's to Y's coefficients, since X / Y is then their weighted mean. Other expressions
    use interval arithmetic; a division by an interval containing 0, or an unknown
    symbol, makes the formula unbounded.

    Examples
    --------
    >>> formula_range("(N-R)/(N+R)", {"N": (0, 1), "R": (0, 1)})[:2]
    (-1.0, 1.0)
    """
    consts = dict(constants or {})
    try:
        tree = ast.parse(formula, mode="eval").body
    except SyntaxError:
        return None
    methods: list[str] = []

    def symbols(node: ast.AST) -> set[str]:
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id not in consts}

    def linear(node: ast.AST) -> dict[str, float] | None:
        if not symbols(node):  # a constant sub-expression (e.g. 1+sla**2): fold it
            c = interval(node)
            return None if c is None or c[0] != c[1] else {_ONE: c[0]}
        if isinstance(node, ast.Name):
            if node.id in consts:
                return {_ONE: float(consts[node.id])}
            return {node.id: 1.0} if node.id in domain else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            f = linear(node.operand)
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            return None if f is None else {k: sign * v for k, v in f.items()}
        if isinstance(node, ast.BinOp):
            a, b = linear(node.left), linear(node.right)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Add | ast.Sub):
                s = 1.0 if isinstance(node.op, ast.Add) else -1.0
                out = dict(a)
                for k, v in b.items():
                    out[k] = out.get(k, 0.0) + s * v
                return out
            const_a, const_b = set(a) <= {_ONE}, set(b) <= {_ONE}
            if isinstance(node.op, ast.Mult) and (const_a or const_b):
                c, f = (a.get(_ONE, 0.0), b) if const_a else (b.get(_ONE, 0.0), a)
                return {k: c * v for k, v in f.items()}
            if isinstance(node.op, ast.Div) and const_b and b.get(_ONE, 0.0) != 0:
                return {k: v / b[_ONE] for k, v in a.items()}
        return None

    def box(sym: str) -> tuple[float, float]:
        return (1.0, 1.0) if sym == _ONE else tuple(map(float, domain[sym]))  # type: ignore

    def ratio(num: ast.AST, den: ast.AST) -> tuple[float, float] | None:
        x, y = linear(num), linear(den)
        if x is None or y is None:
            return None
        x = {k: v for k, v in x.items() if v != 0}
        y = {k: v for k, v in y.items() if v != 0}
        syms = sorted(set(x) | set(y))
        if not y:
            return None
        bounds = [box(s) for s in syms]
        if all(math.isfinite(b) for lo_hi in bounds for b in lo_hi) and len(syms) <= 12:
            corners = np.array(list(itertools.product(*bounds)))
            xs = corners @ np.array([x.get(s, 0.0) for s in syms])
            ys = corners @ np.array([y.get(s, 0.0) for s in syms])
            if (ys > 0).all() or (ys < 0).all():
                methods.append("ratio of linear forms, extremes at the corners")
                return float((xs / ys).min()), float((xs / ys).max())
        if all(b[0] >= 0 for b in bounds) and all(y.get(s, 0.0) > 0 for s in syms):
            r = [x.get(s, 0.0) / y[s] for s in syms]
            methods.append("ratio of non-negative linear forms")
            return float(min(r)), float(max(r))
        return None

    def interval(node: ast.AST) -> tuple[float, float] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value), float(node.value)
        if isinstance(node, ast.Name):
            if node.id in consts:
                return float(consts[node.id]), float(consts[node.id])
            if node.id in domain:
                lo, hi = map(float, domain[node.id])
                return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
            return None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            a = interval(node.operand)
            if a is None:
                return None
            return (-a[1], -a[0]) if isinstance(node.op, ast.USub) else a
        if not isinstance(node, ast.BinOp):
            return None
        lin = linear(node) if symbols(node) else None
        if lin is not None and all(math.isfinite(b) for s in lin if s != _ONE
                                   for b in box(s)):
            # a linear form: exact, each input taken at the bound its coefficient favours
            lo = sum(v * (min if v > 0 else max)(box(s)) for s, v in lin.items())
            hi = sum(v * (max if v > 0 else min)(box(s)) for s, v in lin.items())
            methods.append("linear form")
            return lo, hi
        if isinstance(node.op, ast.Div):
            r = ratio(node.left, node.right)
            if r is not None:
                return r
        a, b = interval(node.left), interval(node.right)
        if a is None or b is None:
            return None
        if isinstance(node.op, ast.Add):
            return a[0] + b[0], a[1] + b[1]
        if isinstance(node.op, ast.Sub):
            return a[0] - b[1], a[1] - b[0]
        if isinstance(node.op, ast.Mult):
            p = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
            methods.append("interval arithmetic")
            return min(p), max(p)
        if isinstance(node.op, ast.Div):
            if b[0] > 0 or b[1] < 0:
                q = [a[0] / b[0], a[0] / b[1], a[1] / b[0], a[1] / b[1]]
                methods.append("interval arithmetic")
                return min(q), max(q)
            return None
        if isinstance(node.op, ast.Pow) and b[0] == b[1]:
            e = b[0]
            methods.append("interval arithmetic")
            if e == int(e) and e >= 0:
                lo, hi = a[0] ** e, a[1] ** e
                if int(e) % 2 == 0 and a[0] < 0 < a[1]:
                    return 0.0, max(lo, hi)
                return min(lo, hi), max(lo, hi)
            if a[0] >= 0 and (e > 0 or a[0] > 0):
                lo, hi = a[0] ** e, a[1] ** e
                return min(lo, hi), max(lo, hi)
        return None

    res = interval(tree)
    if res is None or not all(math.isfinite(v) for v in res):
        return None
    return res[0], res[1], (methods[-1] if methods else "linear form")


@functools.lru_cache(maxsize=512)
def index_range(name: str) -> RangeRule | None:
    """Range rule of a spyndex index derived from its formula, or None when unbounded.

    Parameters
    ----------
    name : str
        spyndex short name (``"NDVI"``, ``"DpRVIVV"``).

    Returns
    -------
    RangeRule or None
    """
    import spyndex

    if name not in spyndex.indices:
        return None
    formula = spyndex.indices[name].formula
    domain, consts = _index_domain()
    res = formula_range(formula, domain, consts)
    if res is None:
        return None
    lo, hi, method = res
    inputs = ("linear gamma0 >= 0" if set(spyndex.indices[name].bands) & {"VV", "VH"}
              else "reflectances and kernels in [0, 1]")
    return RangeRule(lo, hi, "1", reason=f"by definition: {formula} with {inputs} "
                                         f"({method})")


def range_rule(variable: str) -> RangeRule | None:
    """The range rule of a build variable (band, index, S1, LST, clear-sky GHI) or None."""
    if variable in FIXED_RANGES:
        return FIXED_RANGES[variable]
    if variable == "clear_sky_ghi":
        return _GHI_RULE
    if variable == "S1_DpRVIVV":
        return index_range("DpRVIVV")
    return index_range(variable)


def ghi_upper_bound(latitude: float, days: pd.DatetimeIndex) -> np.ndarray:
    """Upper bound of daily clear-sky GHI: the daily-mean TOA horizontal irradiance + margin.

    Parameters
    ----------
    latitude : float
        [degrees north].
    days : pandas.DatetimeIndex
        Days (UTC dates).

    Returns
    -------
    numpy.ndarray
        [W m-2]: ``H0 (1 + 0.02) + 2`` with ``H0 = E0 / pi (ws sin(phi) sin(delta) +
        cos(phi) cos(delta) sin(ws))``, ``E0`` the extraterrestrial normal irradiance of the
        day (pvlib, Spencer 1971), ``delta`` the declination (Spencer 1971), ``ws`` the
        sunset hour angle (Duffie & Beckman 2013, eqs. 1.6.10 and 1.10.3).
    """
    from pvlib.irradiance import get_extra_radiation
    from pvlib.solarposition import declination_spencer71

    days = pd.DatetimeIndex(days)
    doy = days.dayofyear.to_numpy()
    e0 = np.asarray(get_extra_radiation(doy, method="spencer"), dtype=np.float64)
    dec = np.asarray(declination_spencer71(doy), dtype=np.float64)
    phi = math.radians(latitude)
    ws = np.arccos(np.clip(-math.tan(phi) * np.tan(dec), -1.0, 1.0))
    h0 = e0 / math.pi * (ws * math.sin(phi) * np.sin(dec)
                         + math.cos(phi) * np.cos(dec) * np.sin(ws))
    rel, absolute = GHI_TOLERANCE
    return np.maximum(h0, 0.0) * (1.0 + rel) + absolute


def _floor_text(variable: str) -> str:
    if variable not in OUTLIER_FLOORS or (variable in S2_BANDS
                                          and variable not in S2_SCAN_BANDS):
        return "not scanned"
    a, r = OUTLIER_FLOORS[variable]
    return f"{a:g}" + (f" or {r:.0%} of the median" if r else "")


def variable_table(index_names: Sequence[str] = ()) -> pd.DataFrame:
    """The rules as a table: variable, units, range, outlier floor, reason.

    Parameters
    ----------
    index_names : sequence of str
        S2 indices to list (default: none; the build uses its index list).
    """
    names = [*S2_BANDS, *index_names, *S1_FEATURES, *LST_FEATURES, "clear_sky_ghi"]
    rows = []
    for n in names:
        r = range_rule(n)
        rows.append({"variable": n, "units": r.units if r else "1",
                     "range": r.text() if r else "none (unbounded definition)",
                     "outlier_floor": _floor_text(n),
                     "reason": r.reason if r else ""})
    return pd.DataFrame(rows)


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


# --------------------------------------------------------------------------------------
# The per-site QA sections (provenance) and the table
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The QA of each stage's output (called by gpp_cubes.batch)
# --------------------------------------------------------------------------------------


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
    """QA of the daily S1 features (:class:`gpp_cubes.sensors.s1.S1Result` frame).

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
    """QA of the daily MODIS LST features (:class:`gpp_cubes.sensors.lst.LstResult` frame) [K].

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
