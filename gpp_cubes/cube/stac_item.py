"""The STAC Item of one cube store, and the datacube description of any store.

Each Item describes one per-site store ``<SITE>.zarr`` of the data contract
(:mod:`gpp_cubes.contract`):

- geometry: the tower's analysis buffer (the paper's circle of radius
  :data:`gpp_cubes.paper.RADIUS_M`, drawn in the site's UTM zone like the cube's spatial
  reduction) or the tower point;
- ``start_datetime``/``end_datetime``: the first and last day of the store's ``time``;
- ``gpp:*`` properties: site id, IGBP class, format version, elevation, predictors, target,
  train/test years and a redacted summary of the store's provenance;
- the asset ``zarr`` (media type ``application/vnd+zarr``, role ``data``) with the xarray
  open arguments (xarray-assets extension);
- the datacube extension (``cube:dimensions``: ``time``, and ``site`` for a multi-site
  store; ``cube:variables``: every variable with its unit, long name and type ``data``
  for predictors and target, ``auxiliary`` for flags and per-site coordinates);
- the processing extension (:func:`processing_fields`: ``processing:lineage``, the
  ``processing:software`` versions the store's provenance recorded, ``processing:datetime``)
  and the scientific extension (``sci:citation``: the method's paper,
  :data:`gpp_cubes.contract.PAPER_CITATION`; no ``sci:doi``, the paper's DOI is not
  recorded in the project's sources).

A multi-site store (``features.zarr``, with a ``site`` dimension) becomes a Collection-level
asset (:func:`features_asset`) carrying its own datacube description. Everything here reads
an open dataset and builds pystac objects; writing the catalog is
:mod:`gpp_cubes.cube.publish`.

References
----------
STAC specification 1.1 (Items, Assets); STAC datacube extension v2.2.0
(https://github.com/stac-extensions/datacube); xarray-assets extension v1.0.0
(https://github.com/stac-extensions/xarray-assets); processing extension v1.2.0
(https://github.com/stac-extensions/processing); scientific extension v1.0.0
(https://github.com/stac-extensions/scientific).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pystac
from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable
from pystac.extensions.scientific import ScientificExtension

from gpp_cubes.contract import PAPER_CITATION, TARGET
from gpp_cubes.paper import RADIUS_M
from gpp_cubes.secrets import redact_mapping

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "COLLECTION_ID",
    "LINEAGE",
    "PROCESSING_SCHEMA",
    "SCIENTIFIC_SCHEMA",
    "XARRAY_ASSETS_SCHEMA",
    "ZARR_MEDIA_TYPE",
    "add_citation",
    "buffer_polygon",
    "features_asset",
    "processing_fields",
    "provenance_summary",
    "site_item",
]

COLLECTION_ID = "gpp-site-cubes"
ZARR_MEDIA_TYPE = "application/vnd+zarr"
XARRAY_ASSETS_SCHEMA = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
SCIENTIFIC_SCHEMA = ScientificExtension.get_schema_uri()
#: How the cubes are made (``processing:lineage``, CommonMark).
LINEAGE = (
    "Daily features at each eddy-covariance tower, after Montero et al. (2024): Sentinel-2 "
    "L2A with cloud/shadow (SCL, s2cloudless or CloudSEN12) and snow masks, c-factor NBAR "
    "(sen2nbar), CORINE 2018 forest mask, clear-pixel mean in a 1 km circle, spectral "
    "indices (spyndex) reduced by a PCA fitted on the training years; Sentinel-1 RTC gamma0 "
    "forest mean in a 50-1000 m annulus (dB) and DpRVI; MODIS LST (MOD11A1, MYD11A1) 3x3 "
    "mean; pvlib clear-sky irradiance; predictors interpolated linearly in time; FLUXNET "
    "GPP_NT_VUT_REF QC-filtered, never interpolated, with climate-induced extremes. Data "
    "loaded from STAC with odc-stac or stackstac; written as zarr by gpp-cubes."
)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def buffer_polygon(
    lat: float, lon: float, radius_m: float = RADIUS_M, n_vertices: int = 64
) -> dict[str, Any]:
    """The tower's analysis buffer as a GeoJSON polygon in WGS84.

    The circle is drawn in the site's UTM zone (the CRS of :func:`gpp_cubes.sites.grid.site_grid`,
    where the cube's spatial reduction measures distances), then its vertices are projected
    to longitude/latitude.

    Parameters
    ----------
    lat, lon : float
        Tower position [degrees, WGS84].
    radius_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Buffer radius [m] (paper section 2.1).
    n_vertices : int, default 64
        Number of distinct vertices of the ring.

    Returns
    -------
    dict
        GeoJSON ``Polygon`` (counter-clockwise exterior ring, closed, RFC 7946).
    """
    from pyproj import Transformer

    from gpp_cubes.sites.grid import utm_epsg

    if not radius_m > 0:
        raise ValueError(f"buffer radius must be positive, got {radius_m} m")
    epsg = utm_epsg(lat, lon)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    to_geo = Transformer.from_crs(epsg, 4326, always_xy=True)
    x0, y0 = to_utm.transform(lon, lat)
    angles = [2.0 * math.pi * k / n_vertices for k in range(n_vertices)]
    xs = [x0 + radius_m * math.cos(a) for a in angles]  # counter-clockwise from east
    ys = [y0 + radius_m * math.sin(a) for a in angles]
    lons, lats = to_geo.transform(xs, ys)
    ring = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(lons, lats, strict=True)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox(geometry: dict[str, Any]) -> list[float]:
    if geometry["type"] == "Point":
        x, y = geometry["coordinates"]
        return [x, y, x, y]
    ring = geometry["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    return [min(xs), min(ys), max(xs), max(ys)]



def _iso(value: Any) -> str:
    import pandas as pd

    return pd.Timestamp(value).tz_localize(None).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_range(ds: xr.Dataset) -> tuple[str, str, str | None]:
    import numpy as np
    import pandas as pd

    times = pd.DatetimeIndex(ds["time"].values)
    step = None
    if len(times) > 1:
        diffs = np.unique(np.diff(times.values).astype("timedelta64[s]"))
        if len(diffs) == 1 and diffs[0] == np.timedelta64(86400, "s"):
            step = "P1D"
    return _iso(times.min()), _iso(times.max()), step


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(value)
            if isinstance(parsed, list):
                return parsed
        return [value]
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else [value]


def _scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _scalar_or_str(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def provenance_summary(provenance: Any, max_items: int = 50) -> dict[str, Any]:
    """A short, redacted summary of a store's provenance for STAC properties.

    Scalars are kept; flat mappings of scalars (package versions, parameters) are kept when
    they have at most ``max_items`` entries; short lists of scalars (up to 10) are kept,
    longer ones (STAC item ids, dropped scenes) become their length (``n_<key>``); in deeper
    mappings, nested lists and mappings become their length. Every value
    passes through :func:`gpp_cubes.secrets.redact_mapping`.

    Parameters
    ----------
    provenance : str or dict
        The store's ``provenance`` attribute (a JSON string) or the parsed dict.
    max_items : int, default 50
        Largest mapping or list copied as is.

    Returns
    -------
    dict
        JSON-serialisable summary; ``{}`` when the provenance is missing or not JSON.
    """
    if isinstance(provenance, str):
        try:
            provenance = json.loads(provenance)
        except ValueError:
            return {}
    if not isinstance(provenance, dict):
        return {}

    def is_scalar(v: Any) -> bool:
        return v is None or isinstance(v, str | int | float | bool)

    summary: dict[str, Any] = {}
    for key, value in provenance.items():
        if is_scalar(value):
            summary[key] = value
        elif isinstance(value, list | tuple):
            short = len(value) <= 10 and all(is_scalar(v) for v in value)
            summary[key if short else f"n_{key}"] = list(value) if short else len(value)
        elif isinstance(value, dict):
            flat = len(value) <= max_items and all(is_scalar(v) for v in value.values())
            summary[key] = (
                dict(value)
                if flat
                else {
                    k: len(v) if isinstance(v, list | tuple | dict) else _scalar_or_str(v)
                    for k, v in list(value.items())[:max_items]
                }
            )
    return redact_mapping(summary)



def processing_fields(provenance: Any) -> dict[str, Any]:
    """The processing-extension fields of a store from its provenance record.

    Parameters
    ----------
    provenance : str or dict
        The store's ``provenance`` attribute (JSON) or the parsed dict; its ``packages``
        (``{name: version or None}``) and ``created`` (ISO time) are used when present.

    Returns
    -------
    dict
        ``processing:lineage`` (:data:`LINEAGE`), ``processing:software`` (``{package:
        version}`` of the installed packages the build recorded; absent when the record has
        none), ``processing:datetime`` (when the store was written, if recorded).
    """
    if isinstance(provenance, str):
        try:
            provenance = json.loads(provenance)
        except ValueError:
            provenance = {}
    if not isinstance(provenance, dict):
        provenance = {}
    fields: dict[str, Any] = {"processing:lineage": LINEAGE}
    packages = provenance.get("packages")
    if isinstance(packages, dict):
        software = {str(k): str(v) for k, v in packages.items() if v is not None}
        if software:
            fields["processing:software"] = dict(sorted(software.items()))
    created = provenance.get("created")
    if isinstance(created, str) and created:
        with contextlib.suppress(ValueError):
            fields["processing:datetime"] = _iso(created)
    return fields


def add_citation(obj: pystac.Item | pystac.Collection) -> None:
    """Add the scientific extension to ``obj`` with ``sci:citation`` = the method's paper."""
    ScientificExtension.ext(obj, add_if_missing=True).citation = PAPER_CITATION


