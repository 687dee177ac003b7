"""The daily Sentinel-2 features of a site: mean NBAR over clear forest pixels, and indices.

Paper section 2.1, "Sentinel-2": the mean NBAR over the clear forest pixels of the 1 km
circle, time steps with fewer than 1 % such pixels dropped, and the spectral indices of the
averaged NBAR. The means come from the streamed path (:func:`gpp_cubes.s2.stream.stream_means`)
or from the lazy cube (:func:`gpp_cubes.s2.stream.reduce_cube`); a site fails when more than
``max_failed_fraction`` of its scenes could not be read. The provenance lists every item
found exactly once: used, dropped (read failures) or excluded (by a rule, with the reason).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpp_cubes.paper import MIN_CLEAR_FRACTION
from gpp_cubes.s2.cube import s2_cube
from gpp_cubes.s2.reflectance import S2_BANDS
from gpp_cubes.s2.stream import reduce_cube, stream_means, used_item_ids
from gpp_cubes.stac.failures import MAX_FAILED_FRACTION, check_failed_fraction

if TYPE_CHECKING:
    import xarray as xr


def s2_features(
    site_or_latlon: str | tuple[float, float] | Any,
    start: str,
    end: str,
    *,
    index_list: str | Path | Sequence[str] | None = None,
    min_fraction: float = MIN_CLEAR_FRACTION,
    block: int = 16,
    max_failed_fraction: float = MAX_FAILED_FRACTION,
    stream: bool = True,
    read_threads: int = 4,
    blocks_in_flight: int = 2,
    **cube_kwargs: Any,
) -> xr.Dataset:
    """Per-site Sentinel-2 features: mean NBAR over clear forest pixels and spectral indices.

    Parameters
    ----------
    site_or_latlon, start, end
        As :func:`gpp_cubes.s2.s2_cube`.
    index_list : path, sequence of str or None
        Spectral indices: a file, names, or a shipped list's name (``"default"``,
        ``"paper-122"``; :func:`gpp_cubes.s2.indices.read_index_list`); default: the shipped
        default list, :data:`gpp_cubes.paper.INDEX_LIST_RESOURCE`.
    min_fraction : float, default :data:`gpp_cubes.paper.MIN_CLEAR_FRACTION`
        Minimum clear forest fraction in the circle for a time step to be kept [1].
    block : int, default 16
        Time steps loaded and reduced together (memory: ~block x 13 bands x pixels x 6
        bytes per block in flight, independent of the number of years).
    max_failed_fraction : float, default 0.2
        Fail the site when more than this fraction of its scenes failed
        (:func:`gpp_cubes.stac.failures.check_failed_fraction`).
    stream : bool, default True
        Fast path: load a block of time steps at a time (reads of the next block overlap
        the masks, NBAR and means of the current one), with one batched c-factor call per
        block; a block that fails to read is retried time step by time step and only the
        failing steps are dropped. False: reduce the lazy :func:`gpp_cubes.s2.s2_cube` (same
        values).
    read_threads : int, default 4
        Threads reading COGs in the fast path, per block.
    blocks_in_flight : int, default 2
        Blocks processed at once in the fast path: with 2, the reads of one block overlap
        the CPU work of another. Batch builds pass the number of threads of their Dask
        worker (1 by default), so that each worker keeps to its core and workers side by
        side do not compete (:mod:`gpp_cubes.batch`).
    **cube_kwargs
        Passed to :func:`gpp_cubes.s2.s2_cube` (provider, stac_url, cloud_mask, engine,
        corine, ...).

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
        means, attrs = stream_means(site_or_latlon, start, end, block=block,
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
    check_failed_fraction(dropped, int(attrs["n_items_found"]), max_failed_fraction,
                          f"site {attrs['site_id']!r}")
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
