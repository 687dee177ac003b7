"""The one result type of a per-site sensor stage (S1, MODIS LST, the S2 index table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class SensorResult:
    """Daily features of one sensor at one site and what they came from.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per day (index ``time``), one column per feature, in the sensor's units
        (S1: linear gamma0 [1] and pass counts; LST [K]; S2: spectral indices [1], kept clear
        days only, before the PCA).
    scenes_found, scenes_kept : int
        STAC items the search found; items behind the values in ``frame`` (a mosaicked day
        counts each of its tiles), so both count the same thing.
    item_ids : tuple of str
        The items behind ``frame`` (after unreadable ones were dropped).
    params : dict
        Parameters for the provenance.
    clear_fraction : float
        S2 only: mean clear-forest fraction of the buffer over the kept days [0-1]; NaN for
        the other sensors.
    qa : dict
        The sensor's section of the feature QA (:mod:`gpp_cubes.qa`) when the stage ran it
        itself (S2); empty otherwise.
    """

    frame: pd.DataFrame
    scenes_found: int
    scenes_kept: int
    item_ids: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    clear_fraction: float = float("nan")
    qa: dict[str, Any] = field(default_factory=dict)
