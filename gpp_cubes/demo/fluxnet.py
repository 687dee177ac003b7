"""Demo FLUXNET2015 FULLSET daily files whose GPP is a known function (see ``landscape``).

``GPP_NT_VUT_REF`` is the noisy truth GPP; what else the file holds is chosen so every
filter of the reader has something to do, and recorded per day in the truth (``status``):

- ``gap``: whole days missing (-9999 in every flux column): two blocks of 5-25 days per year
  and ~1 % single days, never within 10 days of a planted drought;
- ``bad_qc``: ~6 % of days with ``NEE_VUT_REF_QC`` in [0.2, 0.65] (< 0.7: discarded);
- ``negative``: days whose noisy GPP is below 0 (winter), written as they are;
- ``valid``: ``NEE_VUT_REF_QC`` in [0.7, 1].

Meteorology (``TA_F``, ``SW_IN_POT``, ``SW_IN_F``, ``VPD_F``) is filled from the same truth;
all other of the 201 columns are -9999.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import DemoConfig, DemoSite
from .landscape import site_rng


def _extraterrestrial_daily_mean(days: pd.DatetimeIndex, latitude: float) -> np.ndarray:
    """Daily mean top-of-atmosphere irradiance on a horizontal plane [W m-2].

    Duffie & Beckman (2013), Solar Engineering of Thermal Processes, eq. 1.10.3.
    """
    n = days.dayofyear.to_numpy()
    decl = np.radians(23.45) * np.sin(2 * np.pi * (284 + n) / 365)
    phi = np.radians(latitude)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(decl), -1, 1))
    e0 = 1 + 0.033 * np.cos(2 * np.pi * n / 365)
    return 1367.0 * e0 / np.pi * (np.cos(phi) * np.cos(decl) * np.sin(ws)
                                  + ws * np.sin(phi) * np.sin(decl))


def write_site_fluxnet(root: Path, site: DemoSite, config: DemoConfig, daily: pd.DataFrame
                       ) -> pd.DataFrame:
    """Write ``fluxnet/FLX_<SITE>_FLUXNET2015_FULLSET_DD_<y0>-<y1>_beta-3.csv``.

    Returns
    -------
    pandas.DataFrame
        ``daily`` plus ``gpp_written`` (NaN where -9999), ``nee_qc`` and ``status``.
    """
    from gpp_cubes.targets.fluxnet import fluxnet_filename, write_fluxnet

    rng = site_rng(config.seed, site.site_id, "fluxnet")
    days = daily.index
    n = len(days)
    protected = np.zeros(n, bool)
    near = (daily["drought"].to_numpy() > 0)
    if near.any():
        idx = np.flatnonzero(near)
        for i in idx:
            protected[max(0, i - 10): i + 11] = True
    gap = np.zeros(n, bool)
    for yr in np.unique(days.year):
        sel = np.flatnonzero(days.year == yr)
        for _ in range(2):
            length = int(rng.integers(5, 26))
            if len(sel) <= length:
                continue
            s = int(rng.integers(sel[0], sel[-1] - length + 1))
            if not protected[s: s + length].any():
                gap[s: s + length] = True
    gap |= (rng.uniform(size=n) < 0.01) & ~protected
    bad = (rng.uniform(size=n) < 0.06) & ~gap & ~protected
    qc = np.where(bad, rng.uniform(0.2, 0.65, n), rng.uniform(0.7, 1.0, n)).round(6)
    gpp = daily["gpp_noisy"].to_numpy().round(6)
    status = np.where(gap, "gap", np.where(bad, "bad_qc",
                                           np.where(gpp < 0, "negative", "valid")))
    gpp_w = np.where(gap, np.nan, gpp)
    qc_w = np.where(gap, np.nan, qc)
    reco = np.where(gap, np.nan, (1.5 + 0.25 * np.clip(daily["lst_day_k"] - 273.15, 0, None))
                    .round(6))
    ta = (daily["lst_day_k"].to_numpy() - 273.15 - 2.0).round(3)
    cloudiness = rng.uniform(0.35, 1.0, n)
    out = pd.DataFrame({
        "TA_F": ta, "TA_F_QC": np.ones(n),
        "SW_IN_POT": _extraterrestrial_daily_mean(days, site.latitude).round(3),
        "SW_IN_F": (daily["clear_sky_ghi"].to_numpy() * cloudiness).round(3),
        "SW_IN_F_QC": np.ones(n),
        "VPD_F": np.clip(0.6 * ta, 0, None).round(3),
        "NEE_VUT_REF": reco - gpp_w, "NEE_VUT_REF_QC": qc_w,
        "RECO_NT_VUT_REF": reco, "GPP_NT_VUT_REF": gpp_w,
        "GPP_DT_VUT_REF": np.where(gap, np.nan, (gpp * 1.03).round(6)),
    }, index=days)
    y0, y1 = pd.Timestamp(config.start).year, pd.Timestamp(config.end).year
    write_fluxnet(out, root / "fluxnet" / fluxnet_filename(site.site_id, y0, y1, "beta-3"))
    return daily.assign(gpp_written=gpp_w, nee_qc=qc_w, status=status)
