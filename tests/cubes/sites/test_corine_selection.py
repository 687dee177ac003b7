"""CORINE reading and the paper's site rules on a synthetic CORINE raster (EPSG:3035, 100 m).

Each test site sits on a corner shared by four 100 m CORINE cells, at LAEA coordinates that
are multiples of 300 m, so on a 10 m grid in EPSG:3035 the pixel centres are symmetric around
the tower and nearest-neighbour resampling is exact. Fractions are then worked out by hand
(symmetry) or by counting pixel centres in a plain loop, independently of the library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from gpp_cubes.demo.serve import serve_files
from gpp_cubes.errors import SiteError
from gpp_cubes.sites.catalog import point_site, study_sites
from gpp_cubes.sites.corine import (
    FOREST_CLASSES,
    artificial_mask,
    clc_legend,
    forest_mask,
    read_corine,
    to_clc_codes,
)
from gpp_cubes.sites.grid import site_grid
from gpp_cubes.sites.selection import buffer_stats, save_selection, select_sites
from gpp_cubes.targets.fluxnet import fluxnet_filename, write_fluxnet

RES = 100.0
LEFT, TOP = 4310000.0, 3220000.0  # raster origin (LAEA metres)
WIDTH, HEIGHT = 400, 200  # 40 km x 20 km
Y0 = 3210000.0
TOWERS = {  # LAEA x of each tower (all at y = Y0)
    "XA-Qtr": 4320000.0,  # forest with one grassland quadrant: 75 % forest
    "XB-Hlf": 4326000.0,  # west half broad-leaved forest, east half arable: 50 %
    "XC-Urb": 4332000.0,  # mixed forest, one urban 100 m cell 500-600 m east of the tower
    "XD-Out": 4338000.0,  # coniferous forest, urban cell just beyond 1000 m
    "XE-Nod": 4347000.0,  # inside the raster bounds but on no-data
}
TO_GEO = Transformer.from_crs(3035, 4326, always_xy=True)

# GRID_CODE of each CLC code, from the shipped legend
GRID = {code: g for g, (code, _) in clc_legend().items()}


def _cell(x: float, y: float) -> tuple[int, int]:
    """(row, col) of the 100 m cell whose lower-left corner is (x, y)."""
    return round((TOP - y) / RES) - 1, round((x - LEFT) / RES)


def _layout() -> np.ndarray:
    codes = np.full((HEIGHT, WIDTH), 312, dtype=np.uint16)
    rows_north = slice(0, _cell(0, Y0)[0] + 1)  # cells above y0
    xa = TOWERS["XA-Qtr"]
    codes[rows_north, _cell(xa, Y0)[1]:_cell(xa + 3000, Y0)[1]] = 231  # NE quadrant
    xb = TOWERS["XB-Hlf"]
    codes[:, _cell(xb - 2900, Y0)[1]:_cell(xb, Y0)[1]] = 311
    codes[:, _cell(xb, Y0)[1]:_cell(xb + 2900, Y0)[1]] = 211
    xc = TOWERS["XC-Urb"]
    codes[:, _cell(xc - 2900, Y0)[1]:_cell(xc + 2900, Y0)[1]] = 313
    codes[_cell(xc + 500, Y0)] = 111
    codes[_cell(TOWERS["XD-Out"] + 1000, Y0)] = 112
    codes[:, _cell(4344000, Y0)[1]:] = 0  # no data east of 4344 km
    return codes


def _write(path: Path, values: np.ndarray, nodata) -> Path:
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 1,
               "dtype": values.dtype, "crs": "EPSG:3035",
               "transform": from_origin(LEFT, TOP, RES, RES), "nodata": nodata,
               "tiled": True, "blockxsize": 128, "blockysize": 128, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


@pytest.fixture(scope="module")
def corine(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("corine")
    codes = _layout()
    # EEA GeoTIFF style: GRID_CODE 1-44 with 48 = NODATA (no nodata tag, class value only)
    grid_codes = np.vectorize(lambda c: GRID.get(int(c), 48))(codes).astype(np.uint8)
    return {"clc": _write(d / "clc_codes.tif", codes, 0),
            "grid_code": _write(d / "clc_gridcode.tif", grid_codes, None)}


def _site(sid: str, x: float | None = None, y: float = Y0):
    lon, lat = TO_GEO.transform(TOWERS[sid] if x is None else x, y)
    return point_site(lat, lon, site_id=sid)


def _laea_grid(sid: str):
    s = _site(sid)
    return site_grid(s.latitude, s.longitude, epsg=3035)


def _n_buffer_pixels(radius=1000.0, res=10.0) -> int:
    """Pixel centres (±5, ±15, ...) within radius of a tower at a pixel corner, by loop."""
    n = 0
    for i in range(-150, 150):
        for j in range(-150, 150):
            if ((i + 0.5) * res) ** 2 + ((j + 0.5) * res) ** 2 <= radius**2:
                n += 1
    return n


N = _n_buffer_pixels()


def test_legend_and_masks():
    legend = clc_legend()
    assert len(legend) == 44 and legend[23] == (311, "Broad-leaved forest")
    assert legend[44][0] == 523
    codes = np.array([111, 142, 211, 311, 312, 313, 321, 523, 0])
    assert forest_mask(codes).tolist() == [False] * 3 + [True] * 3 + [False] * 3
    assert artificial_mask(codes).tolist() == [True, True] + [False] * 7
    assert FOREST_CLASSES == (311, 312, 313)
    np.testing.assert_array_equal(to_clc_codes(np.array([1, 23, 44, 48, 0])),
                                  [111, 311, 523, 0, 0])
    np.testing.assert_array_equal(to_clc_codes(np.array([111, 312, 999, 0])), [111, 312, 0, 0])
    # EEA GRID_CODE rasters with no-data 128/255 must not be taken for CLC codes
    np.testing.assert_array_equal(to_clc_codes(np.array([23, 128, 255, 48])), [311, 0, 0, 0])
    np.testing.assert_array_equal(to_clc_codes(np.array([23, 128]), "clc"), [0, 0])


def test_grid_is_aligned_as_the_tests_assume():
    g = _laea_grid("XA-Qtr")
    assert g.tower_x == pytest.approx(4320000.0, abs=1e-3)
    assert g.tower_y == pytest.approx(Y0, abs=1e-3)
    assert (g.distance_to_tower() <= 1000).sum() == N


@pytest.mark.parametrize("encoding", ["clc", "grid_code"])
def test_read_corine_exact_on_laea_grid(corine, encoding):
    g = _laea_grid("XC-Urb")
    codes = read_corine(corine[encoding], g)
    assert codes.dims == ("y", "x") and codes.shape == g.shape
    assert codes.rio.crs.to_epsg() == 3035
    np.testing.assert_array_equal(codes.x, g.x)
    # the 10 m pixel centred 555 m east, 55 m north of the tower is in the urban cell
    assert int(codes.sel(x=g.tower_x + 555, y=Y0 + 55, method="nearest")) == 111
    assert int(codes.sel(x=g.tower_x + 5, y=Y0 + 5, method="nearest")) == 313
    assert int(artificial_mask(codes).sum()) == 100  # exactly one 100 m cell


@pytest.mark.parametrize("encoding", ["clc", "grid_code"])
def test_buffer_fractions_by_hand(corine, encoding):
    # A: one quadrant of four is grassland -> 3/4 by symmetry
    g = _laea_grid("XA-Qtr")
    stats = buffer_stats(read_corine(corine[encoding], g), g)
    assert stats["n_pixels"] == N and N % 4 == 0
    assert stats["forest_fraction"] == 0.75
    assert stats["artificial_pixels"] == 0
    # B: west half forest
    g = _laea_grid("XB-Hlf")
    assert buffer_stats(read_corine(corine[encoding], g), g)["forest_fraction"] == 0.5
    # C: 100 urban pixels (one 100 m cell, farthest corner 608 m away) in the buffer
    g = _laea_grid("XC-Urb")
    stats = buffer_stats(read_corine(corine[encoding], g), g)
    assert stats["artificial_pixels"] == 100
    assert stats["forest_fraction"] == pytest.approx(1 - 100 / N)
    # D: the urban cell starts at 1000 m: its nearest pixel centre is 1005 m away
    g = _laea_grid("XD-Out")
    stats = buffer_stats(read_corine(corine[encoding], g), g)
    assert (stats["artificial_pixels"], stats["forest_fraction"]) == (0, 1.0)
    # ... and with a 1100 m buffer the pixels of that cell within 1100 m count
    g = site_grid(*_latlon("XD-Out"), epsg=3035, buffer_m=1100)
    expected = sum(1 for i in range(100) for j in range(10)
                   if (1005 + 10 * i) ** 2 + (5 + 10 * j) ** 2 <= 1100**2)
    assert buffer_stats(read_corine(corine[encoding], g), g, 1100)["artificial_pixels"] \
        == expected > 0


def _latlon(sid):
    s = _site(sid)
    return s.latitude, s.longitude


def test_reprojection_to_utm(corine):
    # default site grid: UTM 32N, 10 m; the quadrant edges through the tower rotate a little
    s = _site("XA-Qtr")
    g = s.grid()
    assert g.epsg == 32632
    codes = read_corine(corine["clc"], g)
    stats = buffer_stats(codes, g)
    assert stats["forest_fraction"] == pytest.approx(0.75, abs=0.01)
    assert set(np.unique(codes.values)) == {231, 312}


def test_outside_coverage(corine):
    fyo = point_site(56.461528, 32.922083, site_id="RU-Fyo")
    with pytest.raises(SiteError, match="RU-Fyo is outside CORINE coverage"):
        read_corine(corine["clc"], fyo.grid(), site_id="RU-Fyo")
    with pytest.raises(SiteError, match=r"outside CORINE coverage.*no data"):
        read_corine(corine["clc"], _laea_grid("XE-Nod"), site_id="XE-Nod")
    with pytest.raises(SiteError, match="outside CORINE coverage"):
        read_corine(corine["grid_code"], _laea_grid("XE-Nod"))


def _flux(directory: Path, sid: str, n_bad: int) -> None:
    days = pd.date_range("2016-01-01", "2020-12-31", freq="D")
    qc = np.ones(len(days))
    qc[:n_bad] = 0.5
    df = pd.DataFrame({"GPP_NT_VUT_REF": 5.0, "NEE_VUT_REF_QC": qc}, index=days)
    write_fluxnet(df, directory / fluxnet_filename(sid, 2016, 2020))


def test_select_sites_table(corine, tmp_path):
    flux = tmp_path / "flux"
    flux.mkdir()
    # 1827 days: 731 bad -> 1096 valid = 59.99 % (fail); 730 bad -> 60.04 % (pass)
    _flux(flux, "XA-Qtr", 0)
    _flux(flux, "XB-Hlf", 0)
    _flux(flux, "XC-Urb", 0)
    _flux(flux, "XD-Out", 731)
    _flux(flux, "XF-Ok6", 730)
    sites = [_site(k) for k in ("XA-Qtr", "XB-Hlf", "XC-Urb", "XD-Out")]
    sites += [_site("XF-Ok6", x=TOWERS["XD-Out"]), _site("XG-Nof", x=TOWERS["XA-Qtr"]),
              point_site(5.2787, -52.9248, site_id="GF-Guy")]
    seen = []
    table = select_sites(sites, corine["clc"], flux, progress=seen.append)
    assert len(seen) == 7
    t = table.set_index("site_id")
    assert t.loc["XA-Qtr", "verdict"] == "pass" and t.loc["XA-Qtr", "reason"] == ""
    assert t.loc["XA-Qtr", "valid_fraction"] == 1.0
    assert t.loc["XA-Qtr", "forest_fraction"] == pytest.approx(0.75, abs=0.01)
    assert t.loc["XB-Hlf", "verdict"] == "fail" and not t.loc["XB-Hlf", "pass_forest"]
    assert "forest" in t.loc["XB-Hlf", "reason"]
    assert not t.loc["XC-Urb", "pass_artificial"] and t.loc["XC-Urb", "pass_forest"]
    assert t.loc["XC-Urb", "artificial_pixels"] > 0 and "artificial" in t.loc["XC-Urb", "reason"]
    assert t.loc["XD-Out", "valid_fraction"] == pytest.approx(1096 / 1827)
    assert not t.loc["XD-Out", "pass_valid_gpp"] and "valid GPP" in t.loc["XD-Out", "reason"]
    assert t.loc["XF-Ok6", "verdict"] == "pass"
    assert t.loc["XF-Ok6", "valid_fraction"] == pytest.approx(1097 / 1827)
    assert t.loc["XG-Nof", "reason"] == "no FLUXNET file" and t.loc["XG-Nof", "pass_forest"]
    guy = t.loc["GF-Guy"]
    assert not guy["pass_europe"] and not guy["pass_forest"] and not guy["pass_valid_gpp"]
    assert guy["reason"].startswith("outside Europe; outside CORINE coverage")
    assert set(t.index[t.verdict == "pass"]) == {"XA-Qtr", "XF-Ok6"}

    path = save_selection(table, tmp_path / "sel" / "selection.csv")
    chosen, message = study_sites(path)
    assert [s.id for s in chosen] == ["XA-Qtr", "XF-Ok6"]
    assert chosen[0].latitude == pytest.approx(sites[0].latitude)
    assert "2 of 7" in message


def test_unreadable_fluxnet_fails_criterion(corine, tmp_path):
    (tmp_path / fluxnet_filename("XA-Qtr", 2016, 2020)).write_text("TIMESTAMP,GPP_NT_VUT_REF\n")
    table = select_sites([_site("XA-Qtr")], corine["clc"], tmp_path)
    assert "unreadable FLUXNET file" in table.loc[0, "reason"]
    assert "NEE_VUT_REF_QC" in table.loc[0, "reason"]



def test_read_corine_over_http_range_requests(corine):
    # GDAL's /vsicurl/ path, as for the real EEA/S3 raster, against a local Range server
    with serve_files(corine["clc"].parent) as server:
        g = _laea_grid("XC-Urb")
        remote = read_corine(f"{server.url}/{corine['clc'].name}", g)
        local = read_corine(corine["clc"], g)
        np.testing.assert_array_equal(remote.values, local.values)


@pytest.mark.network
def test_read_corine_ee():  # pragma: no cover - needs Earth Engine credentials and internet
    pytest.importorskip("ee")
    import ee

    from gpp_cubes.sites.corine import read_corine_ee

    ee.Initialize()
    codes = read_corine_ee(site_grid(51.079407, 10.452089), site_id="DE-Hai")
    assert forest_mask(codes).mean() > 0.7


def _catalog(path: Path, sites) -> Path:
    import json

    features = [{"type": "Feature", "id": s.id,
                 "geometry": {"type": "Point", "coordinates": [s.longitude, s.latitude]},
                 "properties": {"site_id": s.id, "name": s.id, "latitude": s.latitude,
                                "longitude": s.longitude, "igbp": "ENF",
                                "status": "candidate"}} for s in sites]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_cli_select(corine, tmp_path):
    import typer
    from typer.testing import CliRunner

    from gpp_cubes.cli.sites_cmd import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    flux = tmp_path / "flux"
    flux.mkdir()
    _flux(flux, "XA-Qtr", 0)
    _flux(flux, "XB-Hlf", 0)
    cat = _catalog(tmp_path / "sites.geojson", [_site("XA-Qtr"), _site("XB-Hlf")])
    out = tmp_path / "selection.csv"
    env = {"COLUMNS": "250", "GPP_CUBES_SELECTION": str(tmp_path / "unused.csv")}
    res = CliRunner().invoke(app, ["sites", "select", "--corine", str(corine["grid_code"]),
                                   "--fluxnet", str(flux), "--catalog", str(cat),
                                   "--output", str(out)], env=env)
    assert res.exit_code == 0, res.output
    assert "1 of 2 sites pass" in res.output and "XB-Hlf" in res.output
    assert "forest 50.0% < 70%" in res.output
    table = pd.read_csv(out)
    assert table["verdict"].tolist() == ["pass", "fail"]
    assert [s.id for s in study_sites(out)[0]] == ["XA-Qtr"]

    # the same through a --config file, restricted with --site
    cfg = tmp_path / "gpp.toml"
    cfg.write_text(f'[select]\ncorine = "{corine["clc"]}"\nfluxnet = "{flux}"\n'
                   f'catalog = "{cat}"\noutput = "{tmp_path / "sel2.csv"}"\n')
    res = CliRunner().invoke(app, ["sites", "select", "--config", str(cfg), "--site",
                                   "XB-Hlf"], env=env)
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "sel2.csv")["site_id"].tolist() == ["XB-Hlf"]

    # a missing FLUXNET directory is a one-line error, not a traceback
    res = CliRunner().invoke(app, ["sites", "select", "--corine", str(corine["clc"]),
                                   "--fluxnet", str(tmp_path / "nope"), "--catalog", str(cat)],
                             env=env)
    assert res.exit_code == 1 and "FLUXNET directory not found" in res.output
    assert "Traceback" not in res.output


def test_unreadable_corine_source(tmp_path):
    from gpp_cubes.errors import InputFormatError

    with pytest.raises(InputFormatError, match=r"cannot open CORINE raster .*missing\.tif"):
        read_corine(tmp_path / "missing.tif", _laea_grid("XA-Qtr"))
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(InputFormatError, match=r"bad\.tif"):
        read_corine(bad, _laea_grid("XA-Qtr"))
