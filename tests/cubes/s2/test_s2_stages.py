"""S2 stages: reflectance scaling, cloud/snow masks, NBAR, indices, PCA, end-to-end pipeline."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from reference import REFERENCE as REF

from gpp_cubes.demo.scenes import LAT, LON, Scene, granule_at, write_scenes
from gpp_cubes.demo.scenes import sensing_time as when
from gpp_cubes.errors import ConfigError
from gpp_cubes.s2 import S2_BANDS, s2_cube, s2_features, to_reflectance
from gpp_cubes.s2.cloud import cloud_masks, cloudsen12_masks, load_cloudsen12, scl_masks
from gpp_cubes.s2.indices import compute_indices, read_index_list
from gpp_cubes.s2.nbar import BRDF_BANDS, apply_c_factor, c_factor_native, c_factor_on_grid
from gpp_cubes.s2.pca import apply_pca, fit_pca, load_pca, save_pca
from gpp_cubes.s2.snow import fmask_snow


# ----------------------------------------------------------------------- reflectance
def test_reflectance_scale_and_baseline_offset():
    dn = xr.DataArray(np.array([[[0, 1500]], [[0, 1500]]], np.uint16), dims=("time", "y", "x"))
    ds = xr.Dataset({"B04": dn}).assign_coords(
        {"s2:processing_baseline": ("time", ["02.12", "04.00"])})
    r = to_reflectance(ds, ["B04"])
    assert np.isnan(r.B04.values[:, 0, 0]).all()  # DN 0 = nodata
    assert r.B04.values[0, 0, 1] == pytest.approx(0.15)
    assert r.B04.values[1, 0, 1] == pytest.approx(0.05)  # (1500 - 1000) / 10000


# ----------------------------------------------------------------------------- masks
def test_scl_masks_classes():
    scl = xr.DataArray(np.arange(12, dtype=np.uint8), dims="x")
    cloud, shadow = scl_masks(scl)
    assert list(np.flatnonzero(cloud.values)) == [8, 9, 10]
    assert list(np.flatnonzero(shadow.values)) == [3]


def _refl(values: dict[str, float], shape=(1, 8, 8)) -> xr.Dataset:
    return xr.Dataset({b: (("time", "y", "x"), np.full(shape, values.get(b, 0.05), "float32"))
                       for b in S2_BANDS})


def test_s2cloudless_flags_bright_cloud_not_forest():
    forest = {"B01": 0.02, "B02": 0.03, "B03": 0.05, "B04": 0.03, "B05": 0.08, "B06": 0.25,
              "B07": 0.3, "B08": 0.32, "B8A": 0.33, "B09": 0.1, "B11": 0.15, "B12": 0.07}
    cloud = {**dict.fromkeys(S2_BANDS, 0.42), "B01": 0.45, "B04": 0.40, "B08": 0.45,
             "B8A": 0.45, "B09": 0.15, "B11": 0.30, "B12": 0.22}  # bright, white, cold
    refl = xr.concat([_refl(forest), _refl(cloud)], dim="time")
    scl = xr.DataArray(np.full((2, 8, 8), 4, np.uint8), dims=("time", "y", "x"))
    scl[0, 0, 0] = 3
    c, s = cloud_masks("s2cloudless", refl, scl)
    c = c.compute()
    assert not c.values[0].any() and c.values[1].all()
    assert bool(s.values[0, 0, 0]) and int(s.sum()) == 1


class _FakeCloudSEN12:
    """A stand-in model: labels 1 (thick) where B02 > 0.3, 3 (shadow) where B08 < 0.05."""

    def __call__(self, scene):
        b02, b08 = scene[1], scene[7]
        return np.where(b02 > 0.3, 1, np.where(b08 < 0.05, 3, 0)).astype(np.uint8)


def test_cloudsen12_plumbing_with_stand_in_model(tmp_path):
    refl = _refl({"B08": 0.3})
    refl["B02"][0, :2] = 0.5
    refl["B08"][0, 5:] = 0.01
    refl["B04"][0, 7, 7] = np.nan  # nodata never flagged
    c, s = cloudsen12_masks(refl.chunk({"time": 1}), _FakeCloudSEN12())
    assert c.values[0, :2].all() and not c.values[0, 2:].any()
    assert s.values[0, 5:7].all() and not s.values[0, 7, 7] and not s.values[0, :5].any()
    with pytest.raises(ConfigError, match="not found"):
        load_cloudsen12(tmp_path / "missing.pt")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"\.onnx"):
        load_cloudsen12(tmp_path / "w.bin")
    with pytest.raises(ConfigError, match="cloud_model"):
        cloud_masks("cloudsen12", refl)
    with pytest.raises(ConfigError, match="unknown cloud_mask"):
        cloud_masks("fmask", refl)


def test_fmask_snow_thresholds():
    # green, nir, swir1 -> expected; NDSI = (g - s) / (g + s)
    cases = [((0.5, 0.4, 0.1), True), ((0.5, 0.10, 0.1), False),  # NIR <= 0.11
             ((0.09, 0.4, 0.01), False),  # green <= 0.10
             ((0.3, 0.4, 0.22), False),  # NDSI = 0.1538... > 0.15 -> True? see below
             ((0.3, 0.4, 0.25), False)]  # NDSI = 0.0909
    g, n, s = (xr.DataArray([c[0][i] for c in cases]) for i in range(3))
    out = fmask_snow(g, n, s).values
    ndsi = (g - s) / (g + s)
    hand = (ndsi > 0.15) & (n > 0.11) & (g > 0.10)
    assert list(out) == list(hand.values)
    assert list(out) == [True, False, False, True, False]
    assert not bool(fmask_snow(xr.DataArray([np.nan]), xr.DataArray([0.5]),
                               xr.DataArray([0.1]))[0])


# ------------------------------------------------------------------------------ NBAR
FISO = dict(B02=0.0774, B03=0.1306, B04=0.1690, B05=0.2085, B06=0.2316, B07=0.2599,
            B08=0.3093, B11=0.3430, B12=0.2658)
FGEO = dict(B02=0.0079, B03=0.0178, B04=0.0227, B05=0.0256, B06=0.0273, B07=0.0294,
            B08=0.0330, B11=0.0453, B12=0.0387)
FVOL = dict(B02=0.0372, B03=0.0580, B04=0.0574, B05=0.0845, B06=0.1003, B07=0.1197,
            B08=0.1535, B11=0.1154, B12=0.0639)  # Roy et al. (2017), Table 1


def _kernels(sz, vz, raz):
    """RossThick and LiSparse-R (b/r = 1, h/b = 2) kernels (Lucht et al. 2000), radians."""
    cos_xi = np.cos(sz) * np.cos(vz) + np.sin(sz) * np.sin(vz) * np.cos(raz)
    xi = np.arccos(np.clip(cos_xi, -1, 1))
    kvol = ((np.pi / 2 - xi) * np.cos(xi) + np.sin(xi)) / (np.cos(sz) + np.cos(vz)) - np.pi / 4
    d = np.sqrt(np.tan(sz) ** 2 + np.tan(vz) ** 2 - 2 * np.tan(sz) * np.tan(vz) * np.cos(raz))
    sec = 1 / np.cos(sz) + 1 / np.cos(vz)
    cost = np.clip(2 * np.sqrt(d**2 + (np.tan(sz) * np.tan(vz) * np.sin(raz)) ** 2) / sec,
                   -1, 1)
    t = np.arccos(cost)
    o = (t - np.sin(t) * cost) * sec / np.pi
    kgeo = o - sec + 0.5 * (1 + cos_xi) / (np.cos(sz) * np.cos(vz))
    return kvol, kgeo


def _grid_values(block: str, tag: str) -> np.ndarray:
    m = re.search(rf"<{tag}>.*?<Values_List>(.*?)</Values_List>", block, re.S)
    rows = re.findall(r"<VALUES>(.*?)</VALUES>", m.group(1))
    return np.array([[float(v) for v in r.split()] for r in rows])


def _independent_c_factor(xml: str, band: str) -> np.ndarray:
    """c-factor on the 23 x 23 angle grid from my own XML parse and kernel evaluation."""
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
             "B11", "B12"]
    sun = re.search(r"<Sun_Angles_Grid>(.*?)</Sun_Angles_Grid>", xml, re.S).group(1)
    sz, sa = _grid_values(sun, "Zenith"), _grid_values(sun, "Azimuth")
    bid = names.index(band)
    blocks = re.findall(rf'<Viewing_Incidence_Angles_Grids bandId="{bid}" detectorId="\d+">'
                        r"(.*?)</Viewing_Incidence_Angles_Grids>", xml, re.S)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vz = np.nanmean([_grid_values(b, "Zenith") for b in blocks], axis=0)
        va = np.nanmean([_grid_values(b, "Azimuth") for b in blocks], axis=0)
    sz, vz, raz = np.deg2rad(sz), np.deg2rad(vz), np.deg2rad(sa - va)
    kv0, kg0 = _kernels(sz, 0 * vz, raz)
    kv, kg = _kernels(sz, vz, raz)
    num = FISO[band] + FVOL[band] * kv0 + FGEO[band] * kg0
    return num / (FISO[band] + FVOL[band] * kv + FGEO[band] * kg)


def test_c_factor_matches_independent_roy_kernels(tmp_path):
    xml = (REF / "S2-L2A-granule-MTD_TL-N0509.xml").read_text()
    c = c_factor_native(REF / "S2-L2A-granule-MTD_TL-N0509.xml")
    assert c.attrs["epsg"] == 32701
    for band in BRDF_BANDS:
        ind = _independent_c_factor(xml, band)
        ok = np.isfinite(ind)
        assert ok.sum() > 100
        np.testing.assert_allclose(c.sel(band=band).values[ok], ind[ok], atol=1e-6)


def test_c_factor_on_grid_interpolates_and_nbar_passes_other_bands(tmp_path, mini_world):
    from scipy.interpolate import RegularGridInterpolator

    g = mini_world.grid
    path = tmp_path / "MTD_TL.xml"
    path.write_text(granule_at(g.epsg, g.bounds[0] - 600, g.bounds[3] + 600))
    native = c_factor_native(path)
    on = c_factor_on_grid(path, g)
    assert on.shape == (9, *g.shape)
    b = native.sel(band="B04")
    interp = RegularGridInterpolator((b.y.values[::-1], b.x.values), b.values[::-1],
                                     bounds_error=False, fill_value=None)
    yy, xx = np.meshgrid(g.y, g.x, indexing="ij")
    np.testing.assert_allclose(on[2], interp((yy, xx)), rtol=1e-6)
    # NBAR: BRDF bands multiplied, B01/B8A/B09 unchanged, nothing dropped
    refl = _refl({}, shape=(1, *g.shape)).assign_coords(time=[0], y=g.y, x=g.x)
    c = xr.DataArray(on[None], dims=("time", "band", "y", "x"),
                     coords={"band": list(BRDF_BANDS), "y": g.y, "x": g.x})
    out = apply_c_factor(refl, c)
    assert set(out.data_vars) == set(refl.data_vars)
    for band in ("B01", "B8A", "B09"):
        xr.testing.assert_identical(out[band], refl[band])
    np.testing.assert_allclose(out["B04"].values[0], 0.05 * on[2], rtol=1e-6)


# ---------------------------------------------------------------------------- indices
def test_indices_equal_hand_computations():
    rng = np.random.default_rng(1)
    vals = {b: rng.uniform(0.02, 0.45, 6) for b in S2_BANDS}
    vals["B04"][0] = vals["B08"][0] = 0.0  # NDVI undefined -> NaN, no exception
    ds = xr.Dataset({b: ("time", v) for b, v in vals.items()})
    out = compute_indices(ds, ["NDVI", "kNDVI", "NDMI", "MCARI", "EVI"])
    N, R, G, B, RE1, S1 = (vals[k] for k in ("B08", "B04", "B03", "B02", "B05", "B11"))
    with np.errstate(all="ignore"):
        ndvi = (N - R) / (N + R)
        sigma = 0.5 * (N + R)
        kndvi = np.tanh(((N - R) / (2 * sigma)) ** 2)  # (1 - k) / (1 + k), k = exp(-d^2/2s^2)
    np.testing.assert_allclose(out.NDVI.values, ndvi, rtol=1e-6)
    np.testing.assert_allclose(out.kNDVI.values, kndvi, rtol=1e-5)
    assert np.isnan(out.NDVI.values[0])
    np.testing.assert_allclose(out.NDMI.values, (N - S1) / (N + S1), rtol=1e-6)
    with np.errstate(all="ignore"):
        mcari = ((RE1 - R) - 0.2 * (RE1 - G)) * (RE1 / R)
    np.testing.assert_allclose(out.MCARI.values[1:], mcari[1:], rtol=1e-5)
    assert np.isnan(out.MCARI.values[0])  # RE1 / 0: NaN, not inf
    evi = 2.5 * (N - R) / (N + 6 * R - 7.5 * B + 1)
    np.testing.assert_allclose(out.EVI.values[1:], evi[1:], rtol=1e-5)
    assert out.attrs["index_list"] == "NDVI,kNDVI,NDMI,MCARI,EVI"
    assert out.attrs["spyndex_version"]


def test_shipped_index_list_computes_everything():
    names = read_index_list(None)
    assert len(names) == len(set(names)) > 100
    assert {"NDVI", "kNDVI", "NDMI", "MCARI", "EVI"} <= set(names)
    ds = xr.Dataset({b: ("time", np.linspace(0.03, 0.4, 4)[::-1] if b == "B04" else
                         np.linspace(0.05, 0.5, 4)) for b in S2_BANDS})
    out = compute_indices(ds)
    assert list(out.data_vars) == names
    with pytest.raises(ConfigError, match="NOTANINDEX"):
        read_index_list(["NDVI", "NOTANINDEX"])


# -------------------------------------------------------------------------------- PCA
def test_pca_fit_on_training_years_matches_svd(tmp_path):
    rng = np.random.default_rng(2)
    t = pd.date_range("2016-01-01", "2020-12-31", freq="7D")
    latent = rng.normal(size=(len(t), 3))
    x = latent @ rng.normal(size=(3, 8)) + 0.01 * rng.normal(size=(len(t), 8))
    table = pd.DataFrame(x, index=pd.Index(t, name="time"), columns=[f"I{i}" for i in range(8)])
    table.loc[table.index.year >= 2019] += 100.0  # test years must not influence the fit
    fitted = fit_pca(table, variance=0.99)
    train = table[table.index.year <= 2018].to_numpy()
    z = (train - train.mean(0)) / train.std(0)  # population std, as StandardScaler
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    ratio = sv**2 / (sv**2).sum()
    k = int(np.searchsorted(np.cumsum(ratio), 0.99) + 1)
    assert len(fitted.names) == k == 3 and fitted.names[0] == "S2_PC1"
    np.testing.assert_allclose(fitted.explained_variance_ratio, ratio[:k], rtol=1e-8)
    comps = np.array(fitted.components)
    for i in range(k):  # equal up to sign
        assert abs(abs(comps[i] @ vt[i]) - 1) < 1e-8
    pcs = apply_pca(fitted, table)
    ref = ((table.to_numpy() - train.mean(0)) / train.std(0)) @ comps.T
    np.testing.assert_allclose(pcs.to_numpy(), ref, rtol=1e-4, atol=1e-4)
    back = load_pca(save_pca(fitted, tmp_path / "pca.json"))
    assert back == fitted
    assert back.loadings().shape == (3, 8)


# ------------------------------------------------------------------ pipeline end to end
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Clouds/shadows planted inside the circle, a fully cloudy date, clouds only outside."""
    root = tmp_path_factory.mktemp("planted")
    w0 = write_scenes(root / "probe", [Scene("P", when("2018-01-01"))], bands=("SCL",))
    g, tb = w0.grid, w0.tile_bounds
    # 20 m SCL cells whose 10 m pixels are inside / outside the 1 km circle
    r20 = np.floor((tb[3] - g.tower_y) / 20).astype(int)
    c20 = np.floor((g.tower_x - tb[0]) / 20).astype(int)
    inside = {(r20 + i, c20 + j): 9 for i in range(-3, 3) for j in range(-3, 3)}
    inside.update({(r20 + 10, c20 + j): 3 for j in range(-2, 2)})
    outside = {(r20 + i, c20 + 52 + j): 9 for i in range(-3, 3) for j in range(0, 4)}  # ~1.05 km
    scenes = [Scene("D1", when("2018-06-01"), scl=inside),
              Scene("D2", when("2018-06-04"), scl_fill=9, cloud_cover=100),
              Scene("D3", when("2018-06-07"), scl=outside),
              Scene("D4", when("2022-07-10"), baseline="04.00")]
    return write_scenes(root / "w", scenes)


