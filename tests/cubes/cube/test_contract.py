"""The data contract is defined once (gpp_cubes.contract) and every side uses that definition."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gpp_cubes import contract
from gpp_cubes.cube.features import (
    SiteInputs,
    assemble_site,
    daily_calendar,
    write_multisite_store,
    write_site_store,
)
from gpp_cubes.errors import InputFormatError
from gpp_cubes.sites import point_site

SITES = [("DE-Hai", 51.0792, 10.4522, 430.0, "DBF"), ("FI-Var", 67.7549, 29.61, 395.0, "ENF")]
PREDICTORS = ["S2_PC1", "S2_PC2", *contract.FIXED_PREDICTORS]


def _site_cube(site: tuple[str, float, float, float, str], seed: int) -> xr.Dataset:
    site_id, lat, lon, elev, igbp = site
    rng = np.random.default_rng(seed)
    cal = daily_calendar("2016-01-01", "2016-02-29")
    obs = pd.date_range("2015-12-28", "2016-03-05", freq="4D")
    preds = pd.DataFrame({n: rng.normal(size=obs.size) for n in PREDICTORS}, index=obs)
    gpp = pd.Series(rng.normal(5.0, 1.0, cal.size), index=cal)
    gpp[::7] = np.nan
    extreme = pd.Series(rng.random(cal.size) > 0.9, index=cal)
    inputs = SiteInputs(point_site(lat, lon, site_id=site_id, elevation_m=elev, igbp=igbp),
                        preds, gpp, extreme,
                        {"generator": "tests/cubes/cube/test_contract.py"})
    return assemble_site(inputs, cal)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Per-site stores and ``features.zarr`` written by the real writer."""
    out = tmp_path_factory.mktemp("contract")
    sites = [write_site_store(_site_cube(s, i), out) for i, s in enumerate(SITES)]
    return sites, write_multisite_store(sites, out)


def _open(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, chunks=None).load()


def test_real_writer_stores_are_valid(stores: tuple[list[Path], Path]) -> None:
    sites, multi = stores
    for path in sites:
        assert (path / contract.COMPLETE_MARKER).is_file()
        contract.validate(_open(path), source=str(path))
    assert multi.name == contract.MULTISITE_NAME
    ds = _open(multi)
    contract.validate(ds, multisite=True, source=str(multi))
    assert ds.attrs["format_version"] == contract.FORMAT_VERSION
    assert [str(s) for s in ds["site"].values] == [s[0] for s in SITES]
    np.testing.assert_array_equal(ds["latitude"].values, [s[1] for s in SITES])
    assert [str(v) for v in ds["igbp"].values] == [s[4] for s in SITES]


def test_variable_table_matches_what_the_writer_stores(stores: tuple[list[Path], Path]) -> None:
    ds = _open(stores[0][0])
    assert ds.attrs["predictors"] == contract.predictor_order(PREDICTORS)
    assert ds.attrs["target"] == contract.TARGET
    for name in [*ds.attrs["predictors"], contract.TARGET, *contract.FLAGS]:
        spec = contract.variable_spec(name)
        assert ds[name].dtype == np.dtype(spec.dtype), name
        assert ds[name].attrs["long_name"] == spec.long_name, name
        assert ds[name].attrs.get("units") == spec.units, name
    assert {contract.variable_spec(n).role for n in ds.attrs["predictors"]} == {"predictor"}
    with pytest.raises(InputFormatError, match="unknown predictor 'NDVI'"):
        contract.predictor_metadata("NDVI")
    with pytest.raises(InputFormatError, match="unknown predictor 'GPP'"):
        contract.predictor_metadata("GPP")


@pytest.mark.parametrize(
    "key", [*contract.REQUIRED_ATTRS, contract.SITE_ID_ATTR, *contract.SITE_ATTRS])
def test_missing_dataset_attribute_is_named(stores: tuple[list[Path], Path], key: str) -> None:
    path = stores[0][0]
    ds = _open(path)
    del ds.attrs[key]
    with pytest.raises(InputFormatError, match=rf"{path.name} lacks {key}\b"):
        contract.validate(ds, source=str(path))


@pytest.mark.parametrize("key", contract.REQUIRED_ATTRS)
def test_missing_multisite_attribute_is_named(stores: tuple[list[Path], Path], key: str) -> None:
    multi = stores[1]
    ds = _open(multi)
    del ds.attrs[key]
    with pytest.raises(InputFormatError, match=rf"features\.zarr lacks {key}\b"):
        contract.validate(ds, multisite=True, source=str(multi))


