"""The data contract between ``gpp_cubes`` (writer) and ``gpp_models`` (reader), defined once.

Everything both sides must agree on lives here: the format version, the completion-marker
name, the multi-site store name, the variable table (name, units, long name, dtype, role),
the dataset attributes a store carries, how site attributes become ``site``-indexed
coordinates of the multi-site store, and :func:`validate`, the one check every reader runs.
``docs/architecture.md`` (section "The contract ...") describes it in prose.

A per-site store ``<SITE>.zarr`` has a daily ``time`` dimension, the predictors (float32,
interpolated), the target ``GPP`` (float32, NaN where missing, never interpolated), the flag
``extreme`` (bool) and the attributes :data:`REQUIRED_ATTRS` plus :data:`SITE_ID_ATTR` and
:data:`SITE_ATTRS`. The multi-site store :data:`MULTISITE_NAME` stacks the sites along
``site``: the site attributes become ``site``-indexed coordinates (:func:`site_coordinates`).
A store is complete when its marker :data:`COMPLETE_MARKER` exists.

CF conventions (CF-1.8)
-----------------------
Both stores follow the CF discrete-sampling-geometry ``timeSeries`` layout
(:data:`CF_GLOBAL_ATTRS`, CF section 9): the per-site store is a single time series whose
``site`` (``cf_role = "timeseries_id"``), ``latitude``, ``longitude``, ``elevation_m`` and
``igbp`` are scalar coordinates (:func:`site_scalar_coordinates`; the same values stay in
the dataset attributes, which format-"1" readers use); the multi-site store is the
orthogonal multidimensional representation, ``(site, time)`` variables with those
coordinates indexed by ``site`` (:func:`site_coordinates`). Every variable's CF attributes
(UDUNITS units, ``standard_name`` where the CF table has one, ``cell_methods``, flag
attributes) come from :func:`variable_attrs` and :data:`COORDINATE_ATTRS`. Units are
UDUNITS-2 strings except the Sentinel-1 backscatter: ``"dB"`` is used as the CF
standard-name table uses it for radar and acoustic levels, but UDUNITS-2 (and cf-units)
cannot parse it; its UDUNITS spelling would be ``"0.1 lg(re 1)"`` (:data:`DB_UDUNITS`).
GPP is carbon mass, ``"g m-2 d-1"`` (UDUNITS has no "g C"; the carbon is in the
``standard_name`` and ``long_name``), which converts to the standard name's canonical
``kg m-2 s-1``. These attributes are additive: readers need not change, and the format
stays "1".

This module imports only the standard library at module level (NumPy and pandas lazily), so
``gpp_models`` can depend on it without pulling in the cube builder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gpp_cubes.errors import InputFormatError

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "CF_GLOBAL_ATTRS",
    "COMPLETE_MARKER",
    "COORDINATE_ATTRS",
    "DB_UDUNITS",
    "FIXED_PREDICTORS",
    "FLAGS",
    "FORMAT_VERSION",
    "MULTISITE_NAME",
    "NOT_OBSERVED_ATTR",
    "NO_TARGETS",
    "NO_TARGETS_REASON",
    "PAPER_CITATION",
    "PREDICTOR_ATTRS",
    "PREDICTOR_COUNT_ATTRS",
    "QA_SECTIONS",
    "REQUIRED_ATTRS",
    "SITE_ATTRS",
    "SITE_ID_ATTR",
    "TARGET",
    "VARIABLES",
    "VariableSpec",
    "predictor_metadata",
    "predictor_order",
    "reason_category",
    "site_coordinates",
    "site_scalar_coordinates",
    "validate",
    "variable_attrs",
    "variable_spec",
]

#: Version of the contract written to and required in the ``format_version`` attribute.
FORMAT_VERSION = "1"
#: File written last inside a store; a store without it is unfinished.
COMPLETE_MARKER = ".gpp-complete"
#: Name of the multi-site store beside the per-site ``<SITE>.zarr`` stores.
MULTISITE_NAME = "features.zarr"

#: Dataset attributes every store (per-site and multi-site) carries.
REQUIRED_ATTRS: tuple[str, ...] = (
    "format_version", "predictors", "target", "train_years", "test_years",
)
#: Dataset attribute naming the site of a per-site store (the ``site`` coordinate when stacked).
SITE_ID_ATTR = "site_id"
#: Site attributes of a per-site store; ``site``-indexed coordinates of a multi-site store.
SITE_ATTRS: tuple[str, ...] = ("latitude", "longitude", "elevation_m", "igbp")
#: Attributes every predictor variable carries.
PREDICTOR_ATTRS: tuple[str, ...] = ("units", "long_name", "n_observed", "n_interpolated")
#: Per-predictor fill counts [days] the writer records (lists in site order when stacked).
PREDICTOR_COUNT_ATTRS: tuple[str, ...] = ("n_observed", "n_interpolated", "n_edge_filled")
#: Sensor sections of the ``qa`` provenance of a store (gpp_cubes.qa), in display order.
QA_SECTIONS: tuple[str, ...] = ("s2", "s1", "lst", "clear_sky_ghi")
#: Value of the dataset attribute ``targets`` of a store built without targets (``gpp build
#: --no-targets``, a site without a tower): its ``GPP`` is all NaN and its ``extreme`` all
#: False, each with the attribute :data:`NOT_OBSERVED_ATTR` saying why. Other stores have no
#: ``targets`` attribute.
NO_TARGETS = "none"
NOT_OBSERVED_ATTR = "not_observed"
NO_TARGETS_REASON = ("not observed: built without targets (gpp build --no-targets), no FLUXNET "
                     "file was read")

# Why an item was not used is written "<category>: <detail>", e.g. "sun_zenith: 83.1 deg at
# the tower > limit 80 deg"; readers group by the category.
_CATEGORY = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*:")


def reason_category(reason: str, default: str) -> str:
    """``"sun_zenith: 83 deg > 70"`` -> ``"sun_zenith"``; free text -> ``default``."""
    m = _CATEGORY.match(str(reason))
    return m[1].lower() if m else default


@dataclass(frozen=True)
class VariableSpec:
    """One stored variable of the contract.

    Attributes
    ----------
    name : str
    units : str or None
        UDUNITS-2 units (CF), except ``"dB"`` (see the module docstring); None for the
        boolean flag, which has no ``units`` attribute.
    long_name : str
    dtype : str
        NumPy dtype name of the stored values (``float32`` or ``bool``).
    role : {"predictor", "target", "flag"}
    standard_name : str or None
        CF standard name, where the CF standard-name table has one for the quantity.
    cell_methods : str or None
        CF ``cell_methods`` (e.g. ``"time: mean"`` for a daily mean).
    comment : str or None
        CF ``comment``.
    flag_meanings : tuple of str or None
        Meanings of the flag values 0, 1, ... (CF ``flag_values`` / ``flag_meanings``).
    """

    name: str
    units: str | None
    long_name: str
    dtype: str
    role: Literal["predictor", "target", "flag"]
    standard_name: str | None = None
    cell_methods: str | None = None
    comment: str | None = None
    flag_meanings: tuple[str, ...] | None = None


#: The method's paper, cited by the stores (``references``) and the STAC catalog.
PAPER_CITATION = ("Montero, D., Mahecha, M. D., Martinuzzi, F., Aybar, C., Klosterhalfen, A., "
                  "Knohl, A., et al. (2024). Recurrent neural networks for modelling gross "
                  "primary production.")
#: Global attributes of every store (per-site and multi-site): CF version, DSG feature type
#: [CF-1.8 section 9], and the CF/ACDD ``source`` and ``references``.
CF_GLOBAL_ATTRS: dict[str, str] = {
    "Conventions": "CF-1.8", "featureType": "timeSeries",
    "source": "gpp-cubes: Sentinel-2 L2A, Sentinel-1 RTC, MODIS LST (MOD11A1, MYD11A1), "
              "pvlib clear-sky irradiance, FLUXNET/ICOS daily GPP",
    "references": PAPER_CITATION,
}
#: The UDUNITS-2 spelling of the decibel of a dimensionless ratio (``"dB"`` is not UDUNITS).
DB_UDUNITS = "0.1 lg(re 1)"
_DB_COMMENT = ("10 log10 of the linear gamma0; units dB as in the CF standard-name table "
               f"(UDUNITS-2 spelling: {DB_UDUNITS!r}); no CF standard name exists for "
               "terrain-flattened gamma0")

#: CF attributes of the coordinates: ``time``, ``site`` and the site coordinates.
COORDINATE_ATTRS: dict[str, dict[str, str]] = {
    "time": {"standard_name": "time", "long_name": "day (UTC calendar date)", "axis": "T"},
    "site": {"cf_role": "timeseries_id",
             "long_name": "eddy-covariance site id (FLUXNET/ICOS, e.g. DE-Hai)"},
    "latitude": {"standard_name": "latitude", "units": "degrees_north",
                 "long_name": "tower latitude (WGS84)"},
    "longitude": {"standard_name": "longitude", "units": "degrees_east",
                  "long_name": "tower longitude (WGS84)"},
    "elevation_m": {"standard_name": "surface_altitude", "units": "m", "positive": "up",
                    "long_name": "tower base elevation above mean sea level (NaN: unknown)"},
    "igbp": {"long_name": "IGBP land-cover class of the site (empty: unknown)"},
}

#: Fixed predictors after the S2 PCs, in contract order: name -> (units, long_name).
FIXED_PREDICTORS: dict[str, tuple[str, str]] = {
    "S1_VV": ("dB", "Sentinel-1 RTC gamma0 VV, forest mean 50-1000 m from the tower"),
    "S1_VH": ("dB", "Sentinel-1 RTC gamma0 VH, forest mean 50-1000 m from the tower"),
    "S1_DpRVIVV": ("1", "dual-polarized radar vegetation index (VV) of the mean gamma0"),
    "MOD11A1_dt": ("K", "MODIS Terra daytime land surface temperature (3x3 mean)"),
    "MOD11A1_nt": ("K", "MODIS Terra nighttime land surface temperature (3x3 mean)"),
    "MYD11A1_dt": ("K", "MODIS Aqua daytime land surface temperature (3x3 mean)"),
    "MYD11A1_nt": ("K", "MODIS Aqua nighttime land surface temperature (3x3 mean)"),
    "clear_sky_ghi": ("W m-2", "daily mean clear-sky global horizontal irradiance"),
}
#: Name of the target variable (the ``target`` attribute).
TARGET = "GPP"
#: Boolean flag variables.
FLAGS: tuple[str, ...] = ("extreme",)

# CF extras of the fixed predictors: name -> (standard_name, cell_methods, comment).
_PREDICTOR_CF: dict[str, tuple[str | None, str | None, str | None]] = {
    "S1_VV": (None, None, _DB_COMMENT),
    "S1_VH": (None, None, _DB_COMMENT),
    "MOD11A1_dt": ("surface_temperature", None, None),
    "MOD11A1_nt": ("surface_temperature", None, None),
    "MYD11A1_dt": ("surface_temperature", None, None),
    "MYD11A1_nt": ("surface_temperature", None, None),
    "clear_sky_ghi": ("surface_downwelling_shortwave_flux_in_air_assuming_clear_sky",
                      "time: mean", None),
}

#: Every stored variable except the ``S2_PC<k>`` family (see :func:`variable_spec`).
VARIABLES: dict[str, VariableSpec] = {
    **{name: VariableSpec(name, units, long_name, "float32", "predictor",
                          *_PREDICTOR_CF.get(name, (None, None, None)))
       for name, (units, long_name) in FIXED_PREDICTORS.items()},
    TARGET: VariableSpec(
        TARGET, "g m-2 d-1",
        "gross primary production as carbon mass, g C m-2 d-1 (GPP_NT_VUT_REF), "
        "QC-filtered, not interpolated",
        "float32", "target",
        standard_name="gross_primary_productivity_of_biomass_expressed_as_carbon",
        cell_methods="time: mean",
        comment="FLUXNET daily GPP_NT_VUT_REF; the mass is carbon (g C), written g m-2 d-1 "
                "as UDUNITS has no carbon unit; NaN where missing or QC-filtered"),
    "extreme": VariableSpec(
        "extreme", None,
        "day of a climate-induced GPP extreme (>= 5 consecutive flagged days)",
        "bool", "flag", flag_meanings=("no_extreme", "gpp_extreme")),
}

_PC = re.compile(r"^S2_PC(\d+)$")


def variable_spec(name: str) -> VariableSpec:
    """The :class:`VariableSpec` of a stored variable, including ``S2_PC<k>`` [units "1"].

    Raises
    ------
    InputFormatError
        ``name`` is not a variable of the contract.
    """
    if name in VARIABLES:
        return VARIABLES[name]
    m = _PC.match(name)
    if m:
        return VariableSpec(name, "1", f"Sentinel-2 spectral-index principal component {m[1]} "
                            "(standardised indices, PCA fitted on the training years)",
                            "float32", "predictor")
    raise InputFormatError(f"unknown predictor {name!r}: not S2_PC<k> nor one of "
                           f"{', '.join(FIXED_PREDICTORS)}")


def variable_attrs(name: str) -> dict[str, Any]:
    """The CF attributes of a stored variable (without the per-site fill counts).

    Parameters
    ----------
    name : str
        A variable of the contract (``S2_PC<k>``, a fixed predictor, ``GPP``, ``extreme``).

    Returns
    -------
    dict
        ``units`` (absent for flags), ``long_name``, and where defined ``standard_name``,
        ``cell_methods``, ``comment``; flags get ``flag_values`` (int8 0, 1, ...: the
        stored bool compares equal) and ``flag_meanings`` (space-separated).

    Raises
    ------
    InputFormatError
        ``name`` is not a variable of the contract.
    """
    import numpy as np

    spec = variable_spec(name)
    attrs: dict[str, Any] = {}
    if spec.units is not None:
        attrs["units"] = spec.units
    attrs["long_name"] = spec.long_name
    for key in ("standard_name", "cell_methods", "comment"):
        if getattr(spec, key) is not None:
            attrs[key] = getattr(spec, key)
    if spec.flag_meanings is not None:
        attrs["flag_values"] = np.arange(len(spec.flag_meanings), dtype=np.int8)
        attrs["flag_meanings"] = " ".join(spec.flag_meanings)
    return attrs


def predictor_metadata(name: str) -> tuple[str, str]:
    """(units, long_name) of a predictor of the contract.

    Raises
    ------
    InputFormatError
        ``name`` is not a predictor (message names it and the valid ones).
    """
    spec = variable_spec(name)
    if spec.role != "predictor" or spec.units is None:
        raise InputFormatError(f"unknown predictor {name!r}: not S2_PC<k> nor one of "
                               f"{', '.join(FIXED_PREDICTORS)}")
    return spec.units, spec.long_name


def predictor_order(names: Sequence[str]) -> list[str]:
    """Contract order: ``S2_PC1..k`` by number, then :data:`FIXED_PREDICTORS` order."""
    pcs = sorted((n for n in names if _PC.match(n)), key=lambda n: int(_PC.match(n)[1]))
    fixed = [n for n in FIXED_PREDICTORS if n in names]
    unknown = set(names) - set(pcs) - set(fixed)
    if unknown:
        predictor_metadata(sorted(unknown)[0])  # raises naming it
    return pcs + fixed


def site_coordinates(site_attrs: Sequence[Mapping[str, Any]]
                     ) -> dict[str, tuple[str, Any, dict[str, str]]]:
    """The ``site``-indexed coordinates of a multi-site store from per-site attributes.

    Parameters
    ----------
    site_attrs : sequence of mapping
        Dataset attributes of the per-site stores, in ``site`` order.

    Returns
    -------
    dict
        ``{key: ("site", array, cf_attrs)}`` for every key of :data:`SITE_ATTRS`:
        ``latitude``, ``longitude`` [degrees] and ``elevation_m`` [m] as float64, ``igbp``
        as str, with their CF attributes (:data:`COORDINATE_ATTRS`), ready for
        :meth:`xarray.Dataset.assign_coords`.
    """
    import numpy as np

    coords: dict[str, tuple[str, Any, dict[str, str]]] = {}
    for key in SITE_ATTRS:
        vals = [attrs[key] for attrs in site_attrs]
        if key == "igbp":
            arr = np.asarray(vals, dtype=object).astype(str)
        else:
            arr = np.asarray(vals, dtype=np.float64)
        coords[key] = ("site", arr, dict(COORDINATE_ATTRS[key]))
    return coords


def site_scalar_coordinates(site_attrs: Mapping[str, Any]
                            ) -> dict[str, tuple[tuple[()], Any, dict[str, str]]]:
    """The scalar site coordinates of a per-site store (a single CF time series).

    Parameters
    ----------
    site_attrs : mapping
        :data:`SITE_ID_ATTR` and :data:`SITE_ATTRS` of the site (``latitude``,
        ``longitude`` [degrees], ``elevation_m`` [m], ``igbp``).

    Returns
    -------
    dict
        ``{"site": ((), id, attrs), key: ((), value, attrs) for key in SITE_ATTRS}``, ready
        for :meth:`xarray.Dataset.assign_coords`; ``site`` carries
        ``cf_role = "timeseries_id"``. Stacking such stores along ``site`` gives the
        coordinates of :func:`site_coordinates`.
    """
    import numpy as np

    coords: dict[str, tuple[tuple[()], Any, dict[str, str]]] = {
        "site": ((), np.asarray(str(site_attrs[SITE_ID_ATTR]), dtype=object),
                 dict(COORDINATE_ATTRS["site"]))}
    for key in SITE_ATTRS:
        value = (np.asarray(str(site_attrs[key]), dtype=object) if key == "igbp"
                 else np.float64(site_attrs[key]))
        coords[key] = ((), value, dict(COORDINATE_ATTRS[key]))
    return coords


def validate(ds: xr.Dataset, *, multisite: bool = False, source: str | None = None) -> None:
    """Check a Dataset against the contract; raise naming the store and the missing field.

    Parameters
    ----------
    ds : xarray.Dataset
        An opened store (per-site or multi-site).
    multisite : bool, default False
        The store must be multi-site (``site`` dimension with site coordinates) rather than
        per-site (site attributes).
    source : str, optional
        Path of the store, named in messages.

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        A missing dataset attribute, dimension, variable, predictor attribute or site
        coordinate; an unsupported ``format_version``; an empty or non-daily time axis.
    """
    import numpy as np

    where = f"cube store {source}" if source is not None else "cube store"
    missing = [key for key in REQUIRED_ATTRS if key not in ds.attrs]
    if multisite:
        if "site" not in ds.dims:
            missing.append("site dimension")
    else:
        missing += [key for key in (SITE_ID_ATTR, *SITE_ATTRS) if key not in ds.attrs]
    if "time" not in ds.dims:
        missing.append("time dimension")
    if missing:
        raise InputFormatError(
            f"{where} lacks {', '.join(missing)} (data contract: gpp_cubes/contract.py)")
    version = ds.attrs["format_version"]
    if str(version) != FORMAT_VERSION:
        raise InputFormatError(
            f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION!r})")
    if ds.sizes["time"] == 0:
        raise InputFormatError(f"{where} has an empty time dimension")
    predictors = [str(p) for p in np.atleast_1d(ds.attrs["predictors"])]
    for name in [*predictors, str(ds.attrs["target"]), *FLAGS]:
        if name not in ds.data_vars:
            raise InputFormatError(f"{where}: missing variable {name!r}")
    for name in predictors:
        for key in PREDICTOR_ATTRS:
            if key not in ds[name].attrs:
                raise InputFormatError(f"{where}: variable {name!r} lacks attribute {key!r}")
    time = np.asarray(ds["time"].values)
    if time.size > 1 and not (np.diff(time) == np.timedelta64(1, "D")).all():
        raise InputFormatError(f"{where}: 'time' is not a gap-free daily axis")
    if multisite:
        for key in SITE_ATTRS:
            if key not in ds.coords:
                raise InputFormatError(f"{where}: missing site coordinate {key!r}")
