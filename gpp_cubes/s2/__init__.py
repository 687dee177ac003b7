"""The Sentinel-2 cube builder: per-pixel cube with masks, and the per-site daily features.

:func:`s2_cube` chains the stages lazily (search -> scene rules -> load -> reflectance ->
cloud/shadow and snow masks -> c-factor NBAR -> forest mask and 1 km circle) and returns a
Dask-backed ``xarray.Dataset`` ready to plot. :func:`s2_features` reduces it, a few time
steps at a time (never the whole cube in memory), to the mean NBAR over the clear forest
pixels of the 1 km circle, drops time steps with < 1 % such pixels, and computes the spectral
indices of the averaged NBAR (paper section 2.1, "Sentinel-2").

Scene rules, before any pixel is read: a scene the archive holds twice keeps its newest
processing (:func:`drop_duplicates`); a solar day keeps the tiles of one BOA offset
(:func:`one_offset_per_day`); scenes with the sun too low at the tower, an implausible
c-factor or granule angle grids that do not reach the site are excluded
(:data:`gpp_cubes.s2.nbar.MAX_SUN_ZENITH`, :func:`gpp_cubes.s2.nbar.c_factor_problem`). Each
excluded item is logged and kept in ``excluded_items`` with its reason; read failures go to
``dropped_items`` and count towards ``max_failed_fraction``, exclusions do not. A pixel is
valid only where every band has a value after NBAR, so each band mean divides by the number
of pixels it summed (``n_clear``), and a step without any is NaN, never 0.

Speed: :func:`s2_features` streams blocks of ``block`` time steps through the same stages as
:func:`s2_cube` (one odc-stac read task per band and block, two blocks in flight so reads
overlap the CPU work, c-factors computed in batches and cached on disk by item id); the
values equal the lazy-cube path (tested). Figures: ``benchmarks/README.md``.

Reflectance: ``(DN + offset) / 10000`` with ``offset = -1000`` for processing baseline
>= 04.00 (new processings from 25 January 2022 on, and ESA's Collection-1 reprocessing,
05.xx, of older scenes) and 0 before, from ``s2:processing_baseline`` (Planetary Computer
items carry no ``raster:bands`` offsets). DN 0 is nodata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gpp_cubes.errors import BuildError, SiteError
from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)

COLLECTION = "sentinel-2-l2a"
#: The 12 L2A reflectance bands (B10 is not in L2A).
S2_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
                             "B09", "B11", "B12")
#: DN scale of L2A reflectance.
QUANTIFICATION = 10000.0
#: BOA_ADD_OFFSET of processing baselines >= 04.00 [DN].
BASELINE_04_OFFSET = -1000.0


def baseline_offset(baseline: Any) -> float:
    """BOA offset [DN] for a processing baseline string like ``"04.00"`` (-1000 from 04.00)."""
    try:
        return BASELINE_04_OFFSET if float(baseline) >= 4.0 else 0.0
    except (TypeError, ValueError) as err:
        raise BuildError(f"bad s2:processing_baseline {baseline!r}") from err


def drop_duplicates(items: Sequence[Any]) -> tuple[list[Any], dict[str, str]]:
    """Keep one item per scene where the archive holds the same scene processed twice.

    The real archive serves some datatakes twice: the original processing (baseline 02.xx)
    and ESA's Collection-1 reprocessing (05.xx), under different item ids. Loading both
    would mosaic two offsets into one time step. A scene is the sensing time and the MGRS
    tile; of its items the highest processing baseline is kept, then the latest
    generation time.

    Parameters
    ----------
    items : sequence of pystac.Item
        Sentinel-2 L2A items (``s2:mgrs_tile``, ``s2:processing_baseline``,
        ``s2:generation_time`` as in Planetary Computer's schema; items without a tile are
        never treated as duplicates).

    Returns
    -------
    (kept, superseded) : (list, dict)
        Items kept in their input order, and superseded item id -> reason
        (``"duplicate: ..."``).
    """
    def rank(it: Any) -> tuple[float, str]:
        try:
            baseline = float(it.properties.get("s2:processing_baseline"))
        except (TypeError, ValueError):
            baseline = -1.0
        return baseline, str(it.properties.get("s2:generation_time", ""))

    scenes: dict[tuple[Any, str], list[Any]] = {}
    for it in items:
        tile = it.properties.get("s2:mgrs_tile")
        key = (it.datetime, str(tile)) if tile else (it.id, "")
        scenes.setdefault(key, []).append(it)
    superseded: dict[str, str] = {}
    for group in scenes.values():
        best = max(group, key=rank)
        for it in group:
            if it is not best:
                superseded[it.id] = (
                    f"duplicate: same scene as {best.id} (baseline "
                    f"{best.properties.get('s2:processing_baseline')} kept over "
                    f"{it.properties.get('s2:processing_baseline')})")
    return [it for it in items if it.id not in superseded], superseded


def one_offset_per_day(items: Sequence[Any], lon: float) -> tuple[list[Any], dict[str, str]]:
    """Keep, on each solar day, only the items that share one BOA offset.

    A time step is the mosaic of its solar day's items, and its DN are converted with one
    offset (:func:`to_reflectance`): a day mixing a baseline < 04.00 tile with a >= 04.00
    one (e.g. the neighbouring tile already reprocessed) would shift the pixels of one of
    them by 0.1 reflectance. The items with the offset of the day's newest baseline stay.

    Parameters
    ----------
    items : sequence of pystac.Item
        Sentinel-2 L2A items (``s2:processing_baseline``).
    lon : float
        Longitude of the site [degrees east], for the solar day.

    Returns
    -------
    (kept, excluded) : (list, dict)
        Items kept in their input order; excluded item id -> ``"mixed_baseline: ..."``.
    """
    from gpp_cubes.stac.load import _group

    excluded: dict[str, str] = {}
    for day in _group(items, lon):
        baselines = {it.id: str(it.properties.get("s2:processing_baseline")) for it in day}
        newest = max(baselines.values(), key=lambda b: (baseline_offset(b) != 0.0, b))
        for it in day:
            if baseline_offset(baselines[it.id]) != baseline_offset(newest):
                excluded[it.id] = (f"mixed_baseline: baseline {baselines[it.id]} on the same "
                                   f"solar day as baseline {newest} (another BOA offset)")
    return [it for it in items if it.id not in excluded], excluded


def to_reflectance(ds: xr.Dataset, bands: Sequence[str] = S2_BANDS,
                   baseline: str = "s2:processing_baseline") -> xr.Dataset:
    """Digital numbers -> surface reflectance [1], NaN for nodata (DN 0).

    Parameters
    ----------
    ds : xarray.Dataset
        Loaded DN bands (uint16) with a per-time ``baseline`` coordinate.
    bands : sequence of str
        Bands to convert; other variables are kept as they are.
    baseline : str
        Name of the processing-baseline coordinate.

    Returns
    -------
    xarray.Dataset
        float32 reflectance [1] = (DN + offset) / 10000.
    """
    import xarray as xr

    offsets = xr.DataArray(np.array([baseline_offset(b) for b in ds[baseline].values],
                                    dtype=np.float32), dims="time")
    out = ds.copy()
    for b in bands:
        if b in ds:
            dn = ds[b]
            refl = ((dn.astype(np.float32) + offsets) / np.float32(QUANTIFICATION))
            out[b] = refl.where(dn != 0).astype(np.float32)
            out[b].attrs = {"units": "1", "long_name": f"{b} surface reflectance",
                            "nodata": "NaN"}
    return out


def _resolve_site(site: str | tuple[float, float] | Any) -> tuple[str | None, float, float]:
    if isinstance(site, str):
        from gpp_cubes.sites.catalog import get_site

        s = get_site(site)
        return s.id, float(s.latitude), float(s.longitude)
    if hasattr(site, "latitude") and hasattr(site, "longitude"):
        return getattr(site, "id", None), float(site.latitude), float(site.longitude)
    try:
        lat, lon = site
        return None, float(lat), float(lon)
    except (TypeError, ValueError) as err:
        raise SiteError(f"expected a site id, a Site or (lat, lon), got {site!r}") from err


def s2_cube(
    site_or_latlon: str | tuple[float, float] | Any,
    start: str,
    end: str,
    *,
    provider: str | None = "planetary-computer",
    stac_url: str | None = None,
    cloud_mask: Literal["scl", "s2cloudless", "cloudsen12"] = "scl",
    cloud_model: Any = None,
    engine: Literal["odc", "stackstac"] = "odc",
    corine: str | Path | xr.DataArray | None = None,
    nbar: bool = True,
    snow: bool = True,
    max_cloud: float | None = None,
    radius_m: float = 1000.0,
    bands: Sequence[str] = S2_BANDS,
    chunks: dict[str, int] | None = None,
    cache_dir: str | Path | None = None,
    max_failed_fraction: float = 0.2,
    items: Sequence[Any] | None = None,
    grid: SiteGrid | None = None,
    max_sun_zenith: float = MAX_SUN_ZENITH,
    c_factor_range: tuple[float, float] = C_FACTOR_RANGE,
) -> xr.Dataset:
    """Lazy per-pixel Sentinel-2 L2A cube around a tower, with masks as variables.

    Parameters
    ----------
    site_or_latlon : str, Site or (float, float)
        Catalog site id (``"DE-Hai"``), a :class:`gpp_cubes.sites.catalog.Site`, or (latitude,
        longitude) [degrees, WGS84] of any point.
    start, end : str
        First and last day (ISO dates), inclusive.
    provider, stac_url : str
        STAC source (:func:`gpp_cubes.stac.providers.resolve_provider`): Planetary Computer
        (default), Earth Search, or any STAC API URL.
    cloud_mask : {"scl", "s2cloudless", "cloudsen12"}, default "scl"
        Cloud/shadow method, see :mod:`gpp_cubes.s2.cloud` for costs and choice.
    cloud_model : path or callable, optional
        Local CloudSEN12-family weights or predictor (``cloud_mask="cloudsen12"``).
    engine : {"odc", "stackstac"}, default "odc"
        Loader.
    corine : str, Path or DataArray, optional
        CORINE 2018 raster (path/URL) or CLC codes on the grid for the forest mask. Without
        it every pixel counts as forest (``attrs["forest_mask"] = "none"``).
    nbar : bool, default True
        Apply c-factor NBAR to B02-B08, B11, B12.
    snow : bool, default True
        Mask snow with the Fmask test (:mod:`gpp_cubes.s2.snow`).
    max_cloud : float, optional
        Scene cloud-cover pre-filter [%].
    radius_m : float, default 1000
        Radius of the analysis circle [m].
    bands : sequence of str
        Reflectance bands to load.
    chunks : dict, optional
        Dask chunks (default one time step per chunk).
    cache_dir : path, optional
        Granule-metadata cache (:func:`gpp_cubes.s2.nbar.default_cache_dir`).
    max_failed_fraction : float, default 0.2
        Fail when more than this fraction of scenes could not be used.
    items : sequence of pystac.Item, optional
        Use these items instead of searching.
    grid : SiteGrid, optional
        Override the site grid.
    max_sun_zenith : float, default :data:`gpp_cubes.s2.nbar.MAX_SUN_ZENITH` (80)
        Scenes whose sun zenith at the tower exceeds this [degrees] are excluded: the
        c-factor kernels diverge beyond ~80 deg; ESA advises against quantitative use of
        L2A above 70 deg (the stricter choice).
    c_factor_range : (float, float), default :data:`gpp_cubes.s2.nbar.C_FACTOR_RANGE`
        Scenes with a c-factor outside this range anywhere on the grid are excluded [1].

    Returns
    -------
    xarray.Dataset
        (time, y, x): reflectance or NBAR bands [1] (float32, NaN = nodata), ``SCL``, and
        bool masks ``cloud``, ``shadow``, ``snow``, ``valid`` (every band, after NBAR, has
        a value), ``clear`` (valid, not cloud/shadow/snow, forest, in circle); (y, x):
        ``forest``, ``buffer``. Attrs: ``site_id``, ``stac_items``/``dropped_items``
        (read failures)/``excluded_items`` (scenes excluded by a rule: duplicate, sun
        zenith, c-factor, no coverage; JSON), ``cloud_mask``, ``nbar``, ``forest_mask``,
        ``radius_m``.

    Raises
    ------
    EmptySearchError, BuildError, SiteError
    """
    prep = _prepare(site_or_latlon, start, end, provider=provider, stac_url=stac_url,
                    nbar=nbar, max_cloud=max_cloud, radius_m=radius_m, cache_dir=cache_dir,
                    max_failed_fraction=max_failed_fraction, items=items, grid=grid,
                    max_sun_zenith=max_sun_zenith, c_factor_range=c_factor_range)
    raw = _load(prep, bands, engine, chunks, precheck=True,
                max_failed_fraction=max_failed_fraction)
    c = None
    if nbar:
        from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_cube

        brdf = [b for b in BRDF_BANDS if b in bands]
        tchunks = raw[bands[0]].chunks[0] if raw[bands[0]].chunks else None
        c = c_factor_cube(_mtd_paths(raw, prep), prep.grid, brdf, time_chunks=tchunks,
                          keys=_first_items(raw), cache_dir=cache_dir)
    forest, forest_src = _forest(prep, corine)
    return _assemble(raw, prep, bands, c, forest, forest_src, cloud_mask=cloud_mask,
                     cloud_model=cloud_model, snow=snow, nbar=nbar, radius_m=radius_m,
                     engine=engine, max_failed_fraction=max_failed_fraction)


@dataclass(frozen=True)
class _Prepared:
    """What the cube of a site needs before loading pixels (search, granule metadata)."""

    site_id: str | None
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


def _prepare(site_or_latlon: Any, start: str, end: str, *, provider: str | None,
             stac_url: str | None, nbar: bool, max_cloud: float | None, radius_m: float,
             cache_dir: str | Path | None, max_failed_fraction: float,
             items: Sequence[Any] | None, grid: SiteGrid | None,
             max_sun_zenith: float = MAX_SUN_ZENITH,
             c_factor_range: tuple[float, float] = C_FACTOR_RANGE) -> _Prepared:
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.providers import resign_expired, resolve_provider
    from gpp_cubes.stac.search import _public_url, search_items

    site_id, lat, lon = _resolve_site(site_or_latlon)
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
        from gpp_cubes.s2.nbar import fetch_granule_metadata

        mtd, dropped = fetch_granule_metadata(items, cache_dir)
        for iid, why in dropped.items():
            log.warning("site %s: dropping STAC item %s: %s", site_id, iid, why)
        items = [it for it in items if it.id not in dropped]
    if n_all and len(dropped) / n_all > max_failed_fraction:
        raise BuildError(f"site {site_id!r}: {len(dropped)} of {n_all} scenes without "
                         f"granule metadata; first: {next(iter(dropped.values()))}")
    excluded.update(_screen_scenes(items, mtd, grid, nbar=nbar, max_sun_zenith=max_sun_zenith,
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
    return _Prepared(site_id, lat, lon, grid, _public_url(prov.url), items, n_all, dropped,
                     mtd, prov.sign, excluded, rules)


def _sun_zenith(item: Any, mtd: Path | None, grid: SiteGrid) -> float | None:
    """Sun zenith at the tower [degrees]: from the granule's sun-angle grid, else from the
    item's scene mean (``s2:mean_solar_zenith`` or ``view:sun_elevation``), else None."""
    if mtd is not None:
        from gpp_cubes.s2.nbar import sun_zenith_at

        return sun_zenith_at(mtd, grid.tower_x, grid.tower_y, grid.epsg)
    props = item.properties
    if props.get("s2:mean_solar_zenith") is not None:
        return float(props["s2:mean_solar_zenith"])
    if props.get("view:sun_elevation") is not None:
        return 90.0 - float(props["view:sun_elevation"])
    return None


