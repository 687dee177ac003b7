"""Stores and cubes that other geo tools open as they are: CF-1.8 metadata and the CRS.

The stores are written by the real writer (``assemble_site`` -> ``write_site_store`` ->
``write_multisite_store``) and read back with zarr; the checks use tools independent of the
writer: cf-xarray (finds coordinates, standard names, the timeseries id and decodes flags),
cf-units (UDUNITS-2: parses the units and converts GPP), rioxarray / odc-geo (the CRS).
"""

from __future__ import annotations

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
from gpp_cubes.sites import point_site

cf_xarray = pytest.importorskip("cf_xarray")

SITES = [("DE-Hai", 51.0792, 10.4522, 430.0, "DBF"), ("FI-Var", 67.7549, 29.61, 395.0, "ENF")]
PREDICTORS = ["S2_PC1", *contract.FIXED_PREDICTORS]
# Planted extreme days (index into the calendar) per site.
EXTREME_DAYS = {"DE-Hai": [3, 4, 5, 6, 7], "FI-Var": [20, 21, 22, 23, 24, 25]}


def _site_cube(site: tuple[str, float, float, float, str], seed: int) -> xr.Dataset:
    site_id, lat, lon, elev, igbp = site
    rng = np.random.default_rng(seed)
    cal = daily_calendar("2016-01-01", "2016-01-31")
    preds = pd.DataFrame({n: rng.normal(size=cal.size) for n in PREDICTORS}, index=cal)
    gpp = pd.Series(rng.normal(5.0, 1.0, cal.size), index=cal)
    extreme = pd.Series(False, index=cal)
    extreme.iloc[EXTREME_DAYS[site_id]] = True
    inputs = SiteInputs(point_site(lat, lon, site_id=site_id, elevation_m=elev, igbp=igbp),
                        preds, gpp, extreme, {"generator": "tests/cubes/cube/test_cf.py"})
    return assemble_site(inputs, cal)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    out = tmp_path_factory.mktemp("cf")
    sites = [write_site_store(_site_cube(s, i), out) for i, s in enumerate(SITES)]
    return sites, write_multisite_store(sites, out)


def _open(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, chunks=None).load()


def test_per_site_store_is_a_cf_single_time_series(stores: tuple[list[Path], Path]) -> None:
    site_id, lat, lon, elev, _ = SITES[0]
    ds = _open(stores[0][0])
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["featureType"] == "timeSeries"
    # cf-xarray finds the coordinates by their CF attributes, not by our names
    assert float(ds.cf["latitude"]) == lat and float(ds.cf["longitude"]) == lon
    assert ds.cf["time"].dims == ("time",)
    assert ds.cf.axes["T"] == ["time"]
    assert ds.cf.cf_roles == {"timeseries_id": ["site"]}
    assert str(ds.cf["timeseries_id"].values) == site_id
    assert float(ds.cf["surface_altitude"]) == elev
    # the scalar coordinates are attached to every data variable (CF "coordinates")
    assert {"latitude", "longitude", "site"} <= set(ds["GPP"].coords)
    # the site attributes of format "1" are still there for its readers
    assert ds.attrs["latitude"] == lat and ds.attrs["site_id"] == site_id


def test_standard_names_are_found(stores: tuple[list[Path], Path]) -> None:
    ds = _open(stores[1])
    names = ds.cf.standard_names
    assert names["gross_primary_productivity_of_biomass_expressed_as_carbon"] == ["GPP"]
    assert names["surface_downwelling_shortwave_flux_in_air_assuming_clear_sky"] == [
        "clear_sky_ghi"]
    assert sorted(names["surface_temperature"]) == [
        "MOD11A1_dt", "MOD11A1_nt", "MYD11A1_dt", "MYD11A1_nt"]
    assert names["time"] == ["time"]
    assert names["latitude"] == ["latitude"] and names["longitude"] == ["longitude"]
    gpp = ds.cf["gross_primary_productivity_of_biomass_expressed_as_carbon"]
    assert gpp.attrs["units"] == "g m-2 d-1" and "g C m-2 d-1" in gpp.attrs["long_name"]


