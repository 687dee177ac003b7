"""Every method choice of ``gpp build`` flows into BuildConfig, the stores and their fingerprints.

One site (DE-Hai) over three months of the demo world, on an in-process cluster: a base
build, then rebuilds of copies under changed options. Each option must (a) mark exactly the
stores it determines as stale (:func:`gpp_cubes.batch.resume.plan_resume`), (b) change
what those stores hold, checked against an independent computation where there is one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from gpp_cubes.batch import BuildConfig, build_sites
from gpp_cubes.batch.config import parse_years
from gpp_cubes.batch.resume import plan_resume
from gpp_cubes.errors import ConfigError

from .conftest import END, SITE, START, build_cli, copy_build, short_kwargs

FIVE = ("NDVI", "EVI", "NDWI", "NIRv", "kNDVI")












def _prov(path: Path) -> dict:
    with xr.open_zarr(path, chunks=None) as ds:
        return json.loads(ds.attrs["provenance"])


def _stale(out: Path, served, **changes) -> set[str]:
    from gpp_cubes.batch.build import resolve_sites

    kw = short_kwargs(served, **changes)
    cfg = BuildConfig.create(out, **{k: v for k, v in kw.items() if k != "provider"},
                             provider=kw["provider"])
    return {str(Path(s.path).relative_to(out)) for s in plan_resume(cfg, resolve_sites([SITE]))}


@pytest.mark.parametrize("change, stale", [
    ({}, set()),
    ({"radius_m": 800.0}, {"s2", "s1", "pca", "site"}),
    ({"extremes_method": "quantile"}, {"target", "site"}),
    ({"pca_components": 3}, {"pca", "site"}),
    ({"pca_variance": 0.9}, {"pca", "site"}),
    ({"train_years": (2016, 2017), "test_years": (2018, 2019, 2020)}, {"pca", "site"}),
    ({"lst_source": "ee"}, {"lst", "site"}),
    ({"s2_options": {"cloud_mask": "s2cloudless"}}, {"s2", "pca", "site"}),
    ({"s2_options": {"index_list": list(FIVE)}}, {"s2", "pca", "site"}),
    ({"s2_options": {"cloud_mask": "scl"}}, set()),  # the default, stated
])
def test_each_option_makes_the_stores_it_determines_stale(base, build_served, change, stale):
    names = {"s2": ".work/DE-Hai/s2.zarr", "s1": ".work/DE-Hai/s1.zarr",
             "lst": ".work/DE-Hai/lst.zarr", "target": ".work/DE-Hai/target.zarr",
             "pca": ".work/pca.json", "site": "DE-Hai.zarr"}
    assert _stale(base, build_served, **change) == {names[s] for s in stale}


def test_shipped_index_list_given_as_a_file_is_the_default(tmp_path):
    from gpp_cubes.s2.indices import default_index_list

    shipped = tmp_path / "shipped.txt"
    shipped.write_text("# the shipped list, copied\n" + "\n".join(default_index_list()))
    assert BuildConfig.create(tmp_path, s2_options={"index_list": shipped}) \
        == BuildConfig.create(tmp_path)
    short = tmp_path / "five.txt"
    short.write_text("\n".join(FIVE) + "\n")
    cfg = BuildConfig.create(tmp_path, s2_options={"index_list": short})
    assert dict(cfg.s2_options)["index_list"] == FIVE
    with pytest.raises(ConfigError, match=r"nope\.txt does not exist \(--index-list\)"):
        BuildConfig.create(tmp_path, s2_options={"index_list": tmp_path / "nope.txt"})
    (tmp_path / "bad.txt").write_text("NDVI\nNOT_AN_INDEX\n")
    with pytest.raises(ConfigError, match=r"bad\.txt.*NOT_AN_INDEX"):
        BuildConfig.create(tmp_path, s2_options={"index_list": tmp_path / "bad.txt"})


def test_paper_like_options_change_the_stores(base, build_served, client, tmp_path):
    """Radius, index list, a fixed number of PCs and the all-anomalies threshold, rebuilt."""
    from gpp_cubes.targets.extremes import detect_extremes
    from gpp_cubes.targets.fluxnet import find_fluxnet_file, gpp_targets, read_fluxnet

    out = copy_build(base, tmp_path)
    table = build_sites([SITE], out, client=client, rebuild_changed=True,
                        **short_kwargs(build_served, radius_m=800.0, pca_components=2,
                                 extremes_method="quantile",
                                 s2_options={"index_list": list(FIVE)}))
    assert (table["status"] == "built").all(), table.to_string()
    s2p = _prov(out / ".work/DE-Hai/s2.zarr")
    assert s2p["params"]["radius_m"] == 800.0 and s2p["parameters"]["radius_m"] == 800.0
    assert _prov(out / ".work/DE-Hai/s1.zarr")["params"]["annulus_m"] == [50.0, 800.0]
    with xr.open_zarr(out / ".work/DE-Hai/s2.zarr", chunks=None) as s2:
        assert [str(v) for v in s2["s2_index"].values] == list(FIVE)
        frame = pd.DataFrame(s2["s2_indices"].values, columns=list(FIVE))
    # the smaller circle averages other pixels: the index table differs from the base's
    with xr.open_zarr(base / ".work/DE-Hai/s2.zarr", chunks=None) as b:
        ndvi0 = pd.Series(b["s2_indices"].sel(s2_index="NDVI").values,
                          index=b["s2_time"].values)
    with xr.open_zarr(out / ".work/DE-Hai/s2.zarr", chunks=None) as s2:
        ndvi1 = pd.Series(s2["s2_indices"].sel(s2_index="NDVI").values,
                          index=s2["s2_time"].values)
    common = ndvi0.index.intersection(ndvi1.index)
    assert len(common) >= 2 and not np.allclose(ndvi0[common], ndvi1[common])

    with xr.open_zarr(out / "DE-Hai.zarr", chunks=None) as ds:
        ds = ds.load()
    prov = json.loads(ds.attrs["provenance"])
    assert [v for v in ds.data_vars if str(v).startswith("S2_PC")] == ["S2_PC1", "S2_PC2"]
    assert prov["pca"]["rule"] == "fixed 2 components"
    assert prov["parameters"]["pca_components"] == 2
    # independent reference: the explained variance of the standardised training rows (SVD)
    x = frame[[c for c in FIVE if c not in prov["pca"]["dropped_indices"]]].dropna()
    z = (x - x.mean()) / x.std(ddof=0)
    sv = np.linalg.svd(z.to_numpy(), compute_uv=False)
    np.testing.assert_allclose(prov["pca"]["explained_variance_ratio"],
                               (sv ** 2 / (sv ** 2).sum())[:2], rtol=1e-5)

    # extremes: the all-anomalies reading, as detect_extremes gives it on the FLUXNET file
    assert prov["gpp"]["extremes"]["method"] == "quantile"
    df = read_fluxnet(find_fluxnet_file(build_served.world.fluxnet_dir, SITE))
    full = gpp_targets(df, start=str(df.index[0].date()), end=str(df.index[-1].date()))
    cal = pd.DatetimeIndex(ds["time"].values)
    want = {m: detect_extremes(full, method=m).flags.reindex(cal).fillna(False).to_numpy(bool)
            for m in ("quantile", "negative_tail")}
    np.testing.assert_array_equal(ds["extreme"].values, want["quantile"])
    full_q = detect_extremes(full, method="quantile").flags
    full_n = detect_extremes(full, method="negative_tail").flags
    assert full_q.sum() > full_n.sum()  # the wider reading flags more days on the record


def test_cloudsen12_build_with_a_local_model(base, build_served, client, tmp_path):
    pytest.importorskip("onnxruntime")
    from gpp_cubes.demo.cloud_model import write_blue_threshold_model

    model = write_blue_threshold_model(tmp_path / "cloudsen12-tiny.onnx")
    out = copy_build(base, tmp_path)
    table = build_sites([SITE], out, client=client, rebuild_changed=True,
                        **short_kwargs(build_served, s2_options={"cloud_mask": "cloudsen12",
                                                           "cloud_model": model}))
    assert (table["status"] == "built").all(), table.to_string()
    s2p = _prov(out / ".work/DE-Hai/s2.zarr")
    assert s2p["params"]["cloud_mask"] == "cloudsen12"
    fp = s2p["fingerprint"]["values"]
    assert fp["s2_options.cloud_mask"] == "cloudsen12"
    assert fp["s2_options.cloud_model"] == str(model)
    assert fp["s2_options.cloud_model.size"] == model.stat().st_size
    # the planted clouds are the model's clouds too: the clear days match SCL's
    with xr.open_zarr(base / ".work/DE-Hai/s2.zarr", chunks=None) as b, \
            xr.open_zarr(out / ".work/DE-Hai/s2.zarr", chunks=None) as c:
        t_scl, t_cs = set(b["s2_time"].values), set(c["s2_time"].values)
    assert len(t_scl & t_cs) >= 0.8 * max(len(t_scl), len(t_cs)), (len(t_scl), len(t_cs))
    # a changed weights file makes the S2 store stale
    model.write_bytes(model.read_bytes() + b"\0")
    assert ".work/DE-Hai/s2.zarr" in _stale(out, build_served, s2_options={
        "cloud_mask": "cloudsen12", "cloud_model": model})


def test_cloudsen12_mask_marks_the_planted_clouds(build_served, tmp_path):
    """Per pixel, on a partly cloudy summer scene: the tiny model's clouds are the demo's
    planted clouds (SCL 8 and 9 as the demo wrote them), and nothing else."""
    pytest.importorskip("onnxruntime")
    from gpp_cubes.demo.cloud_model import write_blue_threshold_model
    from gpp_cubes.s2 import s2_cube

    model = write_blue_threshold_model(tmp_path / "m.onnx")
    t = build_served.world.truth.s2_scenes
    pick = t[(t["site"] == SITE) & ~t["fully_cloudy"] & ~t["snow"] & ~t["partial_swath"]
             & (t["cloud_fraction_1km"] > 0.05) & (t["cloud_fraction_1km"] < 0.6)
             & (t["date"] >= START) & (t["date"] <= END)].iloc[0]
    cube = s2_cube(SITE, pick["date"], pick["date"], provider="custom",
                   stac_url=build_served.stac_url, cloud_mask="cloudsen12",
                   cloud_model=model, nbar=False).load()
    valid = cube["valid"].values & cube["buffer"].values[None]
    planted = np.isin(cube["SCL"].values, (8, 9)) & valid
    found = cube["cloud"].values & valid
    assert planted.sum() > 100
    agree = (planted == found)[valid].mean()
    assert agree > 0.99, agree
    assert (found & planted).sum() / planted.sum() > 0.97


def test_s2cloudless_missing_fails_before_the_cluster(monkeypatch, build_served, tmp_path,
                                                      no_cluster):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "s2cloudless" else real(name, *a))
    with pytest.raises(ConfigError, match=r"s2cloudless package.*pip install s2cloudless"):
        build_sites([SITE], tmp_path / "o", n_workers=1,
                    **short_kwargs(build_served, s2_options={"cloud_mask": "s2cloudless"}))
    with pytest.raises(ConfigError, match="--cloud-model"):
        build_sites([SITE], tmp_path / "o", n_workers=1,
                    **short_kwargs(build_served, s2_options={"cloud_mask": "cloudsen12"}))
    assert not (tmp_path / "o").exists()


def test_config_validation_and_years():
    assert parse_years("2016-2018") == (2016, 2017, 2018)
    assert parse_years("2019, 2016-2017,2019") == (2016, 2017, 2019)
    for bad in ("2018-2016", "x", "", "16-18"):
        with pytest.raises(ConfigError, match="--train-years"):
            parse_years(bad)
    with pytest.raises(ConfigError, match=r"years \[2018\] are in both"):
        BuildConfig.create("/tmp/x", train_years=[2016, 2018], test_years=[2018])
    with pytest.raises(ConfigError, match="extremes_method"):
        BuildConfig.create("/tmp/x", extremes_method="median")
    with pytest.raises(ConfigError, match="unknown cloud mask"):
        BuildConfig.create("/tmp/x", s2_options={"cloud_mask": "fmask"})


# --------------------------------------------------------------------------------------
# The command line: every option reaches build_sites
# --------------------------------------------------------------------------------------


def test_cli_options_flow_into_build_config(captured, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from gpp_cubes.demo.cloud_model import write_blue_threshold_model

    monkeypatch.delenv("GPP_CUBES_SELECTION", raising=False)
    model = write_blue_threshold_model(tmp_path / "m.onnx")
    five = tmp_path / "five.txt"
    five.write_text("\n".join(FIVE))
    out = tmp_path / "out"
    res = CliRunner().invoke(build_cli(), [
        "build", "--sites", "DE-Hai", "--out", str(out), "--cloud-mask", "cloudsen12",
        "--cloud-model", str(model), "--radius", "800", "--train-years", "2016-2017",
        "--test-years", "2018-2020", "--index-list", str(five), "--pcs", "18",
        "--extremes-threshold", "all-anomalies", "--lst-source", "earthengine"])
    assert res.exit_code == 0, res.output
    sites, cfg = captured[-1]
    assert sites == ["DE-Hai"]
    s2 = dict(cfg.s2_options)
    assert (s2["cloud_mask"], s2["cloud_model"], s2["index_list"]) == (
        "cloudsen12", str(model.resolve()), FIVE)
    assert (cfg.radius_m, cfg.train_years, cfg.test_years, cfg.pca_components,
            cfg.extremes_method, cfg.lst_source) == (
        800.0, (2016, 2017), (2018, 2019, 2020), 18, "quantile", "ee")

    # the defaults are ours
    res = CliRunner().invoke(build_cli(), ["build", "--sites", "DE-Hai", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert captured[-1][1] == BuildConfig.create(out)

    # --sites all reads OUT/selection.csv, or the file --selection names
    res = CliRunner().invoke(build_cli(), ["build", "--sites", "all", "--out", str(out)])
    assert res.exit_code == 1 and "gpp sites select" in res.output
    assert str(out / "selection.csv") in res.output.replace("\n", "")
    out.mkdir(exist_ok=True)
    (out / "selection.csv").write_text("site_id,name,igbp,latitude,longitude,verdict\n"
                                       "DE-Hai,Hainich,DBF,51.079407,10.452089,pass\n"
                                       "BE-Vie,Vielsalm,MF,50.304962,5.998099,pass\n")
    res = CliRunner().invoke(build_cli(), ["build", "--sites", "all", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert captured[-1][0] == ["DE-Hai", "BE-Vie"]
    other = tmp_path / "other.csv"
    other.write_text("site_id,name,igbp,latitude,longitude,verdict\n"
                     "BE-Vie,Vielsalm,MF,50.304962,5.998099,pass\n")
    res = CliRunner().invoke(build_cli(), ["build", "--sites", "all", "--out", str(out),
                                           "--selection", str(other)])
    assert res.exit_code == 0, res.output
    assert captured[-1][0] == ["BE-Vie"]


def test_cli_help_states_the_paper_values():
    from gpp_cubes.s2.indices import default_index_list

    res = CliRunner().invoke(build_cli(), ["build", "--help"], env={"COLUMNS": "400"})
    text = " ".join(res.output.split())
    assert f"{len(default_index_list())} indices" in text and "the paper used 122" in text
    for phrase in ("(the paper's)", "paper and ours: 1000", "paper and ours: 2016-2018",
                   "paper and ours: 2019-2020", "(the paper: 18)", "ours: 0.99",
                   "negative-tail (ours)", "earthengine (the paper's"):
        assert phrase in text, phrase


def test_a_failing_cloud_model_fails_the_site_naming_it(build_served):
    """A cloud model that raises on every scene is not an unreadable archive: the streamed
    S2 stage fails the site with the model's error, instead of dropping every scene as
    'unreadable: read failed' and ending with 'no readable Sentinel-2 time step'."""
    from gpp_cubes.errors import BuildError
    from gpp_cubes.s2 import s2_features

    def broken(scene: np.ndarray) -> np.ndarray:
        raise RuntimeError("model input mismatch: 111 vs 112 rows")

    with pytest.raises(BuildError, match=r"cloud mask 'cloudsen12'.*111 vs 112 rows"):
        s2_features(SITE, START, START[:8] + "28", provider="custom",
                    stac_url=build_served.stac_url, cloud_mask="cloudsen12",
                    cloud_model=broken, nbar=False)
