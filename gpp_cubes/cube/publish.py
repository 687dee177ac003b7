"""A STAC catalog of built cubes: the Collection ``gpp-site-cubes`` with one Item per site.

Every build writes or updates ``<catalog_dir>/cubes/collection.json`` (a self-contained
static catalog: relative links, relative asset hrefs where the stores are local), so that
generic STAC tools discover the cubes: pystac reads it, ``rustac serve
--load-collection-items`` or any STAC API loader serves it to pystac-client, and the zarr
asset opens with ``xarray.open_zarr``.

Each Item describes one per-site store ``<SITE>.zarr`` of the data contract
(:mod:`gpp_cubes.contract`; prose in docs/architecture.md):

- geometry: the tower's analysis buffer (the paper's 1 km circle, drawn in the site's UTM
  zone like the cube's spatial reduction) or the tower point;
- ``start_datetime``/``end_datetime``: the first and last day of the store's ``time``;
- ``gpp:*`` properties: site id, IGBP class, format version, elevation, predictors, target,
  train/test years and a redacted summary of the store's provenance;
- the asset ``zarr`` (media type ``application/vnd+zarr``, role ``data``) with the xarray
  open arguments (xarray-assets extension);
- the datacube extension (``cube:dimensions``: ``time``, and ``site`` for a multi-site
  store; ``cube:variables``: every variable with its unit, long name and type ``data``
  for predictors and target, ``auxiliary`` for flags and per-site coordinates).

A multi-site store (``features.zarr``, with a ``site`` dimension) becomes a Collection-level
asset ``features`` carrying its own datacube description.

References
----------
STAC specification 1.1 (Items, Collections, Assets); STAC datacube extension v2.2.0
(https://github.com/stac-extensions/datacube); xarray-assets extension v1.0.0
(https://github.com/stac-extensions/xarray-assets); Montero et al., Section 2 (1 km buffer).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pystac
from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable
from pystac.stac_io import DefaultStacIO

from gpp_cubes.contract import COMPLETE_MARKER, TARGET, validate
from gpp_cubes.errors import InputFormatError
from gpp_cubes.secrets import redact_mapping

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "COLLECTION_ID",
    "ZARR_MEDIA_TYPE",
    "buffer_polygon",
    "export_for_api",
    "provenance_summary",
    "update_cube_catalog",
]

COLLECTION_ID = "gpp-site-cubes"
ZARR_MEDIA_TYPE = "application/vnd+zarr"
XARRAY_ASSETS_SCHEMA = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"

_DESCRIPTION = (
    "Daily analysis-ready feature cubes at eddy-covariance forest sites: Sentinel-2 "
    "(PCA of spectral indices in a 1 km buffer), Sentinel-1 backscatter and DpRVI, MODIS land "
    "surface temperature, clear-sky irradiance, and the FLUXNET daily GPP target with "
    "climate-induced extremes. One zarr store per site (gpp-cubes data contract)."
)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def buffer_polygon(
    lat: float, lon: float, radius_m: float = 1000.0, n_vertices: int = 64
) -> dict[str, Any]:
    """The tower's analysis buffer as a GeoJSON polygon in WGS84.

    The circle is drawn in the site's UTM zone (the CRS of :func:`gpp_cubes.sites.grid.site_grid`,
    where the cube's spatial reduction measures distances), then its vertices are projected
    to longitude/latitude.

    Parameters
    ----------
    lat, lon : float
        Tower position [degrees, WGS84].
    radius_m : float, default 1000
        Buffer radius [m] (the paper's 1 km).
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


# --------------------------------------------------------------------------------------------
# reading a store
# --------------------------------------------------------------------------------------------
def _open_store(path: Path, require_complete: bool) -> xr.Dataset:
    import xarray as xr

    from gpp_cubes.cube.store import is_complete

    if not path.is_dir():
        raise InputFormatError(f"cube store {path} does not exist (or is not a directory)")
    if require_complete and not is_complete(path):
        raise InputFormatError(
            f"cube store {path} is incomplete (no {COMPLETE_MARKER} marker): its build did not "
            "finish; rebuild the site before publishing it"
        )
    try:
        # No Dask: the extents below read every variable, and with a distributed Client
        # active each read would become a task sent to the cluster.
        ds = xr.open_zarr(path, decode_timedelta=False, chunks=None)
    except Exception as err:  # zarr raises many types for a non-store directory
        raise InputFormatError(f"cube store {path} cannot be opened as zarr: {err}") from err
    validate(ds, multisite="site" in ds.dims, source=str(path))
    return ds


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
    names = [*ds.data_vars, *(c for c in ds.coords if c not in ds.dims)]
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
# items and the collection
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


def _site_item(ds: xr.Dataset, store: Path, geometry_kind: str, buffer_m: float) -> pystac.Item:
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
    item.stac_extensions.append(XARRAY_ASSETS_SCHEMA)
    dimensions, variables = _datacube(ds)
    DatacubeExtension.ext(item, add_if_missing=True).apply(
        {k: Dimension.from_dict(v) for k, v in dimensions.items()},
        {k: Variable(v) for k, v in variables.items()},
    )
    return item


def _features_asset(ds: xr.Dataset, store: Path) -> pystac.Asset:
    asset = _zarr_asset(store, "all sites, stacked along `site`")
    asset.description = "Multi-site store: the per-site cubes stacked along a `site` dimension."
    dimensions, variables = _datacube(ds)
    # The asset has no owner yet, so the schema URI is added to the collection by the caller.
    DatacubeExtension.ext(asset).apply(
        {k: Dimension.from_dict(v) for k, v in dimensions.items()},
        {k: Variable(v) for k, v in variables.items()},
    )
    return asset


def _new_collection(license: str) -> pystac.Collection:
    extent = pystac.Extent(
        pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
        pystac.TemporalExtent([[None, None]]),
    )
    return pystac.Collection(
        id=COLLECTION_ID,
        description=_DESCRIPTION,
        extent=extent,
        title="gpp-cubes site feature cubes",
        license=license,
        keywords=["GPP", "eddy covariance", "Sentinel-2", "Sentinel-1", "MODIS", "datacube"],
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )


def _update_extent_and_summaries(collection: pystac.Collection) -> None:
    items = list(collection.get_items())
    if not items:
        return
    boxes = [it.bbox for it in items if it.bbox]
    spatial = [
        [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
    ]
    starts = [it.common_metadata.start_datetime for it in items]
    ends = [it.common_metadata.end_datetime for it in items]
    collection.extent = pystac.Extent(
        pystac.SpatialExtent(spatial),
        pystac.TemporalExtent([[min(s for s in starts if s), max(e for e in ends if e)]]),
    )
    summaries: dict[str, list[Any]] = {}
    for key in ("gpp:igbp", "gpp:format_version", "gpp:target"):
        values = sorted({str(it.properties[key]) for it in items if it.properties.get(key)})
        summaries[key] = values
    summaries["gpp:site_id"] = sorted(it.id for it in items)
    collection.summaries = pystac.Summaries(summaries)


class _AtomicStacIO(DefaultStacIO):
    """pystac's default I/O, but each local JSON file is written to a temporary file and
    renamed: a crash mid-save leaves the previous catalog file, never a truncated one."""

    def write_text_to_href(self, href: str, txt: str) -> None:
        if "://" in href and not href.startswith("file://"):
            super().write_text_to_href(href, txt)
            return
        path = Path(href.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(txt)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def _catalog_lock(directory: Path) -> Iterator[None]:
    """Serialise concurrent updates (parallel site builds) of one catalog directory."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".gpp-catalog.lock", "w") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, best effort
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_cube_catalog(
    catalog_dir: str | Path,
    store_paths: Iterable[str | Path],
    *,
    geometry: Literal["buffer", "point"] = "buffer",
    buffer_m: float = 1000.0,
    require_complete: bool = True,
    license: str = "CC-BY-4.0",
) -> pystac.Collection:
    """Write or update the STAC Collection ``gpp-site-cubes`` describing built cube stores.

    Parameters
    ----------
    catalog_dir : str or Path
        Catalog root (e.g. ``catalog/``); the collection is written to
        ``<catalog_dir>/cubes/collection.json`` and each item to
        ``<catalog_dir>/cubes/<SITE>/<SITE>.json``.
    store_paths : iterable of str or Path
        Zarr stores following the data contract: per-site stores ``<SITE>.zarr`` become (or
        replace) the Item of their site; a multi-site store (``site`` dimension) becomes
        the Collection asset ``features``.
    geometry : {"buffer", "point"}, default "buffer"
        Item geometry: the tower's analysis buffer polygon or the tower point.
    buffer_m : float, default 1000
        Buffer radius [m] (the paper's 1 km).
    require_complete : bool, default True
        Refuse stores without the ``.gpp-complete`` marker (unfinished builds).
    license : str, default "CC-BY-4.0"
        SPDX license of the cubes (FLUXNET/ICOS data are CC BY 4.0; Copernicus Sentinel
        data are free and open), used when the collection is created.

    Returns
    -------
    pystac.Collection
        The saved collection (its items are the updated set). Re-running with the same
        stores rewrites the same items: nothing is duplicated.

    Raises
    ------
    InputFormatError
        A store is missing, incomplete, not zarr, or lacks a contract field; the message
        names the store and the field. Nothing is written in that case.
    """
    catalog_dir = Path(catalog_dir)
    cubes_dir = (catalog_dir / "cubes").resolve()
    collection_path = cubes_dir / "collection.json"
    stores = [Path(p).resolve() for p in store_paths]

    # Read and check every store before touching the catalog: a bad store writes nothing.
    site_items: dict[str, pystac.Item] = {}
    features: pystac.Asset | None = None
    for store in stores:
        ds = _open_store(store, require_complete)
        with ds:
            if "site" in ds.dims:
                features = _features_asset(ds, store)
            else:
                item = _site_item(ds, store, geometry, buffer_m)
                if item.id in site_items:
                    raise InputFormatError(
                        f"two stores for site {item.id}: {site_items[item.id].assets['zarr'].href}"
                        f" and {store}"
                    )
                site_items[item.id] = item

    stac_io = _AtomicStacIO()
    with _catalog_lock(cubes_dir):
        if collection_path.exists():
            collection = pystac.Collection.from_file(str(collection_path), stac_io=stac_io)
        else:
            collection = _new_collection(license)
        # Replace by id (never duplicate), and keep the item links sorted by site id.
        items = {item.id: item for item in collection.get_items()}
        items.update(site_items)
        collection.clear_items()
        for site_id in sorted(items):
            collection.add_item(items[site_id])
        if features is not None:
            collection.add_asset("features", features)
            if DatacubeExtension.get_schema_uri() not in collection.stac_extensions:
                collection.stac_extensions.append(DatacubeExtension.get_schema_uri())
            if XARRAY_ASSETS_SCHEMA not in collection.stac_extensions:
                collection.stac_extensions.append(XARRAY_ASSETS_SCHEMA)
        _update_extent_and_summaries(collection)
        collection.normalize_hrefs(str(cubes_dir))
        _relative_asset_hrefs(collection, stores)
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=stac_io)
    return collection


def _relative_asset_hrefs(collection: pystac.Collection, stores: Sequence[Path]) -> None:
    """Asset hrefs relative to the JSON that holds them, for local stores (the catalog and
    the stores can then be moved or served together)."""
    new = {str(s) for s in stores}

    def relative(href: str, owner_href: str) -> str:
        if href not in new:  # already relative (items read back) or remote
            return href
        return os.path.relpath(href, start=os.path.dirname(owner_href))

    for item in collection.get_items():
        for asset in item.assets.values():
            asset.href = relative(asset.href, item.get_self_href() or "")
    for asset in collection.assets.values():
        asset.href = relative(asset.href, collection.get_self_href() or "")


def export_for_api(
    catalog_dir: str | Path, out_dir: str | Path, *, asset_base: str | None = None
) -> tuple[Path, Path]:
    """Write the catalog as a collection + item FeatureCollection for a STAC API loader.

    A static catalog keeps links and asset hrefs relative; an API serves items from its own
    URLs, so relative hrefs would point into the API. The exported collection has no item
    links and the exported items carry absolute asset hrefs and no links (the API adds its
    own). Serve them with, e.g., ``rustac serve <out_dir>/collection.json
    <out_dir>/items.json``, or load them with pgstac/stac-fastapi loaders.

    Parameters
    ----------
    catalog_dir : str or Path
        The catalog root given to :func:`update_cube_catalog`.
    out_dir : str or Path
        Directory for ``collection.json`` and ``items.json`` (created).
    asset_base : str, optional
        Where the stores will be served from (``https://host/cubes/``, ``s3://bucket/x/``):
        each asset href becomes ``asset_base + <store directory name>``. Default: the
        stores' absolute local paths.

    Returns
    -------
    tuple of Path
        The collection and the items files.

    Raises
    ------
    InputFormatError
        There is no catalog at ``catalog_dir``.
    """
    collection_path = Path(catalog_dir).resolve() / "cubes" / "collection.json"
    if not collection_path.is_file():
        raise InputFormatError(f"no cube catalog at {collection_path}: run a build first")
    collection = pystac.Collection.from_file(str(collection_path))

    def absolute(asset: pystac.Asset) -> str:
        href = asset.get_absolute_href() or asset.href
        if asset_base is not None:
            href = asset_base.rstrip("/") + "/" + Path(href).name
        return href

    features = []
    for item in sorted(collection.get_items(), key=lambda it: it.id):
        data = item.to_dict(include_self_link=False, transform_hrefs=False)
        data["links"] = []
        data["collection"] = collection.id
        for key, asset in item.assets.items():
            data["assets"][key]["href"] = absolute(asset)
        features.append(data)
    collection_dict = collection.to_dict(include_self_link=False, transform_hrefs=False)
    collection_dict["links"] = []
    for key, asset in collection.assets.items():
        collection_dict["assets"][key]["href"] = absolute(asset)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    collection_out, items_out = out_dir / "collection.json", out_dir / "items.json"
    collection_out.write_text(json.dumps(collection_dict, indent=1))
    items_out.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1))
    return collection_out, items_out
