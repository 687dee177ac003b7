"""The demo world's Sentinel-2 series has the real archive's conditions, checked independently.

Each test recomputes what it checks from the written files with its own means (pyproj,
rasterio, pvlib, ElementTree) rather than with the generator's code: a zone-boundary site
covered by tiles of two UTM zones, no scene with the sun lower than 85 deg from the zenith
but winter scenes between 70 and 85 deg, scenes cut by the swath edge with band-dependent
nodata edges, and a processing-baseline change with duplicate items of one datatake.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer

from gpp_cubes.demo import World

TWO_ZONE_SITE = "FI-Hyy"
NORTHERN_SITES = ("FI-Var", "FI-Hyy")
ITEM_ID = re.compile(r"(S2[AB])_MSIL2A_(\d{8}T\d{6})_R(\d{3})_T(\d{2}[A-Z]{3})_(\d{8}T\d{6})")
BANDS_10 = ("B02", "B03", "B04", "B08")
BANDS_20 = ("B05", "B06", "B07", "B8A", "B11", "B12")
BANDS_60 = ("B01", "B09")
BANDS = BANDS_10 + BANDS_20 + BANDS_60


@pytest.fixture(scope="module")
def items(demo_world: World) -> dict[str, dict[str, Any]]:
    return {it["id"]: it for it in demo_world.items("sentinel-2-l2a")}


@pytest.fixture(scope="module")
def scenes(demo_world: World) -> pd.DataFrame:
    return demo_world.truth.s2_scenes.set_index("item_id", drop=False)


def _read(world: World, item: dict[str, Any], key: str) -> tuple[np.ndarray, Any]:
    with rasterio.open(world.root / item["assets"][key]["href"]) as ds:
        return ds.read(1), ds


def _centres(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a raster (2-D x and y) in its CRS [m]."""
    cols, rows = np.meshgrid(np.arange(ds.width), np.arange(ds.height))
    x, y = ds.transform @ (cols + 0.5, rows + 0.5)
    return np.asarray(x), np.asarray(y)


def _tile_geocoding(path: Path) -> tuple[int, float, float]:
    """(EPSG, ULX, ULY) of a granule's MTD_TL.xml (10 m geoposition)."""
    root = ET.parse(path).getroot()
    code = root.find(".//Tile_Geocoding/HORIZONTAL_CS_CODE").text
    pos = root.find(".//Tile_Geocoding/Geoposition[@resolution='10']")
    return int(code.split(":")[1]), float(pos.find("ULX").text), float(pos.find("ULY").text)


def _grid(values_list: ET.Element) -> np.ndarray:
    return np.array([[float(v) for v in row.text.split()] for row in values_list.findall("VALUES")])


# --------------------------------------------------------------------------------------
# 1. a site covered by tiles of two UTM zones
# --------------------------------------------------------------------------------------


def test_mgrs_tile_of_a_forced_zone_contains_the_site() -> None:
    from gpp_cubes.demo.granule import TILE_SIZE_M, mgrs_tile

    lat, lon = 61.84741, 24.29477  # FI-Hyy, zone 35 just east of the 34/35 boundary
    own, west = mgrs_tile(lat, lon), mgrs_tile(lat, lon, zone=34)
    assert own.epsg == 32635 and own.tile_id.startswith("35V")
    assert west.epsg == 32634 and west.tile_id.startswith("34V")
    for tile in (own, west):
        x, y = Transformer.from_crs(4326, tile.epsg, always_xy=True).transform(lon, lat)
        assert tile.ulx <= x <= tile.ulx + TILE_SIZE_M and tile.uly - TILE_SIZE_M <= y <= tile.uly
        assert tile.ulx % 60 == 0 and tile.uly % 60 == 0
    with pytest.raises(ValueError):
        mgrs_tile(lat, lon, zone=61)


def test_two_zone_site_has_items_on_both_tiles(demo_world: World, items: dict,
                                               scenes: pd.DataFrame) -> None:
    site = demo_world.site(TWO_ZONE_SITE)
    assert site.epsg == 32635
    sc = scenes[scenes["site"] == TWO_ZONE_SITE]
    assert set(sc["epsg"]) == {32634, 32635}
    tiles = sc.groupby("datatake")["mgrs_tile"].nunique()
    # most datatakes are in the archive on both tiles, a few on one only
    assert 0.6 < (tiles == 2).mean() < 1.0
    # the other sites have one tile, in their own zone
    others = scenes[scenes["site"] != TWO_ZONE_SITE]
    assert (others.groupby("site")["mgrs_tile"].nunique() == 1).all()
    for _, row in sc.iterrows():
        item = items[row["item_id"]]
        m = ITEM_ID.fullmatch(row["item_id"])
        assert m and m.group(4) == item["properties"]["s2:mgrs_tile"] == row["mgrs_tile"]
        assert item["properties"]["proj:epsg"] == row["epsg"]
        assert item["properties"]["s2:mgrs_tile"][:2] == str(row["epsg"])[-2:]


