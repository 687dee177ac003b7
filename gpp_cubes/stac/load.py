"""Lazy, Dask-backed loading of STAC items onto a site grid (odc-stac or stackstac).

Both engines return the same thing: a Dataset with one variable per band, dims
``(time, y, x)``, the pixel-centre coordinates of :class:`gpp_cubes.sites.grid.SiteGrid`, one time
step per solar day (items of one overpass that overlap the site, e.g. two MGRS tiles, are
mosaicked, first valid pixel wins), and per-time coordinates ``items`` (space-separated ids
of the scenes in that step) and any requested item properties.

Failed scenes are never turned silently into nodata (odc-stac ``fail_on_error=False`` and
stackstac ``errors_as_nodata`` do exactly that): every read is retried
(:mod:`gpp_cubes.stac.readers`), and then either every asset is opened before the load
(``precheck=True``) or the load is computed by :func:`compute_dropping_failures`, which
finds the failing time steps when a read fails (:mod:`gpp_cubes.stac.failures`). Either way
an item that cannot be read is dropped, logged with its id and the reason, and listed in
``ds.attrs["dropped_items"]`` (JSON) so provenance counts it; the site fails with
:class:`~gpp_cubes.errors.BuildError` when more than ``max_failed_fraction`` of its items
failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

import numpy as np

from gpp_cubes.errors import AssetError, GppError
from gpp_cubes.stac.failures import MAX_FAILED_FRACTION, check_failed_fraction, compute_dropping
from gpp_cubes.stac.search import item_datetime

#: Reads in flight per load, whatever the cores: a read from object storage waits ~50 ms
#: for its first byte and decodes in a few, so one core keeps several reads going (the
#: projection of benchmarks/bench_s2.py and bench_sensors.py: MODIS, 12 requests per
#: granule, took 23 h of latency for 38 sites one request at a time).
READ_THREADS = 8

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """Which items a load used and which it dropped, with reasons.

    Attributes
    ----------
    used : list of str
        Ids of the items in the returned cube.
    dropped : dict
        Item id -> reason it was dropped.
    """

    used: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def failed_fraction(self) -> float:
        n = len(self.used) + len(self.dropped)
        return len(self.dropped) / n if n else 0.0

    def to_attrs(self) -> dict[str, str]:
        return {"stac_items": json.dumps(self.used), "dropped_items": json.dumps(self.dropped)}


def load_report(ds: xr.Dataset) -> LoadReport:
    """The :class:`LoadReport` stored in a loaded cube's attributes."""
    return LoadReport(json.loads(ds.attrs.get("stac_items", "[]")),
                      json.loads(ds.attrs.get("dropped_items", "{}")))


def solar_day(item: pystac.Item, lon: float) -> np.datetime64:
    """Local solar day of an acquisition at longitude ``lon`` [degrees].

    Local mean solar time = UTC + lon / 15 h; one overpass never spans local midnight.
    """
    t = item_datetime(item) + timedelta(hours=lon / 15.0)
    return np.datetime64(t.date().isoformat(), "D")


def tower_lon(grid: SiteGrid) -> float:
    """Longitude of the grid's tower [degrees east]: what its solar days are reckoned by."""
    from pyproj import Transformer

    lon, _ = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(
        grid.tower_x, grid.tower_y)
    return float(lon)


def solar_day_groups(items: Sequence[pystac.Item], lon: float) -> list[list[pystac.Item]]:
    """Items grouped by :func:`solar_day`, days in order, each sorted by time and id."""
    groups: dict[np.datetime64, list[pystac.Item]] = {}
    for it in sorted(items, key=lambda i: (item_datetime(i), i.id)):
        groups.setdefault(solar_day(it, lon), []).append(it)
    return [groups[k] for k in sorted(groups)]


