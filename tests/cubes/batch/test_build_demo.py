"""Batch builds of the demo world: complete stores, contract, resume, failure isolation, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from gpp_cubes.batch import build_sites
from gpp_cubes.cube.store import is_complete
from gpp_cubes.sites import point_site
from gpp_cubes.targets.fluxnet import find_fluxnet_file, gpp_targets, read_fluxnet

from .compare import assert_same_store
from .conftest import BUILD_END, BUILD_START, build_kwargs

pytestmark = pytest.mark.slow


def test_demo_build_writes_complete_stores_for_every_site(local_build, build_served):
    table, out = local_build
    sites = [s.site_id for s in build_served.world.sites]
    assert list(table["site"]) == sites
    assert (table["status"] == "built").all(), table.to_string()
    assert table["error"].isna().all()
    for col in ("s2_found", "s1_found", "lst_found"):
        assert (table[col] > 0).all()
    assert ((table["gpp_valid_fraction"] > 0) & (table["gpp_valid_fraction"] <= 1)).all()
    for sid in sites:
        assert is_complete(out / f"{sid}.zarr")
        assert (out / "logs" / f"{sid}.log").stat().st_size > 0
    assert is_complete(out / "features.zarr")
    # the build published its cubes as a STAC collection
    import pystac

    collection = pystac.Collection.from_file(str(out / "catalog" / "cubes" / "collection.json"))
    assert sorted(i.id for i in collection.get_items()) == sorted(sites)


def test_stores_follow_the_contract(local_build, build_served):
    from gpp_models.data import open_cube

    _, out = local_build
    cube = open_cube(out / "features.zarr")
    assert cube.sites == tuple(s.site_id for s in build_served.world.sites)
    assert cube.predictors[0] == "S2_PC1"
    assert cube.predictors[-8:] == ("S1_VV", "S1_VH", "S1_DpRVIVV", "MOD11A1_dt",
                                    "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt", "clear_sky_ghi")
    assert np.isfinite(cube.X).all()
    days = pd.date_range(BUILD_START, BUILD_END, freq="D")
    assert list(cube.time) == list(days)
    with xr.open_zarr(out / "DE-Hai.zarr") as ds:
        prov = json.loads(ds.attrs["provenance"])
        assert ds.attrs["format_version"] == "1"
        assert ds["S1_VV"].attrs["units"] == "dB"
        assert ds["MYD11A1_nt"].attrs["units"] == "K"
        n_obs = ds["S1_VV"].attrs["n_observed"]
        assert 0 < n_obs < len(days)
        assert n_obs + ds["S1_VV"].attrs["n_interpolated"] == len(days)
        assert prov["s1"]["item_ids"] and prov["s2"]["item_ids"] and prov["lst"]["item_ids"]
        assert prov["pca"]["sites"] == sorted(cube.sites)
        assert "numpy" in prov["packages"]
        gpp = ds["GPP"].values
    # GPP is the filtered target, reindexed only: never interpolated
    path = find_fluxnet_file(build_served.world.fluxnet_dir, "DE-Hai")
    ref = gpp_targets(read_fluxnet(path), BUILD_START, BUILD_END).to_numpy(np.float32)
    np.testing.assert_array_equal(np.isnan(gpp), np.isnan(ref))
    np.testing.assert_allclose(gpp[~np.isnan(gpp)], ref[~np.isnan(ref)], rtol=1e-6)
    assert np.isnan(gpp).any()


def test_rebuild_skips_complete_stores(local_build, build_served, tmp_path):
    _, out = local_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: (p / ".gpp-complete").read_text() for p in copy.glob("*.zarr")}
    table = build_sites([s.site_id for s in build_served.world.sites], copy, n_workers=1,
                        **build_kwargs(build_served))
    assert (table["status"] == "skipped").all()
    assert (table["s2_found"] > 0).all()  # the table still reports each site's counts
    after = {p.name: (p / ".gpp-complete").read_text() for p in copy.glob("*.zarr")}
    assert before == after


def _fluxnet_with(served, tmp_path, site_id: str):
    """The world's FLUXNET files plus a copy of DE-Hai's named for ``site_id``: a build
    checks that every site has a file before it starts (same names, sizes and times, so
    the stores built from the world's directory stay valid)."""
    flux = tmp_path / "fluxnet"
    shutil.copytree(served.world.fluxnet_dir, flux)
    src = find_fluxnet_file(flux, "DE-Hai")
    shutil.copy2(src, flux / src.name.replace("DE-Hai", site_id))
    return flux


def test_failing_site_does_not_stop_the_others(local_build, build_served, tmp_path):
    _, out = local_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "BE-Vie.zarr")  # rebuilt from its phase-1 intermediates
    nowhere = point_site(40.0, -3.0, site_id="XX-Non", elevation_m=600.0, igbp="ENF")
    table = build_sites(["DE-Hai", "BE-Vie", nowhere], copy, n_workers=2,
                        **{**build_kwargs(build_served),
                           "fluxnet_dir": _fluxnet_with(build_served, tmp_path, "XX-Non")})
    status = dict(zip(table["site"], table["status"], strict=True))
    assert status == {"DE-Hai": "skipped", "BE-Vie": "built", "XX-Non": "failed"}
    err = table.set_index("site").loc["XX-Non", "error"]
    assert "XX-Non" in err or "no " in err
    assert "failed" in (copy / "logs" / "XX-Non.log").read_text()
    assert_same_store(out / "BE-Vie.zarr", copy / "BE-Vie.zarr")
    with xr.open_zarr(copy / "features.zarr") as ds:
        assert list(ds["site"].values) == ["DE-Hai", "BE-Vie"]