def test_zone_34_item_is_on_its_tile_and_covers_the_site(demo_world: World, items: dict,
                                                           scenes: pd.DataFrame) -> None:
    from gpp_cubes.sensors.clearsky import solar_position
    from gpp_cubes.sites.grid import site_grid

    site = demo_world.site(TWO_ZONE_SITE)
    row = scenes[(scenes["site"] == TWO_ZONE_SITE) & (scenes["epsg"] == 32634)
                 & ~scenes["partial_swath"]].iloc[0]
    item = items[row["item_id"]]
    epsg, ulx, uly = _tile_geocoding(demo_world.root / item["assets"]["granule-metadata"]["href"])
    assert epsg == 32634
    # the site's whole area (its UTM-35 bounds, densified) in zone 34
    left, bottom, right, top = site.bounds
    t = np.linspace(0, 1, 50)
    ring_x = np.concatenate([left + (right - left) * t, np.full(50, right),
                             right - (right - left) * t, np.full(50, left)])
    ring_y = np.concatenate([np.full(50, bottom), bottom + (top - bottom) * t,
                             np.full(50, top), top - (top - bottom) * t])
    x34, y34 = Transformer.from_crs(32635, 32634, always_xy=True).transform(ring_x, ring_y)
    # ... lies inside the tile's 109.8 km square
    assert (ulx <= x34.min()) and (x34.max() <= ulx + 109800)
    assert (uly - 109800 <= y34.min()) and (y34.max() <= uly)
    for key, res in (("B04", 10), ("B05", 20), ("B01", 60), ("SCL", 20)):
        with rasterio.open(demo_world.root / item["assets"][key]["href"]) as ds:
            assert ds.crs.to_epsg() == 32634
            assert ds.res == (res, res)
            b = ds.bounds
            # a window on the tile's lattice, covering the site area
            assert (b.left - ulx) % 60 == 0 and (uly - b.top) % 60 == 0
            assert b.left <= x34.min() and x34.max() <= b.right
            assert b.bottom <= y34.min() and y34.max() <= b.top
    # the site grid's search box finds it
    g = site_grid(site.latitude, site.longitude)
    lon0, lat0, lon1, lat1 = item["bbox"]
    gb = g.bbox_wgs84()
    assert lon0 <= gb[0] and gb[2] <= lon1 and lat0 <= gb[1] and gb[3] <= lat1
    # its sun angle grid is at the zone-34 nodes (not the zone-35 ones, ~330 km east)
    root = ET.parse(demo_world.root / item["assets"]["granule-metadata"]["href"]).getroot()
    zen = _grid(root.find(".//Sun_Angles_Grid/Zenith/Values_List"))
    nodes = [(0, 0), (11, 5), (22, 22)]
    lon, lat = Transformer.from_crs(32634, 4326, always_xy=True).transform(
        [ulx + 5000 * j for _, j in nodes], [uly - 5000 * i for i, _ in nodes])
    when = pd.Timestamp(item["properties"]["datetime"]).tz_convert(None)
    for (i, j), lo, la in zip(nodes, lon, lat, strict=True):
        spa = solar_position(pd.DatetimeIndex([when]), la, lo)["zenith"].iloc[0]
        assert zen[i, j] == pytest.approx(spa, abs=0.02)


