"""The fast paths of the S2 builder equal the plain ones: batched NBAR, block streaming."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from reference import REFERENCE as REF

from gpp_cubes.demo.scenes import granule_at
from gpp_cubes.s2.granule import read_angles
from gpp_cubes.s2.nbar import BRDF_BANDS, c_factor_block, c_factor_native

MTD = REF / "S2-L2A-granule-MTD_TL-N0509.xml"


def test_read_angles_equals_sen2nbar():
    from sen2nbar.metadata import angles_from_metadata

    ref = angles_from_metadata(str(MTD))
    ours = read_angles(MTD)
    assert list(ours.band.values) == list(ref.band.values)
    assert list(ours.angle.values) == list(ref.angle.values)
    np.testing.assert_array_equal(ours.x.values, ref.x.values)
    np.testing.assert_array_equal(ours.y.values, ref.y.values)
    np.testing.assert_array_equal(ours.values, ref.values)  # NaN where no detector
    assert ours.attrs["epsg"] == 32701


def test_c_factor_native_equals_sen2nbar_c_factor_from_metadata():
    from sen2nbar.c_factor import c_factor_from_metadata
    from sen2nbar.utils import _extrapolate_c_factor

    ref = _extrapolate_c_factor(c_factor_from_metadata(str(MTD)))
    ours = c_factor_native(MTD)
    assert list(ours.band.values) == list(ref.band.values) == list(BRDF_BANDS)
    np.testing.assert_allclose(ours.values, ref.values, rtol=0, atol=1e-6)
    assert np.isfinite(ours.values).all()


def test_c_factor_block_equals_per_scene_sen2nbar_and_xarray_interp(tmp_path, mini_world):
    """Two tiles (different upper-left corners) and a sun-angle change: batched = per scene."""
    from sen2nbar.c_factor import c_factor_from_metadata
    from sen2nbar.utils import _extrapolate_c_factor

    g = mini_world.grid
    paths = []
    for k, (dx, sun) in enumerate([(600, 0.0), (600, 7.5), (5600, 0.0)]):
        text = granule_at(g.epsg, g.bounds[0] - dx, g.bounds[3] + 600)
        # a detector gap: the first two rows of every view grid are NaN (sen2nbar fills
        # them from the nearest node)
        text = re.sub(r"(<Viewing_Incidence_Angles_Grids[^>]*>\s*<Zenith>.*?<Values_List>\s*)"
                      r"<VALUES>[^<]*</VALUES>\s*<VALUES>[^<]*</VALUES>",
                      lambda m: m.group(1) + ("<VALUES>" + " ".join(["NaN"] * 23)
                                              + "</VALUES>") * 2, text, flags=re.S)
        if sun:  # shift the sun zenith grid so scenes differ
            head, tail = text.split("<Sun_Angles_Grid>", 1)
            grid_txt, rest = tail.split("</Sun_Angles_Grid>", 1)
            zen, azi = grid_txt.split("<Azimuth>", 1)
            zen = re.sub(r"(\d+\.\d+)", lambda m, s=sun: f"{float(m.group(1)) + s:.4f}", zen)
            text = head + "<Sun_Angles_Grid>" + zen + "<Azimuth>" + azi + \
                "</Sun_Angles_Grid>" + rest
        p = tmp_path / f"MTD_{k}.xml"
        p.write_text(text)
        paths.append(p)
    from sen2nbar.metadata import angles_from_metadata

    assert np.isnan(angles_from_metadata(str(paths[0])).sel(band="B04").values).any()
    block = c_factor_block(paths, g)
    assert block.shape == (3, len(BRDF_BANDS), *g.shape) and block.dtype == np.float32
    for k, p in enumerate(paths):
        c = _extrapolate_c_factor(c_factor_from_metadata(str(p)))
        ref = c.interp(y=g.y, x=g.x, method="linear",
                       kwargs={"fill_value": "extrapolate"}).values.astype(np.float32)
        np.testing.assert_allclose(block[k], ref, rtol=1e-6)
    assert not np.allclose(block[0], block[1])  # the sun change matters


def test_read_angles_rejects_non_granule(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<a><b/></a>")
    with pytest.raises(ValueError, match="Tile_Geocoding"):
        read_angles(p)


def test_streamed_features_equal_lazy_cube_path(tmp_path):
    """Block streaming (blocks of 2 time steps, one of them a two-scene mosaic; a fully
    cloudy step; a 04.00 scene) equals reducing the lazy per-pixel cube."""
    from gpp_cubes.demo.scenes import LAT, LON, Scene, write_scenes
    from gpp_cubes.demo.scenes import sensing_time as when
    from gpp_cubes.s2 import s2_features

    scl = {(60 + i, 60 + j): 9 for i in range(8) for j in range(8)}
    scenes = [Scene("A1", when("2018-05-01"), scl=scl), Scene("A2", when("2018-05-04")),
              Scene("A3", when("2018-05-04", minute=21)), Scene("A4", when("2018-05-07"),
                                                              scl_fill=9),
              Scene("A5", when("2022-05-10"), baseline="04.00", scl={(70, 70): 3})]
    w = write_scenes(tmp_path / "w", scenes)
    kw = dict(items=w.items, cache_dir=tmp_path / "c", index_list=["NDVI", "kNDVI", "EVI"])
    fast = s2_features((LAT, LON), "2018-01-01", "2022-12-31", block=2, **kw)
    slow = s2_features((LAT, LON), "2018-01-01", "2022-12-31", stream=False, **kw)
    # A batch-build worker's settings (one block at a time, two read threads): same values.
    serial = s2_features((LAT, LON), "2018-01-01", "2022-12-31", block=2, blocks_in_flight=1,
                         read_threads=2, **kw)
    assert [str(t)[:10] for t in fast.time.values] == ["2018-05-01", "2018-05-04",
                                                       "2022-05-10"]
    xr.testing.assert_allclose(fast.drop_attrs(), slow.drop_attrs(), rtol=1e-6)
    xr.testing.assert_identical(fast.drop_attrs(), serial.drop_attrs())
    pf, ps = (json.loads(d.attrs["provenance"]) for d in (fast, slow))
    # the fully cloudy A4 was read but is not used: excluded with its clear fraction
    assert pf["stac_items"] == ps["stac_items"] == ["A1", "A2", "A3", "A5"]
    assert pf["dropped_items"] == ps["dropped_items"] == {}
    assert pf["excluded_items"] == ps["excluded_items"] == {
        "A4": "clear_fraction: 0.0% clear forest pixels in the circle < 1%"}


def test_streamed_features_drop_only_the_unreadable_step(tmp_path):
    """A truncated COG fails its block; the block is retried step by step and only that
    scene is dropped, with its id and reason in the provenance."""
    from gpp_cubes.demo.scenes import LAT, LON, Scene, write_scenes
    from gpp_cubes.demo.scenes import sensing_time as when
    from gpp_cubes.s2 import s2_features

    scenes = [Scene(f"S{k}", when(f"2018-06-{k + 1:02d}")) for k in range(5)]
    w = write_scenes(tmp_path / "w", scenes)
    bad = w.root / "S2" / "B04.tif"
    bad.write_bytes(bad.read_bytes()[:600])
    feats = s2_features((LAT, LON), "2018-01-01", "2018-12-31", items=w.items, block=4,
                        cache_dir=tmp_path / "c", index_list=["NDVI"], max_failed_fraction=0.5)
    prov = json.loads(feats.attrs["provenance"])
    assert list(prov["dropped_items"]) == ["S2"]
    assert "read failed" in prov["dropped_items"]["S2"]
    assert prov["stac_items"] == ["S0", "S1", "S3", "S4"]
    assert [str(t)[:10] for t in feats.time.values] == ["2018-06-01", "2018-06-02",
                                                        "2018-06-04", "2018-06-05"]


def test_read_angles_equals_sen2nbar_on_demo_world_granules(tmp_path):
    """The demo world's granules (NaN outside each detector's strip) read identically."""
    from sen2nbar.metadata import angles_from_metadata

    from gpp_cubes.demo.granule import granule_metadata_xml, mgrs_tile, viewing_angles_xml

    tile = mgrs_tile(51.0792, 10.4522)
    xml = granule_metadata_xml(
        tile=tile, sensing_time=pd.Timestamp("2019-07-01T10:20:00"), tile_id_l2a="T",
        tile_id_l1c="T", datastrip_id="D", archiving_time=pd.Timestamp("2019-07-02"),
        viewing_xml=viewing_angles_xml(tile, 40e3), quality={})
    p = tmp_path / "MTD_TL.xml"
    p.write_text(xml)
    ref = angles_from_metadata(str(p))
    ours = read_angles(p)
    np.testing.assert_array_equal(ours.values, ref.values)
    assert list(ours.band.values) == list(ref.band.values)
    sub = read_angles(p, bands=BRDF_BANDS)
    assert list(sub.band.values) == ["Sun", *BRDF_BANDS]
    np.testing.assert_array_equal(sub.values, ref.sel(band=["Sun", *BRDF_BANDS]).values)


def test_c_factor_cache_returns_the_computed_values(tmp_path, mini_world):
    from gpp_cubes.s2.nbar import c_factor_block_cached

    g = mini_world.grid
    p = tmp_path / "MTD_TL.xml"
    p.write_text(granule_at(g.epsg, g.bounds[0] - 600, g.bounds[3] + 600))
    ref = c_factor_block([p], g)
    first = c_factor_block_cached([p], ["item-1"], g, cache_dir=tmp_path / "cache")
    p.unlink()  # from now on only the cache can answer
    again = c_factor_block_cached([p], ["item-1"], g, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first, ref)
    np.testing.assert_array_equal(again, ref)
    assert len(list((tmp_path / "cache" / "c-factor").glob("*.npy"))) == 1
    with pytest.raises(FileNotFoundError):  # another item id is not served from the cache
        c_factor_block_cached([p], ["item-2"], g, cache_dir=tmp_path / "cache")


def test_c_factors_of_a_site_computed_once_then_served_from_the_cache(tmp_path, mini_world):
    """Screening computes the node c-factors of all scenes in one call and hands them to
    the grid cache: no granule is read again, and the values equal the per-block path."""
    from gpp_cubes.s2.nbar import c_factor_block_cached, c_factor_cached, c_factor_nodes

    g = mini_world.grid
    paths = []
    for k, dx in enumerate((600, 5600)):  # two tiles: two angle-grid frames in one call
        p = tmp_path / f"MTD_{k}.xml"
        p.write_text(granule_at(g.epsg, g.bounds[0] - dx, g.bounds[3] + 600))
        paths.append(p)
    ref = c_factor_block(paths, g)
    nodes = dict(zip(["a", "b"], c_factor_nodes(paths), strict=True))
    for p in paths:
        p.unlink()  # only the given nodes (then the cache) can answer
    cache = tmp_path / "cache"
    assert c_factor_cached(["a", "b"], g, cache_dir=cache) == [False, False]
    got = c_factor_block_cached(paths, ["a", "b"], g, cache_dir=cache, nodes=nodes)
    np.testing.assert_array_equal(got, ref)
    assert c_factor_cached(["a", "b"], g, cache_dir=cache) == [True, True]
    np.testing.assert_array_equal(c_factor_block_cached(paths, ["a", "b"], g, cache_dir=cache),
                                  ref)
