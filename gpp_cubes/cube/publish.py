"""A STAC catalog of built cubes: the Collection ``gpp-site-cubes`` with one Item per site.

Every build writes or updates ``<catalog_dir>/cubes/collection.json`` (a self-contained
static catalog: relative links, relative asset hrefs where the stores are local, absolute
``s3://...`` hrefs where they are in object storage, :mod:`gpp_cubes.storage`), so that
generic STAC tools discover the cubes: pystac reads it, ``rustac serve
--load-collection-items`` or any STAC API loader serves it to pystac-client, and the zarr
asset opens with ``xarray.open_zarr``.

An update reads and validates every store first (a bad store writes nothing), then, under a
file lock (parallel site builds share one catalog), replaces the Items by site id and saves
each JSON file atomically (:mod:`gpp_cubes.atomic`; in object storage each JSON object is
one whole-object PUT, and the build's client is the only writer: there is no lock on object
storage, so two builds must not share an output prefix at one time). What an Item holds is
:mod:`gpp_cubes.cube.stac_item`; :func:`export_for_api` rewrites the catalog for a STAC API
loader.

References
----------
STAC specification 1.1 (Items, Collections, Assets).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pystac
from pystac.extensions.datacube import DatacubeExtension
from pystac.stac_io import DefaultStacIO

from gpp_cubes.atomic import write_atomic
from gpp_cubes.contract import COMPLETE_MARKER, validate
from gpp_cubes.cube.stac_item import (
    COLLECTION_ID,
    LINEAGE,
    PROCESSING_SCHEMA,
    XARRAY_ASSETS_SCHEMA,
    ZARR_MEDIA_TYPE,
    add_citation,
    buffer_polygon,
    features_asset,
    provenance_summary,
    site_item,
)
from gpp_cubes.errors import InputFormatError
from gpp_cubes.paper import RADIUS_M
from gpp_cubes.storage import Location, as_location, display, is_url

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

_DESCRIPTION = (
    "Daily analysis-ready feature cubes at eddy-covariance forest sites: Sentinel-2 "
    "(PCA of spectral indices in a 1 km buffer), Sentinel-1 backscatter and DpRVI, MODIS land "
    "surface temperature, clear-sky irradiance, and the FLUXNET daily GPP target with "
    "climate-induced extremes. One zarr store per site (gpp-cubes data contract)."
)



# --------------------------------------------------------------------------------------------
# reading a store
# --------------------------------------------------------------------------------------------
def _open_store(path: Location, require_complete: bool) -> xr.Dataset:
    import xarray as xr

    from gpp_cubes.cube.store import is_complete

    name = display(path)
    if not path.is_dir():
        raise InputFormatError(f"cube store {name} does not exist (or is not a directory)")
    if require_complete and not is_complete(path):
        raise InputFormatError(
            f"cube store {name} is incomplete (no {COMPLETE_MARKER} marker): its build did not "
            "finish; rebuild the site before publishing it"
        )
    try:
        # No Dask: the extents below read every variable, and with a distributed Client
        # active each read would become a task sent to the cluster.
        ds = xr.open_zarr(str(path), decode_timedelta=False, chunks=None)
    except Exception as err:  # zarr raises many types for a non-store directory
        raise InputFormatError(f"cube store {name} cannot be opened as zarr: {err}") from err
    validate(ds, multisite="site" in ds.dims, source=name)
    return ds



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


def _add_processing_and_citation(collection: pystac.Collection) -> None:
    """Processing extension (a ``processor`` provider with the lineage and the installed
    software versions) and scientific extension (``sci:citation``) on the collection;
    replaces an earlier gpp-cubes provider, so re-publishing never duplicates it."""
    from gpp_cubes.cube.store import package_versions

    software = {k: v for k, v in sorted(package_versions().items()) if v is not None}
    provider = pystac.Provider(
        name="gpp-cubes", roles=[pystac.ProviderRole.PROCESSOR],
        description="builds the daily feature cubes (processing extension fields)",
        extra_fields={"processing:lineage": LINEAGE, "processing:software": software})
    others = [p for p in (collection.providers or []) if p.name != "gpp-cubes"]
    collection.providers = [*others, provider]
    if PROCESSING_SCHEMA not in collection.stac_extensions:
        collection.stac_extensions.append(PROCESSING_SCHEMA)
    add_citation(collection)


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
    renamed: a crash mid-save leaves the previous catalog file, never a truncated one; in
    object storage each file is one whole-object PUT (and read through the same layer)."""

    def read_text_from_href(self, href: str) -> str:
        if is_url(href) and not href.lower().startswith(("http://", "https://")):
            return as_location(href).read_text()
        return str(super().read_text_from_href(href))

    def write_text_to_href(self, href: str, txt: str) -> None:
        if is_url(href) and href.lower().startswith(("http://", "https://")):
            super().write_text_to_href(href, txt)
            return
        write_atomic(as_location(href), txt)


@contextlib.contextmanager
def _catalog_lock(directory: Location) -> Iterator[None]:
    """Serialise concurrent updates (parallel site builds) of one catalog directory (local
    only: object storage has no lock, one build writes a prefix at a time)."""
    if not isinstance(directory, Path):
        yield
        return
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
    buffer_m: float = RADIUS_M,
    require_complete: bool = True,
    license: str = "CC-BY-4.0",
) -> pystac.Collection:
    """Write or update the STAC Collection ``gpp-site-cubes`` describing built cube stores.

    Parameters
    ----------
    catalog_dir : str, Path or ObjectPath
        Catalog root (e.g. ``catalog/`` or ``s3://bucket/cubes/catalog``); the collection is
        written to
        ``<catalog_dir>/cubes/collection.json`` and each item to
        ``<catalog_dir>/cubes/<SITE>/<SITE>.json``.
    store_paths : iterable of str, Path or ObjectPath
        Zarr stores following the data contract: per-site stores ``<SITE>.zarr`` become (or
        replace) the Item of their site; a multi-site store (``site`` dimension) becomes
        the Collection asset ``features``.
    geometry : {"buffer", "point"}, default "buffer"
        Item geometry: the tower's analysis buffer polygon or the tower point.
    buffer_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Buffer radius [m] (paper section 2.1).
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
    cubes_dir = (as_location(catalog_dir) / "cubes").resolve()
    collection_path = cubes_dir / "collection.json"
    stores = [as_location(p).resolve() for p in store_paths]

    # Read and check every store before touching the catalog: a bad store writes nothing.
    site_items: dict[str, pystac.Item] = {}
    features: pystac.Asset | None = None
    for store in stores:
        ds = _open_store(store, require_complete)
        with ds:
            if "site" in ds.dims:
                features = features_asset(ds, store)
            else:
                item = site_item(ds, store, geometry, buffer_m)
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
        _add_processing_and_citation(collection)
        collection.normalize_hrefs(str(cubes_dir))
        _relative_asset_hrefs(collection, stores)
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=stac_io)
    return collection


def _relative_asset_hrefs(collection: pystac.Collection, stores: Sequence[Location]) -> None:
    """Asset hrefs relative to the JSON that holds them, for local stores (the catalog and
    the stores can then be moved or served together); stores in object storage keep their
    URL, which any reader of the JSON can open wherever it got the JSON from."""
    new = {str(s) for s in stores if isinstance(s, Path)}

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
    write_atomic(collection_out, json.dumps(collection_dict, indent=1))
    write_atomic(items_out, json.dumps({"type": "FeatureCollection", "features": features},
                                       indent=1))
    return collection_out, items_out
