"""STAC providers, HTTP retries for STAC APIs and GDAL settings for cloud reads.

One place decides *where* data come from (Planetary Computer, Earth Search, any STAC API)
and *how hard* we try before giving up:

- :func:`resolve_provider` maps a provider name or URL to a :class:`Provider` (endpoint,
  item signing, asset-key mapping to Planetary-Computer-style keys);
- :func:`stac_io_with_retries` returns a pystac-client ``StacApiIO`` whose urllib3 ``Retry``
  retries throttling (429, honouring ``Retry-After``), 5xx and dropped connections, for the
  POST searches too (pystac-client's default retries cover DNS errors and timeouts only),
  and fetches a page again when its transfer is cut mid-body (after the headers, where
  urllib3's ``Retry`` no longer acts);
- :func:`configure_gdal` sets GDAL's HTTP retries (GDAL retries nothing by default) for this
  process and returns the settings so Dask workers can get them (:func:`gdal_worker_plugin`).

Credentials (``PC_SDK_SUBSCRIPTION_KEY``) are read by ``planetary_computer`` from the
environment only; nothing here logs, stores or returns them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gpp_cubes.errors import ConfigError

if TYPE_CHECKING:
    import pystac
    from pystac_client.stac_api_io import StacApiIO

log = logging.getLogger(__name__)

PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"

#: Earth Search v1 ``sentinel-2-l2a`` asset keys -> Planetary Computer keys (our canonical ones).
EARTH_SEARCH_S2_KEYS: Mapping[str, str] = MappingProxyType({
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
    "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
    "swir16": "B11", "swir22": "B12", "scl": "SCL", "granule_metadata": "granule-metadata",
})

#: GDAL settings for reading COGs over HTTP. GDAL_HTTP_MAX_RETRY is 0 by default: one
#: throttled or dropped request would fail a whole scene.
GDAL_DEFAULTS: Mapping[str, str] = MappingProxyType({
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",  # [s], doubled by GDAL on each retry
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    # No directory listing or side-file probing on every /vsicurl/ open.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_TIMEOUT": "60",  # [s]
    # Parallel single-range requests, never one multi-range request (the demo file server
    # and some object stores refuse those).
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
})


def sas_expiry(href: str) -> datetime | None:
    """Expiry time of an Azure SAS token in a URL (its ``se=`` parameter), or None.

    Parameters
    ----------
    href : str
        Asset URL, e.g. a Planetary Computer signed blob URL.

    Returns
    -------
    datetime or None
        Timezone-aware UTC expiry, None when the URL carries no (parsable) ``se=``.
    """
    from urllib.parse import parse_qs, urlsplit

    values = parse_qs(urlsplit(href).query).get("se")
    if not values:
        return None
    try:
        t = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def resign_expired(item: pystac.Item, sign: Callable[[pystac.Item], pystac.Item] | None = None,
                   *, now: datetime | None = None, margin_s: float = 300.0) -> pystac.Item:
    """Re-sign an item whose SAS signatures expired (or expire within ``margin_s``).

    ``planetary_computer.sign`` leaves already-signed URLs alone, so a token that expired
    during a long build would never be renewed: the signature query is stripped from the
    expired hrefs of a *copy* of the item, and the copy is signed again.

    Parameters
    ----------
    item : pystac.Item
        A signed item.
    sign : callable, optional
        Signing function (default ``planetary_computer.sign``); injectable for tests.
    now : datetime, optional
        Current time (default: now, UTC).
    margin_s : float, default 300
        Re-sign tokens expiring within this many seconds [s] (a load takes a while).

    Returns
    -------
    pystac.Item
        ``item`` itself when nothing expired, else a newly signed copy.
    """
    from urllib.parse import urlsplit, urlunsplit

    now = now or datetime.now(UTC)
    limit = now + timedelta(seconds=margin_s)
    expired = [k for k, a in item.assets.items()
               if (t := sas_expiry(a.href)) is not None and t <= limit]
    if not expired:
        return item
    out = item.clone()
    for k in expired:
        parts = urlsplit(out.assets[k].href)
        out.assets[k].href = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    log.info("STAC item %s: re-signing %d asset(s) with expired signatures", item.id,
             len(expired))
    return (sign or _pc_sign)(out)


def _pc_sign(item: pystac.Item) -> pystac.Item:
    # Imported lazily: planetary_computer pulls in pydantic and requests.
    import planetary_computer

    return planetary_computer.sign(item)


@dataclass(frozen=True)
class Provider:
    """A STAC provider of Sentinel-2 L2A (and other) items.

    Attributes
    ----------
    name : str
        ``"planetary-computer"``, ``"earth-search"`` or ``"custom"``.
    url : str
        STAC API root URL.
    sign : callable or None
        Function returning a signed copy of an item (Planetary Computer SAS tokens), or None.
    asset_keys : mapping
        Provider asset key -> canonical (Planetary Computer) key; empty if identical.
    """

    name: str
    url: str
    sign: Callable[[pystac.Item], pystac.Item] | None = None
    asset_keys: Mapping[str, str] = field(default_factory=dict)

    def canonical_item(self, item: pystac.Item) -> pystac.Item:
        """Signed copy of ``item`` whose assets also carry the canonical keys.

        Parameters
        ----------
        item : pystac.Item
            An item as returned by the provider.

        Returns
        -------
        pystac.Item
            Signed (if the provider signs) with assets renamed to canonical keys.
        """
        out = self.sign(item) if self.sign is not None else item.clone()
        for key, canon in self.asset_keys.items():
            if key in out.assets and canon not in out.assets:
                out.assets[canon] = out.assets.pop(key)
        return out


def resolve_provider(provider: str | None = "planetary-computer",
                     stac_url: str | None = None) -> Provider:
    """Choose the STAC endpoint, signing and asset-key mapping.

    Parameters
    ----------
    provider : {"planetary-computer", "earth-search", "custom"} or None
        Named provider. ``None`` or ``"custom"`` needs ``stac_url``.
    stac_url : str, optional
        Override the endpoint (e.g. a local ``rustac serve`` on 127.0.0.1). Items of a
        custom endpoint are signed only when the provider is Planetary Computer.

    Returns
    -------
    Provider

    Raises
    ------
    ConfigError
        Unknown provider name, or no URL for a custom provider.
    """
    name = (provider or "custom").lower().replace("_", "-")
    if name in ("planetary-computer", "pc", "planetarycomputer"):
        # planetary_computer.sign leaves non-Azure hrefs (e.g. 127.0.0.1) unchanged.
        return Provider("planetary-computer", stac_url or PLANETARY_COMPUTER_URL, _pc_sign)
    if name in ("earth-search", "earthsearch", "element84"):
        return Provider("earth-search", stac_url or EARTH_SEARCH_URL, None,
                        dict(EARTH_SEARCH_S2_KEYS))
    if name == "custom":
        if not stac_url:
            raise ConfigError("provider 'custom' needs stac_url (the STAC API root URL)")
        return Provider("custom", stac_url, None)
    raise ConfigError(f"unknown STAC provider {provider!r}: use 'planetary-computer', "
                      "'earth-search' or 'custom' with stac_url")


def http_retry(total: int = 6, backoff_factor: float = 0.5,
               status_forcelist: tuple[int, ...] = (429, 500, 502, 503, 504)) -> Any:
    """urllib3 ``Retry`` for STAC API calls.

    Parameters
    ----------
    total : int, default 6
        Maximum number of retries of one request.
    backoff_factor : float, default 0.5
        Exponential backoff base [s]: sleeps 0.5, 1, 2, 4 ... s between tries.
    status_forcelist : tuple of int
        HTTP statuses to retry.

    Returns
    -------
    urllib3.util.retry.Retry
        Retries connect/read errors and the statuses for GET and POST, honouring
        ``Retry-After`` on 429/503.
    """
    from urllib3.util.retry import Retry

    return Retry(
        total=total, connect=total, read=total, status=total,
        backoff_factor=backoff_factor, backoff_max=60.0,
        status_forcelist=status_forcelist,
        # STAC item search is a POST; urllib3 retries only idempotent methods by default.
        allowed_methods=frozenset({"GET", "POST", "HEAD", "OPTIONS"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # the final error response reaches pystac-client's handler
    )


def stac_io_with_retries(*, total: int = 6, backoff_factor: float = 0.5,
                         timeout: float | tuple[float, float] = (10.0, 120.0),
                         headers: dict[str, str] | None = None) -> StacApiIO:
    """A pystac-client ``StacApiIO`` that retries throttling, 5xx and dropped connections.

    Parameters
    ----------
    total, backoff_factor : see :func:`http_retry`.
    timeout : float or (float, float)
        (connect, read) timeout [s] of each request.
    headers : dict, optional
        Extra HTTP headers.

    Returns
    -------
    pystac_client.stac_api_io.StacApiIO
        Pass as ``stac_io=`` to ``pystac_client.Client.open``. A page whose transfer is
        cut after the response headers (outside urllib3's ``Retry``) is fetched again up to
        ``total`` times, with the same exponential backoff.
    """
    return _retrying_stac_io_class()(
        headers=headers, timeout=timeout,
        max_retries=http_retry(total=total, backoff_factor=backoff_factor),
        body_retries=total, backoff_factor=backoff_factor)


def _is_cut_transfer(err: BaseException) -> bool:
    """True if ``err`` (or what it wraps) is a connection lost after the response headers."""
    import requests
    from urllib3.exceptions import MaxRetryError, ProtocolError

    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    wrapped = [a for c in chain for a in c.args if isinstance(a, BaseException)]
    if any(isinstance(c, MaxRetryError) for c in chain + wrapped):
        return False  # urllib3 already retried this request before any answer: give up
    # ChunkedEncodingError: body cut (IncompleteRead, reset while reading); requests'
    # ConnectionError without MaxRetryError: read timeout mid-body; ProtocolError: urllib3's.
    return any(isinstance(c, requests.exceptions.ChunkedEncodingError
                          | requests.exceptions.ConnectionError | ProtocolError)
               for c in chain)


@lru_cache(maxsize=1)
def _retrying_stac_io_class() -> type:
    # Built lazily: pystac_client (and requests) are imported only when a search is made.
    from pystac_client.stac_api_io import StacApiIO

    class RetryingStacApiIO(StacApiIO):
        """``StacApiIO`` that also retries a page whose transfer was cut mid-body.

        urllib3's ``Retry`` acts only until the response headers arrive; a connection
        dropped while the body is read surfaces as requests' ``ChunkedEncodingError``
        (pystac-client wraps it in ``APIError``) and would fail the whole search.
        """

        def __init__(self, *args: Any, body_retries: int = 6, backoff_factor: float = 0.5,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.body_retries = body_retries
            self.backoff_factor = backoff_factor

        def request(self, href: str, *args: Any, **kwargs: Any) -> str:
            import time

            from pystac_client.exceptions import APIError

            attempt = 0
            while True:
                try:
                    return super().request(href, *args, **kwargs)
                except APIError as err:
                    # An HTTP error response (status_code set) is final here: urllib3
                    # already retried the retryable statuses.
                    if (getattr(err, "status_code", None) is not None
                            or attempt >= self.body_retries or not _is_cut_transfer(err)):
                        raise
                    delay = min(60.0, self.backoff_factor * 2 ** attempt)
                    attempt += 1
                    log.info("STAC API transfer cut mid-body (%s); retry %d of %d in %.1f s",
                             type(err.__context__).__name__, attempt, self.body_retries,
                             delay)
                    time.sleep(delay)

    return RetryingStacApiIO


def gdal_settings(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The GDAL HTTP settings :func:`configure_gdal` would apply, without applying them.

    Values already in the environment win over :data:`GDAL_DEFAULTS` (a user may tune
    them); ``overrides`` win over both.

    Parameters
    ----------
    overrides : mapping, optional
        Settings to force.

    Returns
    -------
    dict
        GDAL configuration option -> value, e.g. to hand to Dask workers
        (:func:`gdal_worker_plugin`).
    """
    settings = {k: os.environ.get(k, v) for k, v in GDAL_DEFAULTS.items()}
    settings.update(overrides or {})
    return settings


def configure_gdal(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Apply :func:`gdal_settings` to this process (its environment and odc-stac's rasterio
    configuration) and return them.

    Parameters
    ----------
    overrides : mapping, optional
        Settings to force over the environment and :data:`GDAL_DEFAULTS`.

    Returns
    -------
    dict
        The settings applied, for ``rasterio.Env(**settings)``.
    """
    settings = gdal_settings(overrides)
    os.environ.update(settings)
    try:  # odc-stac keeps its own rasterio config; make it agree.
        from odc.stac import configure_rio

        configure_rio(cloud_defaults=True, **settings)
    except ImportError:  # pragma: no cover - odc-stac is a dependency
        pass
    return settings


def gdal_worker_plugin(settings: Mapping[str, str] | None = None) -> Any:
    """A Dask ``WorkerPlugin`` that applies :func:`configure_gdal` on every worker.

    Parameters
    ----------
    settings : mapping, optional
        GDAL settings (default: :func:`gdal_settings` of this process, which is left
        unconfigured: the client of a build reads no rasters).

    Returns
    -------
    distributed.WorkerPlugin
        Register with ``client.register_plugin(plugin)``.
    """
    from distributed import WorkerPlugin

    chosen = dict(settings) if settings is not None else gdal_settings()

    class GdalSettings(WorkerPlugin):
        name = "gpp-cubes-gdal"

        def __init__(self, values: dict[str, str]) -> None:
            self.values = values

        def setup(self, worker: Any) -> None:
            configure_gdal(self.values)

    return GdalSettings(chosen)


def gdal_vsi_path(href: str) -> str:
    """The GDAL virtual file path rasterio opens for ``href`` (``/vsicurl/https://...``)."""
    try:
        from rasterio._path import _parse_path  # rasterio's own href -> /vsi*/ mapping

        return str(_parse_path(href).as_vsi())
    except Exception:  # private API moved: the common case by hand
        return f"/vsicurl/{href}" if href.startswith(("http://", "https://")) else href


def is_remote(href: str) -> bool:
    """True for hrefs GDAL reads over the network (``/vsicurl/``, ``/vsis3/``...)."""
    return gdal_vsi_path(href).startswith("/vsi") and not href.startswith("/vsimem/")


@lru_cache(maxsize=1)
def _vsicurl_partial_clear() -> Callable[[bytes], None] | None:
    """``VSICurlPartialClearCache`` of the GDAL that *rasterio* uses, or None.

    rasterio does not bind it, and osgeo (if installed) may load another copy of GDAL whose
    cache is not rasterio's. dlsym on rasterio's own extension module finds the symbol in
    the libgdal it links (wheel-bundled or system alike).
    """
    import ctypes

    try:
        import rasterio._env

        func = ctypes.CDLL(rasterio._env.__file__).VSICurlPartialClearCache
    except (ImportError, OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_char_p]
    func.restype = None
    return func


def clear_gdal_http_cache(href: str) -> dict[str, str]:
    """Make GDAL forget what its ``/vsicurl/`` cache holds for ``href`` before a retry.

    GDAL caches a failed request's outcome (e.g. "file does not exist" after a ``HEAD``
    whose connection was cut), so reopening the same URL in the same process fails again
    without any request. Clearing that URL's entries makes the next open ask the server.

    Parameters
    ----------
    href : str
        Asset URL (as given to rasterio).

    Returns
    -------
    dict
        GDAL settings the retry should use: empty when the cache entry was cleared; else
        (``VSICurlPartialClearCache`` not reachable) ``CPL_VSIL_CURL_NON_CACHED`` for the
        ``/vsicurl/`` prefix, which makes that thread's retry bypass the cache.
    """
    path = gdal_vsi_path(href)
    func = _vsicurl_partial_clear()
    if func is not None:
        func(path.encode())
        return {}
    return {"CPL_VSIL_CURL_NON_CACHED": "/vsicurl/"}
