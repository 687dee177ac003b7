"""Cubes without FLUXNET (``--no-targets``, ``--at``) projected onto another build's PCA
(``--pca FROM``): what ``gpp predict`` runs on at a site without a tower.

The short one-site build of the conftest (DE-Hai) is the base whose PCA the new build
projects onto; the new build has a catalog site without its FLUXNET file (BE-Vie) and an ad
hoc point at DE-Hai's tower. The PCs are checked against a projection computed here with
NumPy from the base's PCA JSON.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gpp_cubes.batch import BuildConfig, build_sites
from gpp_cubes.batch.build import resolve_sites
from gpp_cubes.batch.resume import plan_resume
from gpp_cubes.contract import NO_TARGETS_REASON, NOT_OBSERVED_ATTR
from gpp_cubes.errors import ConfigError, InputFormatError
from gpp_cubes.sites.catalog import get_site

from .conftest import SITE, copy_build, short_kwargs

HAI = get_site(SITE)
#: An ad hoc point at DE-Hai's tower (as ``gpp build --at LAT,LON`` makes it: XX-Pnt).
POINT = (HAI.latitude, HAI.longitude)
NEW = ["BE-Vie", POINT]


def _open(path: Path) -> xr.Dataset:
    with xr.open_zarr(path, chunks=None) as ds:
        return ds.load()


def _pcs(ds: xr.Dataset) -> list[str]:
    return [str(p) for p in ds.attrs["predictors"] if str(p).startswith("S2_PC")]


def _pc_frame(ds: xr.Dataset) -> pd.DataFrame:
    """The S2 PCs by day (time x component)."""
    return pd.DataFrame({p: ds[p].values for p in _pcs(ds)},
                        index=pd.DatetimeIndex(ds["time"].values))


@pytest.fixture(scope="module")
def new_build(base, build_served, client, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("no-targets")
    table = build_sites(NEW, out, client=client, targets=False, pca_from=base,
                        **short_kwargs(build_served))
    assert (table["status"] == "built").all(), table.to_string()
    assert list(table["site"]) == ["BE-Vie", "XX-Pnt"]
    assert (table["targets"] == "none").all() and table["gpp_valid_fraction"].isna().all()
    return out


def test_no_targets_stores_say_so(new_build):
    for sid in ("BE-Vie", "XX-Pnt"):
        ds = _open(new_build / f"{sid}.zarr")
        assert np.isnan(ds["GPP"].values).all() and ds["GPP"].attrs["n_observed"] == 0
        assert not ds["extreme"].values.any()
        for name in ("GPP", "extreme"):
            assert ds[name].attrs[NOT_OBSERVED_ATTR] == NO_TARGETS_REASON
        assert ds.attrs["targets"] == "none"
        prov = json.loads(ds.attrs["provenance"])
        assert prov["targets"] == "none" and prov["gpp"]["targets"] == "none"
        assert prov["parameters"]["targets"] is False
        assert prov["parameters"]["fluxnet_dir"] is None  # nothing read it
        # the predictors are all there, without gaps
        for p in ds.attrs["predictors"]:
            assert np.isfinite(ds[p].values).all(), (sid, p)
    multi = _open(new_build / "features.zarr")
    assert multi.attrs["targets"] == "none"
    assert multi["GPP"].attrs[NOT_OBSERVED_ATTR] == NO_TARGETS_REASON
    assert (new_build / "logs/build-summary.csv").is_file()
    assert set(pd.read_csv(new_build / "logs/build-summary.csv")["targets"]) == {"none"}


def test_pcs_are_the_projection_onto_the_base_pca(new_build, base):
    """Independent reference: the base's PCA JSON applied with NumPy to the new build's
    index tables (standardised with its mean and scale, times its loadings)."""
    spec = json.loads((base / ".work/pca.json").read_text())
    mean, scale = np.array(spec["mean"]), np.array(spec["scale"])
    loadings = np.array(spec["components"])  # (k, n_indices)
    base_ds = _open(base / f"{SITE}.zarr")
    assert len(loadings) == len(_pcs(base_ds)) >= 1
    for sid in ("BE-Vie", "XX-Pnt"):
        ds = _open(new_build / f"{sid}.zarr")
        assert _pcs(ds) == _pcs(base_ds)  # the same feature space
        s2 = _open(new_build / f".work/{sid}/s2.zarr")
        table = pd.DataFrame(s2["s2_indices"].values,
                             columns=[str(v) for v in s2["s2_index"].values],
                             index=pd.DatetimeIndex(s2["s2_time"].values).normalize())
        x = table[spec["indices"]].to_numpy(np.float64)
        want = pd.DataFrame((x - mean) / scale @ loadings.T, index=table.index)
        want = want.groupby(level=0).mean()  # a day observed twice is stored as its mean
        got = _pc_frame(ds).loc[want.index].to_numpy()
        assert len(want) >= 2
        np.testing.assert_allclose(got, want.to_numpy(), rtol=1e-4, atol=1e-4)
        prov = json.loads(ds.attrs["provenance"])["pca"]
        assert prov["imported_from"] == {"path": str(base / ".work/pca.json"),
                                         "sha256": prov["sha256"]}
    # the point at DE-Hai's tower sees DE-Hai's pixels: its PCs are the base store's
    point = _open(new_build / "XX-Pnt.zarr")
    obs = pd.DatetimeIndex(_open(base / f".work/{SITE}/s2.zarr")["s2_time"].values).normalize()
    np.testing.assert_allclose(_pc_frame(point).loc[obs].to_numpy(),
                               _pc_frame(base_ds).loc[obs].to_numpy(),
                               rtol=1e-5, atol=1e-5)


def test_open_cube_with_and_without_targets(new_build, tmp_path):
    from gpp_cubes.cube.store import write_zarr_atomic
    from gpp_models.data import open_cube

    for path in (new_build / "BE-Vie.zarr", new_build / "features.zarr", new_build):
        with pytest.raises(InputFormatError, match=r"holds no observed value.*targets=False"):
            open_cube(path)
        cube = open_cube(path, targets=False)
        assert np.isnan(cube.y).all() and not cube.extreme.any()
        assert np.isfinite(cube.X).all() and set(cube.sites) <= {"BE-Vie", "XX-Pnt"}
    # a store without GPP and extreme at all opens without targets only
    ds = _open(new_build / "BE-Vie.zarr").drop_vars(["GPP", "extreme"])
    bare = write_zarr_atomic(ds, tmp_path / "BE-Vie.zarr",
                             provenance=json.loads(ds.attrs["provenance"]))
    with pytest.raises(InputFormatError, match="missing variable 'GPP'"):
        open_cube(bare)
    cube = open_cube(bare, targets=False)
    assert cube.y.shape == (1, ds.sizes["time"]) and np.isnan(cube.y).all()
    assert cube.predictors == tuple(ds.attrs["predictors"])


def test_pca_source_is_found_from_a_directory_a_store_or_the_file(base, tmp_path):
    from gpp_cubes.s2.pca import find_pca_file, load_pca, save_pca

    want = base / ".work/pca.json"
    for src in (base, base / f"{SITE}.zarr", base / "features.zarr", want):
        assert find_pca_file(src) == want
    # a PCA refitted since the store was built is not that store's PCA
    out = copy_build(base, tmp_path)
    fitted = load_pca(out / ".work/pca.json")
    save_pca(fitted.__class__(**{**fitted.__dict__, "n_samples": fitted.n_samples + 1}),
             out / ".work/pca.json")
    with pytest.raises(InputFormatError, match=r"not the PCA store .* was built with"):
        find_pca_file(out / f"{SITE}.zarr")
    assert find_pca_file(out) == out / ".work/pca.json"  # the directory: its PCA as it is
    with pytest.raises(ConfigError, match=r"holds no PCA.*\(--pca\)"):
        BuildConfig.create(tmp_path / "o", pca_from=tmp_path)
    with pytest.raises(ConfigError, match="give one or the other"):
        BuildConfig.create(tmp_path / "o", pca_from=base, pca_components=3)
    with pytest.raises(ConfigError, match="does not compute"):
        BuildConfig.create(tmp_path / "o", pca_from=base, s2_options={"index_list": ["NDVI"]})


def test_a_changed_pca_or_targets_makes_the_stores_stale(new_build, base, build_served,
                                                         tmp_path):
    from gpp_cubes.s2.pca import load_pca, save_pca

    sites = resolve_sites(NEW)
    kw = {k: v for k, v in short_kwargs(build_served).items()}

    def stale(out: Path, **change) -> set[str]:
        cfg = BuildConfig.create(out, **{**kw, "targets": False, "pca_from": base, **change})
        return {str(Path(s.path).relative_to(out)) for s in plan_resume(cfg, sites)}

    assert stale(new_build) == set()
    # the same PCA moved elsewhere: its content, not its path, is the fingerprint
    moved = tmp_path / "moved.json"
    shutil.copy(base / ".work/pca.json", moved)
    assert stale(new_build, pca_from=moved) == set()
    # another PCA: the PCA and the site stores, not the phase-1 stores
    fitted = load_pca(moved)
    flipped = fitted.__class__(**{**fitted.__dict__, "components": tuple(
        tuple(-v for v in row) if i == 0 else row for i, row in enumerate(fitted.components))})
    save_pca(flipped, moved)
    assert stale(new_build, pca_from=moved) == {".work/pca.json", "BE-Vie.zarr", "XX-Pnt.zarr"}
    # .work/pca.json deleted: the site stores are judged by the PCA --pca names now
    gone = copy_build(new_build, tmp_path / "gone")
    (gone / ".work/pca.json").unlink()
    assert stale(gone) == set()
    assert stale(gone, pca_from=moved) == {"BE-Vie.zarr", "XX-Pnt.zarr"}
    # fitting a PCA instead of importing one
    assert stale(new_build, pca_from=None) == {".work/pca.json", "BE-Vie.zarr", "XX-Pnt.zarr"}
    # targets: the target stores and the site stores
    out = copy_build(base, tmp_path)
    cfg = BuildConfig.create(out, **{**kw, "targets": False})
    assert {str(Path(s.path).relative_to(out)) for s in plan_resume(cfg, resolve_sites([SITE]))} \
        == {f".work/{SITE}/target.zarr", f"{SITE}.zarr"}


def test_points_outside_europe_fail_before_the_cluster(build_served, tmp_path, no_cluster):
    kw = short_kwargs(build_served)
    with pytest.raises(ConfigError, match=r"point XX-Pnt at latitude 40\.7, longitude -74\.0 "
                                          r"is outside Europe"):
        build_sites([(40.7, -74.0)], tmp_path / "o", targets=False, **kw)
    # with targets, a point needs its FLUXNET file: the message says how to go without
    with pytest.raises(ConfigError, match=r"no FLUXNET daily file of site XX-Pnt.*--no-targets"):
        build_sites([POINT], tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()


def test_a_point_outside_corine_fails_alone_naming_it(build_served, client, tmp_path):
    """In Europe, but where the demo world's CORINE raster has no data (Berlin): the point
    fails in its own stages, like any failing site, and the others are built."""
    table = build_sites([(52.52, 13.40)], tmp_path / "o", targets=False, client=client,
                        **short_kwargs(build_served))
    assert list(table["status"]) == ["failed"]
    assert "XX-Pnt" in table.loc[0, "error"]  # the demo has no S2 scene there either
    assert "site XX-Pnt is outside CORINE coverage" in (
        tmp_path / "o/logs/XX-Pnt.log").read_text()
