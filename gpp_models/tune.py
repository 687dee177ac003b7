"""Hyperparameter search with Optuna: TPE sampling and Hyperband pruning over epochs.

One study per architecture (``gpp-<cell>``). The resource is the training epoch: every trial
reports its selection-year MAE after each epoch and Optuna's ``HyperbandPruner``
(reduction factor 3) stops the unpromising ones early. Selection uses the ``holdout`` year by
default, never the test years. Studies live in SQLite inside the run directory unless a
``storage`` URL (PostgreSQL, MySQL) is given, in which case many workers on many machines can
run :func:`tune` on the same study at once.

References
----------
Li, L. et al. (2018). Hyperband: a novel bandit-based approach to hyperparameter
optimization. JMLR 18(185). Akiba, T. et al. (2019). Optuna. KDD.
Montero, D. et al. (2024), section 2.2 (the search space,
:class:`gpp_models.config.SearchSpace`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from gpp_cubes.errors import GppError
from gpp_models.config import TUNE_MAX_EPOCHS, TUNE_TRIALS, SearchSpace, TrainConfig
from gpp_models.data import Cube, Prepared, open_cube, prepare_for
from gpp_models.train import TrainResult, train_and_evaluate

logger = logging.getLogger("gpp_models")


@dataclass
class TuneResult:
    """A finished search: the Optuna study and the best configuration (full epoch budget)."""

    study: optuna.Study
    best_config: TrainConfig
    storage: str

    @property
    def n_complete(self) -> int:
        """Trials that ran their whole budget (not pruned)."""
        return sum(t.state == optuna.trial.TrialState.COMPLETE for t in self.study.trials)

    @property
    def n_pruned(self) -> int:
        """Trials stopped early by Hyperband."""
        return sum(t.state == optuna.trial.TrialState.PRUNED for t in self.study.trials)


def default_storage(workdir: str | Path) -> str:
    """SQLite URL of the study database inside ``workdir``."""
    path = Path(workdir).absolute() / "optuna.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def suggest_config(trial: optuna.Trial, base: TrainConfig, space: SearchSpace,
                   max_epochs: int) -> TrainConfig:
    """The trial's configuration: layers, units and learning rate drawn from ``space``."""
    return base.replace(
        layers=trial.suggest_int("layers", *space.layers),
        units=trial.suggest_categorical("units", list(space.units)),
        learning_rate=trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        epochs=max_epochs, ensemble=1,
    )


def tune(
    features: str | Path | Cube | Prepared,
    base: TrainConfig,
    workdir: str | Path,
    *,
    n_trials: int = TUNE_TRIALS,
    max_epochs: int = TUNE_MAX_EPOCHS,
    space: SearchSpace = SearchSpace(),
    storage: str | None = None,
    timeout: float | None = None,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> TuneResult:
    """Search layers, units and learning rate for ``base.model.cell`` with Hyperband.

    Parameters
    ----------
    features : path, Cube or Prepared
        Feature cube.
    base : TrainConfig
        Fixed settings (cell, protocol, window, batch size, seed, full epoch budget).
    workdir : path
        Directory of the study (``optuna.db`` unless ``storage`` is given).
    n_trials : int
        Trials run by this worker.
    max_epochs : int
        Hyperband's maximum resource per trial [epochs]; the minimum is 1 epoch.
    space : SearchSpace
    storage : str, optional
        Optuna storage URL, e.g. ``postgresql://user@host/db`` for many workers.
    timeout : float, optional
        Stop starting trials after this many seconds [s].
    on_trial : callable, optional
        Called with each finished trial (progress display).

    Returns
    -------
    TuneResult
        ``best_config`` keeps ``base.epochs`` (the full budget) with the best layers, units
        and learning rate.
    """
    if isinstance(features, Prepared):
        prepared = features
    else:
        cube = features if isinstance(features, Cube) else open_cube(features)
        base, prepared = prepare_for(base, cube)
    storage = storage or default_storage(workdir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"gpp-{base.model.cell}",
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                              reduction_factor=3),
    )

    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, base, space, max_epochs)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics["select_mae"], epoch + 1)
            trial.set_user_attr("epochs_run", epoch + 1)
            # A trial that ran the whole budget is complete, whatever the last rung says.
            if epoch + 1 < max_epochs and trial.should_prune():
                raise optuna.TrialPruned()

        result = train_and_evaluate(config, None, prepared, on_epoch=report)
        return float(result.best_loss.min())

    callbacks: list[Any] = []
    if on_trial is not None:
        callbacks.append(lambda _study, trial: on_trial(trial))
    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks,
                   catch=())
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise GppError(f"study gpp-{base.model.cell} ({storage}): no trial completed")
    best = study.best_params
    best_config = base.replace(layers=int(best["layers"]), units=int(best["units"]),
                               learning_rate=float(best["learning_rate"]))
    logger.info("best %s: %s (select MAE %.4f)", base.model.cell, best, study.best_value)
    return TuneResult(study=study, best_config=best_config, storage=storage)


def tune_and_train(features: str | Path | Cube | Prepared, base: TrainConfig,
                   workdir: str | Path, **tune_kwargs: Any) -> tuple[TuneResult, TrainResult]:
    """:func:`tune` in ``workdir/tune``, then train the best configuration in ``workdir/run``."""
    workdir = Path(workdir)
    tuned = tune(features, base, workdir / "tune", **tune_kwargs)
    if isinstance(features, str | Path):
        features = open_cube(features)
    return tuned, train_and_evaluate(tuned.best_config, workdir / "run", features)
