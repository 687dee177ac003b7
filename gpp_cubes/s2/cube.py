"""The lazy per-pixel Sentinel-2 cube of a site, with its masks as variables.

:func:`s2_cube` chains the stages: scene selection (:mod:`gpp_cubes.s2.scenes`) -> load
(:mod:`gpp_cubes.stac.load`) -> reflectance (:mod:`gpp_cubes.s2.reflectance`) -> cloud/shadow
and snow masks -> c-factor NBAR -> forest mask and the circle around the tower, and returns a
Dask-backed ``xarray.Dataset``. :func:`assemble` does the per-pixel stages on loaded digital
numbers, lazy or in memory alike, so the streamed features (:mod:`gpp_cubes.s2.stream`) go
through exactly the same code. A pixel is valid only where every band has a value after
NBAR, so every band mean later divides by the same pixel count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gpp_cubes.paper import RADIUS_M
from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH
from gpp_cubes.s2.reflectance import COLLECTION, S2_BANDS, to_reflectance
from gpp_cubes.s2.scenes import PreparedSite, prepare_site
from gpp_cubes.stac.failures import MAX_FAILED_FRACTION, check_failed_fraction

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid


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
    radius_m: float = RADIUS_M,
    bands: Sequence[str] = S2_BANDS,
    chunks: dict[str, int] | None = None,
    cache_dir: str | Path | None = None,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    items: Sequence[Any] | None = None,
    grid: SiteGrid | None = None,
    max_sun_zenith: float = MAX_SUN_ZENITH,
    c_factor_range: tuple[float, float] = C_FACTOR_RANGE,
) -> xr.Dataset:
    """Lazy per-pixel Sentinel-2 L2A cube around a tower, with masks as variables.

    Parameters
    ----------
    site_or_latlon : str, Site or (float, float)
        Anything :func:`gpp_cubes.sites.catalog.as_site` accepts: a catalog site id
        (``"DE-Hai"``), a :class:`~gpp_cubes.sites.catalog.Site`, or (latitude, longitude)
        [degrees, WGS84] of any point (an ad hoc site ``"XX-Pnt"``).
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
    radius_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Radius of the analysis circle [m].
    bands : sequence of str
        Reflectance bands to load.
    chunks : dict, optional
        Dask chunks (default one time step per chunk).
    cache_dir : path, optional
        Granule-metadata cache (:func:`gpp_cubes.s2.granule.default_cache_dir`).
    max_failed_fraction : float, default 0.2
        Fail when more than this fraction of scenes could not be read
        (:func:`gpp_cubes.stac.failures.check_failed_fraction`).
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
        ``forest``, ``buffer``; masks carry CF ``flag_values``/``flag_meanings``
        (:data:`MASK_MEANINGS`); the scalar coordinate ``spatial_ref`` holds the CRS of the
        site grid (:func:`with_crs`: ``cube.odc.geobox``, ``cube.rio.crs``). Attrs:
        ``site_id``, ``stac_items``/``dropped_items``
        (read failures)/``excluded_items`` (scenes excluded by a rule: duplicate, sun
        zenith, c-factor, no coverage; JSON), ``cloud_mask``, ``nbar``, ``forest_mask``,
        ``radius_m``.

    Raises
    ------
    EmptySearchError, BuildError, SiteError
    """
    prep = prepare_site(site_or_latlon, start, end, provider=provider, stac_url=stac_url,
                        nbar=nbar, max_cloud=max_cloud, radius_m=radius_m,
                        cache_dir=cache_dir, max_failed_fraction=max_failed_fraction,
                        items=items, grid=grid, max_sun_zenith=max_sun_zenith,
                        c_factor_range=c_factor_range)
    raw = load_raw(prep, bands, engine, chunks, precheck=True,
                   max_failed_fraction=max_failed_fraction)
    c = None
    if nbar:
        from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_cube

        brdf = [b for b in BRDF_BANDS if b in bands]
        tchunks = raw[bands[0]].chunks[0] if raw[bands[0]].chunks else None
        c = c_factor_cube(mtd_paths(raw, prep), prep.grid, brdf, time_chunks=tchunks,
                          keys=first_items(raw), cache_dir=cache_dir)
    forest, forest_src = site_forest(prep, corine)
    return assemble(raw, prep, bands, c, forest, forest_src, cloud_mask=cloud_mask,
                    cloud_model=cloud_model, snow=snow, nbar=nbar, radius_m=radius_m,
                    engine=engine, max_failed_fraction=max_failed_fraction)


def load_raw(prep: PreparedSite, bands: Sequence[str], engine: str,
             chunks: dict[str, int] | None, *, precheck: bool | str,
             max_failed_fraction: float, items: Sequence[Any] | None = None) -> xr.Dataset:
    """The DN bands and SCL of the prepared items (or of ``items``), loaded lazily."""
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


def first_items(raw: xr.Dataset) -> list[str]:
    """The first item id of every time step: a mosaicked step takes its c-factor from it."""
    return [str(s).split(" ")[0] for s in raw["items"].values]


def mtd_paths(raw: xr.Dataset, prep: PreparedSite) -> list[Path]:
    """The granule metadata of every time step (of its first item)."""
    return [prep.mtd[iid] for iid in first_items(raw)]


def site_forest(prep: PreparedSite, corine: Any) -> tuple[xr.DataArray, str]:
    """The CORINE forest mask on the site grid and its source; all forest without CORINE."""
    import xarray as xr

    grid = prep.grid
    if corine is not None:
        from gpp_cubes.sites.forest import forest_mask

        return forest_mask(grid, corine, site_id=prep.site_id), "CORINE 2018 (311, 312, 313)"
    return xr.DataArray(np.ones(grid.shape, bool), dims=("y", "x"),
                        coords={"y": grid.y, "x": grid.x}, name="forest"), "none"


def assemble(raw: xr.Dataset, prep: PreparedSite, bands: Sequence[str],
             c: xr.DataArray | None, forest: xr.DataArray, forest_src: str, *,
             cloud_mask: str, cloud_model: Any, snow: bool, nbar: bool, radius_m: float,
             engine: str, max_failed_fraction: float) -> xr.Dataset:
    """Reflectance, masks, NBAR and circle on loaded DN (lazy or in memory alike)."""
    import xarray as xr

    from gpp_cubes.reduce import radial_mask
    from gpp_cubes.s2.cloud import SCL_INVALID, cloud_masks
    from gpp_cubes.s2.nbar import apply_c_factor
    from gpp_cubes.stac.load import LoadReport

    grid = prep.grid
    rep = LoadReport(json.loads(raw.attrs["stac_items"]),
                     {**prep.dropped, **json.loads(raw.attrs["dropped_items"])})
    check_failed_fraction(rep.dropped, prep.n_all, max_failed_fraction, prep.where)

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
    for name, meaning in MASK_MEANINGS.items():
        out[name].attrs.setdefault("long_name", meaning.replace("_", " "))
        out[name].attrs.update({"flag_values": np.array([0, 1], dtype=np.int8),
                                "flag_meanings": f"not_{meaning} {meaning}"})
    out.attrs = cube_attrs(prep, rep, cloud_mask=cloud_mask, snow=snow, nbar=nbar,
                           forest_src=forest_src, radius_m=radius_m, engine=engine)
    return with_crs(out, grid.epsg)


#: The bool masks of a cube and what True means (CF ``flag_meanings`` "not_<m> <m>").
MASK_MEANINGS: dict[str, str] = {
    "cloud": "cloud", "shadow": "cloud_shadow", "snow": "snow",
    "valid": "valid_in_every_band", "forest": "forest", "buffer": "inside_analysis_circle",
    "clear": "clear_forest_pixel_in_circle",
}


def with_crs(ds: xr.Dataset, epsg: int) -> xr.Dataset:
    """``ds`` with its CRS as a CF grid-mapping coordinate ``spatial_ref``.

    The loaders drop odc-stac's ``spatial_ref`` (stackstac has none); this writes it back
    with odc-geo, in the layout rioxarray and GDAL also read: a scalar coordinate
    ``spatial_ref`` carrying ``crs_wkt``, ``spatial_ref`` and the CF ``grid_mapping_name``
    parameters, and ``grid_mapping = "spatial_ref"`` in the encoding of every (y, x)
    variable. ``ds.odc.geobox`` and ``ds.rio.crs`` then work, and the CRS survives
    ``to_zarr`` / ``to_netcdf`` (reopen with ``decode_coords="all"``, as rioxarray
    advises, for ``rio.crs``; ``odc.geobox`` finds it either way).

    Parameters
    ----------
    ds : xarray.Dataset
        A cube with ``y``/``x`` coordinates [m] in the projection ``epsg``.
    epsg : int
        EPSG code of the site grid (its UTM zone).

    Returns
    -------
    xarray.Dataset
    """
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

    return ds.odc.assign_crs(f"EPSG:{int(epsg)}")


def cube_attrs(prep: PreparedSite, rep: Any, *, cloud_mask: str, snow: bool, nbar: bool,
               forest_src: str, radius_m: float, engine: str,
               excluded: dict[str, str] | None = None) -> dict[str, Any]:
    """The attributes of a cube (and of the streamed means): site, items, masks, rules."""
    return {
        "site_id": prep.site_id, "latitude": prep.lat, "longitude": prep.lon,
        "crs": f"EPSG:{prep.grid.epsg}", **rep.to_attrs(), "n_items_found": prep.n_all,
        "excluded_items": json.dumps({**prep.excluded, **(excluded or {})}), **prep.rules,
        "cloud_mask": cloud_mask, "snow_mask": "Fmask v3.2 spectral test" if snow else "none",
        "nbar": "c-factor, sen2nbar (Roy et al. 2017)" if nbar else "none",
        "forest_mask": forest_src, "radius_m": radius_m, "engine": engine,
        "stac_endpoint": prep.endpoint, "collection": COLLECTION,
    }
