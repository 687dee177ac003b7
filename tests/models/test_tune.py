"""Hyperband pruning with the real objective on a tiny cube; studies persist in SQLite."""

from __future__ import annotations

from pathlib import Path

import optuna

from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import open_cube, prepare
from gpp_models.tune import SearchSpace, tune


def test_hyperband_prunes_and_resumes_study(tmp_path: Path, features: Path) -> None:
    cube = open_cube(features, sites=["DE-Hai"])
    base = TrainConfig(model=ModelConfig(cell="rnn", units=4, layers=1), window=20,
                       batch_size=512, epochs=50)
    prep = prepare(cube, window=20, fit_years=base.fit_years, select_years=base.select_years,
                   test_years=base.test_years)
    space = SearchSpace(layers=(1, 1), units=(4, 6), learning_rate=(1e-4, 1e-1))
    result = tune(prep, base, tmp_path, n_trials=14, max_epochs=9, space=space)
    trials = result.study.trials
    assert len(trials) == 14
    full = [t for t in trials if t.user_attrs.get("epochs_run") == 9]
    assert result.n_pruned > 0
    assert len(full) < len(trials)
    assert all(t.user_attrs["epochs_run"] < 9 for t in trials
               if t.state == optuna.trial.TrialState.PRUNED)
    # The best configuration keeps the full epoch budget and the search space's choices.
    assert result.best_config.epochs == 50 and result.best_config.model.units in (4, 6)
    assert result.storage.startswith("sqlite:///") and (tmp_path / "optuna.db").exists()
    # A second worker (or a rerun) continues the same study from the database.
    again = tune(prep, base, tmp_path, n_trials=1, max_epochs=9, space=space)
    assert len(again.study.trials) == 15