@pytest.mark.parametrize("name", [*PREDICTORS, contract.TARGET, *contract.FLAGS])
def test_missing_variable_is_named(stores: tuple[list[Path], Path], name: str) -> None:
    path = stores[0][0]
    ds = _open(path).drop_vars(name)
    with pytest.raises(InputFormatError, match=f"{path.name}: missing variable '{name}'"):
        contract.validate(ds, source=str(path))


@pytest.mark.parametrize("key", contract.PREDICTOR_ATTRS)
def test_missing_predictor_attribute_is_named(stores: tuple[list[Path], Path], key: str) -> None:
    path = stores[0][0]
    ds = _open(path)
    del ds["MOD11A1_dt"].attrs[key]
    with pytest.raises(InputFormatError, match=f"variable 'MOD11A1_dt' lacks attribute '{key}'"):
        contract.validate(ds, source=str(path))


@pytest.mark.parametrize("key", contract.SITE_ATTRS)
def test_missing_site_coordinate_is_named(stores: tuple[list[Path], Path], key: str) -> None:
    ds = _open(stores[1]).drop_vars(key)
    with pytest.raises(InputFormatError, match=f"missing site coordinate '{key}'"):
        contract.validate(ds, multisite=True, source=str(stores[1]))


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda ds: ds.attrs.update(format_version="2"),
         "format_version '2' is not supported"),
        (lambda ds: ds.isel(time=[0, 1, 3]), "not a gap-free daily axis"),
        (lambda ds: ds.isel(time=slice(0, 0)), "empty time dimension"),
        (lambda ds: ds.isel(time=0), "lacks time dimension"),
    ],
)
def test_version_and_time_axis(stores: tuple[list[Path], Path],
                               mutate: Callable[[xr.Dataset], xr.Dataset | None],
                               needle: str) -> None:
    ds = _open(stores[0][0])
    ds = mutate(ds) or ds
    with pytest.raises(InputFormatError, match=needle):
        contract.validate(ds, source="X.zarr")


def test_multisite_flag_requires_the_site_dimension(stores: tuple[list[Path], Path]) -> None:
    with pytest.raises(InputFormatError, match="lacks site dimension"):
        contract.validate(_open(stores[0][0]), multisite=True)


def test_synthetic_world_is_written_by_the_real_writer(tmp_path: Path) -> None:
    from gpp_models.testing import DEFAULT_SITES, write_synthetic_world

    multi = write_synthetic_world(tmp_path, DEFAULT_SITES[:2], end="2016-01-31")
    assert multi.name == contract.MULTISITE_NAME
    contract.validate(_open(multi), multisite=True, source=str(multi))
    for site in DEFAULT_SITES[:2]:
        path = tmp_path / f"{site[0]}.zarr"
        assert (path / contract.COMPLETE_MARKER).is_file()
        contract.validate(_open(path), source=str(path))


def test_every_module_uses_the_contract_objects() -> None:
    import gpp_cubes.cube.features as features
    import gpp_cubes.cube.publish as publish
    import gpp_cubes.cube.store as store
    import gpp_models.data as data
    import gpp_models.testing as testing

    assert features.FORMAT_VERSION is contract.FORMAT_VERSION
    assert features.MULTISITE_NAME is contract.MULTISITE_NAME
    assert features.FIXED_PREDICTORS is contract.FIXED_PREDICTORS
    assert features.predictor_metadata is contract.predictor_metadata
    assert features.predictor_order is contract.predictor_order
    assert features.site_coordinates is contract.site_coordinates
    assert features.SITE_COORDS is contract.SITE_ATTRS
    assert store.COMPLETE_MARKER is contract.COMPLETE_MARKER
    assert publish.COMPLETE_MARKER is contract.COMPLETE_MARKER
    assert publish.validate is contract.validate
    assert data.COMPLETE_MARKER is contract.COMPLETE_MARKER
    assert data.MULTISITE_NAME is contract.MULTISITE_NAME
    assert data.validate is contract.validate
    assert data.site_coordinates is contract.site_coordinates
    assert testing.FORMAT_VERSION is contract.FORMAT_VERSION
    assert testing.predictor_metadata is contract.predictor_metadata
    # The former copies are gone (not shadowed by a second definition).
    for module, names in [(publish, ("REQUIRED_ATTRS", "REQUIRED_SITE_ATTRS", "SITE_COORDS")),
                          (data, ("REQUIRED_ATTRS", "PREDICTOR_ATTRS", "SITE_ATTRS")),
                          (testing, ("COMPLETE_MARKER", "stack_sites", "_UNITS"))]:
        for name in names:
            assert not hasattr(module, name), f"{module.__name__}.{name}"


def test_contract_import_is_light() -> None:
    code = ("import sys, gpp_cubes.contract; "
            "print(sorted(m for m in ('numpy', 'pandas', 'xarray', 'zarr', 'jax') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