# --------------------------------------------------------------------------------------------
# datacube description
# --------------------------------------------------------------------------------------------
def _variable_type(name: str, ds: xr.Dataset) -> str:
    data_names = set(_as_list(ds.attrs.get("predictors", []))) | {ds.attrs.get("target", TARGET)}
    return "data" if name in data_names else "auxiliary"


def _extent(values: Any) -> list[Any] | None:
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        return None
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    if finite.size == 0:
        return None
    lo, hi = finite.min(), finite.max()
    return [_round(_scalar(lo)), _round(_scalar(hi))]


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _datacube(ds: xr.Dataset) -> tuple[dict[str, Any], dict[str, Any]]:
    start, end, step = _time_range(ds)
    dimensions: dict[str, Any] = {
        "time": {
            "type": "temporal",
            "description": "day (UTC calendar date of the daily features)",
            "extent": [start, end],
            **({"step": step} if step else {}),
        }
    }
    if "site" in ds.dims:
        dimensions["site"] = {
            "type": "other",
            "description": "eddy-covariance site id (FLUXNET/ICOS, e.g. DE-Hai)",
            "values": [str(s) for s in _as_list(ds["site"].values)],
        }
    variables: dict[str, Any] = {}
    # Scalar coordinates (a per-site store's site, latitude...) are Item properties already.
    names = [*ds.data_vars, *(c for c in ds.coords if c not in ds.dims and ds[c].ndim > 0)]
    for name in names:
        var = ds[name]
        entry: dict[str, Any] = {
            "dimensions": [str(d) for d in var.dims],
            "type": _variable_type(str(name), ds) if name in ds.data_vars else "auxiliary",
        }
        if "long_name" in var.attrs:
            entry["description"] = str(var.attrs["long_name"])
        if "units" in var.attrs:
            entry["unit"] = str(var.attrs["units"])
        extent = _extent(var.values) if var.dtype.kind in "iuf" else None
        if extent is not None:
            entry["extent"] = extent
        if var.dtype.kind in "OUST" and var.ndim <= 1 and var.size <= 100:
            entry["values"] = [str(v) for v in _as_list(var.values)]
        variables[str(name)] = entry
    return dimensions, variables


