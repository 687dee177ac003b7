"""Mean reflectance over the clear forest pixels of the circle, a block of time steps at a time.

The whole cube of a site never sits in memory. :func:`reduce_cube` reduces a cube (lazy or
not) ``block`` time steps per Dask computation. :func:`stream_means`, the fast path of
:func:`gpp_cubes.s2.s2_features`, does not build the lazy cube at all: for each block of
solar days it loads the digital numbers with one odc-stac read task per band, computes the
block's c-factors in one batched call (cached on disk by item id), runs the same per-pixel
stages as the cube (:func:`gpp_cubes.s2.cube.assemble`) and reduces them with
:func:`reduce_cube`; with two blocks in flight the reads of one overlap the CPU work of the
other. The values equal the lazy-cube path (tested). In both, a block whose reads fail is
computed again step by step and only the failing steps are dropped
(:func:`gpp_cubes.stac.failures.compute_dropping`), and the clear rule is the one of
:mod:`gpp_cubes.reduce`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.errors import BuildError, GppError
from gpp_cubes.paper import MIN_CLEAR_FRACTION, RADIUS_M
from gpp_cubes.s2.nbar import C_FACTOR_RANGE, MAX_SUN_ZENITH
from gpp_cubes.s2.reflectance import S2_BANDS
from gpp_cubes.stac.failures import MAX_FAILED_FRACTION, compute_dropping

if TYPE_CHECKING:
    import xarray as xr

    from gpp_cubes.sites.grid import SiteGrid


def reduce_cube(cube: xr.Dataset, bands: Sequence[str] = S2_BANDS, *, block: int = 16,
                min_fraction: float = MIN_CLEAR_FRACTION
                ) -> tuple[xr.Dataset, dict[str, str], dict[str, str]]:
    """Mean reflectance over the clear pixels, computed a block of time steps at a time.

    A pixel counts where ``clear`` is True and every band has a value (``clear`` of
    :func:`gpp_cubes.s2.s2_cube` already requires that; a cube edited by hand may not), so
    every band's mean divides its sum by the number of pixels summed, ``n_clear``.

    Parameters
    ----------
    cube : xarray.Dataset
        Output of :func:`gpp_cubes.s2.s2_cube`.
    bands : sequence of str
        Bands to average.
    block : int, default 16
        Time steps computed together (bounds memory: ~block x bands x pixels x 4 bytes).
    min_fraction : float, default :data:`gpp_cubes.paper.MIN_CLEAR_FRACTION`
        Drop time steps with fewer clear pixels than this fraction of the forest pixels in
        the circle (the paper's 1 % rule, :func:`gpp_cubes.reduce.keep_clear`).

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

    from gpp_cubes.reduce import clear_fraction, keep_clear

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
        return [n, clear_fraction(clear, region), *sums]

    def compute(steps: list[int]) -> np.ndarray:
        vals = dask.compute(*graph(cube.isel(time=steps)))
        return np.stack([np.asarray(v, dtype=np.float64) for v in vals], axis=1)

    rows: list[np.ndarray] = []
    keep_t: list[int] = []
    failed: dict[str, str] = {}
    nt = cube.sizes["time"]
    where = f"site {cube.attrs.get('site_id')!r}"
    for s in range(0, nt, block):
        done, dropped = compute_dropping(
            list(range(s, min(s + block, nt))), compute,
            lambda t: str(cube["items"].values[t]).split(" "), where=where)
        for steps, table in done:
            rows.append(table)
            keep_t.extend(steps)
        failed.update(dropped)
    table = np.concatenate(rows) if rows else np.zeros((0, 2 + len(bands)))
    n_clear, frac = table[:, 0], table[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = table[:, 2:] / n_clear[:, None]  # NaN, never 0, where nothing is clear
    times = cube.time.values[keep_t]
    ids = cube["items"].values[keep_t]
    ok = keep_clear(frac, min_fraction)
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


@dataclass(frozen=True)
class _BlockResult:
    """What one streamed block gives: means of its kept time steps, read failures and
    exclusions (item id -> reason)."""

    means: xr.Dataset | None
    dropped: dict[str, str]
    excluded: dict[str, str]


def stream_means(site_or_latlon: Any, start: str, end: str, *, block: int,
                 min_fraction: float, read_threads: int,
                 max_failed_fraction: float = MAX_FAILED_FRACTION, blocks_in_flight: int,
                 provider: str | None = "planetary-computer", stac_url: str | None = None,
                 cloud_mask: str = "scl", cloud_model: Any = None, engine: str = "odc",
                 corine: Any = None, nbar: bool = True, snow: bool = True,
                 max_cloud: float | None = None, radius_m: float = RADIUS_M,
                 bands: Sequence[str] = S2_BANDS, chunks: dict[str, int] | None = None,
                 cache_dir: str | Path | None = None, items: Sequence[Any] | None = None,
                 grid: SiteGrid | None = None, max_sun_zenith: float = MAX_SUN_ZENITH,
                 c_factor_range: tuple[float, float] = C_FACTOR_RANGE
                 ) -> tuple[xr.Dataset, dict[str, Any]]:
    """Mean reflectance per kept time step and the cube's attributes, streaming blocks of
    time steps (parameters as :func:`gpp_cubes.s2.s2_features`)."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import xarray as xr

    from gpp_cubes.s2.cube import (
        assemble,
        cube_attrs,
        first_items,
        load_raw,
        mtd_paths,
        site_forest,
    )
    from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_block_cached
    from gpp_cubes.s2.scenes import prepare_site
    from gpp_cubes.stac.load import LoadReport, solar_day_groups, tower_lon

    bands = list(bands)
    prep = prepare_site(site_or_latlon, start, end, provider=provider, stac_url=stac_url,
                        nbar=nbar, max_cloud=max_cloud, radius_m=radius_m,
                        cache_dir=cache_dir, max_failed_fraction=max_failed_fraction,
                        items=items, grid=grid, max_sun_zenith=max_sun_zenith,
                        c_factor_range=c_factor_range)
    forest, forest_src = site_forest(prep, corine)
    brdf = [b for b in BRDF_BANDS if b in bands]
    groups = solar_day_groups(prep.items, tower_lon(prep.grid)) if prep.items else []
    blocks = [groups[i:i + block] for i in range(0, len(groups), block)]
    # One odc-stac task per band and block (reads its time steps in turn): fewer, larger
    # tasks measured faster than 4-step chunks with more threads (less GIL contention).
    sub = max(1, block)
    kw = dict(cloud_mask=cloud_mask, cloud_model=cloud_model, snow=snow, nbar=nbar,
              radius_m=radius_m, engine=engine, max_failed_fraction=1.0)

    def one(gs: list[list[Any]]) -> _BlockResult:
        its = [it for g in gs for it in g]
        raw = load_raw(prep, bands, engine, {"time": sub, **(chunks or {})},
                       precheck="assets", max_failed_fraction=1.0, items=its)
        with dask.config.set(scheduler="threads", num_workers=read_threads):
            raw = raw.compute()
        c = None
        if nbar:
            vals = c_factor_block_cached(mtd_paths(raw, prep), first_items(raw), prep.grid,
                                         brdf, cache_dir)
            c = xr.DataArray(vals, dims=("time", "band", "y", "x"),
                             coords={"band": brdf, "y": prep.grid.y, "x": prep.grid.x})
        try:
            cube = assemble(raw, prep, bands, c, forest, forest_src, **kw)
            means, _, excluded = reduce_cube(cube, bands, block=len(gs),
                                             min_fraction=min_fraction)
        except GppError:
            raise
        except Exception as err:
            # The pixels were read: a failure here (a cloud model, NBAR, the means) is not
            # the scenes' fault. Dropping them as unreadable would hide it until "no
            # readable Sentinel-2 time step"; the site fails, naming the stage and error.
            raise BuildError(f"{prep.where}: the S2 stage failed on pixels already read "
                             f"(masks, NBAR or means; cloud mask {cloud_mask!r}): "
                             f"{type(err).__name__}: {str(err)[:300]}") from err
        return _BlockResult(means, json.loads(raw.attrs["dropped_items"]), excluded)

    def run(gs: list[list[Any]]) -> list[_BlockResult]:
        done, failed = compute_dropping(gs, one, lambda g: [it.id for it in g],
                                        where=prep.where)
        if not failed:
            return [r for _, r in done]
        ok = {id(steps[0]): r for steps, r in done}  # one per step: keep the time order
        return [ok[id(g)] if id(g) in ok else
                _BlockResult(None, {it.id: failed[it.id] for it in g}, {}) for g in gs]

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
        raise BuildError(f"{prep.where}: no readable Sentinel-2 time step")
    means = xr.concat(parts, dim="time") if len(parts) > 1 else parts[0]
    rep = LoadReport(used_item_ids(means), {**prep.dropped, **dropped})
    return means, cube_attrs(prep, rep, cloud_mask=cloud_mask, snow=snow, nbar=nbar,
                             forest_src=forest_src, radius_m=radius_m, engine=engine,
                             excluded=excluded)


def used_item_ids(means: xr.Dataset) -> list[str]:
    """Ids of the items behind the kept time steps (``items`` holds them space-joined)."""
    return [iid for group in means["items"].values for iid in str(group).split(" ")]
