"""The Sentinel-2 cube builder: per-pixel cube with masks, and the per-site daily features.

:func:`s2_cube` chains the stages lazily (search -> load -> reflectance -> cloud/shadow and
snow masks -> c-factor NBAR -> forest mask and 1 km circle) and returns a Dask-backed
``xarray.Dataset`` ready to plot. :func:`s2_features` reduces it, a few time steps at a time
(never the whole cube in memory), to the mean NBAR over the clear forest pixels of the 1 km
circle, drops time steps with < 1 % such pixels, and computes the spectral indices of the
averaged NBAR (paper section 2.1, "Sentinel-2").

Reflectance: ``(DN + offset) / 10000`` with ``offset = -1000`` for processing baseline
>= 04.00 (scenes from 25 January 2022 on) and 0 before, from ``s2:processing_baseline``
(Planetary Computer items carry no ``raster:bands`` offsets). DN 0 is nodata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gpp_cubes.errors import BuildError, SiteError

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.grid import SiteGrid

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
        from gpp_cubes.sites import get_site

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
) -> xr.Dataset:
    """Lazy per-pixel Sentinel-2 L2A cube around a tower, with masks as variables.

    Parameters
    ----------
    site_or_latlon : str, Site or (float, float)
        Catalog site id (``"DE-Hai"``), a :class:`gpp_cubes.sites.Site`, or (latitude,
        longitude) [degrees, WGS84] of any point.
    start, end : str
        First and last day (ISO dates), inclusive.
    provider, stac_url : str
        STAC source (:func:`gpp_cubes.providers.resolve_provider`): Planetary Computer
        (default), Earth Search, or any STAC API URL.
    cloud_mask : {"scl", "s2cloudless", "cloudsen12"}, default "scl"
        Cloud/shadow method, see :mod:`gpp_cubes.cloud` for costs and choice.
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
        Mask snow with the Fmask test (:mod:`gpp_cubes.snow`).
    max_cloud : float, optional
        Scene cloud-cover pre-filter [%].
    radius_m : float, default 1000
        Radius of the analysis circle [m].
    bands : sequence of str
        Reflectance bands to load.
    chunks : dict, optional
        Dask chunks (default one time step per chunk).
    cache_dir : path, optional
        Granule-metadata cache (:func:`gpp_cubes.nbar.default_cache_dir`).
    max_failed_fraction : float, default 0.2
        Fail when more than this fraction of scenes could not be used.
    items : sequence of pystac.Item, optional
        Use these items instead of searching.
    grid : SiteGrid, optional
        Override the site grid.

    Returns
    -------
    xarray.Dataset
        (time, y, x): reflectance or NBAR bands [1] (float32, NaN = nodata), ``SCL``, and
        bool masks ``cloud``, ``shadow``, ``snow``, ``valid`` (data present), ``clear``
        (valid, not cloud/shadow/snow, forest, in circle); (y, x): ``forest``, ``buffer``.
        Attrs: ``site_id``, ``stac_items``/``dropped_items`` (JSON), ``cloud_mask``,
        ``nbar``, ``forest_mask``, ``radius_m``.

    Raises
    ------
    EmptySearchError, BuildError, SiteError
    """
    import xarray as xr

    from gpp_cubes.cloud import SCL_INVALID, cloud_masks
    from gpp_cubes.grid import site_grid
    from gpp_cubes.load import LoadReport, load_items
    from gpp_cubes.providers import resolve_provider
    from gpp_cubes.reduce import radial_mask
    from gpp_cubes.search import _public_url, search_items

    site_id, lat, lon = _resolve_site(site_or_latlon)
    grid = grid or site_grid(lat, lon, buffer_m=radius_m)
    prov = resolve_provider(provider, stac_url)
    if items is None:
        items = search_items(COLLECTION, grid, start, end, provider=prov, max_cloud=max_cloud,
                             site_id=site_id, radius_m=radius_m)
    items = list(items)
    n_all = len(items)
    dropped: dict[str, str] = {}
    mtd: dict[str, Path] = {}
    if nbar:
        from gpp_cubes.nbar import fetch_granule_metadata

        mtd, dropped = fetch_granule_metadata(items, cache_dir)
        for iid, why in dropped.items():
            log.warning("site %s: dropping STAC item %s: %s", site_id, iid, why)
        items = [it for it in items if it.id not in dropped]
    if n_all and len(dropped) / n_all > max_failed_fraction:
        raise BuildError(f"site {site_id!r}: {len(dropped)} of {n_all} scenes without "
                         f"granule metadata; first: {next(iter(dropped.values()))}")
    load_bands = [*bands, "SCL"]
    raw = load_items(items, load_bands, grid, engine=engine, chunks=chunks,
                     properties=["s2:processing_baseline"], site_id=site_id,
                     max_failed_fraction=max_failed_fraction)
    rep = LoadReport(json.loads(raw.attrs["stac_items"]),
                     {**dropped, **json.loads(raw.attrs["dropped_items"])})
    if n_all and len(rep.dropped) / n_all > max_failed_fraction:
        raise BuildError(f"site {site_id!r}: {len(rep.dropped)} of {n_all} scenes failed")

    ds = to_reflectance(raw, bands)
    scl = raw["SCL"]
    cloud, shadow = cloud_masks(cloud_mask, ds[list(bands)], scl, cloud_model)
    valid = ~scl.isin(list(SCL_INVALID))
    for b in bands:
        valid = valid & ds[b].notnull()
    if snow:
        from gpp_cubes.snow import fmask_snow

        snow_m = fmask_snow(ds["B03"], ds["B08"], ds["B11"])
    else:
        snow_m = xr.zeros_like(valid)
    if nbar:
        from gpp_cubes.nbar import BRDF_BANDS, apply_c_factor, c_factor_cube

        first = [str(s).split(" ")[0] for s in ds["items"].values]
        brdf = [b for b in BRDF_BANDS if b in bands]
        c = c_factor_cube([mtd[i] for i in first], grid, brdf)
        c = c.chunk({"time": ds[bands[0]].chunks[0] if ds[bands[0]].chunks else 1})
        ds = apply_c_factor(ds, c)
    if corine is not None:
        from gpp_cubes.forest import forest_mask

        forest = forest_mask(grid, corine, site_id=site_id)
        forest_src = "CORINE 2018 (311, 312, 313)"
    else:
        forest = xr.DataArray(np.ones(grid.shape, bool), dims=("y", "x"),
                              coords={"y": grid.y, "x": grid.x}, name="forest")
        forest_src = "none"
    forest = forest.assign_coords(y=ds.y, x=ds.x)
    buffer = radial_mask(grid, radius_m).assign_coords(y=ds.y, x=ds.x)
    clear = valid & ~cloud & ~shadow & ~snow_m & forest & buffer
    out = ds[list(bands)].assign(
        SCL=scl.astype(np.uint8), cloud=cloud.astype(bool), shadow=shadow.astype(bool),
        snow=snow_m.astype(bool), valid=valid, forest=forest, buffer=buffer, clear=clear)
    out.attrs = {
        "site_id": site_id or "", "latitude": lat, "longitude": lon,
        "crs": f"EPSG:{grid.epsg}", **rep.to_attrs(), "n_items_found": n_all,
        "cloud_mask": cloud_mask, "snow_mask": "Fmask v3.2 spectral test" if snow else "none",
        "nbar": "c-factor, sen2nbar (Roy et al. 2017)" if nbar else "none",
        "forest_mask": forest_src, "radius_m": radius_m, "engine": engine,
        "stac_endpoint": _public_url(prov.url), "collection": COLLECTION,
    }
    return out


def reduce_cube(cube: xr.Dataset, bands: Sequence[str] = S2_BANDS, *, block: int = 16,
                min_fraction: float = 0.01) -> tuple[xr.Dataset, dict[str, str]]:
    """Mean reflectance over the clear pixels, computed a block of time steps at a time.

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
    (means, failed) : (xarray.Dataset, dict)
        ``means``: (time) mean of each band [1] plus ``clear_fraction`` [1] and ``n_clear``;
        ``failed``: item ids -> reason for time steps whose pixels could not be read (the
        block is retried step by step; only the failing steps are dropped).
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
        means = table[:, 1:] / n_clear[:, None]
    frac = n_clear / n_region
    times = cube.time.values[keep_t]
    ok = frac >= min_fraction
    out = xr.Dataset(
        {b: ("time", means[ok, i].astype(np.float32),
             {"units": "1", "long_name": f"mean {b} over clear forest pixels"})
         for i, b in enumerate(bands)},
        coords={"time": times[ok],
                "items": ("time", cube["items"].values[keep_t][ok])})
    out["clear_fraction"] = ("time", frac[ok].astype(np.float32),
                             {"units": "1", "long_name": "clear forest fraction in circle"})
    out["n_clear"] = ("time", n_clear[ok].astype(np.int32), {"units": "1"})
    return out, failed