def load_items(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    grid: SiteGrid,
    *,
    engine: Literal["odc", "stackstac"] = "odc",
    chunks: Mapping[str, int] | None = None,
    dtype: str = "uint16",
    nodata: int | float = 0,
    groupby: Literal["solar_day", "id"] = "solar_day",
    resampling: str = "nearest",
    properties: Sequence[str] = (),
    precheck: bool | Literal["assets"] = True,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    site_id: str | None = None,
    gdal_env: Mapping[str, str] | None = None,
    sign: Callable[[pystac.Item], pystac.Item] | None = None,
) -> xr.Dataset:
    """Load STAC items lazily onto the site grid.

    Parameters
    ----------
    items : sequence of pystac.Item
        Items (signed) with the ``bands`` as asset keys.
    bands : sequence of str
        Asset keys to load, e.g. ``["B04", "B08", "SCL"]``.
    grid : SiteGrid
        Target grid (UTM, pixel centres ``grid.x``/``grid.y`` [m]).
    engine : {"odc", "stackstac"}, default "odc"
        Loader; both give the same values and coordinates.
    chunks : mapping, optional
        Dask chunks, default ``{"time": 1, "y": -1, "x": -1}`` (one scene per chunk: a site
        is ~230 x 230 pixels, so a 5-year build streams in small, bounded pieces).
    dtype : str, default "uint16"
        Output dtype (S2 L2A digital numbers).
    nodata : int or float, default 0
        Fill value of missing pixels.
    groupby : {"solar_day", "id"}, default "solar_day"
        One time step per local solar day (mosaic of the overpass), or one per item.
    resampling : str, default "nearest"
        Resampling of bands coarser than the grid (20 m, 60 m) [paper: nearest].
    properties : sequence of str
        Item properties attached as time coordinates (first item of each step), e.g.
        ``["s2:processing_baseline"]``.
    precheck : bool or "assets", default True
        True: open every asset and read its block at the tower before the load, and drop
        unreadable items (:func:`gpp_cubes.stac.readers.check_item`). ``"assets"``: only
        check that the band assets exist (no I/O; a read error then raises at compute time, for
        callers that drop failing scenes themselves, as :func:`gpp_cubes.s2.s2_features`
        does). False: no check. Reads themselves are retried in every mode.
    max_failed_fraction : float, default 0.2
        Fail the site when more than this fraction of its items was dropped.
    site_id : str, optional
        Name used in messages.
    gdal_env : mapping, optional
        GDAL settings for the pre-check (default :func:`gpp_cubes.stac.gdal.configure_gdal`).
    sign : callable, optional
        Applied to every item just before loading, e.g.
        ``functools.partial(gpp_cubes.stac.providers.resign_expired, sign=provider.sign)`` to
        renew expired Planetary Computer SAS tokens.

    Returns
    -------
    xarray.Dataset
        Variables ``bands`` (time, y, x) of ``dtype``; coords ``time`` (first acquisition of
        the step), ``items``, ``properties``; attrs ``stac_items``, ``dropped_items`` (JSON),
        ``crs`` ("EPSG:xxxxx"), ``nodata``.

    Raises
    ------
    BuildError
        No readable item, or too many failed ones.
    """
    import xarray as xr

    from gpp_cubes.stac.gdal import configure_gdal
    from gpp_cubes.stac.readers import check_item

    where = f"site {site_id!r}" if site_id else "site"
    env = dict(gdal_env) if gdal_env is not None else configure_gdal()
    if sign is not None:
        items = [sign(it) for it in items]
    report = LoadReport()
    good: list[pystac.Item] = list(items)
    if precheck == "assets":
        for it in good:
            missing = [b for b in bands if b not in it.assets]
            if missing:
                why = f"asset {missing[0]!r} missing"
                log.warning("%s: dropping STAC item %s: %s", where, it.id, why)
                report.dropped[it.id] = why
        good = [it for it in good if it.id not in report.dropped]
    elif precheck and good:
        with ThreadPoolExecutor(max_workers=min(16, len(good))) as pool:
            reasons = list(pool.map(lambda it: check_item(it, bands, env, grid=grid), good))
        for it, why in zip(list(good), reasons, strict=True):
            if why is not None:
                log.warning("%s: dropping STAC item %s: %s", where, it.id, why)
                report.dropped[it.id] = why
        good = [it for it in good if it.id not in report.dropped]
    n_all = len(items)
    check_failed_fraction(report.dropped, n_all, max_failed_fraction, where,
                          any_left=bool(good))

    lon = tower_lon(grid)
    groups = solar_day_groups(good, lon) if groupby == "solar_day" else [[it] for it in sorted(
        good, key=lambda i: (item_datetime(i), i.id))]
    report.used = [it.id for g in groups for it in g]
    ch = {"time": 1, "y": -1, "x": -1, **(chunks or {})}

    if engine == "odc":
        ds = _load_odc(groups, bands, grid, ch, dtype, nodata, resampling, lon)
    elif engine == "stackstac":
        ds = _load_stackstac(groups, bands, grid, ch, dtype, nodata, resampling)
    else:
        raise GppError(f"unknown load engine {engine!r}: use 'odc' or 'stackstac'")

    times = np.array([np.datetime64(item_datetime(g[0]).replace(tzinfo=None), "ns")
                      for g in groups])
    ds = ds.assign_coords(time=times, x=grid.x, y=grid.y)
    ds = ds.assign_coords(items=("time", np.array([" ".join(i.id for i in g) for g in groups])))
    for prop in properties:
        vals = [g[0].properties.get(prop) for g in groups]
        ds = ds.assign_coords({prop: ("time", np.array(vals))})
    ds.attrs = {**report.to_attrs(), "crs": f"EPSG:{grid.epsg}", "nodata": nodata}
    for b in bands:
        ds[b].attrs["nodata"] = nodata
    return xr.Dataset(ds.data_vars, coords={k: v for k, v in ds.coords.items()
                                            if k in ("time", "x", "y", "items", *properties)},
                      attrs=ds.attrs)


