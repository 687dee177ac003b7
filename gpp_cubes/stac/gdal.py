"""GDAL settings for reading cloud-optimised GeoTIFFs over HTTP, and GDAL's HTTP cache.

GDAL retries nothing by default (``GDAL_HTTP_MAX_RETRY=0``): one throttled or dropped request
would fail a whole scene. :func:`configure_gdal` applies :data:`GDAL_DEFAULTS` (values already
in the environment win) to this process and to odc-stac's rasterio configuration, and returns
them so Dask workers get the same (:func:`gdal_worker_plugin`). GDAL also caches a failed
transfer under its URL; :func:`clear_gdal_http_cache` makes it forget one URL before a retry
(:mod:`gpp_cubes.stac.readers`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

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