# --------------------------------------------------------------------------------------------
# items and assets
# --------------------------------------------------------------------------------------------
def _is_consolidated(store: Path) -> bool:
    if (store / ".zmetadata").is_file():  # zarr format 2
        return True
    try:
        meta = json.loads((store / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("consolidated_metadata"))


def _zarr_asset(store: Path, title: str) -> pystac.Asset:
    open_kwargs: dict[str, Any] = {"engine": "zarr"}
    if _is_consolidated(store):
        open_kwargs["consolidated"] = True
    return pystac.Asset(
        href=str(store),
        media_type=ZARR_MEDIA_TYPE,
        roles=["data"],
        title=title,
        extra_fields={"xarray:open_kwargs": open_kwargs},
    )


def site_item(ds: xr.Dataset, store: Path, geometry_kind: str, buffer_m: float) -> pystac.Item:
    """The Item of a per-site store ``ds`` read from ``store`` (geometry ``"buffer"`` of
    ``buffer_m`` [m] or ``"point"``), with its zarr asset and datacube description."""
    attrs = ds.attrs
    site_id = str(attrs["site_id"])
    lat, lon = float(attrs["latitude"]), float(attrs["longitude"])
    if geometry_kind == "point":
        geometry: dict[str, Any] = {"type": "Point", "coordinates": [lon, lat]}
    else:
        geometry = buffer_polygon(lat, lon, buffer_m)
    start, last_day, _ = _time_range(ds)
    # Daily values cover their whole (UTC) day: a search for any time of the last day hits.
    end = last_day.replace("T00:00:00Z", "T23:59:59Z")
    properties: dict[str, Any] = {
        "title": f"{site_id} daily feature cube",
        "start_datetime": start,
        "end_datetime": end,
        "gpp:site_id": site_id,
        "gpp:igbp": _scalar(attrs.get("igbp")),
        "gpp:format_version": str(attrs["format_version"]),
        "gpp:latitude": lat,
        "gpp:longitude": lon,
        "gpp:elevation_m": _scalar(attrs.get("elevation_m")),
        "gpp:buffer_m": buffer_m,
        "gpp:predictors": [str(p) for p in _as_list(attrs["predictors"])],
        "gpp:target": str(attrs["target"]),
        "gpp:train_years": [int(y) for y in _as_list(attrs.get("train_years", []))],
        "gpp:test_years": [int(y) for y in _as_list(attrs.get("test_years", []))],
        "gpp:n_days": int(ds.sizes["time"]),
        "gpp:provenance": provenance_summary(attrs.get("provenance")),
        **processing_fields(attrs.get("provenance")),
    }
    item = pystac.Item(
        id=site_id,
        geometry=geometry,
        bbox=_bbox(geometry),
        datetime=None,
        properties=properties,
        collection=COLLECTION_ID,
    )
    item.add_asset("zarr", _zarr_asset(store, f"{site_id} zarr store"))
    item.stac_extensions += [XARRAY_ASSETS_SCHEMA, PROCESSING_SCHEMA]
    add_citation(item)
    dimensions, variables = _datacube(ds)
    DatacubeExtension.ext(item, add_if_missing=True).apply(
        {k: Dimension.from_dict(v) for k, v in dimensions.items()},
        {k: Variable(v) for k, v in variables.items()},
    )
    return item


def features_asset(ds: xr.Dataset, store: Path) -> pystac.Asset:
    """The Collection asset of a multi-site store, with its datacube description."""
    asset = _zarr_asset(store, "all sites, stacked along `site`")
    asset.description = "Multi-site store: the per-site cubes stacked along a `site` dimension."
    dimensions, variables = _datacube(ds)
    # The asset has no owner yet, so the schema URI is added to the collection by the caller.
    DatacubeExtension.ext(asset).apply(
        {k: Dimension.from_dict(v) for k, v in dimensions.items()},
        {k: Variable(v) for k, v in variables.items()},
    )
    return asset
