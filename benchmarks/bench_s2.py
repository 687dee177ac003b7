"""Benchmark: S2 features of one demo site over 5 years vs. the I/O floor, and peak memory.

Generates (or reuses) a one-site demo world (:func:`gpp_cubes.demo.generate_world`: real
band set and resolutions, ESA granule metadata, Planetary Computer item schema; one scene
every ``--revisit`` days), serves it on 127.0.0.1 (Range file server + STAC API), searches it
with the same code as against Planetary Computer, then in the same run:

1. the I/O floor: a plain rasterio read, over the same HTTP server, of the same windows
   (the site grid's extent at each band's native resolution) of the same COGs, all 13
   assets of every scene, one after the other (a scene the archive holds twice, 02.xx and
   05.xx processings, is read once: the newest, as the pipeline does);
2. the pipeline: :func:`gpp_cubes.s2_features` (granule metadata download, load, masks,
   c-factor NBAR, 1 km circle, 1 % rule, indices) with cold caches;
3. the same pipeline again with the granule-metadata and c-factor caches warm (a rebuild).

Prints both times, the ratios pipeline / floor (target <= 2.0) and the peak RSS (target
< 2 GiB). Run: ``python benchmarks/bench_s2.py [--years 5] [--revisit 10] [--engine odc]``.
The world is cached under ``$GPP_CUBES_CACHE/bench-world`` (regenerated when the generator
changes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
         "SCL")


def io_floor(items, grid, gdal_env) -> float:
    """Seconds to read the grid's window of every asset with plain rasterio."""
    import rasterio
    from rasterio.windows import from_bounds

    t0 = time.perf_counter()
    with rasterio.Env(**gdal_env):
        for item in items:
            for band in BANDS:
                with rasterio.open(item.assets[band].href) as src:
                    src.read(1, window=from_bounds(*grid.bounds, transform=src.transform))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--revisit", type=int, default=10, help="days between scenes")
    ap.add_argument("--site", default="DE-Hai")
    ap.add_argument("--engine", default="odc")
    ap.add_argument("--world", default=None, help="world directory (default: cache)")
    args = ap.parse_args()

    from gpp_cubes.contract import reason_category
    from gpp_cubes.demo import DemoConfig, generate_world, serve_world
    from gpp_cubes.paper import STUDY_START
    from gpp_cubes.s2 import drop_duplicates, s2_features
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.gdal import configure_gdal
    from gpp_cubes.stac.search import search_items

    first_year = int(STUDY_START[:4])
    start, end = STUDY_START, f"{first_year + args.years - 1}-12-31"
    cfg = DemoConfig(sites=(args.site,), start=start, end=end,
                     s2_revisit_days=args.revisit)
    base = Path(os.environ.get("GPP_CUBES_CACHE") or Path.home() / ".cache" / "gpp_cubes")
    root = Path(args.world) if args.world else base / "bench-world" / cfg.digest()
    t0 = time.perf_counter()
    world = generate_world(root, cfg)
    print(f"world: {root} ({time.perf_counter() - t0:.1f} s)")
    site = world.site(args.site)
    grid = site_grid(site.latitude, site.longitude)
    env = configure_gdal()
    with serve_world(world) as served, tempfile.TemporaryDirectory() as tmp:
        stac_url = served.stac_url
        items = search_items("sentinel-2-l2a", grid, start, end, provider="custom",
                             stac_url=stac_url, site_id=args.site)
        print(f"site {args.site}: {len(items)} scenes over {args.years} years, "
              f"grid {grid.shape}, served over HTTP on 127.0.0.1")
        floor = io_floor(drop_duplicates(items)[0], grid, env)
        times = []
        for _ in range(2):  # cold, then warm caches
            t1 = time.perf_counter()
            feats = s2_features((site.latitude, site.longitude), start, end, items=items,
                                cache_dir=Path(tmp) / "cache", engine=args.engine)
            times.append(time.perf_counter() - t1)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
        prov = json.loads(feats.attrs["provenance"])
        why = Counter(reason_category(r, "other") for r in prov["excluded_items"].values())
        print(f"time steps kept: {feats.sizes['time']} of {len(items)} items "
              f"({len(prov['stac_items'])} used; excluded: {dict(why)}), "
              f"{len(feats.data_vars)} variables")
        print(f"I/O floor (rasterio, same windows, same HTTP server): {floor:.2f} s")
        print(f"pipeline (s2_features, {args.engine}), cold caches: {times[0]:.2f} s")
        print(f"pipeline, warm metadata/c-factor caches: {times[1]:.2f} s")
        print(f"ratio pipeline / floor: {times[0] / floor:.2f} cold, "
              f"{times[1] / floor:.2f} warm (target <= 2.0)")
        print(f"peak RSS: {rss:.2f} GiB (target < 2 GiB)")


if __name__ == "__main__":
    main()
