"""Physically plausible ranges of every feature a build writes, and the Hampel floors.

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

Index ranges come from :func:`gpp_cubes.qa.bounds.formula_range` over the spyndex formula
(:func:`index_range`); an index it cannot bound has no range rule. :data:`OUTLIER_FLOORS`
lives here too, next to the ranges, because both are per-variable facts of the physics
(:mod:`gpp_cubes.qa.checks` explains how the floors enter the scan).

References
----------
Schaepman-Strub, G. et al. (2006). Reflectance quantities in optical remote sensing:
    definitions and case studies. Remote Sensing of Environment 103, 27-42.
ESA (2013). Sentinel-1 User Handbook, table 3-1 (IW NESZ <= -22 dB).
Wan, Z. (2019). MODIS Land Surface Temperature Products Users' Guide, Collection 6.1.
Duffie, J. A., Beckman, W. A. (2013). Solar Engineering of Thermal Processes, 4th ed.,
    eq. 1.10.3 (daily extraterrestrial radiation on a horizontal surface).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gpp_cubes.qa.bounds import formula_range

__all__ = [
    "FIXED_RANGES", "GHI_TOLERANCE", "LST_FEATURES", "OUTLIER_FLOORS", "S1_FEATURES",
    "S2_BANDS", "S2_SCAN_BANDS", "RangeRule", "ghi_upper_bound", "index_range", "range_rule",
    "variable_table",
]

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
            "B12")
S1_FEATURES = ("S1_VV", "S1_VH", "S1_DpRVIVV")
LST_FEATURES = ("MOD11A1_dt", "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt")


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
