"""Jitted train step, compilation reuse, resumable deterministic runs, ensembles, protocols."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from gpp_cubes.errors import ConfigError
from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import open_cube, prepare
from gpp_models.step import TRACE_COUNTS, create_train_state, train_step
from gpp_models.train import train_and_evaluate


@pytest.fixture(scope="module")
def prepared(features: Path):
    cube = open_cube(features)
    return prepare(cube, window=30, fit_years=[2016, 2017], select_years=[2018],
                   test_years=[2019, 2020])


@pytest.mark.parametrize(("cell", "impl"), [("rnn", "flax"), ("gru", "flax"), ("lstm", "flax"),
                                           ("rnn", "fused"), ("gru", "fused"), ("lstm", "fused")])
def test_one_step_changes_every_leaf_and_second_step_reuses_compilation(prepared, cell,
                                                                        impl) -> None:
    # 7 units: a shape no other test compiles, so the first call must trace.
    cfg = TrainConfig(model=ModelConfig(cell=cell, layers=2, units=7, impl=impl), window=30,
                      ensemble=2)
    state = create_train_state(cfg, prepared.Z.shape[-1])
    before = jax.tree_util.tree_map(np.asarray, state.params)
    X, Y = jnp.asarray(prepared.Z), jnp.asarray(prepared.y_scaled)
    s, t = prepared.splits["fit"]
    w = np.ones(32, np.float32)
    kw = {"model_cfg": cfg.model, "window": 30}
    n0 = TRACE_COUNTS["train_step"]
    state, loss = train_step(state, X, Y, s[:32], t[:32], w, **kw)
    assert TRACE_COUNTS["train_step"] == n0 + 1
    assert loss.shape == (2,) and np.isfinite(np.asarray(loss)).all()
    changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(b) != a)),
                                     before, state.params)
    flat = jax.tree_util.tree_leaves_with_path(changed)
    assert flat and all(v for _, v in flat), [jax.tree_util.keystr(k) for k, v in flat if not v]
    # A second step with new batch values (same shapes) must not trace/compile again.
    state, _ = train_step(state, X, Y, s[32:64], t[32:64], w, **kw)
    assert TRACE_COUNTS["train_step"] == n0 + 1
    assert np.asarray(state.step).tolist() == [2, 2]


def test_ensemble_members_differ(prepared) -> None:
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=5), window=30, ensemble=3)
    state = create_train_state(cfg, prepared.Z.shape[-1])
    k = np.asarray(state.params["layer_0"]["input_kernel"])
    assert k.shape[0] == 3 and not np.allclose(k[0], k[1])
    # Member 0 of an ensemble equals a single-seed run with the same seed.
    single = create_train_state(cfg.replace(ensemble=1), prepared.Z.shape[-1])
    np.testing.assert_array_equal(
        np.asarray(single.params["layer_0"]["input_kernel"])[0], k[0])


def _params_equal(a, b) -> bool:
    return jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))


def test_resume_and_determinism(tmp_path: Path, prepared) -> None:
    cfg = TrainConfig(model=ModelConfig(cell="lstm", layers=1, units=8), window=30, epochs=3,
                      batch_size=256, ensemble=2, checkpoint_every=1, learning_rate=3e-3)
    straight = train_and_evaluate(cfg, tmp_path / "a", prepared)
    first = train_and_evaluate(cfg.replace(epochs=1), tmp_path / "b", prepared)
    assert len(first.history) == 1
    resumed = train_and_evaluate(cfg, tmp_path / "b", prepared)
    assert _params_equal(straight.params, resumed.params)
    np.testing.assert_array_equal(straight.best_epoch, resumed.best_epoch)
    metrics = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(metrics["select_mae"], straight.history["select_mae"], rtol=1e-6)
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["train_config"]["model"]["cell"] == "lstm" and "device" in meta
    assert (tmp_path / "a" / "best").is_dir() and (tmp_path / "a" / "checkpoints").is_dir()
    # A different architecture in the same run directory is refused.
    with pytest.raises(ConfigError, match="different configuration"):
        train_and_evaluate(cfg.replace(units=9), tmp_path / "a", prepared)
    # In-memory rerun with the same seed gives the same numbers.
    again = train_and_evaluate(cfg, None, prepared)
    assert _params_equal(straight.params, again.params)


def test_paper_protocol_warns_and_selects_on_test(features: Path) -> None:
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=1, units=4), window=30, epochs=1,
                      protocol="paper")
    assert cfg.select_years == (2019, 2020) and cfg.fit_years == (2016, 2017, 2018)
    with pytest.warns(UserWarning, match="leaks"):
        result = train_and_evaluate(cfg, None, features)
    assert result.leaks_test
    holdout = TrainConfig(protocol="holdout")
    assert holdout.select_years == (2018,) and 2018 not in holdout.fit_years
    with pytest.raises(ConfigError, match="val_year"):
        TrainConfig(val_year=2019)


def test_trains_on_a_cube_with_one_training_year(tmp_path: Path) -> None:
    from gpp_models.testing import DEFAULT_SITES, write_synthetic_world

    path = write_synthetic_world(tmp_path / "cube", DEFAULT_SITES[:2], start="2018-01-01",
                                 per_site=False)
    cfg = TrainConfig(model=ModelConfig(cell="gru", layers=1, units=4), window=30, epochs=1)
    result = train_and_evaluate(cfg, tmp_path / "run", path)
    assert result.config.val_year is None and result.config.train_years == (2018,)
    assert set(result.predict("test")["time"].dt.year) == {2019, 2020}
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["train_config"]["val_year"] is None


def test_numpy_years_and_counts_become_python_ints(tmp_path: Path, prepared) -> None:
    # Years read from a cube's time axis are numpy scalars; they used to reach json.dumps
    # unconverted and crash writing best_epoch.json.
    cfg = TrainConfig(model=ModelConfig(cell="rnn", layers=np.int64(1), units=np.int32(4)),
                      window=np.int64(30), epochs=np.int64(1), train_years=np.arange(2016, 2019),
                      test_years=[np.int64(2019), 2020.0], val_year=np.int64(2018),
                      patience=np.int32(3), learning_rate=np.float32(1e-3))
    ints = [cfg.val_year, cfg.patience, cfg.window, cfg.epochs, cfg.model.layers,
            cfg.model.units, *cfg.train_years, *cfg.test_years]
    assert all(type(v) is int for v in ints), [type(v) for v in ints]
    assert type(cfg.learning_rate) is float
    assert TrainConfig.from_dict(json.loads(cfg.to_json())) == cfg
    result = train_and_evaluate(cfg, tmp_path / "run", prepared)
    best = json.loads((tmp_path / "run" / "best_epoch.json").read_text())
    assert best["select_years"] == [2018] and best["best_epoch"] == [0]
    assert result.config.val_year == 2018
    with pytest.raises(ConfigError, match="val_year"):
        TrainConfig(val_year=2018.5)
    with pytest.raises(ConfigError, match="units"):
        ModelConfig(units="many")
