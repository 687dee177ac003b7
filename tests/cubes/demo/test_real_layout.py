"""Real-archive COG layout of the demo's Sentinel-2 assets (gpp_cubes.demo.real_layout)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from affine import Affine

from gpp_cubes.demo.cog import write_cog
from gpp_cubes.demo.real_layout import (
    CogLayout,
    encode_block,
    encode_block_with_texture,
    filler,
    place_in_tile,
)


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


def test_same_features_as_the_compact_world(tmp_path) -> None:
    """The pipeline gives the same features, kept scenes and variables on both layouts."""
    from gpp_cubes.demo import DemoConfig, generate_world, serve_world
    from gpp_cubes.demo.real_layout import real_layout_world
    from gpp_cubes.s2 import s2_features
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.gdal import configure_gdal
    from gpp_cubes.stac.search import search_items

    cfg = DemoConfig(sites=("DE-Hai",), start="2016-06-01", end="2016-06-25",
                     s2_revisit_days=8)
    world = generate_world(tmp_path / "compact", cfg)
    real, made = real_layout_world(world, tmp_path / "real")
    assert made["files"] == 13 * len(world.items("sentinel-2-l2a"))
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
