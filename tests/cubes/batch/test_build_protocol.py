"""``gpp build --protocol ours|paper``: the paper's data choices for the options not given.

The resolution (:func:`gpp_cubes.batch.config.resolve_protocol`) is checked option by
option; then a demo build under the paper protocol (one site over 18 months, so the pooled
training rows allow 18 components) is checked against the paper's choices, and a rerun
under our protocol must rebuild what the protocol changed.
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
from gpp_cubes.batch.build import resolve_sites
from gpp_cubes.batch.config import resolve_protocol
from gpp_cubes.batch.resume import plan_resume
from gpp_cubes.errors import ConfigError, StaleStoreError
from gpp_cubes.paper import N_PCS
from gpp_cubes.s2.indices import default_index_list, named_index_list

from .conftest import SITE, build_cli, build_kwargs

#: 18 months of one site: ~20 clear S2 days in the training years 2018-2019 of the demo
#: world (revisit 20 days), enough rows for 18 components.
PAPER_RUN = {"start": "2018-01-01", "end": "2019-06-30", "train_years": (2018, 2019),
             "test_years": (2020,)}


def _prov(path: Path) -> dict:
    with xr.open_zarr(path, chunks=None) as ds:
        return json.loads(ds.attrs["provenance"])


# --------------------------------------------------------------------------------------
# The resolution, option by option
# --------------------------------------------------------------------------------------


def test_ours_leaves_every_option_as_given():
    fields, notes = resolve_protocol("ours", s2_options={"cloud_mask": "s2cloudless"},
                                     pca_variance=0.9)
    assert notes == ()
    assert fields == {"s2_options": {"cloud_mask": "s2cloudless"}, "pca_components": None,
                      "pca_variance": 0.9, "extremes_method": None, "lst_source": None}
    with pytest.raises(ConfigError, match="protocol 'theirs'"):
        resolve_protocol("theirs")


def test_paper_fills_what_is_not_given_and_says_what_it_cannot(tmp_path):
    cfg = BuildConfig.create(tmp_path, protocol="paper")
    s2 = dict(cfg.s2_options)
    assert cfg.protocol == "paper"
    assert cfg.pca_components == N_PCS == 18
    assert cfg.extremes_method == "quantile"  # --extremes-threshold all-anomalies
    assert s2["index_list"] == tuple(named_index_list("paper-122"))
    assert s2["cloud_mask"] == "scl"  # no weights: stays SCL, with a warning
    assert any(n.startswith("warning:") and "CloudSEN12" in n and "scl" in n
               for n in cfg.protocol_notes)
    assert any("Earth Engine" in n for n in cfg.protocol_notes)
    assert cfg.provenance_params()["protocol_notes"] == list(cfg.protocol_notes)
    # the LST source is never changed; Earth Engine given: no note about it
    ee = BuildConfig.create(tmp_path, protocol="paper", lst_source="ee")
    assert ee.lst_source == "ee" and not any("Earth Engine" in n for n in ee.protocol_notes)


def test_paper_picks_cloudsen12_when_weights_are_given(tmp_path):
    pytest.importorskip("onnxruntime")
    from gpp_cubes.demo.cloud_model import write_blue_threshold_model

    model = write_blue_threshold_model(tmp_path / "m.onnx")
    cfg = BuildConfig.create(tmp_path, protocol="paper", s2_options={"cloud_model": model})
    assert dict(cfg.s2_options)["cloud_mask"] == "cloudsen12"
    assert not any("CloudSEN12" in n for n in cfg.protocol_notes)


def test_explicit_options_win_over_the_paper_protocol_with_a_note(tmp_path):
    cfg = BuildConfig.create(tmp_path, protocol="paper", pca_components=5,
                             extremes_method="negative_tail",
                             s2_options={"cloud_mask": "scl", "index_list": "default"})
    assert (cfg.pca_components, cfg.extremes_method) == (5, "negative_tail")
    assert "index_list" not in dict(cfg.s2_options)  # the default list
    notes = " | ".join(cfg.protocol_notes)
    for said in ("--pcs 5 overrides", "--extremes-threshold reading 'negative_tail' overrides",
                 "--index-list default overrides", "--cloud-mask scl overrides"):
        assert said in notes, said
    # the variance rule given explicitly: no fixed number of PCs
    var = BuildConfig.create(tmp_path, protocol="paper", pca_variance=0.95)
    assert var.pca_components is None and var.pca_variance == 0.95
    assert any("--pca-variance 0.95 overrides" in n for n in var.protocol_notes)
    # an explicit value equal to the paper's is no override
    same = BuildConfig.create(tmp_path, protocol="paper", pca_components=18,
                              extremes_method="quantile",
                              s2_options={"index_list": "paper-122"})
    assert not any("overrides" in n for n in same.protocol_notes)
    assert same == BuildConfig.create(tmp_path, protocol="paper")


def test_protocol_determines_the_site_store_only(tmp_path):
    """Its effect reaches the other stores through the options it sets: with every option
    given explicitly, only the site store's fingerprint tells the protocols apart."""
    from gpp_cubes.batch.fingerprint import pca_fingerprint, phase1_fingerprint, site_fingerprint
    from gpp_cubes.sites.catalog import get_site

    same = {"pca_components": 18, "extremes_method": "quantile",
            "s2_options": {"index_list": "paper-122"}, "lst_source": "ee"}
    ours = BuildConfig.create(tmp_path, **same)
    paper = BuildConfig.create(tmp_path, protocol="paper", **same)
    assert not any("overrides" in n for n in paper.protocol_notes)
    assert ours.s2_options == paper.s2_options  # SCL: no weights
    site = get_site(SITE)
    for sensor in ("s2", "s1", "lst", "target"):
        assert phase1_fingerprint(ours, site, sensor) == phase1_fingerprint(paper, site, sensor)
    assert pca_fingerprint(ours, {}) == pca_fingerprint(paper, {})
    assert site_fingerprint(ours, site, {}).hash != site_fingerprint(paper, site, {}).hash


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------


