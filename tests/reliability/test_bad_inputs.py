"""Bad inputs get a clear error naming the site, file or field (the cases not already covered
by tests/cubes/targets/test_fluxnet.py, cubes/sites/, cubes/stac/test_search_load.py and
models/test_data.py: those cover malformed FLUXNET files, malformed and unknown site ids,
sites outside CORINE, empty searches, items without assets, wrong-version and incomplete
stores and NaN-only features)."""

from __future__ import annotations

import pandas as pd
import pytest

from gpp_cubes.errors import ConfigError, InputFormatError, SiteError


def _cli():
    import typer

    from gpp_cubes.cli import sites_cmd

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    sites_cmd.register(app)
    return app


def test_config_file_with_unknown_key_is_a_one_line_usage_error(tmp_path):
    from typer.testing import CliRunner

    cfg = tmp_path / "gpp.toml"
    cfg.write_text('[show]\ndebug = false\nmax_clouds = 20\n')
    res = CliRunner().invoke(_cli(), ["sites", "show", "DE-Hai", "--config", str(cfg)],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 2
    text = res.output
    assert "unknown key(s) max_clouds" in text and str(cfg) in " ".join(text.split())
    assert "Traceback" not in text


def test_config_file_not_toml_is_named(tmp_path):
    from gpp_cubes.cli.common import read_config

    cfg = tmp_path / "gpp.toml"
    cfg.write_text("max_cloud = = 3\n")
    with pytest.raises(ConfigError, match=r"gpp\.toml is not valid TOML"):
        read_config(cfg, "build")


@pytest.mark.parametrize("bad", ["../x", "..", "DE-Hai/../../etc", "/tmp/DE-Hai"])
def test_path_like_site_ids_never_become_output_paths(bad, tmp_path):
    from gpp_cubes.sites.catalog import point_site

    with pytest.raises(SiteError, match="invalid site id"):
        point_site(50.0, 10.0, site_id=bad)
    assert list(tmp_path.iterdir()) == []


def test_site_outside_europe_is_flagged_by_the_selection_rules():
    from gpp_cubes.sites.catalog import get_site, in_europe, point_site

    guy = get_site("GF-Guy")  # French Guiana: a catalog station outside Europe
    assert not in_europe(guy.latitude, guy.longitude)
    p = point_site(-3.0, -60.0, site_id="XX-Ama")
    assert "outside the Europe box" in p.status_reason


def test_coordinates_out_of_range_named():
    from gpp_cubes.sites.catalog import point_site

    with pytest.raises(SiteError, match=r"XX-Bad: coordinates out of range: lat=95"):
        point_site(95.0, 10.0, site_id="XX-Bad")


def _flux() -> pd.DataFrame:
    days = pd.date_range("2016-01-01", "2016-12-31", freq="D")
    df = pd.DataFrame({"GPP_NT_VUT_REF": 5.0, "NEE_VUT_REF_QC": 1.0}, index=days)
    df.attrs["source"] = "FLX_DE-Hai_FLUXNET2015_FULLSET_DD_2016-2016_beta-3.csv"
    return df


def test_date_range_outside_the_fluxnet_data_is_an_error():
    from gpp_cubes.targets.fluxnet import gpp_targets

    with pytest.raises(InputFormatError, match=r"DE-Hai.*2016-01-01.*2016-12-31.*2030"):
        gpp_targets(_flux(), start="2030-01-01", end="2030-12-31")


def test_search_date_range_outside_the_data_names_site_and_dates(served_demo):
    from gpp_cubes.errors import EmptySearchError
    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.stac.search import search_items

    s = served_demo.world.site("FI-Var")
    with pytest.raises(EmptySearchError, match=r"'FI-Var' between 2030-01-01 and 2030-02-01"):
        search_items("sentinel-2-l2a", site_grid(s.latitude, s.longitude), "2030-01-01",
                     "2030-02-01", provider="custom", stac_url=served_demo.stac_url,
                     site_id="FI-Var")


def test_reversed_date_range_is_an_error():
    from gpp_cubes.cube.features import daily_calendar
    from gpp_cubes.errors import BuildError

    with pytest.raises(BuildError, match=r"start 2020-12-31 is after end 2016-01-01"):
        daily_calendar("2020-12-31", "2016-01-01")
