"""Site catalog: contents against the reference tables, id validation, study set."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from reference import REFERENCE

from gpp_cubes.errors import ConfigError, SiteError
from gpp_cubes.sites.catalog import (
    as_site,
    catalog_path,
    default_selection_path,
    get_site,
    in_europe,
    load_sites,
    point_site,
    study_sites,
    validate_site_id,
)

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ROOT / "catalog" / "sources"


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return {r["site_id"]: r for r in csv.DictReader(f)}


def test_catalog_matches_reference_tables():
    meta = _rows(SOURCES / "ww2020_forest_sites.csv")
    years = _rows(SOURCES / "ww2020_forest_sites_years.csv")
    sites = load_sites()
    assert len(sites) == 38
    assert {s.id for s in sites} == set(meta)
    for s in sites:
        row = meta[s.id]
        assert s.name == row["name"]
        assert s.country == row["country"]
        assert s.latitude == float(row["lat"])
        assert s.longitude == float(row["lon"])
        assert s.elevation_m == float(row["elevation_m"])
        assert s.igbp == row["igbp"]
        assert s.year_start == int(years[s.id]["ww2020_year_start"])
        assert s.year_end == int(years[s.id]["ww2020_year_end"])
        assert s.source == row["source"]
    counts = {k: sum(s.igbp == k for s in sites) for k in ("ENF", "DBF", "MF", "EBF")}
    assert counts == {"ENF": 22, "DBF": 9, "MF": 5, "EBF": 2}


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference data not present")
def test_catalog_sources_are_the_reference_files():
    for name in ("ww2020_forest_sites.csv", "ww2020_forest_sites_years.csv"):
        assert (SOURCES / name).read_bytes() == (REFERENCE / name).read_bytes()


def test_catalog_is_up_to_date_and_single_source():
    # The package copy is what load_sites reads; catalog/sites.geojson must be identical.
    result = subprocess.run([sys.executable, str(ROOT / "catalog" / "build_catalog.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert catalog_path().read_bytes() == (ROOT / "catalog" / "sites.geojson").read_bytes()


def test_geojson_geometry_is_lon_lat_and_nulls_are_kept():
    collection = json.loads(catalog_path().read_text())
    assert collection["type"] == "FeatureCollection"
    hai = next(f for f in collection["features"] if f["id"] == "DE-Hai")
    assert hai["geometry"]["coordinates"] == [10.452089, 51.079407]
    # icos_ecosystem_type is empty in the reference for CZ-Stn: stays null, not invented
    stn = next(f for f in collection["features"] if f["id"] == "CZ-Stn")
    assert stn["properties"]["icos_ecosystem_type"] is None


def test_excluded_stations_and_reasons():
    sites = {s.id: s for s in load_sites()}
    excluded = {k for k, s in sites.items() if s.status == "excluded"}
    assert excluded == {"GF-Guy", "IL-Yat", "RU-Fy2", "RU-Fyo", "BE-Lcr", "IT-BFt", "DK-Gds",
                        "FI-Ken"}
    assert "Europe" in sites["GF-Guy"].status_reason
    assert "CORINE" in sites["RU-Fyo"].status_reason
    assert "2019-2020" in sites["IT-BFt"].status_reason
    # the three sites the paper names are candidates
    assert all(sites[k].status == "candidate" for k in ("DE-Hai", "BE-Vie", "FI-Var"))
    # the "too few years" stations really lack years in 2016-2020 per the catalog
    for sid in ("BE-Lcr", "IT-BFt", "DK-Gds", "FI-Ken"):
        s = sites[sid]
        assert s.year_end - max(s.year_start, 2016) + 1 <= 3


def test_get_site_and_frozen():
    s = get_site("FI-Var")
    assert (s.latitude, s.longitude, s.igbp) == (67.7549, 29.61, "ENF")
    with pytest.raises(AttributeError):
        s.latitude = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["../x", "DE-Ha", "DE-Hai/..", "de-hai", "DE_Hai", "", "DE-Ha i",
                                 "../../etc/passwd", "DE-Hai\n"])
def test_malformed_ids_rejected(bad):
    with pytest.raises(SiteError, match="invalid site id"):
        validate_site_id(bad)
    with pytest.raises(SiteError):
        get_site(bad)


def test_unknown_site_lists_close_matches():
    with pytest.raises(SiteError, match="close matches: DE-Hai") as err:
        get_site("DE-HAi")
    assert "unknown site 'DE-HAi'" in str(err.value)
    with pytest.raises(SiteError) as err:
        get_site("ZZ-Qqq")
    assert "close matches" not in str(err.value)


def test_in_europe_rule():
    outside = {s.id for s in load_sites() if not in_europe(s.latitude, s.longitude)}
    assert outside == {"GF-Guy", "IL-Yat"}
    assert in_europe(51.0, 10.0)
    assert not in_europe(40.7, -74.0)  # New York


def test_point_site():
    p = point_site(50.0, 8.0, name="somewhere")
    assert (p.latitude, p.longitude, p.status, p.id) == (50.0, 8.0, "adhoc", "XX-Pnt")
    assert p.grid().epsg == 32632
    with pytest.raises(SiteError, match="out of range"):
        point_site(95.0, 0.0)
    with pytest.raises(SiteError, match="invalid site id"):
        point_site(50.0, 8.0, site_id="../evil")


def test_as_site_keeps_the_reason_a_point_is_refused():
    """(lat, lon) out of range says so, as point_site does; a malformed pair says what was
    expected."""
    with pytest.raises(SiteError, match=r"out of range: lat=95\.0"):
        as_site((95.0, 10.0))
    for bad in [(50.0,), (50.0, 10.0, 3.0), "5", object()]:
        with pytest.raises(SiteError, match=r"expected a site id|invalid site id"):
            as_site(bad)
    assert as_site((51.0, 10.4)).latitude == 51.0


def test_study_sites_before_and_after_selection(tmp_path, monkeypatch):
    monkeypatch.delenv("GPP_CUBES_SELECTION", raising=False)
    path = tmp_path / "selection.csv"
    # no selection yet: an error naming the file and the command that writes it
    with pytest.raises(ConfigError, match=r"no site selection at .*selection\.csv.*"
                       r"gpp sites select .*--output .*selection\.csv"):
        study_sites(path)
    with pytest.raises(ConfigError, match="no site selection named"):
        study_sites()  # nothing named, no output directory, no env var: no home default
    path.write_text(
        "site_id,name,igbp,latitude,longitude,verdict\n"
        "DE-Hai,Hainich,DBF,51.079407,10.452089,pass\n"
        "BE-Vie,Vielsalm,MF,50.304962,5.998099,fail\n"
        "XX-D01,demo,ENF,50.5,11.5,pass\n"
    )
    sites, message = study_sites(path)
    assert [s.id for s in sites] == ["DE-Hai", "XX-D01"]
    assert sites[0] == get_site("DE-Hai")
    assert (sites[1].latitude, sites[1].igbp, sites[1].status) == (50.5, "ENF", "adhoc")
    assert "2 of 3 sites passed" in message and str(path) in message
    # the default is the table inside the build's output directory
    assert [s.id for s in study_sites(out_dir=tmp_path)[0]] == ["DE-Hai", "XX-D01"]
    with pytest.raises(ConfigError, match=str(tmp_path / "other" / "selection.csv")):
        study_sites(out_dir=tmp_path / "other")


def test_study_sites_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv("GPP_CUBES_SELECTION", str(tmp_path / "sel.csv"))
    assert default_selection_path(tmp_path / "out") == tmp_path / "sel.csv"  # env wins
    with pytest.raises(ConfigError, match=str(tmp_path / "sel.csv")):
        study_sites()
    (tmp_path / "sel.csv").write_text("site_id,name,igbp,latitude,longitude,verdict\n"
                                      "DE-Hai,Hainich,DBF,51.079407,10.452089,pass\n")
    sites, message = study_sites()
    assert [s.id for s in sites] == ["DE-Hai"] and str(tmp_path / "sel.csv") in message


def test_import_is_light():
    code = ("import sys, gpp_cubes.sites.catalog; "
            "print(any(m in sys.modules for m in ('rasterio', 'xarray', 'pandas', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


# --- CLI -------------------------------------------------------------------------------------

def _cli():
    import typer

    from gpp_cubes.cli.sites_cmd import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # keeps `sites` a sub-command, as in the real `gpp` app
        pass

    register(app)
    return app


def _invoke(*args: str, env: dict | None = None):
    from typer.testing import CliRunner

    return CliRunner().invoke(_cli(), list(args), env={"COLUMNS": "250", **(env or {})})


def test_cli_list_and_status_filter():
    res = _invoke("sites", "list")
    assert res.exit_code == 0, res.output
    assert "38 site(s)" in res.output and "DE-Hai" in res.output and "Hainich" in res.output
    res = _invoke("sites", "list", "--status", "excluded")
    assert res.exit_code == 0
    assert "8 site(s)" in res.output and "IL-Yat" in res.output and "DE-Hai" not in res.output
    assert "outside Europe (Israel)" in res.output
    res = _invoke("sites", "list", "--status", "bogus")
    assert res.exit_code == 2 and "--status must be one of" in res.output  # a usage error


def test_cli_list_study_set_message(tmp_path):
    res = _invoke("sites", "list", "--study",
                  env={"GPP_CUBES_SELECTION": str(tmp_path / "none.csv")})
    assert res.exit_code == 1, res.output
    assert "no site selection at" in res.output and "gpp sites select" in res.output
    sel = tmp_path / "sel.csv"
    sel.write_text("site_id,name,igbp,latitude,longitude,verdict\n"
                   "DE-Hai,Hainich,DBF,51.079407,10.452089,pass\n"
                   "BE-Vie,Vielsalm,MF,50.304962,5.998099,fail\n")
    res = _invoke("sites", "list", "--study", "--selection", str(sel))
    assert res.exit_code == 0, res.output
    assert "1 site(s)" in res.output and "1 of 2 sites passed" in res.output


def test_cli_select_needs_an_output_path(tmp_path, monkeypatch):
    monkeypatch.delenv("GPP_CUBES_SELECTION", raising=False)
    res = _invoke("sites", "select", "--corine", str(tmp_path / "c.tif"),
                  "--fluxnet", str(tmp_path))
    assert res.exit_code == 2, res.output  # before any site is checked
    assert "--output" in res.output and "Traceback" not in res.output


def test_cli_show():
    res = _invoke("sites", "show", "BE-Vie")
    assert res.exit_code == 0, res.output
    assert "Vielsalm" in res.output and "490.0" in res.output and "50.304962" in res.output
    res = _invoke("sites", "show", "BE-VIE")
    assert res.exit_code == 1 and "close matches: BE-Vie" in res.output
    res = _invoke("sites", "show", "../x")
    assert res.exit_code == 1 and "invalid site id" in res.output
    assert "Traceback" not in res.output


def test_cli_show_config_and_debug(tmp_path):
    # --config supplies option values: debug = true from the file shows the traceback
    cfg = tmp_path / "gpp.toml"
    cfg.write_text("[show]\ndebug = true\n")
    res = _invoke("sites", "show", "XX-Nop", "--config", str(cfg))
    assert res.exit_code == 1 and "Traceback" in res.output and "SiteError" in res.output
    res = _invoke("sites", "show", "XX-Nop")
    assert res.exit_code == 1 and "Traceback" not in res.output
    res = _invoke("sites", "show", "XX-Nop", "--debug")
    assert res.exit_code == 1 and "Traceback" in res.output


@pytest.mark.parametrize(("command", "example"), [
    ("list", "gpp sites list --status candidate"),
    ("show", "gpp sites show DE-Hai"),
    ("select", "gpp sites select --corine"),
])
def test_cli_help_has_example_config_debug(command, example):
    res = _invoke("sites", command, "--help")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert example in text and "--config" in text and "--debug" in text
