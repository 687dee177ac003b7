"""Resume reuses a store only if it was built from what this run would build it from.

Every store of a build records a fingerprint of its inputs and parameters
(:mod:`gpp_cubes.batch.fingerprint`); a complete store whose fingerprint differs stops the build
before the Dask cluster starts, or is rebuilt (with what depends on it) under
``rebuild_changed``. One site over three months keeps each build to a few seconds on an
in-process cluster.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import xarray as xr
from typer.testing import CliRunner

from gpp_cubes.batch import build_sites
from gpp_cubes.cube.store import is_complete, write_zarr_atomic
from gpp_cubes.errors import GppError

from .compare import assert_same_store
from .conftest import SITE, START, copy_build, short_kwargs

STORES = (".work/DE-Hai/s2.zarr", ".work/DE-Hai/s1.zarr", ".work/DE-Hai/lst.zarr",
          ".work/DE-Hai/target.zarr", ".work/pca.json", "DE-Hai.zarr", "features.zarr")












def stamps(out: Path) -> dict[str, int | None]:
    """Modification time [ns] of each store's metadata: changes iff the store is rewritten."""
    def mtime(p: Path) -> int | None:
        f = p if p.suffix == ".json" else p / "zarr.json"
        return f.stat().st_mtime_ns if f.exists() else None

    return {s: mtime(out / s) for s in STORES}


def _prov(path: Path) -> dict:
    with xr.open_zarr(path, chunks=None) as ds:
        return json.loads(ds.attrs["provenance"])


def _rebuilt(before: dict, after: dict) -> set[str]:
    return {s for s in STORES if before[s] != after[s]}


def test_s2_store_built_without_corine_is_not_reused_with_corine(build_served, client,
                                                                 tmp_path):
    """The finding: without CORINE the S2 store treats every pixel as forest (and S1 fails);
    rerun with CORINE, that S2 store must not be reused."""
    out = tmp_path / "out"
    corine = str(build_served.world.corine_path)
    table = build_sites([SITE], out, client=client,
                        **short_kwargs(build_served, corine_source=None))
    assert table.loc[0, "status"] == "failed" and "CORINE" in table.loc[0, "error"]
    s2 = out / ".work" / SITE / "s2.zarr"
    assert is_complete(s2) and _prov(s2)["params"]["forest_mask"] == "none"
    try:
        table = build_sites([SITE], out, client=client, **short_kwargs(build_served))
    except GppError as err:  # stopped, naming the parameter and the store
        msg = str(err)
        assert "s2.zarr" in msg and "corine_source=None" in msg and corine in msg, msg
        assert "--rebuild-changed" in msg and "\n" not in msg
        table = build_sites([SITE], out, client=client, rebuild_changed=True,
                            **short_kwargs(build_served))
    assert table.loc[0, "status"] == "built", table.to_string()
    assert _prov(s2)["params"]["forest_mask"].startswith("CORINE")


@pytest.mark.parametrize("change, named", [
    ({"end": "2018-08-31"}, ["end=2018-07-31", "end=2018-08-31"]),
    ({"start": "2018-04-01"}, ["start=2018-05-01", "start=2018-04-01"]),
    ({"stac_url": "http://stac.example.org/api?token=s3cr3t-t0ken"},
     ["stac_url=http://127.0.0.1:", "stac_url=http://stac.example.org/api"]),
])
def test_changed_dates_or_stac_stop_the_build_naming_them(base, build_served, tmp_path,
                                                          no_cluster, change, named):
    out = copy_build(base, tmp_path)
    before = stamps(out)
    with pytest.raises(GppError) as info:
        build_sites([SITE], out, n_workers=1, **short_kwargs(build_served, **change))
    msg = str(info.value)
    assert ".work/DE-Hai/s2.zarr was built with" in msg, msg
    assert all(n in msg for n in named), msg
    assert "--rebuild-changed" in msg and "--force" in msg and "\n" not in msg
    assert "s3cr3t" not in msg  # the endpoint is recorded and shown without its query
    assert stamps(out) == before


