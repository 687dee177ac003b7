"""Execute the notebooks on the demo world, offline, and check what they computed.

Each jupytext percent script in ``notebooks/`` is converted to a notebook in ``tmp_path``
and run top to bottom in a fresh ipykernel (nbclient, as nbmake does), so the notebooks
never rot. Offline: a first cell injected by the test restricts Python sockets to loopback
(pytest-socket, as in the rest of the suite) and the kernel's environment points HTTP(S)
proxies at a closed loopback port, so GDAL/curl cannot reach the internet either; only the
demo world's servers on 127.0.0.1 answer.

After the last cell the test appends one cell that prints, as JSON, what the notebook
computed, and checks it against the demo world's known truth (independent of the code
under test: the truth tables are what the generator planted).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from demo_fixtures import demo_cache_dir

from gpp_cubes.demo import World, serve_world
from gpp_cubes.demo.world import MARKER

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

OFFLINE_CELL = """\
# injected by tests/e2e/test_notebooks.py: no network except loopback
import pytest_socket
pytest_socket.socket_allow_hosts(["127.0.0.1", "localhost", "::1"], allow_unix_socket=True)
"""


@pytest.fixture(scope="session")
def demo_servers_keep_answering(demo_world: World) -> None:
    """Fail fast, naming the cause, instead of hanging until the notebook timeout.

    The demo file server once ran with ``stderr=PIPE`` that nobody read: it wrote one
    access-log line per request and blocked for good once the pipe buffer (64 KiB, ~850
    requests) was full, which one year of Sentinel-2 reads exceeds. Probe a private server
    (not the session's ``served_demo``) with 2000 small requests.
    """
    with serve_world(demo_world) as served:
        url = f"{served.files_url}/{MARKER}"
        for i in range(2000):
            req = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
            except OSError as err:
                pytest.fail(f"demo file server stopped answering after {i} requests ({err}); "
                            "is its log written to an undrained pipe again?")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache directory shared by both notebooks (one world, generated once)."""
    path = demo_cache_dir(tmp_path_factory) / "notebook-demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_notebook(name: str, tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch,
                 report_code: str) -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``notebooks/<name>.py``; return the executed notebook and the report JSON."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb.cells.insert(0, nbformat.v4.new_code_cell(OFFLINE_CELL))
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\nprint('GPP-TEST-REPORT', _json.dumps(" + report_code
        + ", default=str))"))
    # The kernel inherits this environment. matplotlib_inline is the headless (Agg-based)
    # backend that also puts figures into the outputs; plain "Agg" would drop them.
    monkeypatch.setenv("GPP_DEMO_DIR", str(demo_dir))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: nothing listens
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost,::1")
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / f"{name}.ipynb")  # kept for inspection on failure
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs
                   if o.get("output_type") == "stream")
    line = next(ln for ln in text.splitlines() if ln.startswith("GPP-TEST-REPORT "))
    return nb, json.loads(line.removeprefix("GPP-TEST-REPORT "))