def test_both_tiles_give_the_same_reflectance_on_the_ground(demo_world: World, items: dict,
                                                            scenes: pd.DataFrame) -> None:
    sc = scenes[scenes["site"] == TWO_ZONE_SITE]
    pairs = []
    for _, g in sc.groupby("datatake"):
        a, b = g[g["epsg"] == 32635], g[g["epsg"] == 32634]
        if len(a) and len(b):
            # across processings too when there are two (offset 0 against 1000)
            pairs.append((a.iloc[0], b.iloc[-1]))
    assert len(pairs) > 10
    mixed = [p for p in pairs if p[0]["boa_offset_dn"] != p[1]["boa_offset_dn"]]
    partial = [p for p in pairs if p[0]["partial_swath"]]
    chosen = [pairs[0], *mixed[:1], *partial[:1]]
    assert mixed and partial
    to35 = Transformer.from_crs(32634, 32635, always_xy=True)
    for a, b in chosen:
        for key in ("B04", "B08", "B8A", "B11", "B01", "SCL"):
            va, da = _read(demo_world, items[a["item_id"]], key)
            vb, db = _read(demo_world, items[b["item_id"]], key)
            # every zone-34 pixel centre, located in the zone-35 raster
            x, y = to35.transform(*_centres(db))
            col, row = ~da.transform @ (x, y)
            col, row = np.floor(col).astype(int), np.floor(row).astype(int)
            inside = (row >= 0) & (row < da.height) & (col >= 0) & (col < da.width)
            assert inside.mean() > 0.7
            got_a = va[row[inside], col[inside]].astype(int)
            got_b = vb[inside].astype(int)
            assert ((got_a == 0) == (got_b == 0)).all(), (a["item_id"], key)  # nodata alike
            if key != "SCL":  # reflectance: DN - offset of each item's baseline
                ok = got_a > 0
                got_a = got_a[ok] - a["boa_offset_dn"]
                got_b = got_b[ok] - b["boa_offset_dn"]
            assert np.abs(got_a - got_b).max() <= 1, (a["item_id"], b["item_id"], key)


# --------------------------------------------------------------------------------------
# 2. low winter sun
# --------------------------------------------------------------------------------------


def test_no_scene_with_the_sun_lower_than_85_degrees(demo_world: World,
                                                      scenes: pd.DataFrame) -> None:
    from pvlib.solarposition import get_solarposition

    assert scenes["sun_zenith"].notna().all()
    for site in demo_world.sites:
        sc = scenes[scenes["site"] == site.site_id]
        times = pd.DatetimeIndex(pd.to_datetime(sc["datetime"]))
        spa = get_solarposition(times, site.latitude, site.longitude, site.elevation_m)
        np.testing.assert_allclose(spa["zenith"].to_numpy(), sc["sun_zenith"].to_numpy(),
                                   atol=0.01)
        assert (spa["zenith"] <= 85.0).all(), site.site_id


def test_winter_scenes_between_70_and_85_degrees_every_winter(demo_world: World,
                                                              scenes: pd.DataFrame) -> None:
    start, end = pd.Timestamp(demo_world.config.start), pd.Timestamp(demo_world.config.end)
    for site_id in NORTHERN_SITES:
        sc = scenes[scenes["site"] == site_id]
        dates = pd.to_datetime(sc["date"])
        low = sc[(sc["sun_zenith"] > 70) & (sc["sun_zenith"] <= 85)]
        assert len(low) > 8, site_id
        for year in range(start.year, end.year):  # the winters within the series
            winter = (dates >= f"{year}-10-01") & (dates <= f"{year + 1}-03-31")
            assert ((sc["sun_zenith"] > 70) & winter).any(), (site_id, year)
        # the deepest polar-night scenes are not acquired at all
        days = pd.to_datetime(low["date"])
        assert days.dt.month.isin([1, 2, 3, 9, 10, 11, 12]).all()


# --------------------------------------------------------------------------------------
# 3. scenes cut by the swath edge
# --------------------------------------------------------------------------------------


def _edge(x: np.ndarray, nodata: np.ndarray, side: str) -> tuple[float, float]:
    """The interval of eastings separating nodata from data pixel centres [m]."""
    if side == "east":  # data east of the edge
        return float(x[nodata].max()), float(x[~nodata].min())
    return float(x[~nodata].max()), float(x[nodata].min())


