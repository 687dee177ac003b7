"""The STAC catalog of built cubes: items, assets, datacube fields, idempotency, discovery."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import xarray as xr
from pyproj import Geod
from pystac.extensions.datacube import DatacubeExtension
from pystac.validation import JsonSchemaSTACValidator
from shapely.geometry import Point, shape

from gpp_cubes.cube.publish import (
    COLLECTION_ID,
    ZARR_MEDIA_TYPE,
    buffer_polygon,
    export_for_api,
    provenance_summary,
    update_cube_catalog,
)
from gpp_cubes.cube.store import COMPLETE_MARKER, write_zarr_atomic
from gpp_cubes.errors import InputFormatError

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")

# Tower positions from the site catalog (catalog/sites.geojson / ICOS metadata).
SITES = {
    "DE-Hai": {"latitude": 51.079213, "longitude": 10.452168, "igbp": "DBF", "elev": 430.0},
    "FI-Hyy": {"latitude": 61.847408, "longitude": 24.294795, "igbp": "ENF", "elev": 181.0},
}
PREDICTORS = {
    "S2_PC1": ("1", "first principal component of Sentinel-2 spectral indices"),
    "S1_VV": ("dB", "Sentinel-1 VV backscatter, forest annulus mean"),
    "MOD11A1_dt": ("K", "MODIS Terra daytime land surface temperature"),
    "clear_sky_ghi": ("W m-2", "daily mean clear-sky global horizontal irradiance"),
}
PLANTED = "planted-subscription-key-0123456789"


def make_cube(site: str, start: str = "2016-01-01", days: int = 100) -> xr.Dataset:
    """A small store following docs/architecture.md (format_version "1")."""
    meta = SITES[site]
    time_ = pd.date_range(start, periods=days, freq="D")
    doy = time_.dayofyear.to_numpy()
    data = {}
    for k, (name, (units, long_name)) in enumerate(PREDICTORS.items()):
        values = np.sin(2 * np.pi * doy / 365.0 + k).astype("float32") * (k + 1)
        data[name] = (
            "time",
            values,
            {"units": units, "long_name": long_name, "n_observed": 20, "n_interpolated": 80},
        )
    gpp = (6.0 + 4.0 * np.sin(2 * np.pi * (doy - 100) / 365.0)).astype("float32")
    gpp[::9] = np.nan  # gaps are NaN, never interpolated
    data["GPP"] = ("time", gpp, {"units": "g C m-2 d-1", "long_name": "gross primary production"})
    data["extreme"] = ("time", (doy % 40) < 6, {"long_name": "climate-induced GPP extreme"})
    ds = xr.Dataset(data, coords={"time": time_})
    ds.attrs = {
        "format_version": "1",
        "site_id": site,
        "latitude": meta["latitude"],
        "longitude": meta["longitude"],
        "elevation_m": meta["elev"],
        "igbp": meta["igbp"],
        "predictors": list(PREDICTORS),
        "target": "GPP",
        "train_years": [2016, 2017, 2018],
        "test_years": [2019, 2020],
    }
    return ds


def write_store(out: Path, site: str, **kwargs) -> Path:
    provenance = {
        "items": [f"S2A_MSIL2A_2016{i:04d}" for i in range(37)],
        "packages": {"xarray": xr.__version__, "numpy": np.__version__},
        "parameters": {"max_cloud": 80, "buffer_m": 1000},
        "note": f"signed with {PLANTED}",
    }
    return write_zarr_atomic(make_cube(site, **kwargs), out / f"{site}.zarr", provenance=provenance)


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", PLANTED)
    out = tmp_path / "out"
    return [write_store(out, "DE-Hai"), write_store(out, "FI-Hyy", start="2017-03-01", days=60)]


def read_collection(catalog: Path) -> pystac.Collection:
    return pystac.Collection.from_file(str(catalog / "cubes" / "collection.json"))


# --------------------------------------------------------------------------------------------
def test_items_assets_and_properties(tmp_path: Path, stores: list[Path]) -> None:
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    collection = read_collection(catalog)
    assert collection.id == COLLECTION_ID
    items = {item.id: item for item in collection.get_items()}
    assert sorted(items) == ["DE-Hai", "FI-Hyy"]

    hai = items["DE-Hai"]
    assert hai.properties["gpp:site_id"] == "DE-Hai"
    assert hai.properties["gpp:igbp"] == "DBF"
    assert hai.properties["gpp:format_version"] == "1"
    assert hai.properties["gpp:predictors"] == list(PREDICTORS)
    assert hai.properties["gpp:n_days"] == 100
    # 100 days from 2016-01-01 (a leap year): the last day is 2016-04-09.
    assert hai.datetime is None
    assert hai.common_metadata.start_datetime == pd.Timestamp("2016-01-01", tz="UTC")
    assert hai.common_metadata.end_datetime == pd.Timestamp("2016-04-09T23:59:59", tz="UTC")
    fin = items["FI-Hyy"]
    assert fin.common_metadata.end_datetime == pd.Timestamp("2017-04-29T23:59:59", tz="UTC")

    asset = hai.assets["zarr"]
    assert asset.media_type == ZARR_MEDIA_TYPE == "application/vnd+zarr"
    assert asset.roles == ["data"]
    assert Path(asset.get_absolute_href()) == stores[0]
    assert asset.extra_fields["xarray:open_kwargs"]["engine"] == "zarr"

    # Collection extent spans both sites and both periods.
    (bbox,) = collection.extent.spatial.bboxes
    assert bbox[0] < SITES["DE-Hai"]["longitude"] and bbox[2] > SITES["FI-Hyy"]["longitude"]
    (interval,) = collection.extent.temporal.intervals
    assert interval[0] == pd.Timestamp("2016-01-01", tz="UTC")
    assert interval[1] == pd.Timestamp("2017-04-29T23:59:59", tz="UTC")
    assert collection.summaries.lists["gpp:igbp"] == ["DBF", "ENF"]


def test_asset_opens_with_xarray_and_matches_the_store(tmp_path: Path, stores: list[Path]):
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    item = read_collection(catalog).get_item("FI-Hyy")
    asset = item.assets["zarr"]
    with xr.open_dataset(
        asset.get_absolute_href(), **asset.extra_fields["xarray:open_kwargs"]
    ) as ds:
        expected = make_cube("FI-Hyy", start="2017-03-01", days=60)
        np.testing.assert_array_equal(ds["GPP"].values, expected["GPP"].values)
        assert ds.attrs["site_id"] == "FI-Hyy"


def test_datacube_extension_from_store_attrs(tmp_path: Path, stores: list[Path]) -> None:
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    item = read_collection(catalog).get_item("DE-Hai")
    assert DatacubeExtension.has_extension(item)
    cube = DatacubeExtension.ext(item)
    assert set(cube.dimensions) == {"time"}
    time_dim = cube.dimensions["time"]
    assert time_dim.dim_type == "temporal"
    assert time_dim.extent == ["2016-01-01T00:00:00Z", "2016-04-09T00:00:00Z"]
    assert time_dim.step == "P1D"

    variables = cube.variables
    assert set(variables) == {*PREDICTORS, "GPP", "extreme"}
    for name, (units, long_name) in PREDICTORS.items():
        assert variables[name].var_type == "data"
        assert variables[name].unit == units
        assert variables[name].description == long_name
        assert variables[name].dimensions == ["time"]
    assert variables["GPP"].var_type == "data" and variables["GPP"].unit == "g C m-2 d-1"
    assert variables["extreme"].var_type == "auxiliary"
    # extent of GPP: the NaN-ignoring range of the values written
    gpp = make_cube("DE-Hai")["GPP"].values
    lo, hi = variables["GPP"].extent
    assert lo == pytest.approx(float(np.nanmin(gpp)), rel=1e-5)
    assert hi == pytest.approx(float(np.nanmax(gpp)), rel=1e-5)


def test_buffer_geometry_is_a_1km_circle_around_the_tower(tmp_path: Path, stores: list[Path]):
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    geod = Geod(ellps="WGS84")
    for item in read_collection(catalog).get_items():
        lat, lon = SITES[item.id]["latitude"], SITES[item.id]["longitude"]
        ring = item.geometry["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 65
        lons, lats = zip(*ring, strict=True)
        _, _, dist = geod.inv([lon] * len(ring), [lat] * len(ring), lons, lats)
        # Drawn in UTM: the grid scale factor (0.9996..1.001 in Europe) bounds the error.
        np.testing.assert_allclose(dist, 1000.0, atol=1.5)
        polygon = shape(item.geometry)
        assert polygon.is_valid and polygon.contains(Point(lon, lat))
        assert item.bbox == pytest.approx(list(polygon.bounds))
    # The independent check above, repeated at a site near a UTM zone edge (lon 12.0 E).
    ring = buffer_polygon(45.0, 11.99, 500.0)["coordinates"][0]
    _, _, dist = geod.inv([11.99] * len(ring), [45.0] * len(ring), *zip(*ring, strict=True))
    np.testing.assert_allclose(dist, 500.0, atol=1.0)


def test_point_geometry(tmp_path: Path, stores: list[Path]) -> None:
    update_cube_catalog(tmp_path / "catalog", stores[:1], geometry="point")
    item = read_collection(tmp_path / "catalog").get_item("DE-Hai")
    assert item.geometry == {
        "type": "Point",
        "coordinates": [SITES["DE-Hai"]["longitude"], SITES["DE-Hai"]["latitude"]],
    }


def test_idempotent_and_updating(tmp_path: Path, stores: list[Path]) -> None:
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    first = {p.relative_to(catalog): p.read_text() for p in catalog.rglob("*.json")}
    update_cube_catalog(catalog, stores)
    update_cube_catalog(catalog, stores[1:])  # one site alone: the other one is kept
    again = {p.relative_to(catalog): p.read_text() for p in catalog.rglob("*.json")}
    assert again == first, "re-publishing the same stores changed the catalog"

    # The site is rebuilt over a longer period: its item is replaced, not duplicated.
    write_store(stores[0].parent, "DE-Hai", days=366)
    update_cube_catalog(catalog, stores[:1])
    collection = read_collection(catalog)
    item_links = [link.href for link in collection.get_links("item")]
    assert len(item_links) == len(set(item_links)) == 2
    hai = collection.get_item("DE-Hai")
    assert hai.properties["gpp:n_days"] == 366
    assert hai.common_metadata.end_datetime == pd.Timestamp("2016-12-31T23:59:59", tz="UTC")
    assert DatacubeExtension.ext(hai).dimensions["time"].extent[1] == "2016-12-31T00:00:00Z"


def test_catalog_is_self_contained_and_relocatable(tmp_path: Path, stores: list[Path]):
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    for path in catalog.rglob("*.json"):
        data = json.loads(path.read_text())
        hrefs = [link["href"] for link in data.get("links", [])]
        hrefs += [asset["href"] for asset in data.get("assets", {}).values()]
        assert all(not h.startswith(("/", "file:")) for h in hrefs), (path, hrefs)
    # Move catalog and stores together: everything still resolves.
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.copytree(tmp_path, moved)
    try:
        item = read_collection(moved / "catalog").get_item("DE-Hai")
        href = item.assets["zarr"].get_absolute_href()
        assert href.startswith(str(moved))
        with xr.open_zarr(href) as ds:
            assert ds.attrs["site_id"] == "DE-Hai"
    finally:
        shutil.rmtree(moved)


def test_core_stac_schemas_validate_offline(tmp_path: Path, stores: list[Path]) -> None:
    """pystac ships the core STAC 1.1 schemas; extension schemas would need the network
    (blocked here), so the datacube fields are checked against the spec by hand below."""
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    validator = JsonSchemaSTACValidator()
    collection_json = json.loads((catalog / "cubes" / "collection.json").read_text())
    version = collection_json["stac_version"]
    validator.validate_core(collection_json, pystac.STACObjectType.COLLECTION, version, None)
    for path in sorted((catalog / "cubes").glob("*/*.json")):
        data = json.loads(path.read_text())
        validator.validate_core(data, pystac.STACObjectType.ITEM, version, None)
        # datacube v2.2.0: every dimension has a type; temporal ones an ISO extent;
        # every variable has dimensions (known ones) and a type data|auxiliary.
        dims = data["properties"]["cube:dimensions"]
        for dim in dims.values():
            assert dim["type"] in {"temporal", "spatial", "geometries", "other"}
        for start_end in dims["time"]["extent"]:
            pd.Timestamp(start_end)
        for var in data["properties"]["cube:variables"].values():
            assert set(var["dimensions"]) <= set(dims)
            assert var["type"] in {"data", "auxiliary"}
    # Control: the validator does reject a broken item.
    broken = json.loads((catalog / "cubes" / "DE-Hai" / "DE-Hai.json").read_text())
    del broken["properties"]["start_datetime"]
    with pytest.raises(pystac.errors.STACValidationError):
        validator.validate_core(broken, pystac.STACObjectType.ITEM, version, None)


def test_no_credential_reaches_the_catalog(tmp_path: Path, stores: list[Path]) -> None:
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    for path in catalog.rglob("*.json"):
        assert PLANTED not in path.read_text(), path
    item = read_collection(catalog).get_item("DE-Hai")
    summary = item.properties["gpp:provenance"]
    assert summary["n_items"] == 37  # long lists become counts
    assert summary["parameters"] == {"max_cloud": 80, "buffer_m": 1000}
    assert summary["packages"]["xarray"] == xr.__version__


def test_provenance_summary_rules() -> None:
    text = json.dumps(
        {"a": 1, "ids": list(range(20)), "few": ["x", "y"], "deep": {"l": [1, 2], "s": "v"}}
    )
    assert provenance_summary(text) == {
        "a": 1,
        "n_ids": 20,
        "few": ["x", "y"],
        "deep": {"l": 2, "s": "v"},
    }
    assert provenance_summary("not json") == {} and provenance_summary(None) == {}


# --------------------------------------------------------------------------------------------
def test_bad_stores_are_refused_and_nothing_is_written(tmp_path: Path, stores: list[Path]):
    catalog = tmp_path / "catalog"
    (stores[1] / COMPLETE_MARKER).unlink()
    with pytest.raises(InputFormatError, match=r"FI-Hyy\.zarr is incomplete"):
        update_cube_catalog(catalog, stores)
    assert not (catalog / "cubes" / "collection.json").exists()

    with pytest.raises(InputFormatError, match="does not exist"):
        update_cube_catalog(catalog, [tmp_path / "out" / "XX-Nope.zarr"])

    bad = make_cube("DE-Hai")
    del bad.attrs["predictors"]
    path = write_zarr_atomic(bad, tmp_path / "bad" / "DE-Hai.zarr", provenance={})
    with pytest.raises(InputFormatError, match=r"DE-Hai\.zarr lacks predictors"):
        update_cube_catalog(catalog, [path])

    not_zarr = tmp_path / "bad" / "x.zarr"
    not_zarr.mkdir()
    (not_zarr / COMPLETE_MARKER).write_text("")
    with pytest.raises(InputFormatError, match="cannot be opened as zarr"):
        update_cube_catalog(catalog, [not_zarr])
    assert not (catalog / "cubes" / "collection.json").exists()


def test_multi_site_store_becomes_a_collection_asset(tmp_path: Path, stores: list[Path]):
    cubes = [make_cube(site, days=30) for site in SITES]
    stacked = xr.concat(
        [c.drop_attrs(deep=False).expand_dims(site=[c.attrs["site_id"]]) for c in cubes],
        dim="site",
    )
    for key in ("latitude", "longitude", "elevation_m", "igbp"):
        stacked = stacked.assign_coords({key: ("site", [c.attrs[key] for c in cubes])})
    stacked.attrs = {k: v for k, v in cubes[0].attrs.items() if k not in SITES["DE-Hai"]}
    stacked.attrs.update({"format_version": "1", "predictors": list(PREDICTORS)})
    stacked.attrs.pop("site_id", None)
    features = write_zarr_atomic(stacked, tmp_path / "out" / "features.zarr", provenance={})

    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, [*stores, features])
    collection = read_collection(catalog)
    asset = collection.assets["features"]
    assert asset.media_type == ZARR_MEDIA_TYPE
    assert DatacubeExtension.get_schema_uri() in collection.stac_extensions
    dims = asset.extra_fields["cube:dimensions"]
    assert dims["site"]["values"] == ["DE-Hai", "FI-Hyy"]
    variables = asset.extra_fields["cube:variables"]
    assert variables["GPP"]["dimensions"] == ["site", "time"]
    assert variables["igbp"] == {
        "dimensions": ["site"],
        "type": "auxiliary",
        "values": ["DBF", "ENF"],
    }
    with xr.open_zarr(asset.get_absolute_href()) as ds:
        assert list(ds["site"].values) == ["DE-Hai", "FI-Hyy"]


# --------------------------------------------------------------------------------------------
# Discovery through a STAC API (rustac serve on 127.0.0.1) with pystac-client
# --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pystac_client_discovers_the_cubes_through_a_served_copy(
    tmp_path: Path, stores: list[Path]
) -> None:
    rustac = shutil.which("rustac")
    if rustac is None:
        pytest.skip("the rustac command (pip package rustac) is not installed")
    pystac_client = pytest.importorskip("pystac_client")
    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    collection_json, items_json = export_for_api(catalog, tmp_path / "served")
    port = _free_port()
    proc = subprocess.Popen(
        [
            rustac,
            "serve",
            "--addr",
            f"127.0.0.1:{port}",
            str(collection_json),
            str(items_json),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        for _ in range(200):  # wait for the port before pystac-client's retrying open
            if proc.poll() is not None:
                pytest.fail(f"rustac serve exited: {proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        client = pystac_client.Client.open(f"http://127.0.0.1:{port}")
        near_hainich = [10.3, 51.0, 10.6, 51.2]
        found = list(client.search(collections=[COLLECTION_ID], bbox=near_hainich).items())
        assert [i.id for i in found] == ["DE-Hai"]
        # FI-Hyy's cube covers 2017-03-01..2017-04-29 only.
        in_april_2017 = client.search(collections=[COLLECTION_ID], datetime="2017-04-29T18:00:00Z")
        assert [i.id for i in in_april_2017.items()] == ["FI-Hyy"]
        href = found[0].assets["zarr"].href
        assert Path(href) == stores[0]
        with xr.open_zarr(href) as ds:
            assert ds.sizes["time"] == 100
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_export_with_asset_base(tmp_path: Path, stores: list[Path]) -> None:
    update_cube_catalog(tmp_path / "catalog", stores)
    _, out = export_for_api(tmp_path / "catalog", tmp_path / "api", asset_base="s3://bucket/cubes/")
    features = json.loads(out.read_text())["features"]
    assert [f["assets"]["zarr"]["href"] for f in features] == [
        "s3://bucket/cubes/DE-Hai.zarr",
        "s3://bucket/cubes/FI-Hyy.zarr",
    ]
    assert all(f["links"] == [] and f["collection"] == COLLECTION_ID for f in features)


def test_processing_and_scientific_extensions(tmp_path: Path, stores: list[Path]) -> None:
    """Processing (lineage, software versions) and scientific (sci:citation) extensions."""
    from importlib import metadata

    from gpp_cubes.contract import PAPER_CITATION
    from gpp_cubes.cube.stac_item import processing_fields

    catalog = tmp_path / "catalog"
    update_cube_catalog(catalog, stores)
    update_cube_catalog(catalog, stores)  # re-publishing keeps one gpp-cubes provider
    processing = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
    scientific = "https://stac-extensions.github.io/scientific/v1.0.0/schema.json"
    raw = json.loads((catalog / "cubes" / "collection.json").read_text())
    assert processing in raw["stac_extensions"] and scientific in raw["stac_extensions"]
    assert raw["sci:citation"] == PAPER_CITATION
    assert "Recurrent neural networks for modelling gross primary production" in PAPER_CITATION
    assert "sci:doi" not in raw  # not recorded in the project's sources: not invented
    (provider,) = [p for p in raw["providers"] if p["name"] == "gpp-cubes"]
    assert provider["roles"] == ["processor"]
    assert "odc-stac" in provider["processing:lineage"]
    software = provider["processing:software"]
    for package in ("gpp-cubes", "spyndex", "sen2nbar", "odc-stac", "xarray"):
        assert software[package] == metadata.version(package)
    item = json.loads((catalog / "cubes" / "DE-Hai" / "DE-Hai.json").read_text())
    assert processing in item["stac_extensions"] and scientific in item["stac_extensions"]
    assert item["properties"]["sci:citation"] == PAPER_CITATION
    # the item's versions are those the store's provenance recorded at build time
    assert item["properties"]["processing:software"] == {"numpy": np.__version__,
                                                         "xarray": xr.__version__}
    assert "processing:datetime" not in item["properties"]  # the record has no "created"
    # the build's record: null versions (packages not installed) are left out, time kept
    fields = processing_fields({"packages": {"a": "1.0", "b": None},
                                "created": "2024-05-01T10:20:30+00:00"})
    assert fields["processing:software"] == {"a": "1.0"}
    assert fields["processing:datetime"] == "2024-05-01T10:20:30Z"
