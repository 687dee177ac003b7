"""Which Sentinel-2 scenes of a site are used, decided before any pixel is read.

:func:`prepare_site` searches the items (or takes the caller's), re-signs expired tokens,
applies the scene rules and fetches the granule metadata NBAR needs. Rules exclude a scene
with a reason (``excluded_items``): a duplicate processing or a mixed BOA offset on one solar
day (:mod:`gpp_cubes.s2.reflectance`), the sun too low at the tower (the c-factor kernels
diverge beyond ~80 deg), a granule whose angle grids do not reach the site, or an
implausible c-factor (:func:`screen_scenes`). A scene whose metadata cannot be fetched is a
failure instead (``dropped_items``): failures count towards ``max_failed_fraction``
(:func:`gpp_cubes.stac.failures.check_failed_fraction`), exclusions do not. Each reason is
written ``"<category>: <detail>"`` (:func:`gpp_cubes.contract.reason_category`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.paper import RADIUS_M
from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH
from gpp_cubes.s2.reflectance import COLLECTION, drop_duplicates, one_offset_per_day
from gpp_cubes.stac.failures import MAX_FAILED_FRACTION, check_failed_fraction

if TYPE_CHECKING:
    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSite:
    """What the cube of a site needs before loading pixels (search, granule metadata)."""

    site_id: str
    lat: float
    lon: float
    grid: SiteGrid
    endpoint: str
    items: list[Any]
    n_all: int
    dropped: dict[str, str]
    mtd: dict[str, Path]
    sign: Any = None  # the provider's signing function (re-signs expired SAS tokens)
    excluded: dict[str, str] = field(default_factory=dict)  # by a rule, not a failure
    rules: dict[str, Any] = field(default_factory=dict)  # the rules' parameters

    @property
    def where(self) -> str:
        """``"site 'DE-Hai'"``, for messages."""
        return f"site {self.site_id!r}"


def prepare_site(site_or_latlon: Any, start: str, end: str, *,
                 provider: str | None = "planetary-computer", stac_url: str | None = None,
                 nbar: bool = True, max_cloud: float | None = None,
                 radius_m: float = RADIUS_M, cache_dir: str | Path | None = None,
                 max_failed_fraction: float = MAX_FAILED_FRACTION,
                 items: Sequence[Any] | None = None, grid: SiteGrid | None = None,
                 max_sun_zenith: float = MAX_SUN_ZENITH,
                 c_factor_range: tuple[float, float] = C_FACTOR_RANGE) -> PreparedSite:
    """Search, scene rules and granule metadata of a site (parameters as :func:`s2_cube`).

    Raises
    ------
    BuildError
        More than ``max_failed_fraction`` of the scenes without granule metadata.
    """
    from gpp_cubes.secrets import public_url
    from gpp_cubes.sites.catalog import as_site
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.providers import resign_expired, resolve_provider
    from gpp_cubes.stac.search import search_items

    site = as_site(site_or_latlon)
    site_id, lat, lon = site.id, float(site.latitude), float(site.longitude)
    grid = grid or site_grid(lat, lon, buffer_m=radius_m)
    prov = resolve_provider(provider, stac_url)
    if items is None:
        items = search_items(COLLECTION, grid, start, end, provider=prov, max_cloud=max_cloud,
                             site_id=site_id, radius_m=radius_m)
    items = list(items)
    if prov.sign is not None:  # tokens of items given by the caller may have expired
        items = [resign_expired(it, prov.sign) for it in items]
    n_all = len(items)
    items, excluded = drop_duplicates(items)
    items, mixed = one_offset_per_day(items, lon)
    excluded.update(mixed)
    dropped: dict[str, str] = {}
    mtd: dict[str, Path] = {}
    if nbar:
        from gpp_cubes.s2.granule import fetch_granule_metadata

        mtd, dropped = fetch_granule_metadata(items, cache_dir)
        for iid, why in dropped.items():
            log.warning("site %s: dropping STAC item %s: %s", site_id, iid, why)
        items = [it for it in items if it.id not in dropped]
    check_failed_fraction(dropped, n_all, max_failed_fraction, f"site {site_id!r}")
    excluded.update(screen_scenes(items, mtd, grid, nbar=nbar, max_sun_zenith=max_sun_zenith,
                                  c_factor_range=c_factor_range, cache_dir=cache_dir))
    for iid, why in excluded.items():
        log.info("site %s: excluding STAC item %s: %s", site_id, iid, why)
    if excluded:
        from collections import Counter

        from gpp_cubes.contract import reason_category

        counts = Counter(reason_category(why, "other") for why in excluded.values())
        log.warning("site %s: %d of %d scenes excluded by rule (%s)", site_id, len(excluded),
                    n_all, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    items = [it for it in items if it.id not in excluded]
    rules = {"max_sun_zenith": max_sun_zenith, "c_factor_range": list(c_factor_range)}
    return PreparedSite(site_id, lat, lon, grid, public_url(prov.url), items, n_all, dropped,
                        mtd, prov.sign, excluded, rules)


def _sun_zenith(item: Any, mtd: Path | None, grid: SiteGrid) -> float | None:
    """Sun zenith at the tower [degrees]: from the granule's sun-angle grid, else from the
    item's scene mean (``s2:mean_solar_zenith`` or ``view:sun_elevation``), else None."""
    if mtd is not None:
        from gpp_cubes.s2.granule import sun_zenith_at

        return sun_zenith_at(mtd, grid.tower_x, grid.tower_y, grid.epsg)
    props = item.properties
    if props.get("s2:mean_solar_zenith") is not None:
        return float(props["s2:mean_solar_zenith"])
    if props.get("view:sun_elevation") is not None:
        return 90.0 - float(props["view:sun_elevation"])
    return None