def figures(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_notebooks_are_percent_scripts_paired_with_ipynb() -> None:
    for name in ("site_extraction", "train_model"):
        text = (NOTEBOOKS / f"{name}.py").read_text()
        nb = jupytext.reads(text, fmt="py:percent")
        assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
        kinds = [c.cell_type for c in nb.cells]
        # readable: explanations interleaved with code, starting with a title
        assert kinds[0] == "markdown" and nb.cells[0].source.startswith("# ")
        assert kinds.count("markdown") >= 5 and kinds.count("code") >= 5
        # the paired .ipynb holds exactly these cells: a round trip loses nothing
        again = jupytext.reads(jupytext.writes(nb, fmt="ipynb"), fmt="ipynb")
        assert [(c.cell_type, c.source) for c in again.cells] == \
            [(c.cell_type, c.source) for c in nb.cells]
        # and the script is in jupytext's own canonical form (no diff when Jupyter saves it)
        assert jupytext.writes(nb, fmt="py:percent").split("# ---", 2)[2] == \
            text.split("# ---", 2)[2]


def test_one_line_switches_the_source() -> None:
    """The site notebook's data source is one assignment near the top."""
    lines = (NOTEBOOKS / "site_extraction.py").read_text().splitlines()
    hits = [i for i, ln in enumerate(lines) if ln.startswith("STAC = ")]
    assert len(hits) == 1 and lines[hits[0]].startswith('STAC = "demo"')
    assert "planetary-computer" in lines[hits[0]]
    assert hits[0] < 50


@pytest.mark.slow
@pytest.mark.usefixtures("demo_servers_keep_answering")
def test_site_extraction_notebook(tmp_path: Path, demo_dir: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    report = ("{'cube': {str(k.date()): float(v) for k, v in clear_fraction.items()}, "
              "'n_usable': int(feats.sizes['time']), 'site': SITE, "
              "'extreme_days': [str(d.date()) for d in is_extreme.index[is_extreme.values]], "
              "'pids': list(served.pids), 'world': str(world.root)}")
    nb, got = run_notebook("site_extraction", tmp_path, demo_dir, monkeypatch, report)
    assert figures(nb) == 4  # timeline, masks, clear fraction, daily series

    root = Path(got["world"])
    truth = pd.read_csv(root / "truth" / "s2_scenes.csv")
    truth = truth[(truth["site"] == got["site"]) & truth["date"].between("2018-01-01",
                                                                         "2018-12-31")]
    planted = truth.groupby("date")["clear_forest_fraction_1km"].mean()
    cube = pd.Series(got["cube"])
    # every scene date of the year is in the cube, with the planted clear forest fraction
    assert sorted(cube.index) == sorted(planted.index)
    assert (cube - planted).abs().max() < 0.03
    # the 1 % rule, applied to the truth, predicts how many dates s2_features keeps
    assert got["n_usable"] == int((planted >= 0.01).sum())
    # the planted 2018 drought is found as a GPP extreme, and nothing outside it
    ev = pd.read_csv(root / "truth" / "extremes.csv")
    ev = ev[(ev["site"] == got["site"]) & (ev["start"] < "2019")].iloc[0]
    days = pd.to_datetime(got["extreme_days"])
    assert len(days) >= 5
    assert days.min() >= pd.Timestamp(ev["start"]) and days.max() <= pd.Timestamp(ev["end"])
    # the notebook's last cell stopped the demo servers
    assert not any(_running(p) for p in got["pids"])


@pytest.mark.slow
@pytest.mark.usefixtures("demo_servers_keep_answering")
def test_train_model_notebook(tmp_path: Path, demo_dir: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    report = ("{'status': table['status'].tolist(), 'scores': scores.to_dict(), "
              "'n_pred': len(pred), 'pred_nan': int(pred['pred'].isna().sum()), "
              "'test_years': list(config.test_years), 'sites': list(cube.sites), "
              "'n_obs_test': int(sum(np.isfinite(cube.y[:, cube.years == 2020]).ravel()))}")
    nb, got = run_notebook("train_model", tmp_path, demo_dir, monkeypatch, report)
    assert figures(nb) == 3  # inputs, learning curve, predictions
    assert set(got["status"]) <= {"built", "skipped"}
    assert got["sites"] == ["DE-Hai"] and got["test_years"] == [2020]
    # one prediction per observed GPP day of the test year, none missing
    assert got["n_pred"] == got["n_obs_test"] > 200 and got["pred_nan"] == 0
    lstm, seasonal = got["scores"]["LSTM"]["DE-Hai"], got["scores"]["seasonal cycle"]["DE-Hai"]
    # the planted 2020 drought is invisible to a climatology but not to the LSTM's inputs
    assert 0 < lstm < seasonal


@pytest.mark.network
@pytest.mark.skipif(not os.environ.get("GPP_NETWORK_TESTS"),
                    reason="reads Planetary Computer; set GPP_NETWORK_TESTS=1 to run")
def test_site_extraction_on_planetary_computer(tmp_path: Path) -> None:  # pragma: no cover
    """The one-line switch: the same notebook against the real archive (one summer month)."""
    nb = jupytext.read(NOTEBOOKS / "site_extraction.py")
    for cell in nb.cells:
        if cell.source.startswith("STAC = "):
            cell.source = cell.source.replace('STAC = "demo"', 'STAC = "planetary-computer"')
            cell.source = cell.source.replace('"2018-01-01", "2018-12-31"',
                                              '"2018-07-01", "2018-07-31"')
    nb.cells.append(nbformat.v4.new_code_cell(
        "print('GPP-TEST-REPORT', cube.attrs['stac_endpoint'], cube.sizes['time'])"))
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    _, endpoint, n_time = text.split()[:3]
    assert "planetarycomputer" in endpoint and int(n_time) > 0
    assert figures(nb) == 4
