"""End to end on the synthetic world whose truth is known; the CLI chain; the demo pipeline."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpp_cubes.cli.app import app
from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.evaluate import baseline_predictions, nrmse_by_site
from gpp_models.explain import explain_run, median_importance, summarize_importance
from gpp_models.pipeline import Budget, run_pipeline
from gpp_models.testing import TRUE_DRIVER
from gpp_models.train import train_and_evaluate
from gpp_models.tune import SearchSpace


@pytest.mark.slow
def test_lstm_learns_the_planted_truth(features: Path) -> None:
    cfg = TrainConfig(model=ModelConfig(cell="lstm", layers=1, units=32), epochs=15,
                      batch_size=128, learning_rate=5e-3)
    result = train_and_evaluate(cfg, None, features)
    lstm = nrmse_by_site(result.predict("test"), "LSTM")
    base = baseline_predictions(result.prepared, cfg.train_years)
    seasonal = nrmse_by_site(base, "seasonal_cycle", "seasonal_cycle")
    full = lambda t: t[t["setting"] == "full"].set_index("site")["nrmse"]  # noqa: E731
    # Every site: the network beats the climatology on the test years.
    assert (full(lstm) < full(seasonal)).all(), (full(lstm), full(seasonal))
    fi = explain_run(result, n_repeats=3, seed=1)
    ranking = median_importance(summarize_importance(fi))
    assert ranking.index[0] == TRUE_DRIVER, ranking
    # Pure-noise predictors matter much less than the planted driver.
    assert ranking[TRUE_DRIVER] > 5 * abs(ranking["S1_VV"])


def _invoke(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
        "google-chrome")


def test_cli_chain_train_evaluate_explain_figures_report(tmp_path: Path, features: Path) -> None:
    run = tmp_path / "rnn"
    out = tmp_path / "results"
    _invoke("train", str(features), "--cell", "rnn", "--layers", "1", "--units", "4",
            "--epochs", "2", "--window", "30", "--ensemble", "2", "--workdir", str(run))
    assert (run / "metrics.csv").exists() and len(pd.read_csv(run / "metrics.csv")) == 2
    text = _invoke("evaluate", str(run), "--out", str(out))
    assert "median NRMSE" in text
    long = pd.read_csv(out / "nrmse.csv")
    assert set(long["model"]) == {"RNN", "seasonal_cycle", "linear"}
    assert set(long["setting"]) == {"full", "growing_season", "extremes"}
    _invoke("explain", str(run), "--out", str(out), "--repeats", "1")
    fi = pd.read_csv(out / "fi_RNN.csv")
    assert len(fi) == 11 * 3  # features x sites x 1 repeat
    _invoke("figures", str(out))
    for name in ("fig1_nrmse", "fig2_importance", "fig3_predictions"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    _invoke("report", str(out))
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    # figures 1-3 and the gap-filled series (the run directory is still there)
    assert len(images) == 4 and b"<svg" in base64.b64decode(images[0])
    assert "clear_sky_ghi" in page and "seasonal_cycle" in page and "http" not in page.split(
        "<body>")[0]
    preds = pd.read_csv(out / "predictions_RNN.csv")
    assert (preds["pred_max"] >= preds["pred_min"]).all() and (preds["pred_std"] > 0).any()
    if _chromium():  # render the page in a real headless browser when one is installed
        shot = tmp_path / "shot.png"
        subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        f"--screenshot={shot}", "--window-size=1200,2000",
                        (out / "report.html").as_uri()], check=True, timeout=120,
                       capture_output=True)
        assert shot.stat().st_size > 20_000


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--out", str(tmp_path / "o")])
    text = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 1
    assert "error [evaluate]" in text and "not a finished training run" in text
    res = CliRunner().invoke(app, ["train", str(tmp_path / "nope.zarr"), "--workdir",
                                   str(tmp_path / "w"), "--epochs", "1"])
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "nope.zarr: feature cube not found" in text


def test_run_pipeline_writes_every_output(tmp_path: Path, features: Path) -> None:
    tiny = Budget(trials=2, tune_epochs=1, epochs=2, ensemble=2, fi_repeats=1,
                  space=SearchSpace(layers=(1, 1), units=(8,), learning_rate=(1e-3, 1e-2)))
    stages: list[str] = []
    with pytest.warns(UserWarning, match="protocol 'paper'"):  # selection on the test years
        paths = run_pipeline(features, tmp_path, budget=tiny, cells=("gru",), protocol="paper",
                             on_stage=stages.append)
    assert [s.split()[0] for s in stages] == ["tune", "train", "evaluate", "explain",
                                              "figures"]
    for key in ("report", "nrmse", "fig1_png", "fig2_svg", "fig3_png", "fig_gap_filled_svg",
                "run_gru"):
        assert paths[key].exists(), key
    study_db = tmp_path / "gru" / "tune" / "optuna.db"
    assert study_db.exists()
    best = np.asarray(pd.read_csv(paths["run_gru"] / "metrics.csv")["select_mae"])
    assert best.shape == (2,) and np.isfinite(best).all()
    # The paper protocol's readings (none given) reach the outputs and the report.
    assert set(pd.read_csv(paths["nrmse"])["norm"]) == {"full-period"}
    fi = pd.read_csv(paths["results"] / "fi_GRU.csv")
    assert set(fi["scope"]) == {"pooled"} and set(fi["scope_source"]) == {"protocol paper"}
    page = paths["report"].read_text()
    choices = page.split("<h2>Method choices</h2>")[1].split("<h2>")[0]
    assert "Hyperband, 2 trials; 1-1 layers, units 8" in choices
    assert "paper: readings NRMSE full-period, importance scope pooled" in choices
    assert choices.count("(from the runs' protocol paper)") == 2
    assert "<h2>Gap-filled tower series</h2>" in page