def test_cli_names_the_change_exit_2_and_rebuild_changed_rebuilds(base, build_served, client,
                                                                  tmp_path):
    from gpp_cubes.cli.app import app

    out = copy_build(base, tmp_path)
    w = build_served.world
    args = ["build", "--sites", SITE, "--out", str(out), "--provider", "custom", "--stac",
            build_served.stac_url, "--corine", str(w.corine_path), "--fluxnet",
            str(w.fluxnet_dir), "--start", START, "--end", "2018-08-31"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "end=2018-07-31" in lines[0] and "--rebuild-changed" in lines[0]
    res = runner.invoke(app, [*args, "--rebuild-changed", "--scheduler",
                              client.scheduler.address])
    assert res.exit_code == 0, res.output
    with xr.open_zarr(out / f"{SITE}.zarr") as ds:
        assert str(ds["time"].values[-1])[:10] == "2018-08-31"


def test_same_parameters_reuse_every_store(base, build_served, client, tmp_path):
    out = copy_build(base, tmp_path)
    before = stamps(out)
    table = build_sites([SITE], out, client=client, **short_kwargs(build_served))
    assert (table["status"] == "skipped").all() and table.loc[0, "s2_found"] > 0
    assert stamps(out) == before
    # a site store removed is rebuilt from the phase-1 stores and the PCA, identical
    shutil.rmtree(out / f"{SITE}.zarr")
    table = build_sites([SITE], out, client=client, **short_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    assert _rebuilt(before, stamps(out)) == {f"{SITE}.zarr", "features.zarr"}
    for name in (f"{SITE}.zarr", "features.zarr"):
        assert_same_store(base / name, out / name)


def test_rerun_through_a_fresh_server_reuses_with_a_stable_endpoint_identity(
        build_served, client, tmp_path):
    """``gpp demo`` serves its world on a fresh port each run and names the endpoint by the
    world instead (``stac_identity``), so a rerun with the same parameters reuses."""
    from gpp_cubes.demo import serve_world

    out = tmp_path / "out"
    w = build_served.world
    ident = f"demo world {w.root} ({w.config.digest()})"
    table = build_sites([SITE], out, client=client, stac_identity=ident,
                        **short_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    before = stamps(out)
    with serve_world(w) as again:
        assert again.stac_url != build_served.stac_url
        table = build_sites([SITE], out, client=client, stac_identity=ident,
                            **short_kwargs(build_served, stac_url=again.stac_url))
    assert (table["status"] == "skipped").all()
    assert stamps(out) == before


def test_rebuild_changed_rebuilds_only_what_changed(base, build_served, client, tmp_path):
    out = copy_build(base, tmp_path)
    before = stamps(out)
    change = short_kwargs(build_served, s2_options={"max_sun_zenith": 75.0})
    with pytest.raises(GppError, match=r"s2_options\.max_sun_zenith=80\.0"):
        build_sites([SITE], out, client=client, **change)
    table = build_sites([SITE], out, client=client, rebuild_changed=True, **change)
    assert (table["status"] == "built").all(), table.to_string()
    # S2 changed: its store, the PCA fitted on it, the site store and the multi-site store
    assert _rebuilt(before, stamps(out)) == {".work/DE-Hai/s2.zarr", ".work/pca.json",
                                             f"{SITE}.zarr", "features.zarr"}
    fp = _prov(out / f"{SITE}.zarr")["fingerprint"]
    assert fp["inputs"]["s2"]["values"]["s2_options.max_sun_zenith"] == 75.0
    assert fp["values"]["input.s2"] == _prov(out / ".work" / SITE / "s2.zarr")[
        "fingerprint"]["hash"]
    # and the rebuilt directory is now reused as it is
    again = stamps(out)
    table = build_sites([SITE], out, client=client, **change)
    assert (table["status"] == "skipped").all() and stamps(out) == again


def _strip_fingerprint(path: Path) -> None:
    with xr.open_zarr(path, chunks=None) as ds:
        ds = ds.load()
    prov = json.loads(ds.attrs.pop("provenance"))
    del prov["fingerprint"]
    write_zarr_atomic(ds, path, provenance=prov)


@pytest.mark.parametrize("store, rebuilt", [
    (".work/DE-Hai/s1.zarr", {".work/DE-Hai/s1.zarr", f"{SITE}.zarr", "features.zarr"}),
    (".work/pca.json", {".work/pca.json", f"{SITE}.zarr", "features.zarr"}),
])
def test_store_without_fingerprint_is_not_reused_silently(base, build_served, client,
                                                          tmp_path, store, rebuilt):
    """A store of an older version (no fingerprint) stops the build or is rebuilt."""
    out = copy_build(base, tmp_path)
    if store.endswith(".json"):  # the PCA of an older version: its sidecar lists the sites
        (out / ".work" / "pca.sites.json").write_text(json.dumps([SITE]))
    else:
        _strip_fingerprint(out / store)
    before = stamps(out)
    with pytest.raises(GppError) as info:
        build_sites([SITE], out, client=client, **short_kwargs(build_served))
    assert f"{store} has no fingerprint" in str(info.value)
    assert stamps(out) == before
    table = build_sites([SITE], out, client=client, rebuild_changed=True,
                        **short_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    assert _rebuilt(before, stamps(out)) == rebuilt
    assert_same_store(base / f"{SITE}.zarr", out / f"{SITE}.zarr")


def test_missing_fluxnet_file_fails_before_the_cluster_and_any_store(
        build_served, tmp_path, no_cluster):
    out = tmp_path / "out"
    empty = tmp_path / "fluxnet"
    empty.mkdir()
    with pytest.raises(GppError) as info:
        build_sites([SITE], out, **short_kwargs(build_served, fluxnet_dir=empty))
    assert SITE in str(info.value) and str(empty) in str(info.value)
    with pytest.raises(GppError, match=r"FLUXNET directory .*nowhere does not exist"):
        build_sites([SITE], out, **short_kwargs(build_served, fluxnet_dir=tmp_path / "nowhere"))
    assert not list(out.rglob("*.zarr"))


def test_missing_or_unreadable_corine_fails_before_the_cluster_and_any_store(
        build_served, tmp_path, no_cluster):
    from gpp_cubes.cli.app import app

    out = tmp_path / "out"
    missing = tmp_path / "clc2018.tif"
    with pytest.raises(GppError, match=re.escape(f"CORINE raster {missing} does not exist")):
        build_sites([SITE], out, **short_kwargs(build_served, corine_source=missing))
    broken = tmp_path / "broken.tif"
    broken.write_text("not a raster")
    with pytest.raises(GppError, match=re.escape(f"CORINE raster {broken} does not open")):
        build_sites([SITE], out, **short_kwargs(build_served, corine_source=broken))
    assert not list(out.rglob("*.zarr"))
    w = build_served.world
    res = CliRunner().invoke(app, [
        "build", "--sites", SITE, "--out", str(out), "--provider", "custom", "--stac",
        build_served.stac_url, "--corine", str(missing), "--fluxnet", str(w.fluxnet_dir)])
    assert res.exit_code == 1
    assert [ln for ln in res.output.splitlines() if ln.strip()] == [
        f"error [build] CORINE raster {missing} does not exist (--corine)"]


def test_a_new_config_field_counts_everywhere_and_urls_lose_credentials(tmp_path):
    """Fingerprints follow BuildConfig generically; each stage keeps only what it reads."""
    from dataclasses import dataclass, replace

    from gpp_cubes.batch import BuildConfig
    from gpp_cubes.batch.fingerprint import (
        PHASE1,
        differences,
        pca_fingerprint,
        phase1_fingerprint,
        site_fingerprint,
    )
    from gpp_cubes.sites import point_site

    @dataclass(frozen=True)
    class Later(BuildConfig):  # a field added after this module was written
        new_option: float = 1.0

    cfg = Later(out_dir=str(tmp_path), provider="custom",
                stac_url="https://user:pw@stac.example.org/api?sig=s3cr3t",
                corine_source="https://data.example.org/clc.tif?token=s3cr3t")
    meta = point_site(51.08, 10.45, site_id="DE-Hai", elevation_m=430.0, igbp="DBF")
    fps = [*(phase1_fingerprint(cfg, meta, s) for s in PHASE1), pca_fingerprint(cfg, {}),
           site_fingerprint(cfg, meta, {})]
    assert all(fp.values["new_option"] == 1.0 for fp in fps)
    assert "s3cr3t" not in json.dumps([fp.record() for fp in fps]) and "user:pw" not in str(fps)
    s2 = fps[0].values
    assert s2["stac_url"] == "https://stac.example.org/api"
    assert s2["corine_source"] == "https://data.example.org/clc.tif"
    changed = phase1_fingerprint(replace(cfg, new_option=2.0), meta, "s2")
    assert differences(fps[0], changed) == [("new_option", 1.0, 2.0)]
    # the target store does not read the STAC API, the S1 store no S2 option
    other = replace(cfg, stac_url="https://elsewhere.org/stac", s2_options=(("snow", False),))
    assert phase1_fingerprint(other, meta, "target").hash == fps[3].hash
    assert phase1_fingerprint(other, meta, "s1").hash != fps[1].hash  # the endpoint
    assert phase1_fingerprint(replace(cfg, s2_options=(("snow", False),)), meta,
                              "s1").hash == fps[1].hash


def test_fingerprints_cover_every_phase1_task():
    """One registry of phase-1 tasks; the fingerprints name the same ones."""
    from gpp_cubes.batch.fingerprint import NOT_DETERMINING, PHASE1, SITE_FIELDS
    from gpp_cubes.batch.tasks import SENSORS, TASKS

    assert PHASE1 == SENSORS == tuple(TASKS)
    assert set(PHASE1) <= set(NOT_DETERMINING) and set(PHASE1) <= set(SITE_FIELDS)
