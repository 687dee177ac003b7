"""Feature QA inside the build: planted garbage is dropped with its reason (or flagged and
kept), and the demo build records its QA in the log, the provenance and the summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gpp_cubes.batch import BuildConfig, read_phase1, resolve_sites, run_sensor
from gpp_cubes.cube.store import is_complete

from .conftest import build_kwargs

SITE = "DE-Hai"


def _plant(monkeypatch: pytest.MonkeyPatch, planted: dict) -> None:
    """Wrap the S2 and LST stages: an NBAR above 1, an NIRv spike, an LST of 400 K and a
    cloud-cold LST, on dates recorded in ``planted``."""
    import gpp_cubes.s2
    import gpp_cubes.sensors.lst

    real_s2, real_lst = gpp_cubes.s2.s2_features, gpp_cubes.sensors.lst.lst_features

    def s2_features(*args, **kwargs):
        ds = real_s2(*args, **kwargs)
        n = ds.sizes["time"]
        i, k = 1, n // 2
        ds["B08"][i] = 1.3
        ds["NIRv"][k] = ds["NIRv"][k] * 3.0
        planted["s2"] = [str(pd.Timestamp(ds["time"].values[j]).date()) for j in (i, k)]
        return ds

    def lst_features(*args, **kwargs):
        res = real_lst(*args, **kwargs)
        col = res.frame["MOD11A1_dt"]
        days = col.dropna().index
        hot, cold = days[2], days[len(days) // 2]
        res.frame.loc[hot, "MOD11A1_dt"] = 400.0
        res.frame.loc[cold, "MOD11A1_dt"] = col[cold] - 60.0
        planted["lst"] = [hot, cold]
        return res

    monkeypatch.setattr(gpp_cubes.s2, "s2_features", s2_features)
    monkeypatch.setattr(gpp_cubes.sensors.lst, "lst_features", lst_features)


@pytest.mark.parametrize("action", ["drop", "flag"])
def test_planted_garbage_is_dropped_with_its_reason_or_flagged(
        build_served, tmp_path, monkeypatch, action):
    planted: dict = {}
    _plant(monkeypatch, planted)
    kw = build_kwargs(build_served)
    cfg = BuildConfig(out_dir=str(tmp_path), qa=(("action", action),), **kw)
    meta = resolve_sites([SITE])[0]
    for sensor in ("s2", "lst"):
        summary = run_sensor(meta, cfg, sensor)
        assert summary["status"] == "ok", summary
        assert is_complete(cfg.phase1_store(SITE, sensor))

    ds, prov = read_phase1(cfg, SITE, "s2")
    qa = prov["qa"]["s2"]
    days = {str(pd.Timestamp(t).date()) for t in ds["s2_time"].values}
    scenes = {s["date"]: s for s in qa["scenes"] if s["date"] in planted["s2"]}
    range_day, spike_day = planted["s2"]
    assert scenes[range_day]["reason"].startswith("qa_range: B08 = 1.3 outside (0, 1]")
    assert scenes[spike_day]["reason"].startswith("qa_outlier: NIRv = ")
    assert prov["qa"]["config"]["action"] == action
    assert prov["parameters"]["qa"]["action"] == action
    if action == "drop":
        assert not days & set(planted["s2"])  # the PCA never sees them
        assert {s["status"] for s in scenes.values()} == {"dropped"}
        assert qa["items"]["dropped"]["qa_range"] >= 1
        assert qa["items"]["dropped"]["qa_outlier"] >= 1
        assert prov["summary"]["s2_qa_dropped"] == 2
    else:
        assert set(planted["s2"]) <= days
        assert {s["status"] for s in scenes.values()} == {"flagged"}
        assert prov["summary"]["s2_qa_dropped"] == 0
        assert prov["summary"]["s2_qa_flagged"] == 2
    assert qa["items"]["used"] + sum(qa["items"]["dropped"].values()) == qa["items"]["found"]

    lst, lprov = read_phase1(cfg, SITE, "lst")
    hot, cold = planted["lst"]
    values = lst["MOD11A1_dt"].to_series()
    assert lprov["qa"]["lst"]["findings"] == {"outlier": {"MOD11A1_dt": 1},
                                              "range": {"MOD11A1_dt": 1}}
    if action == "drop":
        assert values[[hot, cold]].isna().all()
        assert lprov["qa"]["lst"]["values_dropped"] == 2
    else:
        assert values[hot] == 400.0 and np.isfinite(values[cold])
        assert lprov["qa"]["lst"]["values_flagged"] == 2
    log = cfg.log_path(SITE).read_text()
    verb = "dropped" if action == "drop" else "flagged"
    assert f"S2 time step {range_day} {verb} by QA" in log
    assert f"LST value of {hot.date()} {verb} by QA (range)" in log


@pytest.mark.slow
def test_demo_build_records_its_feature_qa(local_build, build_served):
    table, out = local_build
    sites = [s.site_id for s in build_served.world.sites]
    assert {"s2_qa_dropped", "qa_values_dropped"} <= set(table.columns)
    summary = pd.read_csv(out / "logs" / "build-summary.csv")
    # the demo world is clean: the QA drops nothing
    for col in ("s2_qa_dropped", "s2_qa_flagged", "qa_values_dropped", "qa_values_flagged"):
        assert (summary[col] == 0).all(), summary[["site", col]]
    with xr.open_zarr(out / "features.zarr") as ds:
        multi = json.loads(ds.attrs["provenance"])
    for sid in sites:
        with xr.open_zarr(out / f"{sid}.zarr") as ds:
            qa = json.loads(ds.attrs["provenance"])["qa"]
        assert qa == multi[sid]["qa"]
        assert set(qa) == {"config", "s2", "s1", "lst", "clear_sky_ghi"}
        for name in ("s2", "s1", "lst", "clear_sky_ghi"):
            assert qa[name]["findings"] == {}, (sid, name, qa[name]["findings"])
        items = qa["s2"]["items"]
        assert items["used"] + sum(items["dropped"].values()) == items["found"]
        assert all(s["status"] in ("used", "dropped") for s in qa["s2"]["scenes"])
        log = (out / "logs" / f"{sid}.log").read_text()
        assert f"feature QA of {sid} (action drop" in log
        assert "scenes found" in log and "scenes used" in log