def compute_dropping_failures(ds: xr.Dataset, *, max_failed_fraction: float = MAX_FAILED_FRACTION,
                              site_id: str | None = None,
                              read_threads: int = READ_THREADS) -> xr.Dataset:
    """Compute a lazy :func:`load_items` cube; drop the time steps whose reads fail.

    The cheap alternative to ``precheck=True`` (which opens every asset once more before the
    load): the cube is computed whole, and only when a read fails (after the retries every
    read gets) are its time steps computed one by one to find the failing ones. Their items
    are dropped, logged and added to ``attrs["dropped_items"]``.

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`load_items` (any ``precheck``), not yet computed.
    max_failed_fraction : float, default 0.2
        Fail when more than this fraction of the cube's items (including those dropped
        before) was dropped.
    site_id : str, optional
        Name used in messages.
    read_threads : int, default :data:`READ_THREADS`
        Threads computing the load (its reads), also inside a batch worker of one thread.

    Returns
    -------
    xarray.Dataset
        In memory, without the failed time steps; ``stac_items``/``dropped_items`` updated.

    Raises
    ------
    BuildError
        No readable time step, or too many failed items.
    """
    import dask
    import xarray as xr

    where = f"site {site_id!r}" if site_id else "site"
    nt = ds.sizes["time"]

    def compute(steps: list[int]) -> xr.Dataset:
        sub = ds if len(steps) == nt else ds.isel(time=steps)
        with dask.config.set(scheduler="threads", num_workers=max(1, read_threads)):
            return sub.compute()

    done, dropped = compute_dropping(list(range(nt)), compute,
                                     lambda i: str(ds["items"].values[i]).split(), where=where)
    if not dropped and done:
        return done[0][1]
    report = load_report(ds)
    report.dropped.update(dropped)
    report.used = [u for u in report.used if u not in report.dropped]
    parts = [part for _, part in done]
    check_failed_fraction(report.dropped, len(report.used) + len(report.dropped),
                          max_failed_fraction, where, any_left=bool(parts))
    out = xr.concat(parts, dim="time") if len(parts) > 1 else parts[0]
    out.attrs = {**ds.attrs, **report.to_attrs()}
    return out


