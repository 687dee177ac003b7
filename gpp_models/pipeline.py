"""The whole modelling chain in one call: tune -> train -> evaluate -> explain -> figures -> report.

``run_pipeline`` is what ``gpp demo`` calls after building the demo world's features.zarr
(4 sites by default, 2016-2020). Budgets are small on purpose, so the demo runs in minutes
on a laptop: :data:`QUICK` (``gpp demo --quick``) and :data:`DEFAULT` tune 2 / 4 Optuna
trials of at most 2 / 6 epochs, train 8 / 30 epochs with ensembles of 2 / 3 seeds and repeat
each permutation 2 / 5 times, in search spaces far below the paper's (one or two layers of
16-32 units). Real studies use the individual ``gpp tune/train/...`` commands with the
paper's budget (:data:`gpp_cubes.paper.EPOCHS` epochs, 10 FI repeats, up to
:data:`gpp_cubes.paper.MAX_LAYERS` layers of :data:`gpp_cubes.paper.MAX_UNITS` units).

The method choices are the library defaults unless given: model selection on the held-out
last training year (``holdout``; :class:`~gpp_models.config.TrainConfig`), the paper's
90-day window and train/test years, and the evaluation readings of the protocol
(:data:`gpp_models.config.PROTOCOL_READINGS`): under ``holdout`` permutation importance
within each site and NRMSE normalised by each subset's own range, under ``paper`` (``gpp demo
--protocol paper``) importance over all sites pooled and NRMSE by the site's full test-period
range; ``importance_scope`` / ``nrmse_norm`` override them. The report lists every choice
beside the paper's. ``gpp demo`` makes the
process set-up of :func:`gpp_models.runtime.configure_process` before calling this (a
library function leaves the process alone).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gpp_models.config import (
    CELLS,
    ImportanceScope,
    ModelConfig,
    NrmseNorm,
    Protocol,
    TrainConfig,
    protocol_reading,
)
from gpp_models.data import open_cube, prepare_for
from gpp_models.evaluate import check_nrmse_norm, evaluate_runs, model_label
from gpp_models.explain import check_scope, explain_run
from gpp_models.figures import all_figures
from gpp_models.report import write_report
from gpp_models.train import TrainResult, train_and_evaluate
from gpp_models.tune import SearchSpace, tune

logger = logging.getLogger("gpp_models")


@dataclass(frozen=True)
class Budget:
    """Compute budget of a pipeline run.

    Attributes
    ----------
    trials : int
        Optuna trials per architecture.
    tune_epochs : int
        Hyperband's largest resource per trial [epochs].
    epochs : int
        Epochs of the final training run.
    ensemble : int
        Seeds trained at once in the final run.
    fi_repeats : int
        Shuffles per feature of the permutation importance.
    space : SearchSpace
        Layers, units and learning rate searched.
    """

    trials: int
    tune_epochs: int
    epochs: int
    ensemble: int
    fi_repeats: int
    space: SearchSpace


QUICK = Budget(trials=2, tune_epochs=2, epochs=8, ensemble=2, fi_repeats=2,
               space=SearchSpace(layers=(1, 1), units=(16, 32), learning_rate=(3e-3, 1e-2)))
DEFAULT = Budget(trials=4, tune_epochs=6, epochs=30, ensemble=3, fi_repeats=5,
                 space=SearchSpace(layers=(1, 2), units=(16, 32),
                                   learning_rate=(1e-3, 1e-2)))


def run_pipeline(
    features_path: str | Path,
    workdir: str | Path,
    quick: bool = False,
    *,
    cells: Sequence[str] = CELLS,
    budget: Budget | None = None,
    seed: int = 0,
    protocol: Protocol = "holdout",
    importance_scope: ImportanceScope | None = None,
    nrmse_norm: NrmseNorm | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Tune, train, evaluate and explain RNN, GRU and LSTM on a feature cube; draw and report.

    Parameters
    ----------
    features_path : path
        ``features.zarr`` (or a per-site store / directory of stores).
    workdir : path
        Output directory: ``<cell>/tune``, ``<cell>/run`` and ``results/``.
    quick : bool
        Use the :data:`QUICK` budget instead of :data:`DEFAULT`.
    cells : sequence of str
        Architectures to run.
    budget : Budget, optional
        Overrides ``quick``.
    seed : int
        Seed of the tuner, the networks and the permutations.
    protocol : {"holdout", "paper"}
        Model selection: on the last training year (default) or, as in the paper, on the test
        years (leaks; flagged in the outputs). See :class:`~gpp_models.config.TrainConfig`.
    importance_scope : {"site", "pooled"}, optional
        Permutation importance shuffles within each site or across all sites
        (:mod:`gpp_models.explain`); default the protocol's (``site`` / ``pooled``).
    nrmse_norm : {"subset", "full-period"}, optional
        NRMSE range of each subset's own observations or of the site's whole test period
        (:mod:`gpp_models.evaluate`); default the protocol's (``subset`` / ``full-period``).
    on_stage : callable, optional
        Called with a short description before each stage (progress display).

    Returns
    -------
    dict of str -> Path
        ``results``, ``report``, ``nrmse``, ``fig1_png`` ... ``fig3_svg``,
        ``fig_gap_filled_png`` / ``_svg`` (the report's gap-filled series) and ``run_<cell>``.
    """
    budget = budget or (QUICK if quick else DEFAULT)
    if importance_scope is not None:
        check_scope(importance_scope)
    if nrmse_norm is not None:
        check_nrmse_norm(nrmse_norm)
    # Given values are passed on as given, so the outputs record them as options; the
    # protocol's readings are resolved (and recorded as such) by evaluate_runs / explain_run.
    scope_used = protocol_reading("importance_scope", [protocol], importance_scope)[0]
    norm_used = protocol_reading("nrmse_norm", [protocol], nrmse_norm)[0]
    workdir = Path(workdir)
    results_dir = workdir / "results"
    say = on_stage or (lambda msg: logger.info(msg))
    cube = open_cube(features_path)
    base = TrainConfig(model=ModelConfig(), epochs=budget.epochs, batch_size=256, seed=seed,
                       ensemble=budget.ensemble, patience=None, checkpoint_every=budget.epochs,
                       protocol=protocol)
    base, prepared = prepare_for(base, cube)
    if base.val_year is None:
        say(f"only one training year {list(base.train_years)}: validating on a blocked split")
    runs: list[TrainResult] = []
    paths: dict[str, Path] = {}
    for cell in cells:
        cfg = base.replace(cell=cell)
        say(f"tune {cell.upper()} ({budget.trials} trials x <= {budget.tune_epochs} epochs)")
        tuned = tune(prepared, cfg, workdir / cell / "tune", n_trials=budget.trials,
                     max_epochs=budget.tune_epochs, space=budget.space)
        best = tuned.best_config.replace(ensemble=budget.ensemble, epochs=budget.epochs)
        say(f"train {cell.upper()} {best.model.layers}x{best.model.units} "
            f"(lr {best.learning_rate:.2g}, {budget.epochs} epochs, ensemble {budget.ensemble})")
        result = train_and_evaluate(best, workdir / cell / "run", prepared)
        runs.append(result)
        paths[f"run_{cell}"] = workdir / cell / "run"
    say(f"evaluate (NRMSE by the {norm_used} range: full, growing season, extremes; "
        "baselines)")
    evaluate_runs(runs, results_dir, nrmse_norm=nrmse_norm)
    for result in runs:
        label = model_label(result.config.model.cell)
        say(f"explain {label} ({budget.fi_repeats} permutation repeats, {scope_used} "
            "scope)")
        explain_run(result, n_repeats=budget.fi_repeats, seed=seed,
                    scope=importance_scope).to_csv(results_dir / f"fi_{label}.csv", index=False)
    say("figures and report")
    figs = all_figures(results_dir)
    report = write_report(results_dir)
    paths.update({"results": results_dir, "report": report, "nrmse": results_dir / "nrmse.csv"})
    figs["fig_gap_filled"] = {ext: p for ext in ("png", "svg")  # drawn by the report
                              if (p := results_dir / "figures" / f"fig_gap_filled.{ext}").exists()}
    for name, files in figs.items():
        for ext, p in files.items():
            paths[f"{name}_{ext}"] = p
    (results_dir / "outputs.json").write_text(
        json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return paths


def summary_table(results_dir: str | Path) -> pd.DataFrame:
    """Median NRMSE over sites per model and setting from ``results_dir/nrmse.csv``."""
    long = pd.read_csv(Path(results_dir) / "nrmse.csv")
    return long.pivot_table(index="model", columns="setting", values="nrmse", aggfunc="median")
