"""Feature QA: physically plausible ranges and a robust outlier scan of every sensor feature.

Stage of the data flow: inside phase 1 of :mod:`gpp_cubes.batch`, after each sensor stage
and before its intermediate store is written::

    S2 band means + indices (per time step) ──> range rules ──> Hampel scan ──> drop | flag
    S1, LST (per observation), clear-sky GHI (per day) ──> range rules ──> Hampel ──> ...

The stages upstream screen what they can explain (cloud masks, the 1 % clear rule, MODIS QC,
scenes that cannot be read or are excluded by a rule). This package is the safety net behind
them: it checks the *values* a stage produced, so that a value no surface can have (a band
mean of 0.0, an NBAR above 1) or a single observation far from its neighbours (an NIRv of
0.54 in mid-November between 0.14s) never reaches the PCA or the interpolation silently.

Modules, in the order a value meets them:

* :mod:`~gpp_cubes.qa.bounds`: bounds of an index formula over a box of inputs;
* :mod:`~gpp_cubes.qa.rules`: the range rule of every variable (fixed, derived from the
  formula, or the per-day clear-sky GHI bound) and the outlier floors;
* :mod:`~gpp_cubes.qa.checks`: options, the Hampel scan, findings, drop/flag;
* :mod:`~gpp_cubes.qa.report`: the provenance ``qa`` sections and the log's QA table;
* :mod:`~gpp_cubes.qa.stages`: the entry point per sensor stage that :mod:`gpp_cubes.batch`
  calls.

Every public name is re-exported here; import from ``gpp_cubes.qa``.
"""

from __future__ import annotations

from gpp_cubes.contract import reason_category
from gpp_cubes.qa.bounds import formula_range
from gpp_cubes.qa.checks import (
    ACTIONS,
    DEFAULT_OUTLIER_SIGMA,
    DEFAULT_WINDOW,
    KEY_INDICES,
    MAD_TO_SIGMA,
    Finding,
    QAConfig,
    apply_to_series,
    check_s2_steps,
    check_series,
    hampel,
)
from gpp_cubes.qa.report import SECTIONS, format_qa_table, qa_rows, s2_section, sensor_section
from gpp_cubes.qa.rules import (
    FIXED_RANGES,
    GHI_TOLERANCE,
    LST_FEATURES,
    OUTLIER_FLOORS,
    S1_FEATURES,
    S2_BANDS,
    S2_SCAN_BANDS,
    RangeRule,
    ghi_upper_bound,
    index_range,
    range_rule,
    variable_table,
)
from gpp_cubes.qa.stages import qa_clear_sky_ghi, qa_lst_frame, qa_s1_frame, qa_s2_features

__all__ = [
    "ACTIONS", "DEFAULT_OUTLIER_SIGMA", "DEFAULT_WINDOW", "FIXED_RANGES", "GHI_TOLERANCE",
    "KEY_INDICES", "LST_FEATURES", "MAD_TO_SIGMA", "OUTLIER_FLOORS", "S1_FEATURES", "S2_BANDS",
    "S2_SCAN_BANDS", "SECTIONS", "Finding", "QAConfig", "RangeRule",
    "apply_to_series", "check_s2_steps", "check_series", "format_qa_table", "formula_range",
    "ghi_upper_bound", "hampel", "index_range", "qa_clear_sky_ghi", "qa_lst_frame",
    "qa_rows", "qa_s1_frame", "qa_s2_features", "range_rule",
    "reason_category", "s2_section", "sensor_section", "variable_table",
]
