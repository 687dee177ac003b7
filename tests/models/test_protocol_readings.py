"""``--protocol paper`` end to end on the models side: the evaluation readings follow the run's
recorded protocol unless given, are recorded with their source, and reach the report."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gpp_cubes.cli.app import app
from gpp_cubes.errors import ConfigError
from gpp_models.config import ModelConfig, TrainConfig, protocol_reading
from gpp_models.evaluate import GROWING_MONTHS, evaluate_runs
from gpp_models.report import method_choices
from gpp_models.train import PAPER_WARNING, load_run, train_and_evaluate


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory, features: Path) -> Path:
    """A tiny RNN trained under the paper protocol (checkpoint chosen on the test years)."""
    workdir = tmp_path_factory.mktemp("paper") / "run"
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=4), epochs=2, window=30,
                      protocol="paper", ensemble=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PAPER_WARNING[:40])
        train_and_evaluate(cfg, workdir, features)
    return workdir


def test_protocol_reading_explicit_wins_and_mixed_protocols_need_an_option() -> None:
    assert protocol_reading("nrmse_norm", ["paper"]) == ("full-period", "protocol paper")
    assert protocol_reading("nrmse_norm", ["holdout", "holdout"]) == ("subset",
                                                                      "protocol holdout")
    assert protocol_reading("importance_scope", ["paper"]) == ("pooled", "protocol paper")
    assert protocol_reading("importance_scope", ["paper"], "site") == ("site", "option")
    with pytest.raises(ConfigError, match=r"holdout, paper.*--nrmse-norm"):
        protocol_reading("nrmse_norm", ["holdout", "paper"])
    assert protocol_reading("nrmse_norm", ["holdout", "paper"], "subset")[0] == "subset"


def _by_hand(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """NRMSE = RMSE / (max - min of the site's observed test-period GPP), numpy only."""
    out = {}
    for site in frame["site"].unique():
        f = frame[(frame["site"] == site) & frame["obs"].notna()]
        obs, pred = f["obs"].to_numpy(np.float64), f["pred"].to_numpy(np.float64)
        span = obs.max() - obs.min()
        months = pd.DatetimeIndex(f["time"]).month.to_numpy()
        masks = {"full": np.ones(len(f), bool), "extremes": f["extreme"].to_numpy(bool),
                 "growing_season": np.isin(months, GROWING_MONTHS)}
        for setting, m in masks.items():
            out[(site, setting)] = float(np.sqrt(np.mean((pred[m] - obs[m]) ** 2)) / span)
    return out


def test_paper_run_evaluates_with_the_full_period_range(paper_run: Path, tmp_path: Path) -> None:
    result = load_run(paper_run)
    assert result.config.protocol == "paper"
    long = evaluate_runs([result], tmp_path)  # no reading given: the protocol's
    assert set(long["norm"]) == {"full-period"}
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert runs["nrmse_norm"] == "full-period"
    assert runs["nrmse_norm_source"] == "protocol paper"
    want = _by_hand(result.predict("test"))
    rnn = long[long["model"] == "RNN"].set_index(["site", "setting"])["nrmse"]
    assert len(want) == len(rnn) == 9
    for key, value in want.items():
        assert rnn[key] == pytest.approx(value, rel=1e-9), key
    # the subset reading differs for the extremes (their own, narrower range)
    sub = evaluate_runs([result], tmp_path / "subset", nrmse_norm="subset")
    sub_ext = sub[(sub["model"] == "RNN") & (sub["setting"] == "extremes")]["nrmse"]
    assert (sub_ext.to_numpy() > rnn.xs("extremes", level="setting").to_numpy()).all()


def test_cli_readings_follow_the_protocol_unless_given(paper_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    for args in (["evaluate"], ["explain", "--repeats", "1"]):
        res = CliRunner().invoke(app, [args[0], str(paper_run), "--out", str(out), *args[1:]])
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())
        assert ("full-period range; protocol paper" in text if args[0] == "evaluate"
                else "RNN (pooled scope; protocol paper)" in text), text
    fi = pd.read_csv(out / "fi_RNN.csv")
    assert set(fi["scope"]) == {"pooled"} and set(fi["scope_source"]) == {"protocol paper"}
    choices = method_choices(out)["this run"]
    assert choices["protocol"].startswith("paper: readings NRMSE full-period, importance "
                                          "scope pooled")
    assert choices["NRMSE normalisation"].startswith("full-period: ")
    assert choices["NRMSE normalisation"].endswith("(from the runs' protocol paper)")
    assert choices["permutation importance scope"].endswith("(from the runs' protocol paper)")
    # explicit options win, and are recorded as options
    res = CliRunner().invoke(app, ["evaluate", str(paper_run), "--out", str(out),
                                   "--nrmse-norm", "subset"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["explain", str(paper_run), "--out", str(out), "--repeats",
                                   "1", "--importance-scope", "site"])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(out / "nrmse.csv")["norm"]) == {"subset"}
    assert json.loads((out / "runs.json").read_text())["nrmse_norm_source"] == "option"
    choices = method_choices(out)["this run"]
    assert choices["NRMSE normalisation"].endswith("(given as an option)")
    assert choices["permutation importance scope"].startswith("site: ")
    assert choices["permutation importance scope"].endswith("(given as an option)")


@pytest.mark.parametrize(("option", "build", "models"), [("paper", "paper", "paper"),
                                                         ("ours", "ours", "holdout")])
def test_demo_protocol_reaches_the_build_and_the_models(
        option: str, build: str, models: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``gpp demo --protocol``: the build and the models get it (stages replaced by fakes)."""
    import gpp_cubes.batch
    import gpp_cubes.demo
    import gpp_models.pipeline

    seen: dict[str, Any] = {}
    world = SimpleNamespace(root=tmp_path / "world", config=SimpleNamespace(digest=lambda: "d"),
                            sites=[SimpleNamespace(site_id="DE-Hai")],
                            corine_path=tmp_path / "c.tif", fluxnet_dir=tmp_path / "flx")

    @contextlib.contextmanager
    def serve(_world: Any) -> Any:
        yield SimpleNamespace(stac_url="http://127.0.0.1:1/stac", files_url="http://127.0.0.1:1")

    def build_sites(*_a: Any, **kw: Any) -> pd.DataFrame:
        seen["build"] = kw
        return pd.DataFrame({"site": ["DE-Hai"], "status": ["skipped"]})

    def run_pipeline(*_a: Any, **kw: Any) -> dict[str, Path]:
        seen["models"] = kw
        return {}

    monkeypatch.setattr(gpp_cubes.demo, "generate_world", lambda *_a, **_k: world)
    monkeypatch.setattr(gpp_cubes.demo, "serve_world", serve)
    monkeypatch.setattr(gpp_cubes.batch, "build_sites", build_sites)
    monkeypatch.setattr(gpp_models.pipeline, "run_pipeline", run_pipeline)
    res = CliRunner().invoke(app, ["demo", "--quick", "--protocol", option, "--out",
                                   str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    assert seen["build"]["protocol"] == build
    assert seen["models"]["protocol"] == models
    assert "importance_scope" not in seen["models"] and "nrmse_norm" not in seen["models"]
