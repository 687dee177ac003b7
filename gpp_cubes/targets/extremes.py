"""Climate-induced GPP extremes: mean seasonal cycle, anomalies, flagged runs.

Following Montero et al. (2024, section 2.1): anomalies are the deviation of the raw daily GPP
from its mean seasonal cycle (computed from all available years); anomalies "below the 10 %
threshold of the negative tail of the anomalies distribution" are flagged; runs of 5 or more
consecutive flagged days are climate-induced GPP extremes (the defaults
:data:`gpp_cubes.paper.EXTREME_QUANTILE` and :data:`gpp_cubes.paper.EXTREME_MIN_DAYS`).

Choices the paper leaves open, made here (and switchable):

- **Day of year and Feb 29.** Days are numbered on a 365-day calendar: in leap years
  March 1 onward are shifted by one, so a calendar date always has the same number
  (Mar 1 = 60), and Feb 29 is pooled with Feb 28 (number 59): it enters Feb 28's mean and is
  compared with it.
- **Smoothing.** None by default (``window=1``), as the paper describes a plain mean over
  years. ``window=N`` (odd) applies a centred, circular (Dec 31 wraps to Jan 1) moving
  average of N days to the day-of-year means, ignoring days without data.
- **Threshold.** ``method="negative_tail"`` (default): the threshold is the ``q`` quantile
  (10 %) of the negative anomalies only, i.e. the most negative 10 % of the days below the
  seasonal cycle are flagged. ``method="quantile"``: the ``q`` quantile of all anomalies
  (the lowest 10 % of all days). Quantiles use linear interpolation between order
  statistics (numpy's default); a day is flagged when its anomaly is strictly below.
- **Gaps.** A day without GPP has no anomaly and is never flagged, so it ends a run: an
  extreme is a run of consecutive *calendar* days, all flagged.

References
----------
Montero, D. et al. (2024). Recurrent neural networks for modelling gross primary production.
Mahecha, M. D. et al. (2017). Detecting impacts of extreme events with ecological in situ
monitoring networks. Biogeosciences 14, 4255-4277.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from gpp_cubes.paper import EXTREME_MIN_DAYS, EXTREME_QUANTILE

Method = Literal["negative_tail", "quantile"]


def day_of_year_365(index: pd.DatetimeIndex) -> np.ndarray:
    """Day number 1..365 on a no-leap calendar; Feb 29 shares Feb 28's number (59)."""
    doy = index.dayofyear.to_numpy().copy()
    leap = index.is_leap_year
    # In leap years Feb 29 is day 60 and March 1 onward are one ahead of common years.
    shift = leap & (doy >= 60)
    doy[shift] -= 1
    return doy


def _daily(gpp: pd.Series) -> pd.Series:
    if not isinstance(gpp.index, pd.DatetimeIndex):
        raise TypeError("gpp must be indexed by a DatetimeIndex of days")
    if gpp.index.has_duplicates:
        raise ValueError("gpp has duplicated dates")
    gpp = gpp.sort_index()
    if len(gpp) == 0:
        return gpp.astype("float64")
    days = pd.date_range(gpp.index[0].normalize(), gpp.index[-1].normalize(), freq="D",
                         name=gpp.index.name or "time")
    return gpp.astype("float64").reindex(days)


def seasonal_cycle(gpp: pd.Series, window: int = 1) -> pd.Series:
    """Mean seasonal cycle of daily GPP over all available years.

    Parameters
    ----------
    gpp : pandas.Series
        Daily GPP [g C m-2 d-1] indexed by date; NaN = missing.
    window : int, default 1
        Length of the centred circular moving average applied to the day-of-year means
        [days, odd]; 1 = no smoothing (the paper's plain mean).

    Returns
    -------
    pandas.Series
        Mean GPP [g C m-2 d-1] indexed by day of year 1..365 (see :func:`day_of_year_365`);
        NaN for a day of year with no data in any year (and no data in its window).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of days >= 1, got {window}")
    gpp = gpp.dropna()
    doy = day_of_year_365(pd.DatetimeIndex(gpp.index))
    sums: np.ndarray = np.bincount(doy, weights=gpp.to_numpy(dtype="float64"), minlength=366)[1:]
    counts: np.ndarray = np.bincount(doy, minlength=366)[1:].astype("float64")
    if window > 1:
        # Circular: pad with the other end of the year so Dec 31 neighbours Jan 1. Averaging
        # the pooled values (sum / count over the window) ignores days without data.
        half = window // 2
        kernel = np.ones(window)
        sums = np.convolve(np.r_[sums[-half:], sums, sums[:half]], kernel, mode="valid")
        counts = np.convolve(np.r_[counts[-half:], counts, counts[:half]], kernel, mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan)
    return pd.Series(mean, index=pd.RangeIndex(1, 366, name="doy"), name="GPP_seasonal_cycle")


def anomalies(gpp: pd.Series, window: int = 1, cycle: pd.Series | None = None) -> pd.Series:
    """Daily GPP minus its mean seasonal cycle [g C m-2 d-1].

    Parameters
    ----------
    gpp : pandas.Series
        Daily GPP [g C m-2 d-1] indexed by date.
    window : int, default 1
        Smoothing of the seasonal cycle, see :func:`seasonal_cycle`.
    cycle : pandas.Series, optional
        A precomputed seasonal cycle (e.g. from a longer record) indexed 1..365.

    Returns
    -------
    pandas.Series
        On a gap-free daily calendar from the first to the last date; NaN where GPP is missing.
    """
    gpp = _daily(gpp)
    if cycle is None:
        cycle = seasonal_cycle(gpp, window=window)
    ref = cycle.reindex(day_of_year_365(pd.DatetimeIndex(gpp.index))).to_numpy()
    return pd.Series(gpp.to_numpy() - ref, index=gpp.index, name="GPP_anomaly")


def anomaly_threshold(anom: pd.Series, q: float = EXTREME_QUANTILE, method: Method = "negative_tail"
                      ) -> float:
    """The flagging threshold [g C m-2 d-1]; NaN if there are no (negative) anomalies.

    See :func:`flag_anomalies` for the two readings.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    values = anom.dropna().to_numpy(dtype="float64")
    if method == "negative_tail":
        values = values[values < 0]
    elif method != "quantile":
        raise ValueError(f"method must be 'negative_tail' or 'quantile', got {method!r}")
    return float(np.quantile(values, q)) if values.size else float("nan")


