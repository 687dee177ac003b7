"""Benchmark: S2 features of one site over 5 years vs. the I/O floor, and peak memory.

Writes a synthetic site (real band set and resolutions, one scene every ``--every`` days for
five years, MTD_TL.xml per scene) with the S2 test world generator, then in the same run:

1. the I/O floor: a plain rasterio read of the same windows (the site grid's extent at each
   band's native resolution) of the same COGs, all 13 assets of every scene;
2. the pipeline: :func:`gpp_cubes.s2_features` (load, masks, NBAR, 1 km circle, 1 % rule,
   indices).

Prints both times, the ratio pipeline / floor (target <= 2.0) and the peak RSS (target
< 2 GiB). Run: ``python benchmarks/bench_s2.py [--every 5] [--engine odc]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s2.world import LAT, LON, RES, Scene, make_world, when  # noqa: E402


def io_floor(world, bands) -> float:
    import rasterio
    from rasterio.windows import from_bounds

    t0 = time.perf_counter()
    for item in world.items:
        for band in bands:
            with rasterio.open(item.assets[band].href) as src:
                src.read(1, window=from_bounds(*world.grid.bounds, transform=src.transform))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=5, help="days between scenes")
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--engine", default="odc")
    args = ap.parse_args()

    from gpp_cubes.s2 import s2_features

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scenes = []
        d = date(2016, 1, 1)
        end = date(2016 + args.years - 1, 12, 31)
        k = 0
        while d <= end:
            iso = d.isoformat()
            scl = {(60 + i, 60 + j): 9 for i in range(10) for j in range(10)} if k % 3 else {}
            scenes.append(Scene(f"S2X_{iso}", when(iso), scl=scl,
                                baseline="04.00" if d >= date(2022, 1, 25) else "02.12",
                                scl_fill=9 if k % 7 == 0 else 4))
            d += timedelta(days=args.every)
            k += 1
        world = make_world(Path(tmp) / "w", scenes)
        print(f"site: {len(scenes)} scenes over {args.years} years, grid {world.grid.shape}, "
              f"written in {time.perf_counter() - t0:.1f} s")

        floor = io_floor(world, list(RES))
        t1 = time.perf_counter()
        feats = s2_features((LAT, LON), "2016-01-01", end.isoformat(), items=world.items,
                            cache_dir=Path(tmp) / "cache", engine=args.engine)
        pipe = time.perf_counter() - t1
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
        print(f"time steps kept: {feats.sizes['time']} of {len(scenes)}, "
              f"{len([v for v in feats.data_vars])} variables")
        print(f"I/O floor (rasterio, same windows): {floor:.2f} s")
        print(f"pipeline (s2_features, {args.engine}): {pipe:.2f} s")
        print(f"ratio pipeline / floor: {pipe / floor:.2f} (target <= 2.0)")
        print(f"peak RSS: {rss:.2f} GiB (target < 2 GiB)")


if __name__ == "__main__":
    main()