def test_multisite_store_has_the_timeseries_layout(stores: tuple[list[Path], Path]) -> None:
    ds = _open(stores[1])
    assert ds.attrs["featureType"] == "timeSeries" and ds.attrs["Conventions"] == "CF-1.8"
    ts = ds.cf["timeseries_id"]
    assert ts.name == "site" and ts.dims == ("site",)
    assert [str(s) for s in ts.values] == [s[0] for s in SITES]
    np.testing.assert_array_equal(ds.cf["latitude"].values, [s[1] for s in SITES])
    np.testing.assert_array_equal(ds.cf["longitude"].values, [s[2] for s in SITES])
    assert ds.cf["latitude"].dims == ("site",)
    assert ds["elevation_m"].attrs["units"] == "m"
    assert ds["GPP"].dims == ("site", "time")  # orthogonal multidimensional array


def test_extreme_flag_decodes(stores: tuple[list[Path], Path]) -> None:
    ds = _open(stores[1])
    flag = ds["extreme"]
    assert flag.cf.is_flag_variable
    for i, site_id in enumerate(ds["site"].values):
        got = np.flatnonzero((flag.cf == "gpp_extreme").values[i])
        assert got.tolist() == EXTREME_DAYS[str(site_id)]
    n_days = ds.sizes["time"]
    assert int((flag.cf == "no_extreme").sum()) == 2 * n_days - sum(map(len,
                                                                         EXTREME_DAYS.values()))


def test_every_unit_parses_with_udunits_and_gpp_converts(stores: tuple[list[Path], Path]
                                                         ) -> None:
    cf_units = pytest.importorskip("cf_units")
    ds = _open(stores[1])
    units = {name: str(var.attrs["units"]) for name, var in ds.variables.items()
             if "units" in var.attrs}
    assert units["S1_VV"] == "dB"  # the documented exception: UDUNITS-2 has no decibel
    for name, unit in units.items():
        if unit == "dB":
            assert name in ("S1_VV", "S1_VH")  # only the backscatter is in dB
            with pytest.raises(ValueError):
                cf_units.Unit(unit)
            continue
        cf_units.Unit(unit)  # raises for a unit UDUNITS-2 does not know
    # 1 g m-2 d-1 = 1e-3 kg / 86400 s m-2 (hand-worked), the standard name's canonical units
    per_s = cf_units.Unit("g m-2 d-1").convert(8.64, cf_units.Unit("kg m-2 s-1"))
    assert per_s == pytest.approx(8.64e-3 / 86400, rel=1e-12)
    # the UDUNITS spelling of dB the contract documents: -10 dB is a linear ratio of 0.1
    assert cf_units.Unit(contract.DB_UDUNITS).is_dimensionless()
    assert cf_units.Unit(contract.DB_UDUNITS).convert(-10.0, "1") == pytest.approx(0.1)


def test_s2_cube_crs_survives_a_zarr_round_trip(tmp_path: Path) -> None:
    """A one-scene demo archive through ``s2_cube``: the CRS is the site grid's UTM zone."""
    rioxarray = pytest.importorskip("rioxarray")
    import odc.geo.xr  # noqa: F401

    from gpp_cubes.demo.scenes import LAT, LON, Scene, write_scenes
    from gpp_cubes.demo.scenes import sensing_time as when
    from gpp_cubes.s2 import s2_cube

    w = write_scenes(tmp_path / "w", [Scene("C1", when("2018-06-01"))])
    cube = s2_cube((LAT, LON), "2018-05-01", "2018-06-30", items=w.items, nbar=False,
                   cache_dir=tmp_path / "cache")
    epsg = w.grid.epsg
    assert cube.rio.crs.to_epsg() == epsg and cube.odc.geobox == w.grid.geobox
    cube.drop_vars(["items"], errors="ignore").to_zarr(tmp_path / "c.zarr", zarr_format=3,
                                                       consolidated=False)
    back = xr.open_zarr(tmp_path / "c.zarr", decode_coords="all", consolidated=False)
    assert back.rio.crs.to_epsg() == epsg
    assert back["B04"].rio.crs.to_epsg() == epsg and back["clear"].rio.crs.to_epsg() == epsg
    assert back.odc.geobox == w.grid.geobox
    assert rioxarray is not None
    # the masks are CF flags: cf-xarray decodes them to the stored booleans
    for name in ("cloud", "clear", "forest", "buffer"):
        meaning = back[name].attrs["flag_meanings"].split()[1]
        np.testing.assert_array_equal((back[name].cf == meaning).values, back[name].values)
    inside = w.grid.distance_to_tower() <= 1000.0
    np.testing.assert_array_equal((back["buffer"].cf == "inside_analysis_circle").values,
                                  inside)