def s2_features(
    site_or_latlon: str | tuple[float, float] | Any,
    start: str,
    end: str,
    *,
    index_list: str | Path | Sequence[str] | None = None,
    min_fraction: float = 0.01,
    block: int = 16,
    max_failed_fraction: float = 0.2,
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
        Time steps reduced together (memory bound).
    max_failed_fraction : float, default 0.2
        Fail the site when more than this fraction of its scenes failed.
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

    from gpp_cubes.indices import compute_indices
    from gpp_cubes.store import provenance_base

    cube = s2_cube(site_or_latlon, start, end, max_failed_fraction=max_failed_fraction,
                   **cube_kwargs)
    bands = [b for b in S2_BANDS if b in cube]
    means, failed = reduce_cube(cube, bands, block=block, min_fraction=min_fraction)
    used = [i for i in json.loads(cube.attrs["stac_items"]) if i not in failed]
    dropped = {**json.loads(cube.attrs["dropped_items"]), **failed}
    n_all = int(cube.attrs["n_items_found"])
    if n_all and len(dropped) / n_all > max_failed_fraction:
        raise BuildError(f"site {cube.attrs['site_id']!r}: {len(dropped)} of {n_all} scenes "
                         f"failed; first: {next(iter(dropped.items()))}")
    idx = compute_indices(means[bands], index_list)
    out = xr.merge([means, idx], compat="override")
    params = {k: v for k, v in cube.attrs.items() if k not in ("stac_items", "dropped_items")}
    prov = {**provenance_base(), "stage": "s2_features", "start": start, "end": end,
            "stac_items": used, "dropped_items": dropped, "min_clear_fraction": min_fraction,
            "spyndex_version": idx.attrs["spyndex_version"],
            "index_list": idx.attrs["index_list"].split(","), **params}
    out.attrs = {"site_id": cube.attrs["site_id"], "spyndex_version":
                 idx.attrs["spyndex_version"], "index_list": idx.attrs["index_list"],
                 "provenance": json.dumps(prov, default=str)}
    return out