def screen_scenes(items: Sequence[Any], mtd: dict[str, Path], grid: SiteGrid, *, nbar: bool,
                   max_sun_zenith: float, c_factor_range: tuple[float, float],
                   cache_dir: str | Path | None, block: int = 16) -> dict[str, str]:
    """Scenes that cannot give valid (NBAR) reflectance at the site, with the reason.

    Sun zenith at the tower above ``max_sun_zenith`` (``"sun_zenith: ..."``); with NBAR, a
    granule whose angle grids do not reach the site (``"no_coverage: ..."``) or whose
    c-factor leaves ``c_factor_range`` (``"c_factor: ..."``), see
    :func:`gpp_cubes.s2.nbar.c_factor_problem`. The c-factors computed here land in the on-disk
    cache, where the pixel stage finds them again.
    """
    out: dict[str, str] = {}
    for it in items:
        sza = _sun_zenith(it, mtd.get(it.id), grid)
        if sza is not None and not np.isfinite(sza):
            out[it.id] = "no_coverage: the granule's sun-angle grid does not reach the site"
        elif sza is not None and sza > max_sun_zenith:
            out[it.id] = (f"sun_zenith: {sza:.1f} deg at the tower > limit "
                          f"{max_sun_zenith:g} deg")
    if nbar:
        from gpp_cubes.s2.nbar import (
            BRDF_BANDS,
            c_factor_block_cached,
            c_factor_cached,
            c_factor_nodes,
            c_factor_problem,
        )

        todo = [it for it in items if it.id not in out]
        # sen2nbar costs ~0.1 s per call whatever its size: the node c-factors of all
        # scenes not cached yet in one call, then on the grid (~1.8 MB per scene there) a
        # block at a time, into the cache the pixel stage reads.
        new = [it for it, hit in zip(todo, c_factor_cached([it.id for it in todo], grid,
                                                           BRDF_BANDS, cache_dir),
                                     strict=True) if not hit]
        nodes = dict(zip([it.id for it in new], c_factor_nodes([mtd[it.id] for it in new]),
                         strict=True))
        for s in range(0, len(todo), block):
            part = todo[s:s + block]
            c = c_factor_block_cached([mtd[it.id] for it in part], [it.id for it in part],
                                      grid, BRDF_BANDS, cache_dir, nodes=nodes)
            for it, ci in zip(part, c, strict=True):
                why = c_factor_problem(ci, BRDF_BANDS, c_factor_range)
                if why is not None:
                    out[it.id] = why
    return out
