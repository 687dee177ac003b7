"""Errors that name what went wrong: the site, the file, the field or the stage.

The CLI prints these as one line (``--debug`` shows the traceback); library users can catch
:class:`GppError` to handle every expected failure of the pipeline.
"""

from __future__ import annotations


class GppError(Exception):
    """Base class of every expected, user-facing failure."""


class SiteError(GppError, ValueError):
    """A malformed or unknown site id, or a site outside the supported area."""


class InputFormatError(GppError, ValueError):
    """An input file (FLUXNET CSV, raster, zarr store) does not have the expected format."""


class StacError(GppError):
    """A STAC search or item problem: nothing found, missing assets, unreachable endpoint."""


class EmptySearchError(StacError):
    """A STAC search found no items."""


class AssetError(StacError):
    """A STAC item lacks an asset, or an asset cannot be read."""


class ConfigError(GppError, ValueError):
    """A configuration file or option is invalid (unknown key, wrong type)."""


class BuildError(GppError):
    """A cube build failed for a site (too many failed scenes, no clear observations...)."""


class StaleStoreError(GppError):
    """A complete store was built from other inputs or parameters than this run's.

    Raised before a build starts instead of reusing the store (see
    :mod:`gpp_cubes.batch.fingerprint`). The message names the store, the parameters that differ
    (old -> new) and how to go on: rebuild what changed, rebuild everything, or write
    elsewhere. The CLI exits with code 2 (a decision the user has to make, like a usage
    error), not 1 (a build that ran and failed).
    """

    exit_code = 2
