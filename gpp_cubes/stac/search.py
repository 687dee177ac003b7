"""STAC search of a site: items of one collection over the site's buffer and a date range.

The search is a POST ``/search`` by the buffer circle (``intersects``) and dates, through a
``StacApiIO`` that retries throttling and 5xx (:mod:`gpp_cubes.stac.providers`). A scene
cloud-cover filter is sent with the query extension only where the API declares it, and is
always applied again on the client: some APIs (``rustac serve``) silently ignore ``query`` or
return nothing for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpp_cubes.errors import AssetError, EmptySearchError, StacError
from gpp_cubes.paper import RADIUS_M
from gpp_cubes.secrets import public_url, redact
from gpp_cubes.stac.providers import Provider, resolve_provider, stac_io_with_retries

if TYPE_CHECKING:
    import pystac

    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)

QUERY_CONFORMANCE = "https://api.stacspec.org/v1.0.0-rc.1/item-search#query"


def buffer_geometry(grid: SiteGrid, radius_m: float = RADIUS_M, n: int = 64) -> dict[str, Any]:
    """The tower's buffer circle as a GeoJSON polygon in WGS84.

    Parameters
    ----------
    grid : SiteGrid
        Site grid (tower position and UTM CRS).
    radius_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Buffer radius [m].
    n : int, default 64
        Number of vertices.

    Returns
    -------
    dict
        GeoJSON ``Polygon`` [degrees, lon/lat].
    """
    import numpy as np
    from pyproj import Transformer

    # Slightly larger than the radius so the polygon's chords still cover the circle.
    r = radius_m / np.cos(np.pi / n)
    ang = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    xs = grid.tower_x + r * np.cos(ang)
    ys = grid.tower_y + r * np.sin(ang)
    lon, lat = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def item_datetime(item: pystac.Item) -> datetime:
    """Acquisition time of an item (``datetime``, else ``start_datetime``), UTC."""
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise StacError(f"STAC item {item.id!r} has neither datetime nor start_datetime")
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def search_items(
    collection: str,
    grid: SiteGrid,
    start: str,
    end: str,
    *,
    provider: str | Provider | None = "planetary-computer",
    stac_url: str | None = None,
    max_cloud: float | None = None,
    site_id: str | None = None,
    query_extension: bool | None = None,
    required_assets: Sequence[str] | None = None,
    radius_m: float = RADIUS_M,
    max_items: int | None = None,
) -> list[pystac.Item]:
    """Search a STAC API for the items of one collection over a site.

    Parameters
    ----------
    collection : str
        Collection id, e.g. ``"sentinel-2-l2a"``.
    grid : SiteGrid
        Site grid; the search geometry is the buffer circle around its tower.
    start, end : str
        First and last day, ISO dates (``"2018-05-01"``), inclusive [UTC].
    provider : str or Provider, default "planetary-computer"
        Where to search; see :func:`gpp_cubes.stac.providers.resolve_provider`.
    stac_url : str, optional
        Endpoint override (e.g. the demo world on 127.0.0.1).
    max_cloud : float, optional
        Keep items with ``eo:cloud_cover`` <= this [%]. Items without the property are kept.
    site_id : str, optional
        Site name used in error messages.
    query_extension : bool, optional
        Send the cloud filter to the server with the STAC query extension. Default: only if
        the API declares the query conformance class. The filter is applied on the client
        in every case.
    required_assets : sequence of str, optional
        Canonical asset keys every item must have (e.g. ``["B04", "SCL"]``).
    radius_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Radius of the search circle [m].
    max_items : int, optional
        Stop after this many items.

    Returns
    -------
    list of pystac.Item
        Signed items with canonical asset keys, sorted by acquisition time.

    Raises
    ------
    EmptySearchError
        Nothing found; names the site, dates, collection and endpoint.
    AssetError
        An item lacks a required asset; names the item id and the asset.
    StacError
        The API could not be reached or answered with an error after retries; names the
        endpoint (without query string), the collection, the site and the HTTP status.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    prov = provider if isinstance(provider, Provider) else resolve_provider(provider, stac_url)
    endpoint = public_url(prov.url)
    where = f"site {site_id!r}" if site_id else f"tower at {grid.tower_x:.0f}/{grid.tower_y:.0f} " \
        f"(EPSG:{grid.epsg})"
    try:
        client = Client.open(prov.url, stac_io=stac_io_with_retries())
        use_query = query_extension
        if use_query is None:
            use_query = any("item-search#query" in c for c in client.get_conforms_to())
        kwargs: dict[str, Any] = {}
        if max_cloud is not None and use_query:
            kwargs["query"] = {"eo:cloud_cover": {"lte": float(max_cloud)}}
        search = client.search(
            collections=[collection], intersects=buffer_geometry(grid, radius_m),
            datetime=f"{start}T00:00:00Z/{end}T23:59:59Z", method="POST",
            max_items=max_items, **kwargs,
        )
        items = list(search.items())
    except APIError as err:
        status = getattr(err, "status_code", None)  # None: no HTTP answer (transfer failed)
        what = f"HTTP {status}" if status is not None else "no complete answer"
        raise StacError(f"STAC search of {collection!r} at {endpoint} for {where} failed "
                        f"({what}): {redact(str(err))[:300]}") from err
    except OSError as err:  # requests' ConnectionError and friends
        raise StacError(f"STAC API {endpoint} unreachable for {where}: "
                        f"{type(err).__name__}") from err

    if max_cloud is not None:
        before = len(items)
        items = [it for it in items
                 if it.properties.get("eo:cloud_cover") is None
                 or float(it.properties["eo:cloud_cover"]) <= max_cloud]
        log.info("%s: cloud filter <= %s %% kept %d of %d items", where, max_cloud,
                 len(items), before)
    if not items:
        cloud = f" with eo:cloud_cover <= {max_cloud} %" if max_cloud is not None else ""
        raise EmptySearchError(
            f"no {collection!r} items for {where} between {start} and {end}{cloud} "
            f"at {endpoint}")

    items = [prov.canonical_item(it) for it in items]
    for it in items:
        for key in required_assets or ():
            if key not in it.assets:
                raise AssetError(f"STAC item {it.id!r} of {where} has no asset {key!r} "
                                 f"(has: {', '.join(sorted(it.assets))})")
    items.sort(key=lambda it: (item_datetime(it), it.id))
    return items