def _load_odc(groups: list[list[pystac.Item]], bands: Sequence[str], grid: SiteGrid,
              chunks: Mapping[str, int], dtype: str, nodata: int | float, resampling: str,
              lon: float) -> xr.Dataset:
    import odc.stac

    from gpp_cubes.stac.readers import retrying_driver

    key = {it.id: i for i, g in enumerate(groups) for it in g}
    flat = [it for g in groups for it in g]
    ds = odc.stac.load(
        flat, bands=list(bands), geobox=grid.geobox,
        groupby=lambda item, parsed, idx: key[item.id],
        chunks={"x": chunks["x"], "y": chunks["y"]}, dtype=dtype, nodata=nodata,
        resampling=resampling, fail_on_error=True, driver=retrying_driver(),
    )
    if ds.sizes["time"] != len(groups):  # pragma: no cover - guards odc-stac behaviour
        raise GppError(f"odc-stac made {ds.sizes['time']} time steps for {len(groups)} groups")
    if chunks.get("time", 1) != 1:
        ds = ds.chunk({"time": chunks["time"]})
    return ds.drop_vars([c for c in ("spatial_ref",) if c in ds.coords])


def _load_stackstac(groups: list[list[pystac.Item]], bands: Sequence[str], grid: SiteGrid,
                    chunks: Mapping[str, int], dtype: str, nodata: int | float,
                    resampling: str) -> xr.Dataset:
    import stackstac
    import xarray as xr
    from rasterio.enums import Resampling

    from gpp_cubes.stac.readers import retry_class

    flat = [it for g in groups for it in g]
    step = np.concatenate([[i] * len(g) for i, g in enumerate(groups)])
    fill = np.dtype(dtype).type(nodata)  # numpy 2: fill value of the output dtype
    ny, nx = grid.shape
    cy = ny if chunks["y"] in (-1, None) else chunks["y"]
    cx = nx if chunks["x"] in (-1, None) else chunks["x"]
    da = stackstac.stack(
        flat, assets=list(bands),
        # pystac-client rewrites proj:epsg to proj:code; stackstac reads only proj:epsg:
        # give the grid explicitly (else a padded grid with NaN borders).
        epsg=grid.epsg, bounds=grid.bounds, resolution=grid.resolution, snap_bounds=False,
        resampling=Resampling[resampling], dtype=np.dtype(dtype), fill_value=fill,
        rescale=False, xy_coords="center", chunksize=(1, 1, cy, cx),
        sortby_date=False, properties=False, band_coords=False,
        errors_as_nodata=(),  # never turn read errors into nodata silently
        reader=retry_class("RetryingStackstacReader"),
    )
    da = da.drop_vars([c for c in da.coords if c not in ("time", "band", "x", "y")])
    if len(flat) != len(groups):
        da = da.assign_coords(time=step)
        parts = []
        for i, g in enumerate(groups):
            sub = da.isel(time=np.flatnonzero(step == i))
            # reverse=True: the first item is on top, as in odc-stac's fusing
            parts.append(stackstac.mosaic(sub, dim="time", nodata=fill, reverse=True)
                         if len(g) > 1 else sub.isel(time=0))
        da = xr.concat(parts, dim="time", coords="minimal", compat="override")
    ds = da.to_dataset(dim="band")
    if chunks.get("time", 1) != 1:
        ds = ds.chunk({"time": chunks["time"]})
    return ds


def require_assets(item: pystac.Item, keys: Sequence[str], site_id: str | None = None) -> None:
    """Raise :class:`AssetError` naming the item and the first missing asset."""
    for k in keys:
        if k not in item.assets:
            of = f" of site {site_id!r}" if site_id else ""
            raise AssetError(f"STAC item {item.id!r}{of} has no asset {k!r}")