def test_cli_protocol_and_explicit_options(captured, tmp_path, monkeypatch):
    monkeypatch.delenv("GPP_CUBES_SELECTION", raising=False)
    out = tmp_path / "out"
    run = CliRunner().invoke
    res = run(build_cli(), ["build", "--sites", "DE-Hai", "--out", str(out), "--protocol", "paper"])
    assert res.exit_code == 0, res.output
    assert captured[-1][1] == BuildConfig.create(out, protocol="paper")
    res = run(build_cli(), ["build", "--sites", "DE-Hai", "--out", str(out), "--protocol", "paper",
                            "--extremes-threshold", "negative-tail", "--pca-variance", "0.9",
                            "--cloud-mask", "scl", "--index-list", "default"])
    assert res.exit_code == 0, res.output
    cfg = captured[-1][1]
    assert (cfg.extremes_method, cfg.pca_components, cfg.pca_variance) == (
        "negative_tail", None, 0.9)
    assert "index_list" not in dict(cfg.s2_options)
    assert sum("overrides" in n for n in cfg.protocol_notes) == 4
    # --index-list takes the shipped lists by name, under our protocol too
    res = run(build_cli(), ["build", "--sites", "DE-Hai", "--out", str(out),
                            "--index-list", "paper-122"])
    assert res.exit_code == 0, res.output
    assert len(dict(captured[-1][1].s2_options)["index_list"]) == 122
    # the defaults are still ours
    res = run(build_cli(), ["build", "--sites", "DE-Hai", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert captured[-1][1] == BuildConfig.create(out)


def test_cli_no_targets_and_points(captured, tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke
    res = run(build_cli(), ["build", "--at", "50.95,13.57,XX-Thr", "--at", "51.08,10.45",
                            "--sites", "BE-Vie", "--no-targets", "--fluxnet", str(tmp_path),
                            "--out", str(out)])
    assert res.exit_code == 0, res.output
    sites, cfg = captured[-1]
    assert sites[0] == "BE-Vie"
    assert [(s.id, s.latitude, s.longitude, s.status) for s in sites[1:]] == [
        ("XX-Thr", 50.95, 13.57, "adhoc"), ("XX-Pnt", 51.08, 10.45, "adhoc")]
    assert cfg.targets is False and cfg.fluxnet_dir is None and cfg.targets_label == "none"
    for bad, said in ((["--at", "50.9"], "expected LAT,LON"),
                      (["--at", "50.9,13.5,Tharandt"], "invalid site id 'Tharandt'"),
                      (["--at", "95,13.5"], "coordinates out of range")):
        res = run(build_cli(), ["build", *bad, "--no-targets", "--out", str(out)])
        assert res.exit_code == 2 and said in res.output, res.output


def test_cli_checks_typed_points_against_corine_first(captured, build_served, tmp_path):
    corine = str(build_served.world.corine_path)
    run = CliRunner().invoke
    # Berlin: in Europe, but the demo world's CORINE has no data there
    res = run(build_cli(), ["build", "--at", "52.52,13.40", "--no-targets", "--corine", corine,
                            "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "site XX-Pnt is outside CORINE coverage" in res.output
    res = run(build_cli(), ["build", "--at", "40.7,-74.0", "--no-targets", "--out",
                            str(tmp_path / "o")])
    assert res.exit_code == 1 and "point XX-Pnt at latitude 40.7" in res.output
    assert captured == []  # the build never started
    res = run(build_cli(), ["build", "--at", "51.079407,10.452089", "--no-targets", "--corine",
                            corine, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert [s.id for s in captured[-1][0]] == ["XX-Pnt"]


def test_cli_help_states_the_new_options():
    res = CliRunner().invoke(build_cli(), ["build", "--help"], env={"COLUMNS": "2000"})
    text = " ".join(res.output.split())
    for phrase in ("--protocol", "ours (default) or paper: --pcs 18", "--index-list paper-122",
                   "'paper-122' (the paper used 122", "--no-targets", "LAT,LON,NAME",
                   "--pca", "the paper: a PCA fitted on the training years",
                   "the paper's reading under --protocol paper",
                   "the LST source stays as given", "(the paper used Earth Engine)"):
        assert phrase in text, phrase


# --------------------------------------------------------------------------------------
# A build under the paper protocol, then ours
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_build(build_served, client, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paper-protocol")
    table = build_sites([SITE], out, client=client, protocol="paper",
                        **{**build_kwargs(build_served), **PAPER_RUN})
    assert (table["status"] == "built").all(), table.to_string()
    assert (table["protocol"] == "paper").all() and (table["targets"] == "FLUXNET").all()
    return out


def test_paper_protocol_store(paper_build):
    from gpp_cubes.s2.pca import load_pca

    with xr.open_zarr(paper_build / f"{SITE}.zarr", chunks=None) as ds:
        pcs = [str(v) for v in ds.attrs["predictors"] if str(v).startswith("S2_PC")]
        assert set(pcs) == {str(v) for v in ds.data_vars if str(v).startswith("S2_PC")}
        prov = json.loads(ds.attrs["provenance"])
    assert pcs == [f"S2_PC{i}" for i in range(1, 19)]
    assert prov["pca"]["rule"] == "fixed 18 components"
    # the 122 indices fed the PCA: the S2 table holds them, the PCA used or dropped each
    paper122 = named_index_list("paper-122")
    with xr.open_zarr(paper_build / f".work/{SITE}/s2.zarr", chunks=None) as s2:
        assert [str(v) for v in s2["s2_index"].values] == paper122
    fitted = load_pca(paper_build / ".work/pca.json")
    assert sorted(fitted.indices + fitted.dropped_indices) == sorted(paper122)
    assert len(fitted.indices) >= N_PCS
    # the extremes reading, the protocol and what it could not apply
    assert prov["gpp"]["extremes"]["method"] == "quantile"
    params = prov["parameters"]
    assert params["protocol"] == "paper" and params["extremes_method"] == "quantile"
    assert params["pca_components"] == 18 and params["s2_options"]["cloud_mask"] == "scl"
    assert any("CloudSEN12" in n for n in params["protocol_notes"])
    summary = pd.read_csv(paper_build / "logs/build-summary.csv")
    assert list(summary["protocol"]) == ["paper"]


def test_rerun_under_our_protocol_rebuilds(paper_build, build_served, client, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(paper_build, out)
    kw = {**build_kwargs(build_served), **PAPER_RUN}
    cfg = BuildConfig.create(out, **{k: v for k, v in kw.items()})
    stale = {str(Path(s.path).relative_to(out)) for s in plan_resume(cfg, resolve_sites([SITE]))}
    # the index list (s2), the extremes reading (target), the PC rule and the label
    assert stale == {f".work/{SITE}/s2.zarr", f".work/{SITE}/target.zarr", ".work/pca.json",
                     f"{SITE}.zarr"}
    with pytest.raises(StaleStoreError, match="--rebuild-changed"):
        build_sites([SITE], out, client=client, **kw)
    table = build_sites([SITE], out, client=client, rebuild_changed=True, **kw)
    assert (table["status"] == "built").all() and list(table["protocol"]) == ["ours"]
    prov = _prov(out / f"{SITE}.zarr")
    assert prov["parameters"]["protocol"] == "ours" and prov["parameters"]["protocol_notes"] == []
    assert prov["pca"]["rule"].startswith("explained variance >= 0.99")
    assert prov["gpp"]["extremes"]["method"] == "negative_tail"
    with xr.open_zarr(out / f".work/{SITE}/s2.zarr", chunks=None) as s2:
        assert [str(v) for v in s2["s2_index"].values] == default_index_list()
    # the phase-1 stores the protocol does not touch were reused, not rebuilt
    for sensor in ("s1", "lst"):
        assert (out / f".work/{SITE}/{sensor}.zarr/zarr.json").stat().st_mtime_ns == (
            paper_build / f".work/{SITE}/{sensor}.zarr/zarr.json").stat().st_mtime_ns
    # and the paper's reading flags more days of the record than ours
    with xr.open_zarr(paper_build / f"{SITE}.zarr", chunks=None) as a, \
            xr.open_zarr(out / f"{SITE}.zarr", chunks=None) as b:
        assert int(a["extreme"].sum()) >= int(b["extreme"].sum())
        np.testing.assert_array_equal(a["GPP"].values, b["GPP"].values)
