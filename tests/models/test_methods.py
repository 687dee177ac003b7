"""The models side's switchable method choices: permutation scope, NRMSE normalisation, the
report's method-choices table and the command-line switches, against hand-worked numbers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from gpp_cubes import paper
from gpp_cubes.cli import models_cmd
from gpp_cubes.errors import ConfigError
from gpp_models.config import ModelConfig, SearchSpace, TrainConfig
from gpp_models.evaluate import nrmse, nrmse_by_site, tuned_search_space
from gpp_models.explain import draw_permutations, permutation_importance, summarize_importance
from gpp_models.report import method_choices, write_report
from gpp_models.tune import suggest_config

# --- permutation importance: per-site and pooled scope --------------------------------------

# Two sites, two test samples each. Feature 0 is a pure site offset (10 at A, 20 at B); feature
# 1 varies within a site (0 then 2, at both sites). GPP = x0 + x1 and the "model" is exact.
X = np.array([[10.0, 0.0], [10.0, 2.0], [20.0, 0.0], [20.0, 2.0]])
OBS = X.sum(axis=1)  # A: 10, 12 (range 2); B: 20, 22 (range 2)
SITES = np.array(["A", "A", "B", "B"])


def _exact_model(f: int | None, perm: np.ndarray | None) -> np.ndarray:
    xp = X.copy()
    if f is not None:
        xp[:, f] = X[perm, f]
    return xp.sum(axis=1)


def test_site_offset_feature_matters_pooled_but_not_per_site() -> None:
    swap_sites = [2, 3, 0, 1]  # every sample takes the other site's sequence
    swap_within = [1, 0, 3, 2]  # every sample takes its site-mate's sequence
    pooled = permutation_importance(_exact_model, OBS, SITES, ["x0", "x1"], scope="pooled",
                                    permutations=np.array([[swap_sites, swap_sites]]))
    per_site = permutation_importance(_exact_model, OBS, SITES, ["x0", "x1"], scope="site",
                                      permutations=np.array([[swap_within, swap_within]]))
    fi_pooled = pooled.set_index(["site", "feature"])["fi"]
    fi_site = per_site.set_index(["site", "feature"])["fi"]
    # Pooled: A gets x0 = 20, predicts 20, 22 for 10, 12: RMSE 10 over the range 2 -> FI 5.
    assert fi_pooled[("A", "x0")] == pytest.approx(5.0)
    assert fi_pooled[("B", "x0")] == pytest.approx(5.0)
    # Both sites have the same x1 sequence, so swapping them changes nothing.
    assert fi_pooled[("A", "x1")] == 0.0
    # Per site: the offset is constant within a site, so shuffling it changes nothing, while
    # swapping x1 within A predicts 12, 10 for 10, 12: RMSE 2 over the range 2 -> FI 1.
    assert fi_site[("A", "x0")] == 0.0 and fi_site[("B", "x0")] == 0.0
    assert fi_site[("A", "x1")] == pytest.approx(1.0)
    assert fi_site[("B", "x1")] == pytest.approx(1.0)
    assert set(pooled["scope"]) == {"pooled"} and set(per_site["scope"]) == {"site"}


def test_drawn_per_site_shuffles_never_make_the_offset_important() -> None:
    fi = permutation_importance(_exact_model, OBS, SITES, ["x0", "x1"], n_repeats=6, seed=3)
    assert set(fi["scope"]) == {"site"}  # the default
    assert (fi.loc[fi["feature"] == "x0", "fi"] == 0.0).all()
    # Within a two-sample site a shuffle is the identity (FI 0) or the swap (FI 1).
    assert set(fi.loc[fi["feature"] == "x1", "fi"].round(12)) <= {0.0, 1.0}
    summary = summarize_importance(fi).set_index(["site", "feature"])
    assert summary.loc[("A", "x0"), "fi_mean"] == 0.0


def test_draw_permutations_per_site_and_pooled() -> None:
    sites = np.array(["A", "B", "A", "C", "B", "A"])
    perms = draw_permutations(sites, n_features=2, n_repeats=3, scope="site", seed=0)
    assert perms.shape == (3, 2, 6)
    for perm in perms.reshape(-1, 6):
        assert sorted(perm) == list(range(6))  # a permutation
        assert (sites[perm] == sites).all()  # that keeps every sample in its site
    assert any((p != np.arange(6)).any() for p in perms.reshape(-1, 6))
    # Pooled: the generator of earlier versions, one rng.permutation(n) per repeat and feature.
    rng = np.random.default_rng(7)
    want = np.stack([[rng.permutation(6) for _ in range(2)] for _ in range(3)])
    np.testing.assert_array_equal(draw_permutations(sites, 2, 3, scope="pooled", seed=7), want)


def test_scope_is_checked() -> None:
    with pytest.raises(ValueError, match=r"feature 'x0'.*sample 0 of site A.*from site B"):
        permutation_importance(_exact_model, OBS, SITES, ["x0", "x1"], scope="site",
                               permutations=np.array([[[2, 3, 0, 1], [0, 1, 2, 3]]]))
    with pytest.raises(ConfigError, match="scope must be one of"):
        permutation_importance(_exact_model, OBS, SITES, ["x0", "x1"], scope="global")  # type: ignore[arg-type]


# --- NRMSE: each subset's own range or the site's full test-period range ---------------------


def test_nrmse_with_a_given_range() -> None:
    # errors 0, 1, 0, -2 -> RMSE sqrt(5/4); divided by a given range of 8
    assert nrmse([1, 2, 3, 5], [1, 3, 3, 3], span=8.0) == pytest.approx(np.sqrt(1.25) / 8)
    assert nrmse([3.0], [4.0], span=2.0) == pytest.approx(0.5)  # one day suffices
    assert np.isnan(nrmse([3.0], [4.0]))  # ... but has no range of its own
    assert np.isnan(nrmse([1.0, 2.0], [1.0, 2.0], span=0.0))
    assert np.isnan(nrmse([1.0, 2.0], [1.0, 2.0], span=float("nan")))
    assert np.isnan(nrmse([np.nan], [1.0], span=2.0))


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "site": ["A"] * 6 + ["B"] * 3,
        "time": pd.to_datetime(["2019-01-10", "2019-05-01", "2019-07-01", "2019-09-30",
                                "2019-10-01", "2019-06-15",
                                "2019-03-01", "2019-07-01", "2019-08-01"]),
        "obs": [0.0, 2.0, 6.0, 4.0, 1.0, 5.0, 1.0, 9.0, np.nan],
        "pred": [1.0, 2.0, 5.0, 4.0, 1.0, 7.0, 2.0, 8.0, 3.0],
        "extreme": [False, False, True, False, False, True, False, True, False],
    })


def test_nrmse_subset_and_full_period_hand_worked() -> None:
    sub = nrmse_by_site(_frame(), "m", norm="subset").set_index(["site", "setting"])
    full = nrmse_by_site(_frame(), "m", norm="full-period").set_index(["site", "setting"])
    assert set(sub["norm"]) == {"subset"} and set(full["norm"]) == {"full-period"}
    # A: all days, obs 0..6 (range 6), errors 1, 0, -1, 0, 0, 2 -> RMSE 1: both readings agree.
    assert sub.loc[("A", "full"), "nrmse"] == pytest.approx(1 / 6)
    assert full.loc[("A", "full"), "nrmse"] == pytest.approx(1 / 6)
    # A, May-Sep: obs 2, 6, 4, 5 (own range 4), errors 0, -1, 0, 2 -> RMSE sqrt(5/4).
    assert sub.loc[("A", "growing_season"), "nrmse"] == pytest.approx(np.sqrt(5 / 4) / 4)
    assert full.loc[("A", "growing_season"), "nrmse"] == pytest.approx(np.sqrt(5 / 4) / 6)
    # A, extremes: obs 6, 5 (own range 1), errors -1, 2 -> RMSE sqrt(5/2).
    assert sub.loc[("A", "extremes"), "nrmse"] == pytest.approx(np.sqrt(5 / 2) / 1)
    assert full.loc[("A", "extremes"), "nrmse"] == pytest.approx(np.sqrt(5 / 2) / 6)
    # B: observed 1 and 9 (range 8; the NaN day is no observation), errors 1, -1.
    assert sub.loc[("B", "full"), "nrmse"] == pytest.approx(1 / 8)
    assert full.loc[("B", "full"), "nrmse"] == pytest.approx(1 / 8)
    # B's growing season and extremes hold one observed day (9, error -1): no range of its
    # own, but one on the full-period scale.
    assert np.isnan(sub.loc[("B", "extremes"), "nrmse"])
    assert np.isnan(sub.loc[("B", "growing_season"), "nrmse"])
    assert full.loc[("B", "extremes"), "nrmse"] == pytest.approx(1 / 8)
    assert full.loc[("B", "growing_season"), "nrmse"] == pytest.approx(1 / 8)
    with pytest.raises(ConfigError, match="NRMSE normalisation must be one of"):
        nrmse_by_site(_frame(), "m", norm="range")  # type: ignore[arg-type]


# --- the search space read back from the tuning study ----------------------------------------


def test_tuned_search_space_from_the_study(tmp_path: Path) -> None:
    space = SearchSpace(layers=(1, 3), units=(16, 64), learning_rate=(1e-4, 1e-2))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp_path / "lstm" / "tune").mkdir(parents=True)
    study = optuna.create_study(study_name="gpp-lstm",
                                storage=f"sqlite:///{tmp_path / 'lstm' / 'tune' / 'optuna.db'}")
    study.optimize(lambda t: suggest_config(t, TrainConfig(), space, 1).learning_rate,
                   n_trials=3)
    run = SimpleNamespace(workdir=tmp_path / "lstm" / "run",
                          config=TrainConfig(model=ModelConfig(cell="lstm")))
    got = tuned_search_space(run)  # type: ignore[arg-type]
    assert got is not None
    assert got["layers"] == [1, 3] and got["units"] == [16, 64] and got["trials"] == 3
    assert got["learning_rate"] == pytest.approx([1e-4, 1e-2])
    gru = SimpleNamespace(workdir=run.workdir, config=TrainConfig(model=ModelConfig(cell="gru")))
    assert tuned_search_space(gru) is None  # type: ignore[arg-type]
    assert tuned_search_space(SimpleNamespace(workdir=None, config=run.config)) is None  # type: ignore[arg-type]


# --- the report's method-choices section -----------------------------------------------------


def _results_dir(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    res.mkdir()
    lstm = TrainConfig(model=ModelConfig(cell="lstm", layers=2, units=32), protocol="paper",
                       window=60, learning_rate=3e-3)
    gru = TrainConfig(model=ModelConfig(cell="gru", layers=1, units=16))
    runs = {"LSTM": {"config": lstm.to_dict(), "best_epoch": [4], "leaks_test": True,
                     "search_space": {"layers": [1, 2], "units": [16, 32],
                                      "learning_rate": [0.001, 0.01], "trials": 4}},
            "GRU": {"config": gru.to_dict(), "best_epoch": [7], "leaks_test": False,
                    "search_space": None}}
    (res / "runs.json").write_text(json.dumps({"runs": runs, "nrmse_norm": "full-period"}))
    rows = [{"model": m, "site": s, "setting": st, "nrmse": 0.1 + 0.01 * i, "n": 10,
             "norm": "full-period"}
            for i, (m, s, st) in enumerate((m, s, st) for m in ("LSTM", "GRU")
                                          for s in ("A", "B")
                                          for st in ("full", "growing_season", "extremes"))]
    pd.DataFrame(rows).to_csv(res / "nrmse.csv", index=False)
    for model, scope, repeats in (("LSTM", "pooled", 3), ("GRU", "site", 2)):
        pd.DataFrame([{"model": model, "site": s, "feature": f, "repeat": r, "fi": 0.01,
                       "baseline_nrmse": 0.1, "scope": scope}
                      for s in ("A", "B") for f in ("clear_sky_ghi", "LST")
                      for r in range(repeats)]).to_csv(res / f"fi_{model}.csv", index=False)
    return res


def test_method_choices_read_from_the_run_files(tmp_path: Path) -> None:
    table = method_choices(_results_dir(tmp_path))["this run"]
    assert table["model selection"].startswith("LSTM: paper")
    assert "GRU: holdout" in table["model selection"] and "2018" in table["model selection"]
    assert table["window (sequence length)"] == "LSTM: 60 days; GRU: 90 days"
    assert table["train / test years"] == "2016-2018 / 2019-2020"
    assert "1-2 layers, units 16/32" in table["search space"]
    assert "chosen 2x32, learning rate 0.003" in table["search space"]
    assert "GRU: no tuning study found" in table["search space"]
    assert table["NRMSE normalisation"].startswith("full-period: ")
    assert table["permutation importance scope"].startswith("LSTM: pooled: ")
    assert "GRU: site: " in table["permutation importance scope"]
    assert table["permutation repeats"] == "LSTM: 3, mean per site; GRU: 2, mean per site"
    paper_col = method_choices(tmp_path / "results")["paper"]
    assert paper_col["window (sequence length)"].startswith(f"{paper.SEQUENCE_LENGTH} days")


def test_method_choices_of_files_written_before_the_options(tmp_path: Path) -> None:
    res = _results_dir(tmp_path)
    pd.read_csv(res / "nrmse.csv").drop(columns="norm").to_csv(res / "nrmse.csv", index=False)
    for p in res.glob("fi_*.csv"):
        pd.read_csv(p).drop(columns="scope").to_csv(p, index=False)
    (res / "runs.json").unlink()
    table = method_choices(res)["this run"]
    assert table["model selection"] == "not recorded (no runs.json)"
    assert table["NRMSE normalisation"].startswith("not recorded")
    assert table["permutation importance scope"].startswith("not recorded")


def test_report_shows_the_method_choices(tmp_path: Path) -> None:
    page = write_report(_results_dir(tmp_path)).read_text()
    section = page.split("<h2>Method choices</h2>")[1].split("<h2>")[0]
    assert "LSTM: paper" in section and "full-period" in section
    assert "gpp explain --importance-scope site|pooled" in section
    assert "whether sites were pooled is not stated" in section
    fi_part = page.split("Median permutation feature importance")[1]
    assert "Scope: <b>LSTM: pooled" in fi_part
    assert "normalised as <b>full-period" in page


# --- command line -----------------------------------------------------------------------------


def _models_app() -> typer.Typer:
    """The modelling commands alone, as ``gpp`` registers them."""
    app = typer.Typer()
    models_cmd.register(app)
    return app



@pytest.mark.parametrize("args", [
    ["explain", "run", "--out", "o", "--importance-scope", "global"],
    ["evaluate", "run", "--out", "o", "--nrmse-norm", "range"],
])
def test_cli_rejects_unknown_choices(args: list[str]) -> None:
    res = CliRunner().invoke(_models_app(), args)
    assert res.exit_code == 2
    assert "global" in res.output or "range" in res.output


def test_cli_help_names_the_choices() -> None:
    app = _models_app()
    def help_text(cmd: str) -> str:  # rich's box characters out, words in one line
        return " ".join(CliRunner().invoke(app, [cmd, "--help"]).output.replace("│", " ")
                        .split())

    text = help_text("explain")
    assert "--importance-scope" in text and "site|pooled" in text
    assert "Default: the run's protocol (holdout: site; paper: pooled)" in text
    text = help_text("evaluate")
    assert "--nrmse-norm" in text and "subset|full-period" in text
    assert "Default: the runs' protocol (holdout: subset; paper: full-period)" in text


def test_cli_evaluate_and_explain_record_their_choices(tmp_path: Path, features: Path) -> None:
    from sklearn.metrics import root_mean_squared_error

    from gpp_models.train import train_and_evaluate

    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=4), epochs=1, window=30)
    train_and_evaluate(cfg, tmp_path / "rnn" / "run", features)
    app, out = _models_app(), tmp_path / "results"
    for args in (["evaluate", "--nrmse-norm", "full-period"],
                 ["explain", "--importance-scope", "pooled", "--repeats", "1"]):
        res = CliRunner().invoke(app, [args[0], str(tmp_path / "rnn" / "run"), "--out",
                                       str(out), *args[1:]])
        assert res.exit_code == 0, res.output
    long = pd.read_csv(out / "nrmse.csv")
    assert set(long["norm"]) == {"full-period"}
    assert json.loads((out / "runs.json").read_text())["nrmse_norm"] == "full-period"
    # Second computation: each site's extremes RMSE over the range of all its test days.
    preds = pd.read_csv(out / "predictions_RNN.csv")
    for site, grp in preds.groupby("site"):
        ok = grp["obs"].notna()
        ext = grp[ok & grp["extreme"]]
        want = root_mean_squared_error(ext["obs"], ext["pred"]) / np.ptp(grp.loc[ok, "obs"])
        got = long[(long["model"] == "RNN") & (long["site"] == site)
                   & (long["setting"] == "extremes")]
        assert got["nrmse"].item() == pytest.approx(want, rel=1e-6)  # float32 CSV
    fi = pd.read_csv(out / "fi_RNN.csv")
    assert set(fi["scope"]) == {"pooled"} and len(fi) == 11 * 3