def flag_anomalies(anom: pd.Series, q: float = EXTREME_QUANTILE, method: Method = "negative_tail"
                   ) -> pd.Series:
    """Flag days whose anomaly lies below the extreme threshold.

    Parameters
    ----------
    anom : pandas.Series
        Daily GPP anomalies [g C m-2 d-1] (:func:`anomalies`).
    q : float, default :data:`gpp_cubes.paper.EXTREME_QUANTILE` (0.10, section 2.1)
        Quantile level of the threshold [0-1].
    method : {"negative_tail", "quantile"}
        ``"negative_tail"`` (default, the paper's "10 % threshold of the negative tail of the
        anomalies distribution"): threshold = ``q`` quantile of the anomalies < 0.
        ``"quantile"``: threshold = ``q`` quantile of all anomalies.

    Returns
    -------
    pandas.Series of bool
        True where ``anom < threshold`` (strictly); False for missing anomalies.
    """
    threshold = anomaly_threshold(anom, q=q, method=method)
    flags = (anom < threshold).fillna(False).astype(bool)
    return flags.rename("flagged")


@dataclass(frozen=True)
class ExtremeResult:
    """Result of :func:`detect_extremes`.

    Attributes
    ----------
    flags : pandas.Series of bool
        Daily: the day belongs to an extreme (a run of >= ``min_length`` flagged days).
    events : pandas.DataFrame
        One row per extreme: ``start``, ``end`` (dates, inclusive), ``length`` [days],
        ``min_anomaly`` [g C m-2 d-1].
    anomalies : pandas.Series
        Daily anomalies [g C m-2 d-1].
    flagged : pandas.Series of bool
        Days below the threshold, before the run-length rule.
    threshold : float
        Flagging threshold [g C m-2 d-1].
    """

    flags: pd.Series
    events: pd.DataFrame
    anomalies: pd.Series
    flagged: pd.Series
    threshold: float


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True in a 1-D bool array, stop exclusive."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def detect_extremes(gpp: pd.Series, min_length: int = EXTREME_MIN_DAYS,
                    q: float = EXTREME_QUANTILE,
                    method: Method = "negative_tail", window: int = 1,
                    cycle: pd.Series | None = None) -> ExtremeResult:
    """Climate-induced GPP extremes: runs of >= ``min_length`` consecutive flagged days.

    Parameters
    ----------
    gpp : pandas.Series
        Daily GPP [g C m-2 d-1] indexed by date (NaN = missing; missing dates are added as
        NaN). Give the whole record so the seasonal cycle uses all available years.
    min_length : int, default :data:`gpp_cubes.paper.EXTREME_MIN_DAYS` (5, section 2.1)
        Minimum run length [days].
    q, method
        Threshold, see :func:`flag_anomalies`.
    window, cycle
        Seasonal cycle, see :func:`anomalies`.

    Returns
    -------
    ExtremeResult
        A missing day is not flagged, so it breaks a run.
    """
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    anom = anomalies(gpp, window=window, cycle=cycle)
    threshold = anomaly_threshold(anom, q=q, method=method)
    flagged = (anom < threshold).fillna(False).astype(bool).rename("flagged")
    extreme = np.zeros(len(anom), dtype=bool)
    rows = []
    values = anom.to_numpy()
    for i0, i1 in _runs(flagged.to_numpy()):
        if i1 - i0 >= min_length:
            extreme[i0:i1] = True
            rows.append({"start": anom.index[i0], "end": anom.index[i1 - 1],
                         "length": int(i1 - i0), "min_anomaly": float(values[i0:i1].min())})
    events = pd.DataFrame(rows, columns=["start", "end", "length", "min_anomaly"])
    return ExtremeResult(flags=pd.Series(extreme, index=anom.index, name="extreme"),
                         events=events, anomalies=anom, flagged=flagged, threshold=threshold)