def _screen_scenes(items: Sequence[Any], mtd: dict[str, Path], grid: SiteGrid, *, nbar: bool,
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
        from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_block_cached, c_factor_problem

        todo = [it for it in items if it.id not in out]
        for s in range(0, len(todo), block):
            part = todo[s:s + block]
            c = c_factor_block_cached([mtd[it.id] for it in part], [it.id for it in part],
                                      grid, BRDF_BANDS, cache_dir)
            for it, ci in zip(part, c, strict=True):
                why = c_factor_problem(ci, BRDF_BANDS, c_factor_range)
                if why is not None:
                    out[it.id] = why
    return out


def _load(prep: _Prepared, bands: Sequence[str], engine: str,
          chunks: dict[str, int] | None, *, precheck: bool | str,
          max_failed_fraction: float, items: Sequence[Any] | None = None) -> xr.Dataset:
    from functools import partial

    from gpp_cubes.stac.load import load_items
    from gpp_cubes.stac.providers import resign_expired

    # Re-sign just before reading: a 5-year build outlives Planetary Computer's tokens.
    sign = partial(resign_expired, sign=prep.sign) if prep.sign is not None else None
    return load_items(prep.items if items is None else items, [*bands, "SCL"], prep.grid,
                      engine=engine, chunks=chunks,  # type: ignore[arg-type]
                      properties=["s2:processing_baseline"], site_id=prep.site_id,
                      precheck=precheck,  # type: ignore[arg-type]
                      max_failed_fraction=max_failed_fraction, sign=sign)


def _first_items(raw: xr.Dataset) -> list[str]:
    """The first item id of every time step: a mosaicked step takes its c-factor from it."""
    return [str(s).split(" ")[0] for s in raw["items"].values]


def _mtd_paths(raw: xr.Dataset, prep: _Prepared) -> list[Path]:
    return [prep.mtd[iid] for iid in _first_items(raw)]


def _forest(prep: _Prepared, corine: Any) -> tuple[xr.DataArray, str]:
    import xarray as xr

    grid = prep.grid
    if corine is not None:
        from gpp_cubes.sites.forest import forest_mask

        return forest_mask(grid, corine, site_id=prep.site_id), "CORINE 2018 (311, 312, 313)"
    return xr.DataArray(np.ones(grid.shape, bool), dims=("y", "x"),
                        coords={"y": grid.y, "x": grid.x}, name="forest"), "none"


def _assemble(raw: xr.Dataset, prep: _Prepared, bands: Sequence[str], c: xr.DataArray | None,
              forest: xr.DataArray, forest_src: str, *, cloud_mask: str, cloud_model: Any,
              snow: bool, nbar: bool, radius_m: float, engine: str,
              max_failed_fraction: float, extra_dropped: dict[str, str] | None = None
              ) -> xr.Dataset:
    """Reflectance, masks, NBAR and circle on loaded DN (lazy or in memory alike)."""
    import xarray as xr

    from gpp_cubes.reduce import radial_mask
    from gpp_cubes.s2.cloud import SCL_INVALID, cloud_masks
    from gpp_cubes.s2.nbar import apply_c_factor
    from gpp_cubes.stac.load import LoadReport

    site_id, grid, n_all = prep.site_id, prep.grid, prep.n_all
    rep = LoadReport(json.loads(raw.attrs["stac_items"]),
                     {**prep.dropped, **json.loads(raw.attrs["dropped_items"]),
                      **(extra_dropped or {})})
    if n_all and len(rep.dropped) / n_all > max_failed_fraction:
        raise BuildError(f"site {site_id!r}: {len(rep.dropped)} of {n_all} scenes failed")

    ds = to_reflectance(raw, bands)
    scl = raw["SCL"]
    cloud, shadow = cloud_masks(cloud_mask, ds[list(bands)], scl, cloud_model)
    if snow:
        from gpp_cubes.s2.snow import fmask_snow

        snow_m = fmask_snow(ds["B03"], ds["B08"], ds["B11"])
    else:
        snow_m = xr.zeros_like(scl, dtype=bool)
    if c is not None:
        ds = apply_c_factor(ds, c)
    # Valid after NBAR: a pixel counts only where every band has a value, so each band's
    # mean is over the same pixels as n_clear (band-dependent swath edges, c-factor gaps).
    valid = ~scl.isin(list(SCL_INVALID))
    for b in bands:
        valid = valid & ds[b].notnull()
    forest = forest.assign_coords(y=ds.y, x=ds.x)
    buffer = radial_mask(grid, radius_m).assign_coords(y=ds.y, x=ds.x)
    clear = valid & ~cloud & ~shadow & ~snow_m & forest & buffer
    out = ds[list(bands)].assign(
        SCL=scl.astype(np.uint8), cloud=cloud.astype(bool), shadow=shadow.astype(bool),
        snow=snow_m.astype(bool), valid=valid, forest=forest, buffer=buffer, clear=clear)
    out.attrs = _attrs(prep, rep, cloud_mask=cloud_mask, snow=snow, nbar=nbar,
                       forest_src=forest_src, radius_m=radius_m, engine=engine)
    return out


def _attrs(prep: _Prepared, rep: Any, *, cloud_mask: str, snow: bool, nbar: bool,
           forest_src: str, radius_m: float, engine: str,
           excluded: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "site_id": prep.site_id or "", "latitude": prep.lat, "longitude": prep.lon,
        "crs": f"EPSG:{prep.grid.epsg}", **rep.to_attrs(), "n_items_found": prep.n_all,
        "excluded_items": json.dumps({**prep.excluded, **(excluded or {})}), **prep.rules,
        "cloud_mask": cloud_mask, "snow_mask": "Fmask v3.2 spectral test" if snow else "none",
        "nbar": "c-factor, sen2nbar (Roy et al. 2017)" if nbar else "none",
        "forest_mask": forest_src, "radius_m": radius_m, "engine": engine,
        "stac_endpoint": prep.endpoint, "collection": COLLECTION,
    }


def reduce_cube(cube: xr.Dataset, bands: Sequence[str] = S2_BANDS, *, block: int = 16,
                min_fraction: float = 0.01
                ) -> tuple[xr.Dataset, dict[str, str], dict[str, str]]:
    """Mean reflectance over the clear pixels, computed a block of time steps at a time.

    A pixel counts where ``clear`` is True and every band has a value (``clear`` of
    :func:`s2_cube` already requires that; a cube edited by hand may not), so every band's
    mean divides its sum by the number of pixels summed, ``n_clear``.

    Parameters
    ----------
    cube : xarray.Dataset
        Output of :func:`s2_cube`.
    bands : sequence of str
        Bands to average.
    block : int, default 16
        Time steps computed together (bounds memory: ~block x bands x pixels x 4 bytes).
    min_fraction : float, default 0.01
        Drop time steps with fewer clear pixels than this fraction of the forest pixels in
        the circle (the paper's 1 % rule).

    Returns
    -------
    (means, failed, excluded) : (xarray.Dataset, dict, dict)
        ``means``: (time) mean of each band [1] plus ``clear_fraction`` [1] (clear forest
        pixels in the circle over all forest pixels in the circle) and ``n_clear``
        (their number), for the kept time steps; ``failed``: item ids -> reason for time
        steps whose pixels could not be read (the block is retried step by step; only the
        failing steps are dropped); ``excluded``: item ids -> ``"clear_fraction: ..."``
        for the time steps below ``min_fraction``.
    """
    import dask
    import xarray as xr

    region = cube["forest"] & cube["buffer"]
    n_region = int(region.sum())
    if n_region == 0:
        raise BuildError(f"site {cube.attrs.get('site_id')!r}: no forest pixel within "
                         f"{cube.attrs.get('radius_m')} m of the tower")

    def graph(sub: xr.Dataset) -> list[Any]:
        clear = sub["clear"]
        for b in bands:
            clear = clear & sub[b].notnull()
        n = clear.sum(("y", "x"))
        sums = [sub[b].where(clear).sum(("y", "x")) for b in bands]
        return [n, *sums]

    rows: list[np.ndarray] = []
    keep_t: list[int] = []
    failed: dict[str, str] = {}
    nt = cube.sizes["time"]
    for s in range(0, nt, block):
        idx = list(range(s, min(s + block, nt)))
        try:
            vals = dask.compute(*graph(cube.isel(time=idx)))
            rows.append(np.stack([np.asarray(v, dtype=np.float64) for v in vals], axis=1))
            keep_t.extend(idx)
        except Exception:  # find the failing scenes one by one
            for t in idx:
                try:
                    vals = dask.compute(*graph(cube.isel(time=[t])))
                except Exception as err:
                    ids = str(cube["items"].values[t])
                    for iid in ids.split(" "):
                        failed[iid] = f"read failed: {type(err).__name__}: {str(err)[:200]}"
                    log.warning("site %s: dropping time step %s (%s): %s",
                                cube.attrs.get("site_id"), str(cube.time.values[t])[:10],
                                ids, err)
                    continue
                rows.append(np.stack([np.asarray(v, dtype=np.float64) for v in vals], axis=1))
                keep_t.append(t)
    table = np.concatenate(rows) if rows else np.zeros((0, 1 + len(bands)))
    n_clear = table[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = table[:, 1:] / n_clear[:, None]  # NaN, never 0, where nothing is clear
    frac = n_clear / n_region
    times = cube.time.values[keep_t]
    ids = cube["items"].values[keep_t]
    ok = frac >= min_fraction
    excluded = {iid: (f"clear_fraction: {f:.1%} clear forest pixels in the circle < "
                      f"{min_fraction:.0%}")
                for f, group in zip(frac[~ok], ids[~ok], strict=True)
                for iid in str(group).split(" ")}
    out = xr.Dataset(
        {b: ("time", means[ok, i].astype(np.float32),
             {"units": "1", "long_name": f"mean {b} over clear forest pixels"})
         for i, b in enumerate(bands)},
        coords={"time": times[ok], "items": ("time", ids[ok])})
    out["clear_fraction"] = ("time", frac[ok].astype(np.float32),
                             {"units": "1", "long_name": "clear forest fraction in circle"})
    out["n_clear"] = ("time", n_clear[ok].astype(np.int32),
                      {"units": "1", "long_name": "clear forest pixels in circle"})
    return out, failed, excluded


def _stream_means(site_or_latlon: Any, start: str, end: str, *, block: int,
                  min_fraction: float, read_threads: int, max_failed_fraction: float,
                  blocks_in_flight: int,
                  provider: str | None = "planetary-computer", stac_url: str | None = None,
                  cloud_mask: str = "scl", cloud_model: Any = None, engine: str = "odc",
                  corine: Any = None, nbar: bool = True, snow: bool = True,
                  max_cloud: float | None = None, radius_m: float = 1000.0,
                  bands: Sequence[str] = S2_BANDS, chunks: dict[str, int] | None = None,
                  cache_dir: str | Path | None = None, items: Sequence[Any] | None = None,
                  grid: SiteGrid | None = None, max_sun_zenith: float = MAX_SUN_ZENITH,
                  c_factor_range: tuple[float, float] = C_FACTOR_RANGE
                  ) -> tuple[xr.Dataset, dict[str, Any]]:
    """Mean reflectance per kept time step, streaming blocks of time steps (s2_features)."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import xarray as xr

    from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_block_cached
    from gpp_cubes.stac.load import LoadReport, _grid_lon, _group

    bands = list(bands)
    prep = _prepare(site_or_latlon, start, end, provider=provider, stac_url=stac_url,
                    nbar=nbar, max_cloud=max_cloud, radius_m=radius_m, cache_dir=cache_dir,
                    max_failed_fraction=max_failed_fraction, items=items, grid=grid,
                    max_sun_zenith=max_sun_zenith, c_factor_range=c_factor_range)
    forest, forest_src = _forest(prep, corine)
    brdf = [b for b in BRDF_BANDS if b in bands]
    groups = _group(prep.items, _grid_lon(prep.grid)) if prep.items else []
    blocks = [groups[i:i + block] for i in range(0, len(groups), block)]
    # One odc-stac task per band and block (reads its time steps in turn): fewer, larger
    # tasks measured faster than 4-step chunks with more threads (less GIL contention).
    sub = max(1, block)
    kw = dict(cloud_mask=cloud_mask, cloud_model=cloud_model, snow=snow, nbar=nbar,
              radius_m=radius_m, engine=engine, max_failed_fraction=1.0)

    def one(gs: list[list[Any]]) -> _BlockResult:
        its = [it for g in gs for it in g]
        raw = _load(prep, bands, engine, {"time": sub, **(chunks or {})}, precheck="assets",
                    max_failed_fraction=1.0, items=its)
        with dask.config.set(scheduler="threads", num_workers=read_threads):
            raw = raw.compute()
        c = None
        if nbar:
            vals = c_factor_block_cached(_mtd_paths(raw, prep), _first_items(raw), prep.grid,
                                         brdf, cache_dir)
            c = xr.DataArray(vals, dims=("time", "band", "y", "x"),
                             coords={"band": brdf, "y": prep.grid.y, "x": prep.grid.x})
        cube = _assemble(raw, prep, bands, c, forest, forest_src, **kw)
        means, _, excluded = reduce_cube(cube, bands, block=len(gs), min_fraction=min_fraction)
        return _BlockResult(means, json.loads(raw.attrs["dropped_items"]), excluded)

    def failure(gs: list[list[Any]], err: Exception) -> _BlockResult:
        why = f"read failed: {type(err).__name__}: {str(err)[:200]}"
        log.warning("site %s: dropping time step of %s: %s", prep.site_id,
                    " ".join(it.id for g in gs for it in g), why)
        return _BlockResult(None, {it.id: why for g in gs for it in g}, {})

    def run(gs: list[list[Any]]) -> list[_BlockResult]:
        try:
            return [one(gs)]
        except BuildError:
            raise
        except Exception as err:  # find the failing time steps one by one
            if len(gs) == 1:
                return [failure(gs, err)]
            res: list[_BlockResult] = []
            for g in gs:
                try:
                    res.append(one([g]))
                except BuildError:
                    raise
                except Exception as err_g:
                    res.append(failure([g], err_g))
            return res

    parts: list[xr.Dataset] = []
    dropped: dict[str, str] = {}
    excluded: dict[str, str] = {}
    # With two blocks in flight the reads of one overlap the CPU work of the other; memory
    # stays bounded by the blocks in flight whatever the number of years.
    with ThreadPoolExecutor(max_workers=max(1, blocks_in_flight)) as pool:
        for res in pool.map(run, blocks):
            for r in res:
                if r.means is not None:
                    parts.append(r.means)
                dropped.update(r.dropped)
                excluded.update(r.excluded)
    if not parts:
        raise BuildError(f"site {prep.site_id!r}: no readable Sentinel-2 time step")
    means = xr.concat(parts, dim="time") if len(parts) > 1 else parts[0]
    rep = LoadReport(used_item_ids(means), {**prep.dropped, **dropped})
    return means, _attrs(prep, rep, cloud_mask=cloud_mask, snow=snow, nbar=nbar,
                         forest_src=forest_src, radius_m=radius_m, engine=engine,
                         excluded=excluded)


@dataclass(frozen=True)
class _BlockResult:
    """What one streamed block gives: means of its kept time steps, read failures and
    exclusions (item id -> reason)."""

    means: xr.Dataset | None
    dropped: dict[str, str]
    excluded: dict[str, str]


def used_item_ids(means: xr.Dataset) -> list[str]:
    """Ids of the items behind the kept time steps (``items`` holds them space-joined)."""
    return [iid for group in means["items"].values for iid in str(group).split(" ")]


def s2_features(
    site_or_latlon: str | tuple[float, float] | Any,
    start: str,
    end: str,
    *,
    index_list: str | Path | Sequence[str] | None = None,
    min_fraction: float = 0.01,
    block: int = 16,
    max_failed_fraction: float = 0.2,
    stream: bool = True,
    read_threads: int = 4,
    blocks_in_flight: int = 2,
    **cube_kwargs: Any,
) -> xr.Dataset:
    """Per-site Sentinel-2 features: mean NBAR over clear forest pixels and spectral indices.

    Parameters
    ----------
    site_or_latlon, start, end
        As :func:`s2_cube`.
    index_list : path, sequence of str or None
        Spectral indices (default: ``gpp_cubes/data/s2_indices.txt``).
    min_fraction : float, default 0.01
        Minimum clear forest fraction in the circle for a time step to be kept [1].
    block : int, default 16
        Time steps loaded and reduced together (memory: ~block x 13 bands x pixels x 6
        bytes per block in flight, independent of the number of years).
    max_failed_fraction : float, default 0.2
        Fail the site when more than this fraction of its scenes failed.
    stream : bool, default True
        Fast path: load a block of time steps at a time (reads of the next block overlap
        the masks, NBAR and means of the current one), with one batched c-factor call per
        block; a block that fails to read is retried time step by time step and only the
        failing steps are dropped. False: reduce the lazy :func:`s2_cube` (same values).
    read_threads : int, default 4
        Threads reading COGs in the fast path, per block.
    blocks_in_flight : int, default 2
        Blocks processed at once in the fast path: with 2, the reads of one block overlap
        the CPU work of another, so a site uses up to ~1.3 cores. Batch builds pass the
        number of threads of their Dask worker (1 by default), so that each worker keeps to
        its core and workers side by side do not compete (gpp_cubes.batch).
    **cube_kwargs
        Passed to :func:`s2_cube` (provider, stac_url, cloud_mask, engine, corine, ...).

    Returns
    -------
    xarray.Dataset
        (time): band means ``B01``..``B12`` [1] (NBAR for the BRDF bands), ``clear_fraction``,
        ``n_clear``, one float32 variable per index [1]. Attrs: ``spyndex_version``,
        ``index_list``, ``provenance`` (JSON: items used/dropped, masks, parameters).
    """
    import xarray as xr

    from gpp_cubes.cube.store import provenance_base
    from gpp_cubes.s2.indices import compute_indices

    if stream:
        means, attrs = _stream_means(site_or_latlon, start, end, block=block,
                                     min_fraction=min_fraction, read_threads=read_threads,
                                     blocks_in_flight=blocks_in_flight,
                                     max_failed_fraction=max_failed_fraction, **cube_kwargs)
        failed: dict[str, str] = {}
        cloudy: dict[str, str] = {}
    else:
        cube = s2_cube(site_or_latlon, start, end, max_failed_fraction=max_failed_fraction,
                       **cube_kwargs)
        b_ = [b for b in S2_BANDS if b in cube]
        means, failed, cloudy = reduce_cube(cube, b_, block=block, min_fraction=min_fraction)
        attrs = cube.attrs
    bands = [b for b in S2_BANDS if b in means]
    dropped = {**json.loads(attrs["dropped_items"]), **failed}
    excluded = {**json.loads(attrs["excluded_items"]), **cloudy}
    n_all = int(attrs["n_items_found"])
    if n_all and len(dropped) / n_all > max_failed_fraction:
        raise BuildError(f"site {attrs['site_id']!r}: {len(dropped)} of {n_all} scenes "
                         f"failed; first: {next(iter(dropped.items()))}")
    idx = compute_indices(means[bands], index_list)
    out = xr.merge([means, idx], compat="override")
    params = {k: v for k, v in attrs.items()
              if k not in ("stac_items", "dropped_items", "excluded_items")}
    # found = used + dropped (read failures) + excluded (by a rule), each item once
    prov = {**provenance_base(), "stage": "s2_features", "start": start, "end": end,
            "stac_items": used_item_ids(means), "dropped_items": dropped,
            "excluded_items": excluded, "min_clear_fraction": min_fraction,
            "spyndex_version": idx.attrs["spyndex_version"],
            "index_list": idx.attrs["index_list"].split(","), **params}
    out.attrs = {"site_id": attrs["site_id"], "spyndex_version":
                 idx.attrs["spyndex_version"], "index_list": idx.attrs["index_list"],
                 "provenance": json.dumps(prov, default=str)}
    return out