def test_pca_failure_fails_the_waiting_sites_and_a_rerun_recovers(
        local_build, build_served, tmp_path, monkeypatch):
    """Phase 2 is scheduled as phase 1 ends (see gpp_cubes.batch.schedule): a PCA that fails must
    still settle every site, as failed with the reason, and write no store."""
    from distributed import Client, LocalCluster

    import gpp_cubes.batch.phase2 as phase2

    _, ref = local_build
    out = tmp_path / "out"
    shutil.copytree(ref / ".work", out / ".work")  # phase 1 of every site is complete
    (out / ".work" / "pca.json").unlink()
    sites = [s.site_id for s in build_served.world.sites]

    def broken(*args, **kwargs):
        raise RuntimeError("singular covariance")

    # in-process workers, so the patched function is the one they run
    with LocalCluster(n_workers=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:
        monkeypatch.setattr(phase2, "run_fit_pca", broken)
        table = build_sites(sites, out, client=client, **build_kwargs(build_served))
        assert (table["status"] == "failed").all(), table.to_string()
        assert table["error"].str.startswith("[pca] RuntimeError: singular covariance").all()
        assert not any(is_complete(out / f"{s}.zarr") for s in sites)
        assert not is_complete(out / "features.zarr")
        monkeypatch.undo()
        table = build_sites(sites, out, client=client, **build_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    for s in [*sites, "features"]:
        assert_same_store(ref / f"{s}.zarr", out / f"{s}.zarr")


def test_cli_build_exit_codes(local_build, build_served, tmp_path):
    from gpp_cubes.cli.app import app

    _, out = local_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    w = build_served.world
    flux = _fluxnet_with(build_served, tmp_path, "CH-Dav")
    args = ["build", "--out", str(copy), "--provider", "custom", "--stac",
            build_served.stac_url, "--corine", str(w.corine_path), "--fluxnet",
            str(flux), "--start", BUILD_START, "--end", BUILD_END, "--workers", "1"]
    runner = CliRunner()
    ok = runner.invoke(app, [*args, "--sites", "DE-Hai,BE-Vie"])
    assert ok.exit_code == 0, ok.output
    assert "skipped" in ok.output
    # a catalog site that the demo world does not cover fails: exit code 1, others fine
    bad = runner.invoke(app, [*args, "--sites", "DE-Hai,CH-Dav"])
    assert bad.exit_code == 1, bad.output
    assert "failed" in bad.output
    usage = runner.invoke(app, ["build", "--out", str(copy)])
    assert usage.exit_code != 0
