"""The demo world: deterministic, real formats, served by a real STAC API on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from demo_fixtures import TEST_CONFIG
from rasterio.windows import from_bounds
from reference import REFERENCE

from gpp_cubes.demo import DemoConfig, ServedWorld, World, generate_world, serve_world
from gpp_cubes.sites.grid import site_grid


def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def offset_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A one-site world across the 2022-01-25 switch to processing baseline 04.00."""
    cfg = DemoConfig(sites=("DE-Hai",), start="2022-01-05", end="2022-02-14", seed=3,
                     s2_revisit_days=5, s1_revisit_days=12, modis_step_days=10)
    return generate_world(tmp_path_factory.mktemp("offset") / "world", cfg, workers=1)


def test_same_seed_same_bytes(offset_world: World, tmp_path: Path) -> None:
    again = generate_world(tmp_path / "again", offset_world.config, workers=1)
    a, b = _digest_tree(offset_world.root), _digest_tree(again.root)
    assert len(a) > 50
    assert a == b
    other = generate_world(tmp_path / "other",
                           DemoConfig(**{**offset_world.config.__dict__, "seed": 4}), workers=1)
    assert _digest_tree(other.root) != a


def test_cached_world_is_reused(demo_world: World) -> None:
    marker = demo_world.root / ".demo-world.json"
    before = marker.stat().st_mtime_ns
    again = generate_world(demo_world.root, TEST_CONFIG)
    assert marker.stat().st_mtime_ns == before
    assert again.truth.s2_scenes["item_id"].tolist() == \
        demo_world.truth.s2_scenes["item_id"].tolist()


def test_refuses_to_overwrite_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    from gpp_cubes.errors import ConfigError

    with pytest.raises(ConfigError, match="not a demo world"):
        generate_world(tmp_path, DemoConfig(sites=("DE-Hai",), start="2019-06-01",
                                            end="2019-06-05"))
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_boa_offset_from_baseline_04(offset_world: World) -> None:
    sc = offset_world.truth.s2_scenes
    planted = offset_world.truth.s2_planted.set_index("item_id")
    old, new = sc[sc["date"] < "2022-01-25"], sc[sc["date"] >= "2022-01-25"]
    assert len(old) and len(new)
    assert set(old["processing_baseline"]) == {"02.12"}
    assert set(new["processing_baseline"]) == {"04.00"}
    site = offset_world.site("DE-Hai")
    for item in offset_world.items("sentinel-2-l2a"):
        baseline = item["properties"]["s2:processing_baseline"]
        row = planted.loc[item["id"]]
        with rasterio.open(offset_world.root / item["assets"]["B8A"]["href"]) as ds:
            win = from_bounds(row["left"], row["bottom"], row["right"], row["top"],
                              ds.transform)
            block = ds.read(1, window=win)
        # DN = 10000 * reflectance (+1000 from baseline 04.00), written by hand here
        assert block.shape == (3, 3)
        assert (block == (9000 if baseline >= "04.00" else 8000)).all(), item["id"]
        assert item["properties"]["proj:epsg"] == site.epsg
        # the product metadata state the offset from 04.00 on, as ESA's do
        product = (offset_world.root / item["assets"]["product-metadata"]["href"]).read_text()
        assert f"<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>" in product
        assert ('<BOA_ADD_OFFSET band_id="8">-1000</BOA_ADD_OFFSET>' in product) == (
            baseline >= "04.00")


def test_cogs_validate(demo_world: World) -> None:
    from rio_cogeo.cogeo import cog_validate

    s2 = demo_world.items("sentinel-2-l2a")
    sc = demo_world.truth.s2_scenes.set_index("item_id")
    # two items, one of the neighbouring UTM zone's tile and one cut by the swath edge
    special = [next(it for it in s2 if it["properties"]["proj:epsg"] == 32634),
               next(it for it in s2 if sc.loc[it["id"], "partial_swath"])]
    items = [*s2[:2], *special]
    paths = [demo_world.root / a["href"] for it in items for a in it["assets"].values()
             if "data" in a["roles"]]
    for cid in ("sentinel-1-rtc", "modis-11A1-061"):
        for it in demo_world.items(cid)[:1]:
            paths += [demo_world.root / a["href"] for a in it["assets"].values()]
    paths += sorted((demo_world.root / "corine").glob("*.tif"))
    assert len(paths) >= 14
    for p in paths:
        valid, errors, _ = cog_validate(str(p))
        assert valid, (p, errors)


