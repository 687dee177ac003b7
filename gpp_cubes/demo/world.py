"""Generate (or reuse) the demo world on disk.

Layout of a world directory (all hrefs in the stored items are relative to it)::

    <root>/
      .demo-world.json          marker, written last: config, digest, counts
      stac/collections/<collection>.json
      stac/items/<collection>.ndjson          one item per line, relative hrefs
      sentinel-2-l2a/<item id>/IMG_DATA/R{10,20,60}m/*.tif, GRANULE/.../MTD_TL.xml,
                               MTD_MSIL2A.xml
      sentinel-1-rtc/<item id>/measurement/iw-{vv,vh}.rtc.tiff
      modis-11A1-061/<item id>/*.tif
      corine/CLC2018_<SITE>_100m.tif, corine/CLC2018_demo.vrt
      fluxnet/FLX_<SITE>_FLUXNET2015_FULLSET_DD_<y0>-<y1>_beta-3.csv
      truth/*.csv                             the known truth (see :class:`Truth`)

Generation is deterministic from the config (same bytes twice) and cached: a directory
whose marker names the same config digest is reused. The world is written to a sibling
temporary directory and renamed into place under an exclusive file lock, so concurrent
callers (pytest-xdist workers) generate it once and never see half a world.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from gpp_cubes.atomic import atomic_directory
from gpp_cubes.errors import ConfigError

from .config import DemoConfig, DemoSite, make_site

MARKER = ".demo-world.json"
COLLECTIONS = ("sentinel-2-l2a", "sentinel-1-rtc", "modis-11A1-061")


@dataclass(frozen=True)
class Truth:
    """The known truth of a demo world (tables also stored as ``truth/<name>.csv``).

    Attributes
    ----------
    s2_scenes : pandas.DataFrame
        One row per Sentinel-2 item: ``item_id``, ``site``, ``datetime``, ``date``,
        ``platform``, ``mgrs_tile`` and ``epsg`` (the item's tile and CRS),
        ``datatake`` (the acquisition, shared by its items: both tiles of a two-zone
        site, both processings of a duplicate), ``datatake_id`` (``s2:datatake_id``),
        ``processing_baseline``, ``boa_offset_dn`` (DN = 10000 * reflectance + this),
        ``generation_time``, ``duplicate_of`` (the item of the same tile and datatake in the
        other processing, empty if none), ``eo_cloud_cover`` [%], ``relative_orbit``,
        ``fully_cloudy``, ``snow``, ``cloud_fraction_1km``, ``shadow_fraction_1km``,
        ``snow_fraction_1km``, ``clear_forest_fraction_1km`` [0-1, within 1 km of the
        tower; nodata counts as neither], ``greenness`` [0-1], ``forest_ndvi``
        (noise-free), ``sun_zenith``, ``sun_azimuth`` [deg, at the tower],
        ``clouds`` and ``cirrus`` (JSON lists of [x, y, radius] discs, UTM m of the site;
        :func:`gpp_cubes.demo.s2_render.planted_cloud_masks` rasterises them with the
        shadows on any pixel centres), the swath edge
        of a partial scene: ``partial_swath``, ``swath_edge_x`` (reference B02 edge
        [m, site CRS], NaN if none), ``swath_side`` (``east``/``west``: where the data
        are), ``swath_edges`` (JSON band -> edge easting [m, site CRS]), and the item's
        ``nodata_pixel_percentage`` [%] and ``nodata_1km_<band>`` (``B01`` .. ``B12``,
        ``SCL``) [0-1]: the nodata fraction of the band's pixels centred within 1 km.
    s2_planted : pandas.DataFrame
        Planted pixels per item: the bright 60 m block outside the 1 km circle (``left``,
        ``bottom``, ``right``, ``top``, ``x``, ``y`` [m, in ``epsg``: the site's UTM
        CRS, also for an item of the neighbouring zone's tile], ``distance_m``,
        ``reflectance``, ``dn`` written in every band, ``scl``).
    s1_scenes, s1_planted, modis_scenes : pandas.DataFrame
        Same for Sentinel-1 and MODIS (empty until those products are generated).
    daily : pandas.DataFrame
        Per site and day: ``site``, ``time``, clear-sky GHI, greenness, LST, drought weight,
        noise-free and noisy GPP, and what the FLUXNET file holds (``gpp_written``,
        ``nee_qc``, ``status``: valid / gap / bad_qc / negative).
    extremes : pandas.DataFrame
        Planted drought events: ``site``, ``start``, ``end``, ``kind``, ``gpp_factor``.
    sites : pandas.DataFrame
        One row per site: position, UTM frame, tile, orbits, land-cover patches (JSON),
        ``s2_windows`` (JSON list of [tile, epsg, left, bottom, right, top] per tile the
        Sentinel-2 items are written on).
    """

    s2_scenes: pd.DataFrame
    s2_planted: pd.DataFrame
    s1_scenes: pd.DataFrame
    s1_planted: pd.DataFrame
    modis_scenes: pd.DataFrame
    daily: pd.DataFrame
    extremes: pd.DataFrame
    sites: pd.DataFrame


@dataclass(frozen=True)
class World:
    """A generated demo world.

    Attributes
    ----------
    root : Path
        World directory.
    config : DemoConfig
        The config it was generated from.
    sites : tuple of DemoSite
        The sites and their frames.
    truth : Truth
        The known truth.
    """

    root: Path
    config: DemoConfig
    sites: tuple[DemoSite, ...]
    truth: Truth

    def site(self, site_id: str) -> DemoSite:
        for s in self.sites:
            if s.site_id == site_id:
                return s
        raise ConfigError(f"site {site_id!r} is not in the demo world "
                          f"({', '.join(s.site_id for s in self.sites)})")

    @property
    def stac_dir(self) -> Path:
        return self.root / "stac"

    def collection_path(self, collection: str) -> Path:
        return self.stac_dir / "collections" / f"{collection}.json"

    def items_path(self, collection: str) -> Path:
        return self.stac_dir / "items" / f"{collection}.ndjson"

    def items(self, collection: str, base_url: str | None = None) -> list[dict[str, Any]]:
        """The stored items of a collection; hrefs made absolute with ``base_url`` if given
        (an ``http://`` URL or a local directory), else left relative to :attr:`root`."""
        path = self.items_path(collection)
        if not path.exists():
            return []
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if base_url is not None:
            base = base_url.rstrip("/")
            for it in items:
                for a in it["assets"].values():
                    if "://" not in a["href"]:
                        a["href"] = f"{base}/{a['href']}"
        return items

    @property
    def fluxnet_dir(self) -> Path:
        return self.root / "fluxnet"

    def fluxnet_path(self, site_id: str) -> Path:
        y0, y1 = pd.Timestamp(self.config.start).year, pd.Timestamp(self.config.end).year
        return self.fluxnet_dir / f"FLX_{site_id}_FLUXNET2015_FULLSET_DD_{y0}-{y1}_beta-3.csv"

    @property
    def corine_path(self) -> Path:
        """A VRT mosaic (EPSG:3035, 100 m) of the per-site CORINE rasters."""
        return self.root / "corine" / "CLC2018_demo.vrt"

    def corine_site_path(self, site_id: str) -> Path:
        return self.root / "corine" / f"CLC2018_{site_id}_100m.tif"


# --------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------


def _site_job(args: tuple[str, DemoSite, DemoConfig, pd.DataFrame]) -> dict[str, Any]:
    """Write the Sentinel-2, Sentinel-1 and FLUXNET products of one site (worker process)."""
    from . import fluxnet, s1, s2

    tmp, site, config, daily = args
    root = Path(tmp)
    out: dict[str, Any] = {"site": site.site_id, "items": {}}
    out["items"][s2.COLLECTION], out["s2_scenes"], out["s2_planted"] = (
        s2.write_site_scenes(root, site, config, daily))
    out["items"][s1.COLLECTION], out["s1_scenes"], out["s1_planted"] = (
        s1.write_site_scenes(root, site, config, daily))
    daily = fluxnet.write_site_fluxnet(root, site, config, daily)
    out["daily"] = daily.rename_axis("time").reset_index().assign(site=site.site_id)
    return out


def _modis_job(args: tuple[str, tuple[int, int], list[DemoSite], str, DemoConfig,
                           dict[str, pd.DataFrame]]) -> dict[str, Any]:
    """Write the MODIS items of one sinusoidal tile and platform (worker process)."""
    from . import modis

    tmp, tile, sites, platform, config, dailies = args
    items, truth = modis.write_group(Path(tmp), tile, sites, platform, config, dailies)
    return {"items": {modis.COLLECTION: items}, "modis_scenes": truth}


def _daily_job(args: tuple[DemoSite, DemoConfig]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The daily truth and drought events of one site (worker process)."""
    from .landscape import daily_truth

    s, config = args
    return daily_truth(s.site_id, s.latitude, s.longitude, s.elevation_m, s.igbp,
                       config.start, config.end, config.seed)


def _run(job: tuple[Any, Any]) -> Any:
    fn, args = job
    return fn(args)


def _run_all(jobs: list[tuple[Any, Any]], weights: list[float],
             ex: ProcessPoolExecutor | None) -> list[Any]:
    """Results of ``jobs`` in their order, run heaviest first (so no long job starts last)."""
    order = sorted(range(len(jobs)), key=lambda i: -weights[i])
    ordered = [jobs[i] for i in order]
    done = list(ex.map(_run, ordered) if ex else map(_run, ordered))
    results: list[Any] = [None] * len(jobs)
    for i, r in zip(order, done, strict=True):
        results[i] = r
    return results


def _site_row(s: DemoSite) -> dict[str, Any]:
    return {
        "site": s.site_id, "name": s.name, "latitude": s.latitude, "longitude": s.longitude,
        "elevation_m": s.elevation_m, "igbp": s.igbp, "epsg": s.epsg, "tower_x": s.tower_x,
        "tower_y": s.tower_y, "left": s.bounds[0], "bottom": s.bounds[1],
        "right": s.bounds[2], "top": s.bounds[3], "mgrs_tile": s.tile.tile_id,
        "s2_relative_orbit": s.s2_relative_orbit,
        "s2_windows": json.dumps([[w.tile.tile_id, w.epsg, *w.bounds] for w in s.s2_windows]),
        "patches": json.dumps([[p.kind, p.clc, round(p.x, 3), round(p.y, 3), p.radius_m]
                               for p in s.patches]),
    }


def _write(tmp: Path, config: DemoConfig, sites: tuple[DemoSite, ...], workers: int) -> None:
    from . import corine, modis, s1, s2

    with (ProcessPoolExecutor(max_workers=workers) if workers > 1
          else contextlib.nullcontext()) as ex:
        truths = _run_all([(_daily_job, (s, config)) for s in sites], [1.0] * len(sites), ex)
        dailies = {s.site_id: d for s, (d, _) in zip(sites, truths, strict=True)}
        events = [ev for _, ev in truths]
        jobs: list[tuple[Any, Any]] = []
        weights: list[float] = []
        for (tile, group), platform in ((g, p) for g in modis.tile_groups(sites).items()
                                        for p in ("terra", "aqua")):
            jobs.append((_modis_job, (str(tmp), tile, group, platform, config,
                                      {s.site_id: dailies[s.site_id] for s in group})))
            weights.append(0.3 * len(group))
        for s in sites:
            jobs.append((_site_job, (str(tmp), s, config, dailies[s.site_id])))
            # S2 items dominate a site's cost: one per datatake and tile
            weights.append(0.4 + len(s.s2_windows))
        results = _run_all(jobs, weights, ex)

    collections = {m.COLLECTION: m.collection() for m in (s2, s1, modis)}
    (tmp / "stac" / "collections").mkdir(parents=True, exist_ok=True)
    (tmp / "stac" / "items").mkdir(parents=True, exist_ok=True)
    for cid, coll in collections.items():
        (tmp / "stac" / "collections" / f"{cid}.json").write_text(
            json.dumps(coll, indent=1, sort_keys=True))
        items = [it for r in results for it in r["items"].get(cid, [])]
        items.sort(key=lambda it: (it["properties"].get("datetime")
                                   or it["properties"]["start_datetime"], it["id"]))
        lines = [json.dumps(it, sort_keys=True) for it in items]
        (tmp / "stac" / "items" / f"{cid}.ndjson").write_text("\n".join(lines) + "\n")

    corine.write_corine(tmp, sites)

    truth_dir = tmp / "truth"
    truth_dir.mkdir(exist_ok=True)
    tables: dict[str, pd.DataFrame] = {}
    for name in ("s2_scenes", "s2_planted", "s1_scenes", "s1_planted", "modis_scenes",
                 "daily"):
        parts = [pd.DataFrame(r[name]) for r in results if name in r]
        tables[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    tables["extremes"] = pd.concat(events, ignore_index=True)
    tables["sites"] = pd.DataFrame([_site_row(s) for s in sites])
    for name, df in tables.items():
        df.to_csv(truth_dir / f"{name}.csv", index=False, float_format="%.10g",
                  lineterminator="\n")


#: truth columns that must stay strings ("02.12" is not a number)
_STR_COLUMNS = {c: str for c in ("processing_baseline", "date", "datetime", "start", "end",
                                 "item_id", "site", "platform", "status", "orbit_state",
                                 "mgrs_tile", "datatake", "datatake_id", "generation_time",
                                 "duplicate_of", "swath_side", "swath_edges")}


def _read_truth(root: Path) -> Truth:
    kw = {}
    for f in fields(Truth):
        path = root / "truth" / f"{f.name}.csv"
        try:
            kw[f.name] = pd.read_csv(path, dtype=_STR_COLUMNS)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            kw[f.name] = pd.DataFrame()
    if "time" in kw["daily"]:
        kw["daily"]["time"] = pd.to_datetime(kw["daily"]["time"])
    return Truth(**kw)


def _marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def generate_world(root: str | Path, config: DemoConfig | None = None, *,
                   workers: int | None = None, force: bool = False) -> World:
    """Generate the demo world into ``root``, or reuse it if already there.

    Parameters
    ----------
    root : str or Path
        World directory. An existing directory is replaced only if it is a demo world
        (holds the marker) of another config, or empty.
    config : DemoConfig, optional
        What to generate (default: ``DemoConfig()``, 4 sites x 2016-2020).
    workers : int, optional
        Processes generating sites in parallel (default: ``min(2, os.cpu_count())``).
    force : bool, default False
        Regenerate even if a complete world of the same config is present.

    Returns
    -------
    World
    """
    config = config or DemoConfig()
    root = Path(root).absolute()
    digest = config.digest()
    sites = tuple(make_site(s, config) for s in config.sites)
    lock = root.parent / f".{root.name}.lock"
    with _locked(lock):
        m = _marker(root)
        if m is None or m.get("digest") != digest or force:
            if root.exists() and m is None and any(root.iterdir()):
                raise ConfigError(f"{root} exists and is not a demo world; refusing to "
                                  "overwrite it (choose another directory)")
            t0 = time.perf_counter()
            with atomic_directory(root) as tmp:  # a killed run leaves the old world whole
                tmp.mkdir(parents=True)
                _write(tmp, config, sites, workers or min(2, os.cpu_count() or 1))
                counts = {}
                for c in COLLECTIONS:
                    p = tmp / "stac" / "items" / f"{c}.ndjson"
                    if p.exists():
                        counts[c] = sum(1 for line in p.read_text().splitlines() if line.strip())
                marker = {"digest": digest, "config": json.loads(config.to_json()),
                          "items": counts}
                (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
            _ = time.perf_counter() - t0
    return World(root=root, config=config, sites=sites, truth=_read_truth(root))
