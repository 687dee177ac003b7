"""Benchmark: S1 RTC or MODIS LST features of one demo site vs. the I/O floor, per scene.

The companion of ``bench_s2.py`` for the two other sensors, on the same cached demo world
and its real-layout copy (:func:`gpp_cubes.demo.real_layout.real_layout_world`: S1 ``vv``/
``vh`` as full-size float32 item grids of 12949 x 27526 pixels in 512-pixel blocks,
MODIS ``LST_*``/``QC_*`` as whole 1200 x 1200 sinusoidal tiles). The world is served on
127.0.0.1 and searched with the pipeline's search; then, in the same run, each from cold
GDAL caches (``bench_s2.measured``):

1. the I/O floor: plain rasterio reads, one after the other, of the same windows of the
   same files the pipeline reads (S1: the site grid's 10 m extent of ``vv`` and ``vh`` of
   every item; MODIS: the tower's 5 x 5 pixel window of the four LST and QC assets);
2. the pipeline stage: :func:`gpp_cubes.sensors.s1.s1_features_from_items` (load per
   orbit, forest annulus, linear means; the forest mask is computed before, untimed) or
   :func:`gpp_cubes.sensors.lst.lst_features_from_items` (load on the sinusoidal window,
   QC, 3 x 3 mean).

Per phase: wall and CPU seconds, HEAD/GET requests and bytes the file server sent, in
total and per scene (one item: an S1 pass, a MOD11A1 or MYD11A1 product-day); the ratio
pipeline / floor; and the projection of this sensor's part of a build of the 38 catalog
stations over 2016-2020 (``bench_s2.print_projection``; scene counts per year printed).

Run: ``python benchmarks/bench_sensors.py --sensor s1|modis [--years 1] [--layout real]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_s2 import (
    PROJ_YEARS,
    bench_world,
    measured,
    print_projection,
    random_site_scaling,
)

S1_ASSETS = ("vv", "vh")
MODIS_ASSETS = ("LST_Day_1km", "LST_Night_1km", "QC_Day", "QC_Night")

#: relative orbits whose IW swath (250 km) sees a site at 45-62 N: 2 ascending and 2
#: descending (assumed; neighbouring tracks overlap more towards the pole); each
#: satellite repeats an orbit every 12 days; S1B from 2016-09-26 to 2021-12-23
S1_ORBITS_PER_SITE = 4
S1_REPEAT_DAYS = 12
S1B_START_DOY_2016 = 270


def s1_scenes_per_year(year: int) -> float:
    """S1 RTC items of one site in a year (one GRD slice per pass; assumptions above)."""
    per_sat = S1_ORBITS_PER_SITE * 365 / S1_REPEAT_DAYS
    if year == 2016:
        return per_sat * (1 + (366 - S1B_START_DOY_2016) / 366)
    return 2 * per_sat


def modis_scenes_per_year(year: int) -> float:
    """MOD11A1 + MYD11A1 items of one site in a year: one tile per day and product."""
    return 2 * (366 if year % 4 == 0 else 365)


def floor_reads(items, assets, bounds, env) -> None:
    """Read ``bounds`` of every asset of every item with plain rasterio, in turn."""
    import rasterio
    from rasterio.windows import from_bounds

    with rasterio.Env(**env):
        for item in items:
            for key in assets:
                with rasterio.open(item.assets[key].href) as src:
                    src.read(1, window=from_bounds(*bounds, transform=src.transform))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sensor", choices=("s1", "modis"), required=True)
    ap.add_argument("--years", type=int, default=1)
    ap.add_argument("--revisit", type=int, default=10,
                    help="S2 days between scenes (only to share bench_s2's cached world)")
    ap.add_argument("--site", default="DE-Hai")
    ap.add_argument("--layout", choices=("real", "compact"), default="real")
    ap.add_argument("--world", default=None, help="world directory (default: cache)")
    args = ap.parse_args()

    from gpp_cubes.demo import serve_world
    from gpp_cubes.demo.real_layout import (
        MODIS_LAYOUTS,
        S1_LAYOUT,
        filler_sizes,
    )
    from gpp_cubes.sensors.lst import lst_features_from_items
    from gpp_cubes.sensors.modis import LST_COLLECTION, modis_grid
    from gpp_cubes.sensors.s1 import S1_COLLECTION, s1_features_from_items
    from gpp_cubes.sites.forest import forest_mask
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.gdal import configure_gdal
    from gpp_cubes.stac.load import READ_THREADS
    from gpp_cubes.stac.search import search_items

    start, end, world, made = bench_world(args)
    if made is not None:
        cid = S1_COLLECTION if args.sensor == "s1" else LST_COLLECTION
        c = made["collections"][cid]
        print(f"real-layout world: {world.root} ({made['seconds']:.1f} s): "
              f"{cid}: {c['files']} COGs, {c['apparent_bytes'] / 1e9:.1f} GB as served, "
              f"{c['written_bytes'] / 1e9:.2f} GB on disk; full blocks compress to "
              f"{ {k: v for k, v in made['filler_block_bytes'].items() if k[:2] != 'S2'} }")
    site = world.site(args.site)
    grid = site_grid(site.latitude, site.longitude)
    env = configure_gdal()
    sizes = filler_sizes()
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    with serve_world(world) as served:
        if args.sensor == "s1":
            items = search_items(S1_COLLECTION, grid, start, end, provider="custom",
                                 stac_url=served.stac_url, max_cloud=None, site_id=args.site,
                                 required_assets=list(S1_ASSETS))
            forest = forest_mask(grid, world.corine_path, site_id=args.site)
            assets, bounds = S1_ASSETS, grid.bounds

            def pipeline():
                return s1_features_from_items(items, grid, forest, site_id=args.site)

            lay, full = S1_LAYOUT, sizes["S1 float32"]
            label = "S1 RTC"
            per_year = s1_scenes_per_year
            assume = (f"{S1_ORBITS_PER_SITE} relative orbits per site, {S1_REPEAT_DAYS}-day "
                      "repeat per satellite, S1A all years, S1B from 2016-09-26; one item "
                      "(GRD slice) per pass")
        else:
            items = search_items(LST_COLLECTION, grid, start, end, provider="custom",
                                 stac_url=served.stac_url, max_cloud=None, site_id=args.site)
            mgrid = modis_grid(site.latitude, site.longitude, size=5)
            assets, bounds = MODIS_ASSETS, mgrid.bounds

            def pipeline():
                return lst_features_from_items(items, mgrid, start, end, site_id=args.site)

            lay, full = MODIS_LAYOUTS["lst"], sizes["MODIS lst uint16"]
            label = "MODIS LST"
            per_year = modis_scenes_per_year
            assume = "Terra and Aqua, one sinusoidal tile per site and day (no tile edges)"
        n = len(items)
        print(f"site {args.site}: {n} {label} items over {args.years} year(s), "
              f"{args.layout} layout, served over HTTP on 127.0.0.1")
        runs = {"floor": measured(served, served.pids[0],
                                  lambda: floor_reads(items, assets, bounds, env))}
        out = {}
        runs["pipeline"] = measured(served, served.pids[0],
                                    lambda: out.setdefault("res", pipeline()))
        res = out["res"]
        print(f"scenes kept: {res.scenes_kept} of {res.scenes_found}; frame "
              f"{res.frame.shape}, {int(res.frame.notna().to_numpy().sum())} values")
        print(f"{'':10} {'wall s':>8} {'CPU s':>8} {'server':>7} {'HEAD':>6} {'GET':>6} "
              f"{'MB':>8} | per scene: {'HEAD':>5} {'GET':>5} {'MB':>6} {'CPU ms':>7}")
        for name, r in runs.items():
            print(f"{name:10} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['server_cpu_s']:7.2f} "
                  f"{r['head']:6d} {r['get']:6d} {r['bytes'] / 1e6:8.1f} | {'':10} "
                  f"{r['head'] / n:5.2f} {r['get'] / n:5.2f} {r['bytes'] / 1e6 / n:6.3f} "
                  f"{r['cpu_s'] / n * 1e3:7.1f}")
        f, p = runs["floor"], runs["pipeline"]
        print(f"ratio pipeline / floor: wall {p['wall_s'] / f['wall_s']:.2f}, CPU "
              f"{p['cpu_s'] / f['cpu_s']:.2f}, requests "
              f"{(p['head'] + p['get']) / (f['head'] + f['get']):.2f}, bytes "
              f"{p['bytes'] / f['bytes']:.2f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        per_item = {k: p[k] / n for k in ("head", "get", "bytes", "cpu_s")}
        if args.layout == "real":
            # each item's grid (S1: its own origin), the same window on each asset;
            # the compressed size of a full block of each asset
            files = [(it.properties["proj:transform"], lay.block,
                      sizes["MODIS qc uint8"] if a.startswith("QC") else full)
                     for it in items for a in assets]
            byte_factor, extra = random_site_scaling(files, bounds)
            extra /= n
        else:
            byte_factor, extra = 1.0, 0.0
        per_site = sum(per_year(y) for y in PROJ_YEARS)
        years = ", ".join(f"{y}: {per_year(y):.0f}" for y in PROJ_YEARS)
        print_projection(label, per_item, per_site,
                         [f"{per_site:.0f} items per site ({years}): {assume}"],
                         concurrency=READ_THREADS, threads_per_task=1,
                         byte_factor=byte_factor, extra_requests=extra)
        print(f"  (concurrency {READ_THREADS}: gpp_cubes.stac.load.READ_THREADS, the threads "
              "computing a load in a batch worker of one thread)")


if __name__ == "__main__":
    main()
