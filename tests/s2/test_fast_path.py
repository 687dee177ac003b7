"""The fast paths of the S2 builder equal the plain ones: batched NBAR, block streaming."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gpp_cubes.nbar import BRDF_BANDS, c_factor_block, c_factor_native, read_angles

from .world import REF, mtd_tl_for

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
        text = mtd_tl_for(g.epsg, g.bounds[0] - dx, g.bounds[3] + 600)
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
