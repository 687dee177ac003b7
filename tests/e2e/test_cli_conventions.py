"""CLI conventions: ``gpp --version``, ``--json`` output, exit code 2 for usage errors, a bad
``--config`` file as one line."""

from __future__ import annotations

import importlib.metadata
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gpp_cubes.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
ENV = {"COLUMNS": "200"}


def _invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**ENV, **(env or {})})


# --- --version ------------------------------------------------------------------------------

def test_version_is_the_installed_distributions():
    res = _invoke("--version")
    assert res.exit_code == 0, res.output
    installed = importlib.metadata.version("gpp-cubes")
    assert res.stdout == f"gpp-cubes {installed}\n"
    # pyproject.toml (the metadata) and gpp_cubes.__version__ must not drift apart
    import gpp_cubes

    assert installed == gpp_cubes.__version__


def test_version_through_the_console_script():
    out = subprocess.run([sys.executable, "-c", "from gpp_cubes.cli.app import main; main()",
                          "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"gpp-cubes {importlib.metadata.version('gpp-cubes')}"


# --- --json ---------------------------------------------------------------------------------

def _catalog_features() -> dict[str, dict]:
    """The packaged GeoJSON catalog read directly (not through gpp_cubes.sites.catalog)."""
    data = json.loads((ROOT / "catalog" / "sites.geojson").read_text(encoding="utf-8"))
    return {f["properties"]["site_id"]: f for f in data["features"]}


def test_sites_list_json_is_one_array_on_stdout():
    res = _invoke("sites", "list", "--json")
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)  # nothing but the JSON document on stdout
    features = _catalog_features()
    assert isinstance(records, list) and len(records) == len(features) == 38
    for rec in records:
        feat = features[rec["id"]]
        lon, lat = feat["geometry"]["coordinates"][:2]
        assert (rec["latitude"], rec["longitude"]) == pytest.approx((lat, lon), abs=1e-9)
        assert rec["status"] in ("candidate", "excluded")
    hai = next(r for r in records if r["id"] == "DE-Hai")
    assert hai["name"] == "Hainich" and hai["country"] == "DE" and hai["igbp"] == "DBF"
    # filters apply to the JSON as to the table
    excluded = json.loads(_invoke("sites", "list", "--status", "excluded", "--json").stdout)
    assert {r["id"] for r in excluded} == {r["id"] for r in records
                                           if r["status"] == "excluded"}
    assert len(excluded) == 8 and all(r["status_reason"] for r in excluded)


def test_sites_list_json_study_message_goes_to_stderr(tmp_path):
    table = tmp_path / "selection.csv"
    table.write_text("site_id,verdict\nDE-Hai,pass\nBE-Vie,fail\nFI-Hyy,pass\n")
    res = _invoke("sites", "list", "--study", "--json",
                  env={"GPP_CUBES_SELECTION": str(table)})
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)] == ["DE-Hai", "FI-Hyy"]
    assert "2 of 3" in res.stderr and str(table) in res.stderr


