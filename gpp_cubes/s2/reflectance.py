"""Sentinel-2 L2A digital numbers to surface reflectance, and the scenes that may be mixed.

Reflectance is ``(DN + offset) / 10000`` with ``offset = -1000`` for processing baseline
>= 04.00 (new processings from 25 January 2022 on, and ESA's Collection-1 reprocessing,
05.xx, of older scenes) and 0 before, read from ``s2:processing_baseline`` (Planetary
Computer items carry no ``raster:bands`` offsets). DN 0 is nodata.

Because a time step is the mosaic of one solar day's items converted with one offset, two
rules run before any pixel is read: a scene the archive holds twice keeps its newest
processing (:func:`drop_duplicates`), and a solar day keeps only the items of one BOA offset
(:func:`one_offset_per_day`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpp_cubes.errors import BuildError

if TYPE_CHECKING:
    import xarray as xr

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
    from gpp_cubes.stac.load import solar_day_groups

    excluded: dict[str, str] = {}
    for day in solar_day_groups(items, lon):
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