def test_partial_scenes_have_band_dependent_nodata_edges(demo_world: World, items: dict,
                                                         scenes: pd.DataFrame) -> None:
    part = scenes[scenes["partial_swath"] & (scenes["epsg"] == scenes["site"].map(
        {s.site_id: s.epsg for s in demo_world.sites}))]
    n_dt = scenes.groupby("site")["datatake"].nunique()
    n_part = scenes[scenes["partial_swath"]].groupby("site")["datatake"].nunique()
    assert (n_part.reindex(n_dt.index, fill_value=0) >= 1).all()  # every site has some
    assert 0.05 < n_part.sum() / n_dt.sum() < 0.25  # about 1 in 8
    for _, row in part.head(4).iterrows():
        site = demo_world.site(row["site"])
        item = items[row["item_id"]]
        edges_truth = json.loads(row["swath_edges"])
        edges, nodata_any20 = {}, None
        for band in BANDS:
            v, ds = _read(demo_world, item, band)
            x, y = _centres(ds)
            nodata = v == 0
            assert nodata.any() and not nodata.all(), (row["item_id"], band)
            lo, hi = _edge(x, nodata, row["swath_side"])
            assert lo < hi, (row["item_id"], band)  # a straight north-south edge
            assert lo <= edges_truth[band] <= hi + 1e-6
            edges[band] = (lo + hi) / 2
            # the recorded nodata fraction of the 1 km circle, measured here
            circle = np.hypot(x - site.tower_x, y - site.tower_y) <= 1000
            assert nodata[circle].mean() == pytest.approx(row[f"nodata_1km_{band}"], abs=1e-9)
            if band in BANDS_20:
                nodata_any20 = nodata if nodata_any20 is None else nodata_any20 | nodata
        # the edge differs between bands by up to a few hundred metres
        spread = max(edges.values()) - min(edges.values())
        assert 150 < spread < 800, (row["item_id"], edges)
        # SCL is nodata where any 20 m band is
        scl, _ = _read(demo_world, item, "SCL")
        assert ((scl == 0) == nodata_any20).all()
        assert item["properties"]["s2:nodata_pixel_percentage"] == pytest.approx(
            100 * (scl == 0).mean(), abs=1e-4)
        # the item's footprint is the data's: 400 m beyond the B02 edge (beyond every band's
        # edge) is left out, 300 m inside it is in
        from shapely.geometry import Point, shape

        s = 1 if row["swath_side"] == "east" else -1
        lon, lat = Transformer.from_crs(site.epsg, 4326, always_xy=True).transform(
            [edges_truth["B02"] - s * 400, edges_truth["B02"] + s * 300],
            [site.tower_y, site.tower_y])
        foot = shape(item["geometry"])
        assert not foot.contains(Point(lon[0], lat[0]))
        assert foot.contains(Point(lon[1], lat[1]))


def test_partial_scene_viewing_grids_are_nan_beyond_the_swath(demo_world: World,
                                                              items: dict,
                                                              scenes: pd.DataFrame) -> None:
    sc = scenes[scenes["partial_swath"]]
    for _, row in sc.drop_duplicates("mgrs_tile").iterrows():
        site = demo_world.site(row["site"])
        item = items[row["item_id"]]
        path = demo_world.root / item["assets"]["granule-metadata"]["href"]
        epsg, ulx, uly = _tile_geocoding(path)
        jj, ii = np.meshgrid(np.arange(23), np.arange(23))
        nx, _ = Transformer.from_crs(epsg, site.epsg, always_xy=True).transform(
            ulx + 5000.0 * jj, uly - 5000.0 * ii)
        s = 1 if row["swath_side"] == "east" else -1
        edges = json.loads(row["swath_edges"])
        root = ET.parse(path).getroot()
        by_band: dict[int, list[np.ndarray]] = {}
        for g in root.iter("Viewing_Incidence_Angles_Grids"):
            by_band.setdefault(int(g.get("bandId")), []).append(
                _grid(g.find("Zenith/Values_List")))
        for band_id, band in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07",
                                        "B08", "B8A", "B09")):
            finite = np.isfinite(np.array(by_band[band_id])).any(axis=0)
            inward = s * (nx - edges[band])  # distance into the swath [m]
            assert not finite[inward < -5000 - 1].any(), (row["item_id"], band)
            assert finite[inward >= 0].all(), (row["item_id"], band)
            assert (~finite).any()


# --------------------------------------------------------------------------------------
# 4. processing baselines and duplicates
# --------------------------------------------------------------------------------------


def _product_radiometry(path: Path) -> tuple[str, int, dict[int, int]]:
    """(baseline, quantification value, BOA_ADD_OFFSET per band id) of MTD_MSIL2A.xml."""
    root = ET.parse(path).getroot()
    baseline = root.find(".//Product_Info/PROCESSING_BASELINE").text
    quant = int(float(root.find(".//QUANTIFICATION_VALUES_LIST/BOA_QUANTIFICATION_VALUE").text))
    offsets = {int(e.get("band_id")): int(e.text) for e in root.iter("BOA_ADD_OFFSET")}
    return baseline, quant, offsets


