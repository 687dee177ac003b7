"""Real-archive COG layout of the demo's S2, S1 RTC and MODIS assets (demo.real_layout)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from affine import Affine

from gpp_cubes.demo.cog import write_cog
from gpp_cubes.demo.real_layout import (
    CogLayout,
    auto_overviews,
    encode_block,
    encode_block_with_texture,
    filler,
    place_in_tile,
)

CFG_KW = dict(sites=("DE-Hai",), start="2016-06-01", end="2016-06-25", s2_revisit_days=8)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """A compact one-site demo world and its real-layout copy (S2, S1, MODIS)."""
    from gpp_cubes.demo import DemoConfig, generate_world
    from gpp_cubes.demo.real_layout import real_layout_world

    tmp = tmp_path_factory.mktemp("worlds")
    world = generate_world(tmp / "compact", DemoConfig(**CFG_KW))
    real, made = real_layout_world(world, tmp / "real")
    return world, real, made


def test_joined_pieces_decode_to_the_block() -> None:
    lay = CogLayout(4096, 4096, 256, "uint16", 2)
    blk = filler(256, "uint16", "reflectance").copy()
    blk[40:90] = np.arange(50 * 256, dtype=np.uint16).reshape(50, 256)
    joined = encode_block_with_texture(blk, lay, "reflectance", 40, 90)
    # both decode (zlib checks the Adler-32) to the same predicted samples
    assert zlib.decompress(joined) == zlib.decompress(encode_block(blk, lay))
    undiff = np.cumsum(np.frombuffer(zlib.decompress(joined), "<u2").reshape(256, 256),
                       axis=1, dtype=np.uint16)
    assert np.array_equal(undiff, blk)


def test_window_placed_in_a_sparse_full_tile(tmp_path) -> None:
    rasterio = pytest.importorskip("rasterio")
    tifffile = pytest.importorskip("tifffile")
    from rasterio.windows import from_bounds

    # a 300 x 200 window at 10 m, 60 m lattice, inside a 3000-pixel tile at (499980, 5700000)
    ulx, uly = 499980.0, 5700000.0
    left, top = ulx + 60 * 40, uly - 60 * 37  # 2400 m, 2220 m from the corner
    rng = np.random.default_rng(1)
    data = rng.integers(1, 9000, size=(200, 300)).astype(np.uint16)
    src = tmp_path / "w.tif"
    write_cog(src, data, transform=Affine(10, 0, left, 0, -10, top), crs="EPSG:32632",
              nodata=0)
    lay = CogLayout(3000, 3000, 256, "uint16", 2, (2, 4, 8))
    out = place_in_tile(src, tmp_path / "t.tif", lay, tile_ulx=ulx, tile_uly=uly,
                        kind="reflectance")
    with rasterio.open(tmp_path / "t.tif") as ds:
        assert ds.shape == (3000, 3000) and ds.block_shapes == [(256, 256)]
        assert ds.overviews(1) == [2, 4, 8]
        assert ds.transform == Affine(10, 0, ulx, 0, -10, uly) and ds.crs.to_epsg() == 32632
        got = ds.read(1, window=from_bounds(left, top - 2000, left + 3000, top,
                                            transform=ds.transform))
        assert np.array_equal(got, data)
        assert ds.read(1, window=((2900, 2910), (2900, 2910))).max() == 0  # an absent block: nodata
        assert ds.profile["compress"].lower() == "deflate"
    # rows 222..421, columns 240..539 touch blocks rows 0-1, columns 0-2: 6 blocks, plus
    # the overview blocks over the site (all texture, stored once)
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        full = tif.pages[0]
        written = [(i // 12, i % 12) for i, n in enumerate(full.databytecounts) if n]
        assert sorted(written) == [(r, c) for r in (0, 1) for c in (0, 1, 2)]
        assert full.predictor == 2
        first_full = min(o for o, n in zip(full.dataoffsets, full.databytecounts, strict=True) if n)
        for page in tif.pages[1:]:  # overview blocks lie before the full-resolution ones
            assert all(o < first_full for o, n in zip(page.dataoffsets, page.databytecounts,
                                                      strict=True) if n)
    st = (tmp_path / "t.tif").stat()
    assert st.st_size == out["apparent_size"]
    assert st.st_blocks * 512 < st.st_size / 4  # a sparse file: holes take no space


def test_same_features_as_the_compact_world(worlds, tmp_path) -> None:
    """The pipeline gives the same features, kept scenes and variables on both layouts."""
    from gpp_cubes.demo import serve_world
    from gpp_cubes.s2 import s2_features
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.gdal import configure_gdal
    from gpp_cubes.stac.search import search_items

    world, real, made = worlds
    cfg = world.config
    assert made["collections"]["sentinel-2-l2a"]["files"] == 13 * len(
        world.items("sentinel-2-l2a"))
    item = real.items("sentinel-2-l2a")[0]
    assert item["assets"]["B04"]["proj:shape"] == [10980, 10980]
    assert item["assets"]["B01"]["proj:shape"] == [1830, 1830]
    site = world.site("DE-Hai")
    grid = site_grid(site.latitude, site.longitude)
    configure_gdal()
    feats = {}
    for name, w in (("compact", world), ("real", real)):
        with serve_world(w) as served:
            items = search_items("sentinel-2-l2a", grid, cfg.start, cfg.end,
                                 provider="custom", stac_url=served.stac_url,
                                 site_id="DE-Hai")
            feats[name] = s2_features((site.latitude, site.longitude), cfg.start, cfg.end,
                                      items=items, cache_dir=tmp_path / f"cache-{name}")
    a, b = feats["compact"], feats["real"]
    assert a.sizes["time"] > 0
    assert sorted(a.data_vars) == sorted(b.data_vars)
    assert np.array_equal(a["time"].values, b["time"].values)
    for v in a.data_vars:
        np.testing.assert_allclose(b[v].values, a[v].values, rtol=1e-6, equal_nan=True)
    pa, pb = json.loads(a.attrs["provenance"]), json.loads(b.attrs["provenance"])
    assert pa["stac_items"] == pb["stac_items"]
    assert pa["excluded_items"] == pb["excluded_items"]


def test_float_predictor_and_copied_crs(tmp_path) -> None:
    """A float32 window placed with predictor 3 reads back bit for bit, in a CRS without an
    EPSG code (the MODIS sinusoidal sphere) copied from the source file."""
    rasterio = pytest.importorskip("rasterio")
    tifffile = pytest.importorskip("tifffile")
    from gpp_cubes.demo.modis import WKT2

    px = 926.6254331383334
    ulx, uly = 0.0, 5559752.598833
    rng = np.random.default_rng(3)
    data = rng.gamma(4.4, 0.05 / 4.4, size=(9, 11)).astype(np.float32)
    data[0, 0] = -32768.0
    src = tmp_path / "w.tif"
    t = Affine(px, 0, ulx + 700 * px, 0, -px, uly - 509 * px)  # straddles a block edge
    write_cog(src, data, transform=t, crs=WKT2, nodata=-32768.0)
    lay = CogLayout(1200, 1200, 512, "float32", 3, auto_overviews(1200, 1200, 512))
    assert lay.overviews == (2, 4)
    place_in_tile(src, tmp_path / "t.tif", lay, tile_ulx=ulx, tile_uly=uly, kind="gamma0")
    with rasterio.open(src) as a, rasterio.open(tmp_path / "t.tif") as b:
        assert b.crs == a.crs and b.crs.to_epsg() is None
        assert b.nodata == -32768.0 and b.shape == (1200, 1200)
        got = b.read(1, window=((509, 518), (700, 711)))
        assert got.tobytes() == data.tobytes()
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        assert tif.pages[0].predictor == 3
        written = [i for i, n in enumerate(tif.pages[0].databytecounts) if n]
        assert written == [1, 4]  # rows 509-517 x columns 700-710: blocks (0, 1), (1, 1)


def test_s1_and_lst_features_same_as_the_compact_world(worlds) -> None:
    """S1 and MODIS LST features (the batch build's functions) are the same on both
    layouts, read from whole-grid files whose items state the full grids."""
    import pandas as pd
    import rasterio

    from gpp_cubes.demo import serve_world
    from gpp_cubes.demo.real_layout import MODIS_TILE_PX, S1_SHAPE, modis_tile_corner
    from gpp_cubes.sensors.lst import lst_features
    from gpp_cubes.sensors.s1 import s1_features
    from gpp_cubes.sites.forest import forest_mask
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.gdal import configure_gdal

    world, real, made = worlds
    cfg = world.config
    n_s1, n_modis = len(world.items("sentinel-1-rtc")), len(world.items("modis-11A1-061"))
    assert made["collections"]["sentinel-1-rtc"]["files"] == 2 * n_s1 > 0
    assert made["collections"]["modis-11A1-061"]["files"] == 4 * n_modis > 0
    s1_item = real.items("sentinel-1-rtc", base_url=str(real.root))[0]
    p = s1_item["properties"]
    assert p["proj:shape"] == list(S1_SHAPE) and p["s1:shape"] == list(S1_SHAPE[::-1])
    with rasterio.open(s1_item["assets"]["vv"]["href"]) as ds:
        assert ds.shape == S1_SHAPE and ds.block_shapes == [(512, 512)]
        assert list(ds.transform)[:6] == p["proj:transform"][:6]
        assert ds.dtypes[0] == "float32" and ds.nodata == -32768.0
    from pathlib import Path

    assert s1_item["assets"]["vv"]["file:size"] == Path(s1_item["assets"]["vv"]["href"]
                                                        ).stat().st_size
    m_item = real.items("modis-11A1-061", base_url=str(real.root))[0]
    mp = m_item["properties"]
    ulx, uly = modis_tile_corner(mp["modis:horizontal-tile"], mp["modis:vertical-tile"])
    with rasterio.open(m_item["assets"]["LST_Day_1km"]["href"]) as ds:
        assert ds.shape == (MODIS_TILE_PX, MODIS_TILE_PX) and ds.block_shapes == [(512, 512)]
        assert ds.transform.c == pytest.approx(ulx) and ds.transform.f == pytest.approx(uly)
        assert mp["proj:transform"][2] == pytest.approx(ulx)
    site = world.site("DE-Hai")
    grid = site_grid(site.latitude, site.longitude)
    configure_gdal()
    res = {}
    for name, w in (("compact", world), ("real", real)):
        with serve_world(w) as served:
            forest = forest_mask(grid, w.corine_path, site_id="DE-Hai")
            s1 = s1_features(grid, forest, cfg.start, cfg.end, provider="custom",
                             stac_url=served.stac_url, site_id="DE-Hai")
            lst = lst_features(site.latitude, site.longitude, cfg.start, cfg.end,
                               provider="custom", stac_url=served.stac_url, site_id="DE-Hai")
            res[name] = (s1, lst)
    (s1a, lsta), (s1b, lstb) = res["compact"], res["real"]
    assert len(s1a.frame) > 0 and lsta.frame.notna().any().all()
    pd.testing.assert_frame_equal(s1a.frame, s1b.frame)
    pd.testing.assert_frame_equal(lsta.frame, lstb.frame)
    assert (s1a.scenes_kept, s1a.item_ids) == (s1b.scenes_kept, s1b.item_ids)
    assert (lsta.scenes_kept, lsta.item_ids) == (lstb.scenes_kept, lstb.item_ids)