def test_s2_item_schema_matches_planetary_computer(demo_world: World) -> None:
    real = json.loads((REFERENCE / "pc-sentinel-2-l2a-item-2019.json").read_text())
    ours = demo_world.items("sentinel-2-l2a")[0]
    # every property of the real item, and the band/SCL/granule assets with their fields
    assert set(real["properties"]) <= set(ours["properties"])
    for key in [*(f"B{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12)), "B8A", "SCL",
                "granule-metadata", "product-metadata"]:
        assert key in ours["assets"], key
        assert set(real["assets"][key]) <= set(ours["assets"][key]) | {"href"}, key
        assert ours["assets"][key]["type"] == real["assets"][key]["type"]
        assert ours["assets"][key]["roles"] == real["assets"][key]["roles"]
    assert ours["assets"]["B02"]["proj:transform"][0] == 10.0
    assert ours["assets"]["B05"]["proj:transform"][0] == 20.0
    assert ours["assets"]["B01"]["proj:transform"][0] == 60.0
    assert ours["collection"] == "sentinel-2-l2a"
    import re
    assert re.fullmatch(r"S2[AB]_MSIL2A_\d{8}T\d{6}_R\d{3}_T\d{2}[A-Z]{3}_\d{8}T\d{6}",
                        ours["id"])


def test_search_returns_exactly_the_generated_items(served_demo: ServedWorld) -> None:
    import pystac_client

    world = served_demo.world
    client = pystac_client.Client.open(served_demo.stac_url)
    assert {"sentinel-2-l2a"} <= {c.id for c in client.get_collections()}
    start, end = "2019-03-01", "2019-10-31"
    for site in world.sites:
        g = site_grid(site.latitude, site.longitude)
        search = client.search(collections=["sentinel-2-l2a"], bbox=g.bbox_wgs84(),
                               datetime=f"{start}/{end}", limit=4, method="POST")
        pages = list(search.pages())
        found = [it.id for page in pages for it in page.items]
        sc = world.truth.s2_scenes
        expected = sc[(sc["site"] == site.site_id) & (sc["date"] >= start)
                      & (sc["date"] <= end)]["item_id"]
        assert len(pages) > 1  # POST paging followed the next links
        assert len(found) == len(set(found))
        assert sorted(found) == sorted(expected), site.site_id


def test_assets_readable_over_http(served_demo: ServedWorld) -> None:
    import pystac_client

    world = served_demo.world
    site = world.sites[0]
    planted = world.truth.s2_planted.set_index("item_id")
    client = pystac_client.Client.open(served_demo.stac_url)
    item = next(client.search(collections=["sentinel-2-l2a"],
                              ids=[world.truth.s2_scenes["item_id"].iloc[0]]).items())
    href = item.assets["B04"].href
    assert href.startswith(served_demo.files_url + "/")
    row = planted.loc[item.id]
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"), \
            rasterio.open(f"/vsicurl/{href}") as ds:
        assert ds.crs.to_epsg() == site.epsg
        assert ds.nodata == 0
        block = ds.read(1, window=from_bounds(row["left"], row["bottom"], row["right"],
                                              row["top"], ds.transform))
    assert (block == row["dn"]).all()


def test_odc_stac_load_returns_planted_values(served_demo: ServedWorld) -> None:
    import odc.stac
    import pystac_client

    world = served_demo.world
    site = world.site("BE-Vie")
    g = site_grid(site.latitude, site.longitude)
    sc = world.truth.s2_scenes
    sc = sc[(sc["site"] == site.site_id) & ~sc["partial_swath"]]  # no nodata edge
    ids = [sc[sc["fully_cloudy"]]["item_id"].iloc[0], sc[~sc["fully_cloudy"]]["item_id"].iloc[0]]
    client = pystac_client.Client.open(served_demo.stac_url)
    items = list(client.search(collections=["sentinel-2-l2a"], ids=ids).items())
    ds = odc.stac.load(items, bands=["B04", "B8A", "SCL"], geobox=g.geobox, dtype="uint16",
                       groupby="id", resampling="nearest")
    planted = world.truth.s2_planted.set_index("item_id")
    dist = g.distance_to_tower()
    for it in items:
        one = ds.sel(time=ds.time[[i.id for i in items].index(it.id)])
        row = planted.loc[it.id]
        x, y = one.x.values, one.y.values
        inb = ((x[None, :] > row["left"]) & (x[None, :] < row["right"])
               & (y[:, None] > row["bottom"]) & (y[:, None] < row["top"]))
        assert inb.sum() == 36  # the 60 m block on the 10 m grid
        assert (dist[inb] > 1000).all()  # outside the 1 km circle, inside the grid
        assert (one["B04"].values[inb] == row["dn"]).all()
        assert (one["B8A"].values[inb] == row["dn"]).all()
        scl = one["SCL"].values
        if it.id == ids[0]:  # fully cloudy: every pixel high-probability cloud but the block
            assert (scl[~inb] == 9).all()
        else:
            clouds = json.loads(sc.set_index("item_id").loc[it.id, "clouds"])
            for cx, cy, r in clouds:  # cloud cores (80 % of the radius) are SCL 9
                core = np.hypot(x[None, :] - cx, y[:, None] - cy) < 0.7 * r
                assert (scl[core & ~inb] == 9).all()


def test_granule_metadata_read_by_sen2nbar(served_demo: ServedWorld) -> None:
    from pyproj import Transformer
    from sen2nbar.c_factor import c_factor_from_metadata

    world = served_demo.world
    items = world.items("sentinel-2-l2a", base_url=served_demo.files_url)
    # every tile of every site (FI-Hyy: its zone-35 tile and the zone-34 one)
    for site, window in ((s, w) for s in world.sites for w in s.s2_windows):
        item = next(i for i in items if i["properties"]["s2:mgrs_tile"] == window.tile.tile_id)
        c = c_factor_from_metadata(item["assets"]["granule-metadata"]["href"])
        assert c.shape == (9, 23, 23)
        assert c.attrs["epsg"] == f"EPSG:{window.epsg}"
        tx, ty = Transformer.from_crs(site.epsg, window.epsg, always_xy=True).transform(
            site.tower_x, site.tower_y)
        assert float(c.x.min()) <= tx <= float(c.x.max())
        assert float(c.y.min()) <= ty <= float(c.y.max())
        near = c.sel(x=tx, y=ty, method="nearest")
        assert np.isfinite(near).all()
        assert ((near > 0.8) & (near < 1.2)).all()
        # the mean sun zenith of the item is the SPA zenith near the tower at sensing time
        truth = world.truth.s2_scenes.set_index("item_id").loc[item["id"]]
        assert item["properties"]["s2:mean_solar_zenith"] == pytest.approx(
            truth["sun_zenith"], abs=1.0)


def test_fluxnet_files_have_the_real_header(demo_world: World) -> None:
    header = (REFERENCE / "fluxnet2015-fullset-dd-header.csv").read_text().strip().split(",")
    assert len(header) == 201
    for site in demo_world.sites:
        path = demo_world.fluxnet_path(site.site_id)
        df = pd.read_csv(path)
        assert list(df.columns) == header
        assert df["TIMESTAMP"].astype(str).str.fullmatch(r"\d{8}").all()
        assert (df == -9999).any().any()
        days = pd.to_datetime(df["TIMESTAMP"].astype(str), format="%Y%m%d")
        assert days.iloc[0] == pd.Timestamp(TEST_CONFIG.start)
        assert days.diff().dropna().eq(pd.Timedelta("1D")).all()


def test_nothing_left_running(demo_world: World) -> None:
    with serve_world(demo_world) as served:
        ports = [int(u.rsplit(":", 1)[1]) for u in (served.stac_url, served.files_url)]
        pids = served.pids
        for port in ports:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_s1_tower_pixels_and_annulus(served_demo: ServedWorld) -> None:
    import odc.stac
    import pystac_client

    world = served_demo.world
    site = world.site("DE-Hai")
    g = site_grid(site.latitude, site.longitude)
    client = pystac_client.Client.open(served_demo.stac_url)
    items = list(client.search(collections=["sentinel-1-rtc"], bbox=g.bbox_wgs84(),
                               datetime="2019-05-01/2019-06-30").items())
    sc = world.truth.s1_scenes.set_index("item_id")
    assert sorted(i.id for i in items) == sorted(
        sc[(sc["site"] == "DE-Hai") & (sc["date"] >= "2019-05-01")
           & (sc["date"] <= "2019-06-30")].index)
    assert {i.properties["sat:orbit_state"] for i in items} == {"ascending", "descending"}
    dist = g.distance_to_tower()
    tower = world.truth.s1_planted[world.truth.s1_planted["site"] == "DE-Hai"]
    assert len(tower) == 9 and (tower["distance_m"] < 50).all()
    from gpp_cubes.demo.landscape import landcover

    x, y = np.meshgrid(g.x, g.y)
    forest = np.isin(landcover(x, y, site.forest_clc, site.patches), (311, 312, 313))
    annulus = (dist >= 50) & (dist <= 1000) & forest
    for it in items[:2]:
        ds = odc.stac.load([it], bands=["vv", "vh"], geobox=g.geobox, resampling="nearest")
        vv = ds["vv"].isel(time=0).values
        assert np.all(vv[dist < 15] == 2.0)  # the tower's own signal
        # linear mean over forest in the annulus, by hand, equals the recorded truth
        assert vv[annulus].astype(np.float64).mean() == pytest.approx(
            sc.loc[it.id, "annulus_vv_linear"], rel=1e-6)
        assert 10 * np.log10(vv[annulus].mean()) == pytest.approx(
            sc.loc[it.id, "forest_vv_db"], abs=0.5)


def test_modis_items_and_tower_pixel(served_demo: ServedWorld) -> None:
    import pystac_client

    from gpp_cubes.sensors.modis import MODIS_ORIGIN_X, MODIS_PIXEL_M

    world = served_demo.world
    site = world.site("FI-Var")
    client = pystac_client.Client.open(served_demo.stac_url)
    g = site_grid(site.latitude, site.longitude)
    items = list(client.search(collections=["modis-11A1-061"], bbox=g.bbox_wgs84(),
                               datetime="2019-01-01/2019-12-31").items())
    truth = world.truth.modis_scenes
    truth = truth[truth["site"] == "FI-Var"].set_index("item_id")
    assert sorted(i.id for i in items) == sorted(truth[truth["date"].str[:4] == "2019"].index)
    assert {i.properties["platform"] for i in items} == {"terra", "aqua"}
    it = items[0]
    assert it.properties["datetime"] is None and it.properties["start_datetime"]
    row = truth.loc[it.id]
    with rasterio.open(f"/vsicurl/{it.assets['LST_Day_1km'].href}") as ds:
        lst = ds.read(1)
        # the window lies on the global MODIS 1 km grid
        assert ((ds.transform.c - MODIS_ORIGIN_X) / MODIS_PIXEL_M) == pytest.approx(
            round((ds.transform.c - MODIS_ORIGIN_X) / MODIS_PIXEL_M), abs=1e-6)
    with rasterio.open(f"/vsicurl/{it.assets['QC_Day'].href}") as ds:
        qc = ds.read(1)
    r, c = int(row["tower_row"]), int(row["tower_col"])
    assert lst[r, c] == row["day_dn_tower"] and qc[r, c] == row["day_qc_tower"]
    good = (qc == 0) & (lst > 0)
    if qc[r, c] == 0:  # a good pixel holds the truth LST (+ a pattern of sd 0.4 K)
        assert lst[r, c] * 0.02 == pytest.approx(row["day_truth_k"], abs=2.0)
    assert ((lst == 0) == (qc == 2)).all()  # cloud: not produced, fill value
    assert good.any() or row["day_good_3x3"] == 0


def test_corine_agrees_with_scene_land_cover(demo_world: World) -> None:
    from gpp_cubes.demo.landscape import landcover
    from gpp_cubes.sites.corine import artificial_mask, forest_mask, read_corine

    for site in demo_world.sites:
        g = site_grid(site.latitude, site.longitude)
        codes = np.asarray(read_corine(demo_world.corine_path, g))
        x, y = np.meshgrid(g.x, g.y)
        fine = landcover(x, y, site.forest_clc, site.patches)
        assert (codes == fine).mean() > 0.95, site.site_id  # 100 m vs 10 m edges only
        within = g.distance_to_tower() <= 1000
        assert forest_mask(codes)[within].mean() >= 0.9  # passes the paper's 70 % rule
        assert not artificial_mask(codes)[within].any()


def test_gpp_is_the_known_function(demo_world: World) -> None:
    from gpp_cubes.targets.extremes import detect_extremes
    from gpp_cubes.targets.fluxnet import gpp_targets, read_fluxnet

    daily = demo_world.truth.daily
    for site in demo_world.sites:
        truth = daily[daily["site"] == site.site_id].set_index("time")
        gpp = gpp_targets(read_fluxnet(demo_world.fluxnet_path(site.site_id)),
                          start=TEST_CONFIG.start, end=TEST_CONFIG.end)
        valid = truth["status"] == "valid"
        assert gpp.notna().sum() == valid.sum()
        np.testing.assert_allclose(gpp[valid.values].to_numpy(),
                                   truth.loc[valid, "gpp_noisy"].to_numpy(), rtol=1e-5, atol=1e-6)
        assert gpp.notna().mean() > 0.6
        # clear-sky radiation explains more of the noise-free GPP than any other driver
        r2 = {c: np.corrcoef(truth[c], truth["gpp_true"])[0, 1] ** 2
              for c in ("clear_sky_ghi", "greenness", "lst_day_k")}
        assert max(r2, key=r2.get) == "clear_sky_ghi", (site.site_id, r2)
        # every planted drought is found by the extreme detection
        events = detect_extremes(gpp).events
        for _, ev in demo_world.truth.extremes.query("site == @site.site_id").iterrows():
            s, e = pd.Timestamp(ev["start"]), pd.Timestamp(ev["end"])
            assert ((events["start"] <= e) & (events["end"] >= s)).any(), (site.site_id, ev)


def test_summary(served_demo: ServedWorld) -> None:
    from gpp_cubes.demo import summary

    table = summary(served_demo).set_index("site")
    world = served_demo.world
    for site in world.sites:
        row = table.loc[site.site_id]
        assert row["sentinel-2-l2a"] == (world.truth.s2_scenes["site"] == site.site_id).sum()
        assert row["sentinel-1-rtc"] == (world.truth.s1_scenes["site"] == site.site_id).sum()
        assert row["modis-11A1-061"] == (world.truth.modis_scenes["site"] == site.site_id).sum()
        # valid days of the world (2018-2020) over the paper's 2016-2020 calendar (1827 days)
        valid = ((world.truth.daily["site"] == site.site_id)
                 & (world.truth.daily["status"] == "valid")).sum()
        assert row["gpp_valid_fraction"] == pytest.approx(valid / 1827, abs=1e-3)
        assert row["planted_droughts"]
