"""STAC providers and HTTP retries for STAC APIs.

One place decides *where* data come from (Planetary Computer, Earth Search, any STAC API)
and *how hard* a STAC API is asked before giving up:

- :func:`resolve_provider` maps a provider name or URL to a :class:`Provider` (endpoint,
  item signing, asset-key mapping to Planetary-Computer-style keys);
- :func:`resign_expired` renews Planetary Computer SAS tokens that expired during a build;
- :func:`stac_io_with_retries` returns a pystac-client ``StacApiIO`` whose urllib3 ``Retry``
  retries throttling (429, honouring ``Retry-After``), 5xx and dropped connections, for the
  POST searches too (pystac-client's default retries cover DNS errors and timeouts only),
  and fetches a page again when its transfer is cut mid-body (after the headers, where
  urllib3's ``Retry`` no longer acts).

How pixels are read over HTTP (GDAL's settings and cache) is :mod:`gpp_cubes.stac.gdal`.

Credentials (``PC_SDK_SUBSCRIPTION_KEY``) are read by ``planetary_computer`` from the
environment only; nothing here logs, stores or returns them.
"""

from __future__ import annotations

import logging
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