def test_pipeline_masks_and_clear_rule(planted, tmp_path):
    w = planted
    cube = s2_cube((LAT, LON), "2018-01-01", "2022-12-31", items=w.items,
                   cache_dir=tmp_path).compute()
    d = w.grid.distance_to_tower()
    circle = d <= 1000
    assert np.array_equal(cube.buffer.values, circle)
    cloud1 = cube.cloud.values[0]
    assert cloud1.sum() == 36 * 4 and (cloud1 & ~cube.clear.values[0]).sum() == 144
    assert cube.shadow.values[0].sum() == 16 and not (cube.shadow[0] & cube.clear[0]).any()
    # clouds planted outside the circle do not reduce the clear count
    assert cube.cloud.values[2].sum() > 0 and not (cube.cloud.values[2] & circle).any()
    assert int(cube.clear.values[2].sum()) == int(circle.sum())
    feats = s2_features((LAT, LON), "2018-01-01", "2022-12-31", items=w.items,
                        cache_dir=tmp_path, index_list=["NDVI", "kNDVI"])
    assert [str(t)[:10] for t in feats.time.values] == ["2018-06-01", "2018-06-07",
                                                        "2022-07-10"]  # D2 fully cloudy
    assert feats.clear_fraction.values[1] == 1.0
    assert feats.clear_fraction.values[0] == pytest.approx(1 - 160 / circle.sum())
    # mean NBAR over clear pixels equals a direct numpy mean of the cube
    c0 = cube.isel(time=0)
    exp = c0.B04.values[c0.clear.values].mean()
    assert feats.B04.values[0] == pytest.approx(exp, rel=1e-6)
    prov = json.loads(feats.attrs["provenance"])
    assert prov["stac_items"] == ["D1", "D3", "D4"] and prov["cloud_mask"] == "scl"
    assert list(prov["excluded_items"]) == ["D2"]  # read, fully cloudy: not used
    assert prov["excluded_items"]["D2"].startswith("clear_fraction: 0.0%")
    assert prov["index_list"] == ["NDVI", "kNDVI"]


def test_pipeline_engines_agree(planted, tmp_path):
    kw = dict(items=planted.items, cache_dir=tmp_path, index_list=["NDVI", "MCARI"])
    a = s2_features((LAT, LON), "2018-01-01", "2022-12-31", engine="odc", **kw)
    b = s2_features((LAT, LON), "2018-01-01", "2022-12-31", engine="stackstac", **kw)
    xr.testing.assert_allclose(a.drop_attrs(), b.drop_attrs(), rtol=1e-6)