def test_reprocessed_period_is_contiguous_baseline_05(scenes: pd.DataFrame) -> None:
    sc = scenes.assign(day=pd.to_datetime(scenes["date"]))
    per_datatake = sc.groupby("datatake").agg(
        day=("day", "first"), baselines=("processing_baseline", frozenset))
    only05 = per_datatake[per_datatake["baselines"] == frozenset({"05.00"})]
    lo, hi = only05["day"].min(), only05["day"].max()
    assert (hi - lo).days > 300  # about a year
    # inside the period every datatake has a 05.00 item; outside 02.12, and 05.00 only as
    # the second processing of a duplicate
    inside = (per_datatake["day"] >= lo) & (per_datatake["day"] <= hi)
    assert per_datatake.loc[inside, "baselines"].map(lambda b: "05.00" in b).all()
    assert per_datatake.loc[~inside, "baselines"].map(lambda b: "02.12" in b).all()
    assert (per_datatake["day"] < lo).any() and (per_datatake["day"] > hi).any()
    assert set(sc["processing_baseline"]) == {"02.12", "05.00"}
    assert (sc["boa_offset_dn"] == np.where(sc["processing_baseline"] >= "04.00", 1000, 0)).all()


def test_duplicates_are_one_scene_processed_twice(demo_world: World, items: dict,
                                                  scenes: pd.DataFrame) -> None:
    dup = scenes[scenes["duplicate_of"].notna()]
    n_dt = scenes.groupby("site")["datatake"].nunique().sum()
    assert 0.05 < dup["datatake"].nunique() / n_dt < 0.2  # about 10 % of the datatakes
    assert (scenes.loc[dup["duplicate_of"], "duplicate_of"].to_numpy()
            == dup["item_id"].to_numpy()).all()  # pairs
    checked = 0
    for iid, other in zip(dup["item_id"], dup["duplicate_of"], strict=True):
        if iid > other:
            continue
        a, b = items[iid], items[other]
        pa, pb = a["properties"], b["properties"]
        ma, mb = ITEM_ID.fullmatch(iid), ITEM_ID.fullmatch(other)
        assert ma and mb
        # same sensing time, tile, orbit and platform ...
        for key in ("datetime", "s2:mgrs_tile", "sat:relative_orbit", "platform", "proj:epsg"):
            assert pa[key] == pb[key], key
        assert ma.group(1, 2, 3, 4) == mb.group(1, 2, 3, 4)
        # ... processed twice
        assert {pa["s2:processing_baseline"], pb["s2:processing_baseline"]} == {"02.12", "05.00"}
        for key in ("s2:generation_time", "s2:product_uri", "s2:granule_id"):
            assert pa[key] != pb[key], key
        for p, m in ((pa, ma), (pb, mb)):
            gen = pd.Timestamp(p["s2:generation_time"]).strftime("%Y%m%dT%H%M%S")
            assert m.group(5) == gen  # the item id ends with the processing time
            assert p["s2:datatake_id"].endswith("_N" + p["s2:processing_baseline"])
            assert f"_N{p['s2:processing_baseline'].replace('.', '')}_" in p["s2:product_uri"]
        assert pa["s2:datatake_id"].rsplit("_", 1)[0] == pb["s2:datatake_id"].rsplit("_", 1)[0]
        # both encode the same reflectance, with the offset their product metadata states
        refl = []
        for it in (a, b):
            baseline, quant, offsets = _product_radiometry(
                demo_world.root / it["assets"]["product-metadata"]["href"])
            assert baseline == it["properties"]["s2:processing_baseline"]
            assert quant == 10000
            if baseline >= "04.00":
                assert offsets == dict.fromkeys(range(13), -1000)
            else:
                assert offsets == {}
            bands = {}
            for key, band_id in (("B04", 3), ("B8A", 8), ("B09", 9)):  # ESA band ids
                dn, _ = _read(demo_world, it, key)
                bands[key] = np.where(
                    dn > 0, (dn.astype(float) + offsets.get(band_id, 0)) / quant, np.nan)
            refl.append(bands)
        for key in refl[0]:
            np.testing.assert_array_equal(refl[0][key], refl[1][key])
        checked += 1
    assert checked >= 5


def test_granule_metadata_state_no_offset(demo_world: World, items: dict,
                                          scenes: pd.DataFrame) -> None:
    """As in ESA's files, MTD_TL.xml has no BOA_ADD_OFFSET; MTD_MSIL2A.xml does (>= 04.00)."""
    row = scenes[scenes["processing_baseline"] == "05.00"].iloc[0]
    text = (demo_world.root / items[row["item_id"]]["assets"]["granule-metadata"]["href"]
            ).read_text()
    assert "BOA_ADD_OFFSET" not in text
    product = (demo_world.root / items[row["item_id"]]["assets"]["product-metadata"]["href"]
               ).read_text()
    assert "<BOA_ADD_OFFSET_VALUES_LIST>" in product
