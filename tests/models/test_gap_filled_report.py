"""The report's gap-filled tower series: the figure on a hand-made Prediction, the section on a
real run (through gpp_models.predict.predict_gpp)."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import Cube, open_cube
from gpp_models.evaluate import evaluate_runs
from gpp_models.figures import draw_gap_filled, fig_gap_filled, gap_filled_sites
from gpp_models.predict import (
    NO_FULL_WINDOW,
    PARTLY_FILLED,
    PREDICTED,
    PREDICTOR_MISSING,
    Prediction,
)
from gpp_models.report import write_report
from gpp_models.train import train_and_evaluate


def _small_prediction() -> Prediction:
    """Two sites, 60 days, window 10; A has observation gaps, B lacks a predictor on 41-50."""
    time = pd.date_range("2019-12-01", periods=60, freq="D")
    n, w = len(time), 10
    t = np.arange(n)
    obs = np.where((t % 7 == 3) | ((t >= 20) & (t < 30)), np.nan, 5 + np.sin(t / 9))
    obs = np.stack([obs, 4 + np.cos(t / 9)]).astype(np.float32)
    status = np.full((2, n), PREDICTED, np.int8)
    status[:, : w - 1] = NO_FULL_WINDOW
    status[0, 9:12] = PARTLY_FILLED
    status[1, 41:51] = PREDICTOR_MISSING
    missing = np.zeros((2, n, 2), bool)
    missing[1, 41:51, 1] = True
    done = status <= PARTLY_FILLED
    mean = np.where(done, obs + 0.3, np.nan).astype(np.float32)
    mean[0] = np.where(done[0], 5.2 + np.sin(t / 9), np.nan)  # also on the unobserved days
    spread = np.where(done, 0.4, np.nan).astype(np.float32)
    cube = Cube(X=np.zeros((2, n, 2), np.float32), y=obs, extreme=np.zeros((2, n), bool),
                time=time, sites=("A", "B"), predictors=("p1", "S1_VV"), attrs={},
                source="mem")
    return Prediction(mean=mean, spread=spread, obs=obs, status=status, missing=missing,
                      cube=cube, predictors=("p1", "S1_VV"), members=2, window=w, run="",
                      model="GRU")


def _line(ax: Any, gid: str) -> np.ndarray:
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return np.asarray(line.get_ydata(), np.float64)


def test_line_covers_the_unobserved_days(tmp_path: Path) -> None:
    pred = _small_prediction()
    fig = draw_gap_filled(pred, test_years=(2020,))
    ax_a, ax_b = fig.axes[:2]
    y = _line(ax_a, "prediction")
    unobserved = np.isnan(pred.obs[0]) & (pred.status[0] <= PARTLY_FILLED)
    assert unobserved.sum() == 10 + 7  # days 20-29; 10, 17, 31, 38, 45, 52, 59 (t % 7 == 3)
    np.testing.assert_allclose(y[unobserved], pred.mean[0][unobserved], rtol=1e-6)
    assert np.isfinite(y[9:]).all() and np.isnan(y[:9]).all()
    gap = _line(ax_a, "gap-filled")
    np.testing.assert_array_equal(np.isfinite(gap), unobserved)
    np.testing.assert_array_equal(np.isfinite(_line(ax_a, "observed")),
                                  np.isfinite(pred.obs[0]))
    # site B: the line stops where a predictor is missing, the days are marked with the reason
    yb = _line(ax_b, "prediction")
    assert np.isnan(yb[41:51]).all() and np.isfinite(yb[51:]).all()
    labels = [t.get_text() for t in ax_b.get_legend().get_texts()]
    assert "not predicted: no S1_VV value in the 10-day window (10 days)" in labels
    assert "±1 s.d. of 2 members" in labels and "test years" in labels
    assert ax_a.get_title(loc="left") == "A: 51 days predicted, 17 of them gap-filled"
    files = fig_gap_filled(pred, tmp_path, test_years=(2020,))
    assert files["png"].stat().st_size > 10_000 and b"<svg" in files["svg"].read_bytes()[:500]


def test_site_choice() -> None:
    assert gap_filled_sites(["a", "b"]) == ["a", "b"]
    many = [f"s{i}" for i in range(8)]
    assert gap_filled_sites(many) == many[:3]
    assert gap_filled_sites([*many, "FI-Var", "DE-Hai"]) == ["DE-Hai", "FI-Var"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, features: Path) -> tuple[Path, Path]:
    """A tiny 2-member GRU evaluated on the synthetic world: (results dir, run dir)."""
    tmp = tmp_path_factory.mktemp("gapfill")
    cfg = TrainConfig(model=ModelConfig(cell="gru", layers=1, units=4), epochs=2, window=30,
                      ensemble=2)
    result = train_and_evaluate(cfg, tmp / "run", features)
    evaluate_runs([result], tmp / "results")
    return tmp / "results", tmp / "run"


def test_report_has_the_gap_filled_series(results: tuple[Path, Path], features: Path) -> None:
    res, run = results
    page = write_report(res).read_text()
    section = page.split("<h2>Gap-filled tower series</h2>")[1].split("<h2>")[0]
    assert "gpp_models.predict.predict_gpp" in section and str(run) in section
    img = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', section)
    assert img and b"Gap-filled tower series" in base64.b64decode(img.group(1))
    assert (res / "figures" / "fig_gap_filled.svg").exists()
    # the table's gap-filled days, counted from the cube: no observation, a full window
    head = re.findall(r"<th>([^<]*)</th>", section)
    assert head[:4] == ["site", "observed days", "predicted days", "gap-filled days"]
    rows = {r[0]: r[1:] for r in re.findall(
        r"<tr>\s*<td>([^<]*)</td>\s*<td>(\d+)</td>\s*<td>(\d+)</td>\s*<td>(\d+)</td>",
        section)}
    cube = open_cube(features)
    assert list(rows) == list(cube.sites)
    for i, site in enumerate(cube.sites):
        observed, predicted, filled = (int(v) for v in rows[site])
        assert observed == np.isfinite(cube.y[i]).sum()
        assert predicted == len(cube.time) - 29  # every day with a full 30-day window
        assert filled == (~np.isfinite(cube.y[i, 29:])).sum() > 0


def test_report_says_why_without_the_run(results: tuple[Path, Path], tmp_path: Path) -> None:
    res, run = results
    moved = tmp_path / "run_moved"
    shutil.move(run, moved)
    try:
        page = write_report(res, tmp_path / "report.html").read_text()
    finally:
        shutil.move(moved, run)
    section = page.split("<h2>Gap-filled tower series</h2>")[1].split("<h2>")[0]
    assert "Not drawn:" in section and "not a finished training run" in section
    assert str(run) in section and "<img" not in section
