"""Peak memory of the Sentinel-2 feature build of one demo site for 1, 2 and 5 years.

Each run is a separate subprocess (fresh interpreter, so peaks do not mix); its peak resident
set size is read with ``resource.getrusage(RUSAGE_CHILDREN)`` after it exits. A streaming
build (blocks of time steps, never the whole cube) has a peak that does not grow with the
number of years: the script prints each peak and its ratio to the 1-year peak, measured in the
same run. Optionally (``--cluster``) it runs the demo batch build on a LocalCluster with a
per-worker memory limit and reports whether any worker was restarted (killed).

Usage::

    python benchmarks/bench_memory.py [--world DIR] [--years 1 2 5] [--cluster]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from gpp_cubes.demo import serve_world
from gpp_cubes.demo.world import World, _read_truth
from gpp_cubes.demo.config import DemoConfig, make_site
cfg = DemoConfig(**json.loads(sys.argv[1]))
root, start, end, cache = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
from pathlib import Path
world = World(root=Path(root), config=cfg, sites=tuple(make_site(s, cfg) for s in cfg.sites),
              truth=_read_truth(Path(root)))
from gpp_cubes.s2 import s2_features
t0 = time.perf_counter()
with serve_world(world) as served:
    ds = s2_features(cfg.sites[0], start, end, provider="custom", stac_url=served.stac_url,
                     cache_dir=cache)
print(json.dumps({"steps": int(ds.sizes["time"]), "seconds": time.perf_counter() - t0}))
"""


def _world(root: Path):
    from gpp_cubes.demo import DemoConfig, generate_world

    cfg = DemoConfig(sites=("DE-Hai",), start="2016-01-01", end="2020-12-31", seed=0,
                     s2_revisit_days=10, s1_revisit_days=24, modis_step_days=16)
    return generate_world(root, cfg), cfg


def _run(cfg, root: Path, years: int) -> dict:
    from dataclasses import asdict

    start, end = "2016-01-01", f"{2016 + years - 1}-12-31"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with tempfile.TemporaryDirectory() as cache:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(asdict(cfg)), str(root),
                              start, end, cache], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{years}-year run failed:\n{out.stderr[-3000:]}")
    # ru_maxrss of RUSAGE_CHILDREN is the largest peak among waited-for children [KiB];
    # runs go from short to long, so a larger value belongs to this run.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info.update(years=years, peak_mib=peak / 1024, grew=peak > before)
    return info


def _cluster(world_root: Path, memory_limit: str) -> None:
    from gpp_cubes.batch import build_sites, dask_client
    from gpp_cubes.demo import generate_world, serve_world
    from tests.demo_fixtures import TEST_CONFIG

    world = generate_world(world_root / "cluster-world", TEST_CONFIG)
    with dask_client(n_workers=2, memory_limit=memory_limit) as client, \
            serve_world(world) as served, tempfile.TemporaryDirectory() as out:
        client.wait_for_workers(2)
        before = set(client.scheduler_info()["workers"])
        t0 = time.perf_counter()
        table = build_sites(list(world.sites), out, start=world.config.start,
                            end=world.config.end,
                            provider="custom", stac_url=served.stac_url,
                            corine_source=str(world.corine_path),
                            fluxnet_dir=str(world.fluxnet_dir), client=client)
        # a worker killed by the nanny (memory limit) comes back under a new address
        after = set(client.scheduler_info()["workers"])
        print(f"\ncluster build: 2 workers x {memory_limit}: "
              f"{(table['status'] != 'failed').sum()}/{len(table)} sites ok in "
              f"{time.perf_counter() - t0:.0f} s; workers replaced (killed): "
              f"{len(before - after)}")
        print(table[["site", "status", "error"]].to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=None)
    parser.add_argument("--years", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--memory-limit", default="1.5GiB")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    root = args.world or Path(tempfile.gettempdir()) / "gpp-bench-memory-world"
    t0 = time.perf_counter()
    world, cfg = _world(root)
    print(f"world: {world.root} ({time.perf_counter() - t0:.0f} s)")
    rows = [_run(cfg, world.root, y) for y in sorted(args.years)]
    base = rows[0]["peak_mib"]
    print(f"{'years':>5} {'S2 steps':>8} {'peak RSS [MiB]':>15} {'vs 1st':>7} {'time [s]':>9}")
    for r in rows:
        print(f"{r['years']:>5} {r['steps']:>8} {r['peak_mib']:>15.0f} "
              f"{r['peak_mib'] / base:>7.2f} {r['seconds']:>9.1f}"
              + ("" if r["grew"] or r is rows[0] else "  (<= an earlier peak)"))
    if args.cluster:
        _cluster(root.parent, args.memory_limit)


if __name__ == "__main__":
    main()
