"""Integer up-sampling reads (gpp_cubes.stac.readers) against GDAL's warper through odc-stac.

The reference is odc-stac's own ``RioReader.read``, which hands these reads to
``rasterio.warp.reproject`` (nearest); the fast path must return the same window and the
same pixels, and must step aside whenever the grids are not an exact integer up-sampling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from reference import REFERENCE as REF

from gpp_cubes.stac.readers import (
    _retry_classes,
    axis_windows,
    integer_upsampling,
    read_upsampled,
)

X0, Y0 = 600180.0, 5661180.0  # a 60 m multiple, as the site grids are snapped


def _write(path: Path, res: float, shape: tuple[int, int], *, nodata: int | None = 0,
           crs: str = "EPSG:32632", seed: int = 0, mask: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    pix = rng.integers(0, 4000, size=shape, dtype=np.uint16)
    pix[shape[0] * 3 // 4:, shape[1] * 4 // 5:] = 0  # a nodata corner
    profile = {"driver": "GTiff", "width": shape[1], "height": shape[0], "count": 1,
               "dtype": "uint16", "crs": crs, "transform": Affine(res, 0, X0, 0, -res, Y0),
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pix, 1)
        if mask:
            dst.write_mask(pix != 7)
    return path


def _source(path: Path) -> object:
    from odc.geo.geobox import GeoBox
    from odc.loader.types import RasterSource

    with rasterio.open(path) as r:
        footprint = GeoBox(r.shape, r.transform, str(r.crs))
    return RasterSource(str(path), band=1, geobox=footprint)


def _dst(res: float, col_off: float, row_off: float, shape: tuple[int, int] = (37, 41),
         crs: str = "EPSG:32632") -> object:
    from odc.geo.geobox import GeoBox

    return GeoBox(shape, Affine(res, 0, X0 + col_off * res, 0, -res, Y0 - row_off * res), crs)


def _both(src: object, cfg: object, dst: object) -> tuple[object, object]:
    from odc.loader import RioReader

    fast = read_upsampled(src, cfg, dst)
    warped = RioReader(src, None).read(cfg, dst)
    return fast, warped


@pytest.mark.parametrize(("src_res", "col_off", "row_off"), [
    (20.0, 0, 0), (20.0, 48, 30), (20.0, 1, 3),   # odd offsets: pixels split mid-source
    (20.0, -5, -7), (20.0, 290, 280),             # partly outside, on either side
    (60.0, 13, 2), (30.0, 4, 9),
])
@pytest.mark.parametrize(("dtype", "nodata"), [("uint16", 0), ("float32", float("nan"))])
def test_fast_read_equals_odc_stac_warp(tmp_path: Path, src_res: float, col_off: int,
                                        row_off: int, dtype: str, nodata: float) -> None:
    from odc.loader.types import RasterLoadParams

    n = round(3060 / src_res)
    src = _source(_write(tmp_path / "b.tif", src_res, (n, n)))
    cfg = RasterLoadParams(dtype=dtype, fill_value=nodata, resampling="nearest")
    (roi_f, pix_f), (roi_w, pix_w) = _both(src, cfg, _dst(10.0, col_off, row_off))
    # odc-stac may report a larger window than the source covers (filled with nodata)
    canvas_f = np.full((37, 41), nodata, dtype=dtype)
    canvas_w = canvas_f.copy()
    canvas_f[roi_f] = pix_f
    canvas_w[roi_w] = pix_w
    assert pix_f.dtype == pix_w.dtype
    np.testing.assert_array_equal(canvas_f, canvas_w)


def test_nodata_is_mapped_like_the_warper(tmp_path: Path) -> None:
    from odc.loader.types import RasterLoadParams

    src = _source(_write(tmp_path / "b.tif", 20.0, (153, 153)))
    cfg = RasterLoadParams(dtype="float32", fill_value=float("nan"), resampling="nearest")
    # the nodata corner starts at source row 153 * 3 // 4 = 114 and column 122, so at
    # destination row 228 and column 244: this 37 x 41 window (rows 240-276, columns
    # 250-290) lies inside it
    roi, pix = read_upsampled(src, cfg, _dst(10.0, 250, 240))
    assert roi == (slice(0, 37), slice(0, 41))
    assert pix.dtype == np.float32 and np.isnan(pix).all()
    cfg_int = RasterLoadParams(dtype="uint16", fill_value=0, resampling="nearest")
    _, raw = read_upsampled(src, cfg_int, _dst(10.0, 3, 5))
    assert raw.dtype == np.uint16 and (raw > 0).mean() > 0.99  # 0 is drawn 1 in 4000


@pytest.mark.parametrize("case", ["bilinear", "other-crs", "half-pixel", "same-res",
                                  "mask-band", "no-overlap"])
def test_fast_read_steps_aside(tmp_path: Path, case: str) -> None:
    from odc.loader.types import RasterLoadParams

    src = _source(_write(tmp_path / "b.tif", 20.0, (153, 153), mask=case == "mask-band",
                         nodata=None if case == "mask-band" else 0))
    cfg = RasterLoadParams(dtype="uint16", fill_value=0,
                           resampling="bilinear" if case == "bilinear" else "nearest")
    dst = {"other-crs": _dst(10.0, 0, 0, crs="EPSG:32633"),
           "half-pixel": _dst(10.0, 0.5, 0),
           "same-res": _dst(20.0, 3, 3),
           "no-overlap": _dst(10.0, 400, 0)}.get(case, _dst(10.0, 2, 2))
    assert read_upsampled(src, cfg, dst) is None
    # and the reader the loads use still answers, through odc-stac's own read
    reader = _retry_classes()["RetryingRioReader"](src, None)
    roi, pix = reader.read(cfg, dst)
    assert pix.shape == tuple(s.stop - s.start for s in roi)


def test_integer_upsampling_by_hand() -> None:
    src = Affine(20, 0, 1000, 0, -20, 2000)
    assert integer_upsampling(src, Affine(10, 0, 1000, 0, -10, 2000)) == (2, 0, 0)
    # 30 m east and 50 m south of the source origin: 3 and 5 destination pixels
    assert integer_upsampling(src, Affine(10, 0, 1030, 0, -10, 1950)) == (2, 3, 5)
    assert integer_upsampling(src, Affine(10, 0, 980, 0, -10, 2010)) == (2, -2, -1)
    assert integer_upsampling(Affine(60, 0, 0, 0, -60, 0), Affine(10, 0, 0, 0, -10, 0)) == (6, 0, 0)
    assert integer_upsampling(src, Affine(10, 0, 1005, 0, -10, 2000)) is None  # half pixel
    assert integer_upsampling(src, Affine(8, 0, 1000, 0, -8, 2000)) is None    # 2.5x
    assert integer_upsampling(src, Affine(20, 0, 1000, 0, -20, 2000)) is None  # 1x: a paste
    assert integer_upsampling(src, Affine(10, 0, 1000, 0, 10, 2000)) is None   # south-up
    assert integer_upsampling(src, Affine(10, 1, 1000, 0, -10, 2000)) is None  # sheared


def test_axis_windows_by_hand() -> None:
    # 5 source pixels x 2 = 10 destination pixels; the destination starts 3 pixels in
    # (mid source pixel 1) and is 4 long: source pixels 1..3, first up-sampled pixel dropped
    assert axis_windows(5, 4, 2, 3) == (slice(0, 4), slice(1, 4), 1)
    # starts 2 pixels before the source: the first 2 destination pixels are not covered
    assert axis_windows(5, 4, 2, -2) == (slice(2, 4), slice(0, 1), 0)
    # runs past the end: only 10 - 8 = 2 destination pixels covered
    assert axis_windows(5, 6, 2, 8) == (slice(0, 2), slice(4, 5), 0)
    assert axis_windows(5, 6, 2, 10) is None
    assert axis_windows(5, 3, 2, -3) is None


def test_s2_features_use_it_and_equal_the_warper_path(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the S2 builder: the 9 coarser assets of every scene take the fast path (the
    item's projection extension gives their footprint), and the features are identical to a
    build whose reads all go through odc-stac's warper."""
    import gpp_cubes.stac.readers as upsample
    from gpp_cubes.demo.scenes import LAT, LON, RES, Scene, write_scenes
    from gpp_cubes.demo.scenes import sensing_time as when
    from gpp_cubes.s2 import s2_features

    w = write_scenes(tmp_path / "w", [Scene("A1", when("2018-05-01"), scl={(60, 60): 9}),
                                      Scene("A2", when("2018-05-11")),
                                      Scene("A3", when("2018-05-21"), baseline="04.00")])
    template = json.loads((REF / "pc-sentinel-2-l2a-item-2019.json").read_text())
    for item in w.items:  # declared as on Planetary Computer, so odc-stac reads proj:*
        item.stac_extensions = list(template["stac_extensions"])
    kw = dict(items=w.items, cache_dir=tmp_path / "c", index_list=["NDVI", "kNDVI", "EVI"])
    served: list[bool] = []

    def counting(*args: object) -> object:
        out = read_upsampled(*args)
        served.append(out is not None)
        return out

    def build(replacement: object) -> object:
        monkeypatch.setattr(upsample, "read_upsampled", replacement)
        _retry_classes.cache_clear()  # the reader class binds read_upsampled when built
        return s2_features((LAT, LON), "2018-01-01", "2018-12-31", **kw)

    try:
        fast = build(counting)
        warped = build(lambda *args: None)
    finally:
        _retry_classes.cache_clear()
    coarse = sum(r > 10 for r in RES.values())
    assert coarse == 9
    assert sum(served) == 3 * coarse and len(served) == 3 * len(RES)
    xr_fast, xr_warped = fast.drop_attrs(), warped.drop_attrs()
    assert list(xr_fast.data_vars) == list(xr_warped.data_vars)
    for name in xr_fast.data_vars:
        np.testing.assert_array_equal(xr_fast[name].values, xr_warped[name].values,
                                      err_msg=name)