def test_build_json_prints_the_summary_records(monkeypatch, tmp_path):
    # The build itself is replaced (a real one takes minutes): this checks the CLI's output
    # contract: progress on stderr, one JSON array of the summary on stdout, NaN as null.
    import gpp_cubes.batch
    from gpp_cubes.batch.build import TABLE_COLUMNS

    table = pd.DataFrame([
        {"site": "DE-Hai", "status": "built", "s2_found": 40, "s2_kept": 31,
         "clear_fraction": 0.42, "gpp_valid_fraction": float("nan"), "error": None},
        {"site": "BE-Vie", "status": "failed", "error": "BE-Vie: no clear scene"},
    ], columns=list(TABLE_COLUMNS))
    calls = []

    def fake_build_sites(sites, out, *, progress, **kwargs):
        calls.append((list(sites), Path(out)))
        for site in sites:  # the progress display opens at the first event (stderr)
            progress(site, "s2", "start")
        return table

    monkeypatch.setattr(gpp_cubes.batch, "build_sites", fake_build_sites)
    res = _invoke("build", "--sites", "DE-Hai,BE-Vie", "--out", str(tmp_path), "--json")
    assert calls == [(["DE-Hai", "BE-Vie"], tmp_path)]
    assert res.exit_code == 1  # a site failed: the exit code says so, the JSON is complete
    records = json.loads(res.stdout)
    assert [r["site"] for r in records] == ["DE-Hai", "BE-Vie"]
    assert list(records[0]) == list(TABLE_COLUMNS)
    assert records[0]["s2_kept"] == 31 and records[0]["clear_fraction"] == 0.42
    assert records[0]["gpp_valid_fraction"] is None and records[1]["s2_found"] is None
    assert records[1]["error"] == "BE-Vie: no clear scene"
    assert "some sites failed" in res.stderr and "DE-Hai" in res.stderr  # progress, note
    # without --json: the rich table on stdout, no JSON
    res = _invoke("build", "--sites", "DE-Hai,BE-Vie", "--out", str(tmp_path))
    assert "feature cubes in" in res.stdout and not res.stdout.lstrip().startswith("[")


def test_print_json_writes_strict_json(capsys):
    from gpp_cubes.cli.common import print_json

    print_json({"a": [1.5, float("nan")], "b": (None, "x")})
    text = capsys.readouterr().out
    assert text == '{"a": [1.5, null], "b": [null, "x"]}\n'
    assert not math.isnan(json.loads(text)["a"][0])


# --- usage errors: exit code 2, one line ----------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (("build", "--demo", "--sites", "DE-Hai", "--out", "x"), "give exactly one of --sites "
     "and --demo"),
    (("build", "--out", "x"), "give exactly one of --sites and --demo"),
    (("build", "--sites", " , ", "--out", "x"), "--sites is empty"),
    (("sites", "list", "--status", "bogus"), "--status must be one of"),
])
def test_our_usage_errors_exit_2_in_one_line(args, message, tmp_path):
    res = _invoke(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error ")
    assert res.stdout == ""


@pytest.mark.parametrize("args", [
    ("sites", "list", "--bogus"),  # unknown option
    ("sites", "select", "--fluxnet", "x"),  # missing required option
    ("build", "--sites", "DE-Hai"),  # missing --out
    ("sites", "show"),  # missing argument
    ("nope",),  # unknown command
])
def test_click_usage_errors_exit_2(args):
    res = _invoke(*args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("content", "problem"), [
    ("[list]\nstatus = \"candidate\nstudy = true\n", "is not valid TOML: "),
    ("[list]\nbogus = 1\n", "unknown key(s) bogus"),
    ("list = 3\n", "'list' must be a table"),
    (b"\xff\xfe[list]\n", "cannot be read"),
    (None, "config file not found"),
])
def test_bad_config_file_is_one_line_exit_2(tmp_path, content, problem):
    path = tmp_path / "gpp.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    res = _invoke("sites", "list", "--config", str(path))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(path) in lines[0] and problem in lines[0] and "[config]" in lines[0]
    assert "Traceback" not in res.output and res.stdout == ""


def test_invalid_toml_names_line_and_column(tmp_path):
    path = tmp_path / "gpp.toml"
    path.write_text("[list]\nstudy = true\nstatus = = 1\n")
    res = _invoke("sites", "list", "--config", str(path))
    assert res.exit_code == 2 and "(at line 3, column 10)" in res.stderr


def test_good_config_file_still_supplies_defaults(tmp_path):
    path = tmp_path / "gpp.toml"
    path.write_text('[list]\nstatus = "excluded"\njson = false\n')
    res = _invoke("sites", "list", "--config", str(path))
    assert res.exit_code == 0 and "8 site(s)" in res.stdout
    path.write_text('[list]\nstatus = "excluded"\njson = true\n')
    res = _invoke("sites", "list", "--config", str(path))
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 8
