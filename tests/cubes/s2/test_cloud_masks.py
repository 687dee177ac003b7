"""Cloud masks against the demo world's planted clouds, and CloudSEN12-family models whose
encoder needs the scene's height and width to be multiples of 32 (the UNets of CloudSEN12:
five stride-2 stages; a site grid is 222 x 222 pixels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gpp_cubes.s2.cloud import CLOUDSEN12_BANDS, load_cloudsen12


def _write_stride32_model(path):
    """An ONNX model that only takes H, W multiples of 32, like a UNet with 5 stride-2
    stages: ``x + 0 * upsample32(avgpool32(x))`` (the shapes of the sum differ otherwise),
    then a 1x1 conv whose argmax is "thick cloud" (1) where B02 > 0.2, else clear (0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((4, len(CLOUDSEN12_BANDS), 1, 1), np.float32)
    w[1, CLOUDSEN12_BANDS.index("B02"), 0, 0] = 1.0
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([0.2, 0.0, -1.0, -1.0], np.float32), "b"),
             numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[32, 32],
                              strides=[32, 32]),
             helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Mul", ["u", "zero"], ["z"]),
             helper.make_node("Add", ["x", "z"], ["s"]),
             helper.make_node("Conv", ["s", "w", "b"], ["scores"])]
    graph = helper.make_graph(
        nodes, "stride32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4, "H", "W"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_cloudsen12_model_gets_a_scene_size_its_encoder_takes(tmp_path):
    """A 222 x 222 site grid made every scene of a UNet-MobileNetV2 (the CloudSEN12
    family) fail in ONNX Runtime's Concat (111 vs 112 rows), and the S2 stage dropped them
    all as 'unreadable: read failed' until 'no readable Sentinel-2 time step'.
    The scene is padded to multiples of 32 and the labels cropped back, in place."""
    pytest.importorskip("onnxruntime")
    model = load_cloudsen12(_write_stride32_model(tmp_path / "stride32.onnx"))
    scene = np.full((len(CLOUDSEN12_BANDS), 40, 50), 0.05, np.float32)
    b02 = CLOUDSEN12_BANDS.index("B02")
    scene[b02, 30:, 41:] = 0.5  # a cloud in the bottom-right corner: the crop must keep it
    scene[b02, 0, 0] = 0.5  # and one pixel in the top-left corner
    labels = model(scene)
    assert labels.shape == (40, 50)
    expected = (scene[b02] > 0.2).astype(np.uint8)
    np.testing.assert_array_equal(labels, expected)


# ------------------------------------------------------- masks vs the planted clouds
SITE = "DE-Hai"


@pytest.fixture(scope="module")
def planted_scenes(served_demo):
    """Five 2019 scenes of the test world: clouds with cirrus, clouds with shadows (two),
    clear, fully cloudy (chosen by their truth rows; one tile, full swath, no snow)."""
    t = served_demo.world.truth.s2_scenes
    t = t[(t["site"] == SITE) & (t["date"] >= "2019-01-01") & (t["date"] <= "2019-12-31")
          & ~t["partial_swath"] & ~t["snow"] & t["duplicate_of"].isna()]
    shadows = t[t["shadow_fraction_1km"] > 0.05]
    picks = [t[(t["cirrus"] != "[]") & ~t["fully_cloudy"]].iloc[0], shadows.iloc[0],
             shadows.iloc[-1],
             t[(t["cloud_fraction_1km"] == 0) & (t["shadow_fraction_1km"] == 0)].iloc[0],
             t[t["fully_cloudy"]].iloc[0]]
    return pd.DataFrame(picks).set_index("item_id")


def _cube(served, scenes, cloud_mask):
    import pystac_client

    from gpp_cubes.s2 import s2_cube

    items = list(pystac_client.Client.open(served.stac_url).search(
        collections=["sentinel-2-l2a"], ids=list(scenes.index)).items())
    return s2_cube(SITE, scenes["date"].min(), scenes["date"].max(), provider="custom",
                   stac_url=served.stac_url, items=items, cloud_mask=cloud_mask,
                   corine=served.world.corine_path, nbar=False).load()


def _truth(cube, scenes):
    """Planted (cloud, shadow) on the cube's pixels, (time, y, x)."""
    from gpp_cubes.demo.s2_render import planted_cloud_masks
    from gpp_cubes.s2.cube import first_items

    x, y = cube["x"].values[None, :], cube["y"].values[:, None]
    masks = [planted_cloud_masks(scenes.loc[iid], x, y) for iid in first_items(cube)]
    return np.stack([m[0] for m in masks]), np.stack([m[1] for m in masks])


def _clear_fraction(cube, cloud_or_shadow):
    """Clear forest fraction in the circle per scene, with the cube's snow mask [1]."""
    region = cube["forest"].values & cube["buffer"].values
    clear = cube["valid"].values & ~cloud_or_shadow & ~cube["snow"].values & region
    return clear.sum(axis=(1, 2)) / region.sum()


@pytest.fixture(scope="module")
def masked(served_demo, planted_scenes):
    """The S2 cube of the planted scenes under SCL and s2cloudless, and the truth."""
    scl = _cube(served_demo, planted_scenes, "scl")
    s2c = _cube(served_demo, planted_scenes, "s2cloudless")
    assert scl.sizes["time"] == len(planted_scenes) == s2c.sizes["time"]
    return scl, s2c, _truth(scl, planted_scenes)


def test_scl_mask_is_the_planted_clouds(masked):
    """SCL against the planted geometry (the world rendered SCL from the same discs at
    20 m, so the misfit is the 20 m cells at the disc edges): pooled IoU of cloud-or-shadow
    0.98 on these scenes and 0.988 over a year of scenes (benchmarks/bench_cloud_masks.py),
    hence >= 0.95; the clear fraction the 1 % rule sees is off by <= 0.003 measured, hence
    <= 0.01. A wrong SCL class, a shifted or mis-resampled SCL read fails."""
    from gpp_cubes.reduce import keep_clear

    cube, _, (cloud, shadow) = masked
    region = cube["valid"].values & cube["buffer"].values[None]
    pred = (cube["cloud"].values | cube["shadow"].values) & region
    true = (cloud | shadow) & region
    assert true.sum() > 10_000  # the scenes do hold planted clouds and shadows in the circle
    assert (pred & true).sum() / (pred | true).sum() >= 0.95
    assert (cube["shadow"].values & shadow & region).sum() / (shadow & region).sum() >= 0.95
    f_mask = _clear_fraction(cube, cube["cloud"].values | cube["shadow"].values)
    f_true = _clear_fraction(cube, cloud | shadow)
    np.testing.assert_allclose(f_mask, f_true, atol=0.01)
    np.testing.assert_array_equal(keep_clear(f_mask), keep_clear(f_true))
    assert f_true.min() == 0.0 and f_true.max() == 1.0  # a cloudy and a clear scene


def test_s2cloudless_mask_on_the_planted_scenes(masked, served_demo):
    """What the demo makes meaningful for s2cloudless: it calls no clear pixel of the
    circle cloud (measured 0 of ~150 000; bound 0.5 %), its shadows are SCL's, and its model
    does run on correctly scaled reflectance: it calls the planted 0.8-reflectance block
    (outside the circle) cloud, as a pixel classifier of brightness must (measured 90 %;
    bound 50 %). A wrong band order or scale flags forest or nothing."""
    from gpp_cubes.s2.cube import first_items

    scl, cube, (cloud, shadow) = masked
    region = cube["valid"].values & cube["buffer"].values[None]
    clear = region & ~(cloud | shadow)
    assert clear.sum() > 50_000
    assert cube["cloud"].values[clear].mean() <= 0.005
    np.testing.assert_array_equal(cube["shadow"].values, scl["shadow"].values)
    x, y = cube["x"].values[None, :], cube["y"].values[:, None]
    block = served_demo.world.truth.s2_planted.set_index("item_id").loc[first_items(cube)[0]]
    on_block = ((x > block["left"]) & (x < block["right"])
                & (y > block["bottom"]) & (y < block["top"]))
    assert on_block.sum() == 36
    flagged = cube["cloud"].values[:, on_block][cube["valid"].values[:, on_block]]
    assert flagged.size >= 4 * 36 and flagged.mean() >= 0.5


@pytest.mark.xfail(strict=True, reason=(
    "s2cloudless is fed L2A with B10 = 0 (L2A has no cirrus band) and then finds none of "
    "the planted clouds: its LightGBM model gives the demo's cloud spectrum a probability "
    "of 0.11 with B10 = 0 and 0.99 with B10 = 0.05 (benchmarks/bench_cloud_masks.py)"))
def test_s2cloudless_finds_the_planted_clouds(masked):
    """The planted clouds (cores, rims, cirrus) in the circle: at least half called cloud
    (SCL: 0.99). Passes once s2cloudless gets a real B10 (e.g. from the L1C item)."""
    _, cube, (cloud, _) = masked
    region = cube["valid"].values & cube["buffer"].values[None]
    assert cube["cloud"].values[cloud & region].mean() >= 0.5


def test_cloudsen12_session_opened_once_per_file_and_again_when_it_changes(tmp_path,
                                                                             monkeypatch):
    """The S2 stage builds a model for every block of scenes: the ONNX session (~0.2 s for a
    CloudSEN12 UNet) is opened once per file, and again only when the file is replaced."""
    pytest.importorskip("onnxruntime")
    import os

    import gpp_cubes.s2.cloud as cloud

    opened: list[str] = []
    real_open = cloud._open_onnx
    monkeypatch.setattr(cloud, "_open_onnx", lambda p: opened.append(p) or real_open(p))
    cloud._open_session.cache_clear()
    path = _write_stride32_model(tmp_path / "m.onnx")
    scene = np.full((len(CLOUDSEN12_BANDS), 32, 32), 0.05, np.float32)
    first = [load_cloudsen12(path)(scene) for _ in range(3)]  # three blocks, one session
    assert len(opened) == 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file is replaced
    again = load_cloudsen12(path)(scene)
    assert len(opened) == 2
    for labels in [*first, again]:
        np.testing.assert_array_equal(labels, np.zeros((32, 32), np.uint8))
    cloud._open_session.cache_clear()
