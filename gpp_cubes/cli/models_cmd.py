"""``gpp tune | train | evaluate | predict | explain | figures | report``: the modelling commands.

Registered into the ``gpp`` typer app by :func:`register`; heavy imports (JAX, Optuna,
matplotlib) happen inside the commands so ``gpp --help`` stays fast. Every command first
calls :func:`gpp_models.runtime.configure_process` (glibc allocator, one JAX CPU device per
core), before JAX's backend starts: the process is ours here, not a library user's.

Option defaults and bounds are read from the configuration dataclasses
(:class:`~gpp_models.config.ModelConfig`, :class:`~gpp_models.config.TrainConfig`,
:class:`~gpp_models.config.SearchSpace`; :mod:`gpp_models.config` imports no JAX), never
retyped, so the command line and the library cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from gpp_cubes.cli.common import ConfigOption, DebugOption, console, guarded, progress_bar
from gpp_models.config import (
    MAX_LAYERS,
    MAX_UNITS,
    TUNE_MAX_EPOCHS,
    TUNE_TRIALS,
    ImportanceScope,
    ModelConfig,
    NrmseNorm,
    SearchSpace,
    TrainConfig,
)


def _defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a configuration dataclass (fields with a plain default)."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


MODEL = _defaults(ModelConfig)
TRAIN = _defaults(TrainConfig)
SPACE = SearchSpace()

CellOption = typer.Option(MODEL["cell"], "--cell", help="Recurrent cell: rnn, gru or lstm.")
ProtocolOption = typer.Option(
    TRAIN["protocol"], "--protocol",
    help="holdout: select on the last training year (default, honest); paper: select on the "
         "test years as the paper did (leaks; flagged in every output).")
BatchSizeOption = typer.Option(TRAIN["batch_size"], "--batch-size", min=1)
WindowOption = typer.Option(TRAIN["window"], "--window", min=1, help="Sequence length, in days.")
SeedOption = typer.Option(TRAIN["seed"], "--seed")
EpochsOption = typer.Option(TRAIN["epochs"], "--epochs", min=1, help="Full training epochs.")
RunsArgument = typer.Argument(..., help="Run directories (gpp train).")
FeaturesArgument = typer.Argument(..., help="features.zarr (or per-site stores).")
OutOption = typer.Option(..., "--out", help="Results directory.")
ResultsArgument = typer.Argument(..., help="Results directory (evaluate/explain).")


def _base_config(cell: str, protocol: str, epochs: int, batch_size: int, seed: int,
                 window: int, ensemble: int, **model: Any) -> Any:
    return TrainConfig(model=ModelConfig(cell=cell, **model), epochs=epochs,  # type: ignore[arg-type]
                       batch_size=batch_size, seed=seed, protocol=protocol,  # type: ignore[arg-type]
                       window=window, ensemble=ensemble)


def _configure_process(debug: bool | None = None) -> None:
    """Tune the process for JAX; with ``debug`` given, also log gpp_models to the console."""
    from gpp_models.runtime import configure_process

    configure_process()
    if debug is not None:
        _log_to_console(debug)


def _log_to_console(debug: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("gpp_models").setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax is chatty at INFO


def _train_with_bar(config: Any, workdir: Path, features: Path) -> Any:
    from gpp_models.step import device_description
    from gpp_models.train import train_and_evaluate

    console.print(f"training {config.model.cell.upper()} {config.model.layers}x"
                  f"{config.model.units} on [bold]{device_description()}[/] -> {workdir}")
    with progress_bar() as bar:
        task = bar.add_task(f"{config.model.cell} epochs", total=config.epochs)

        def on_epoch(epoch: int, m: dict[str, float]) -> None:
            bar.update(task, completed=epoch + 1, description=(
                f"{config.model.cell} epoch {epoch + 1}: train MAE {m['train_mae']:.3f}, "
                f"select MAE {m['select_mae']:.3f}"))

        return train_and_evaluate(config, workdir, features, on_epoch=on_epoch)


def _print_nrmse(long: Any) -> None:
    from gpp_models.evaluate import SETTINGS

    med = long.pivot_table(index="model", columns="setting", values="nrmse", aggfunc="median")
    t = Table(title="median NRMSE over sites (test years)")
    t.add_column("model")
    for s in SETTINGS:
        t.add_column(s, justify="right")
    for model, row in med.iterrows():
        t.add_row(str(model), *(f"{row.get(s, float('nan')):.3f}" for s in SETTINGS))
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the modelling commands to the ``gpp`` CLI."""

    @app.command("tune", epilog="""Example:

  gpp tune cubes/features.zarr --cell lstm --workdir runs/lstm --trials 30 --max-epochs 27

  Many workers on one study: add --storage postgresql://user:pass@db/optuna on every machine.
""", help="Hyperband search (Optuna) of layers, units and learning rate for one cell; "
          "then trains the best configuration in full (WORKDIR/run).")
    def tune_cmd(
        features: Path = FeaturesArgument,
        cell: str = CellOption,
        workdir: Path = typer.Option(..., "--workdir", help="Study and run directory."),
        trials: int = typer.Option(TUNE_TRIALS, "--trials", min=1,
                                   help="Trials run by this worker."),
        max_epochs: int = typer.Option(TUNE_MAX_EPOCHS, "--max-epochs", min=1,
                                       help="Hyperband's maximum epochs per trial."),
        max_layers: int = typer.Option(SPACE.layers[1], "--max-layers", min=1, max=MAX_LAYERS),
        units: str = typer.Option(",".join(map(str, SPACE.units)), "--units",
                                  help=f"Candidate hidden sizes, comma-separated "
                                       f"(<= {MAX_UNITS})."),
        storage: str | None = typer.Option(
            None, "--storage", help="Optuna storage URL (default sqlite in WORKDIR/tune)."),
        train_best: bool = typer.Option(True, "--train/--no-train",
                                        help="Train the best configuration in full."),
        epochs: int = EpochsOption,
        ensemble: int = typer.Option(TRAIN["ensemble"], "--ensemble", min=1,
                                     help="Seeds of the final run."),
        protocol: str = ProtocolOption,
        batch_size: int = BatchSizeOption,
        window: int = WindowOption,
        seed: int = SeedOption,
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process(debug)
            from gpp_models.tune import tune

            base = _base_config(cell, protocol, epochs, batch_size, seed, window, 1)
            space = SearchSpace(layers=(1, max_layers),
                                units=tuple(int(u) for u in units.split(",") if u.strip()))
            with progress_bar() as bar:
                task = bar.add_task(f"{cell} trials", total=trials)
                result = tune(features, base, workdir / "tune", n_trials=trials,
                              max_epochs=max_epochs, space=space, storage=storage,
                              on_trial=lambda t: bar.advance(task))
            console.print(f"best {cell}: {result.study.best_params} "
                          f"(select MAE {result.study.best_value:.4f}; "
                          f"{result.n_pruned} pruned, {result.n_complete} complete)")
            if train_best:
                _train_with_bar(result.best_config.replace(ensemble=ensemble),
                                workdir / "run", features)

        guarded(run, debug=debug, stage="tune")

    @app.command("train", epilog="""Example:

  gpp train cubes/features.zarr --cell gru --layers 2 --units 128 --learning-rate 1e-3
  --epochs 300 --ensemble 5 --workdir runs/gru

  Rerunning the same command resumes from the last checkpoint.
""", help="Train one architecture (K seeds at once with --ensemble K); keeps the best "
          "checkpoint on the selection years; resumable.")
    def train_cmd(
        features: Path = FeaturesArgument,
        cell: str = CellOption,
        workdir: Path = typer.Option(..., "--workdir", help="Run directory."),
        layers: int = typer.Option(MODEL["layers"], "--layers", min=1, max=MAX_LAYERS),
        units: int = typer.Option(MODEL["units"], "--units", min=1, max=MAX_UNITS),
        dropout: float = typer.Option(MODEL["dropout"], "--dropout", min=0.0, max=0.99),
        init: str = typer.Option(MODEL["init"], "--init",
                                 help="paper_uniform (U[-1/sqrt(n), 1/sqrt(n)]) or "
                                      "flax_default."),
        learning_rate: float = typer.Option(TRAIN["learning_rate"], "--learning-rate"),
        epochs: int = EpochsOption,
        batch_size: int = BatchSizeOption,
        ensemble: int = typer.Option(TRAIN["ensemble"], "--ensemble", min=1,
                                     help="Seeds trained at once (jax.vmap)."),
        patience: int | None = typer.Option(TRAIN["patience"], "--patience", min=1,
                                            help="Early stopping patience, in epochs."),
        protocol: str = ProtocolOption,
        window: int = WindowOption,
        seed: int = SeedOption,
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process(debug)
            cfg = _base_config(cell, protocol, epochs, batch_size, seed, window, ensemble,
                               layers=layers, units=units, dropout=dropout, init=init)
            cfg = cfg.replace(learning_rate=learning_rate, patience=patience)
            result = _train_with_bar(cfg, workdir, features)
            console.print(f"best epoch(s) {result.best_epoch.tolist()}, selection MAE "
                          f"{result.best_loss.tolist()} -> {workdir}")

        guarded(run, debug=debug, stage="train")

    @app.command("evaluate", epilog="""Example:

  gpp evaluate runs/rnn/run runs/gru/run runs/lstm/run --out results/

  gpp evaluate runs/lstm/run --out results-fp/ --nrmse-norm full-period
""", help="NRMSE per site on the test years (full, growing season, extremes) for trained "
          "runs and two baselines (seasonal cycle, linear).")
    def evaluate_cmd(
        runs: list[Path] = RunsArgument,
        out: Path = OutOption,
        features: Path | None = typer.Option(
            None, "--features",
            help="Cube (default: the one each run used); another cube is scaled with each "
                 "run's recorded statistics and must hold its predictors."),
        nrmse_norm: NrmseNorm | None = typer.Option(
            None, "--nrmse-norm", show_default=False,
            help="Range NRMSE divides by: subset = max - min of the observed GPP of each "
                 "evaluated subset (full period, growing season, extremes) at the site; "
                 "full-period = of the site's whole test period, for every subset. The paper "
                 "does not say which it used. Default: the runs' protocol (holdout: subset; "
                 "paper: full-period). Recorded in nrmse.csv (column norm) and runs.json "
                 "(nrmse_norm_source)."),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process(debug)
            from gpp_models.evaluate import evaluate_runs, resolve_nrmse_norm
            from gpp_models.train import load_run

            results = [load_run(r, features, recorded_scaling=features is not None)
                       for r in runs]
            norm, source = resolve_nrmse_norm(results, nrmse_norm)
            long = evaluate_runs(results, out, nrmse_norm=nrmse_norm)
            _print_nrmse(long)
            console.print(f"tables and predictions -> {out} (NRMSE normalised by the "
                          f"{norm} range; {source})")

        guarded(run, debug=debug, stage="evaluate")

    @app.command("predict", epilog="""Example:

  gpp predict runs/lstm/run cubes/DE-Hai.zarr --out predictions/DE-Hai

  Writes OUT/gpp_pred.csv (site, time, gpp_pred, gpp_spread, gpp_obs, reason),
  OUT/gpp_pred_status.csv (days per site and reason) and OUT/gpp_pred.zarr.
""", help="Daily GPP of a trained run (ensemble mean and spread) for every day of a predictor "
          "cube with a full window of every predictor, observed or not (gap-filling, new "
          "sites); other days are NaN with the reason. Needs only the run directory when "
          "the run records its scaling.")
    def predict_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory (gpp train / gpp tune)."),
        cube: Path = typer.Argument(..., help="Predictor cube: <SITE>.zarr or features.zarr."),
        out: Path = OutOption,
        training_features: Path | None = typer.Option(
            None, "--training-features",
            help="The cube the run was trained on (default: the one recorded in the run)."),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process(debug)
            import pandas as pd

            from gpp_models.predict import predict_run, status_lines

            paths = predict_run(run_dir, cube, out, training_features=training_features,
                                log=False)  # printed here instead, once
            counts = pd.read_csv(paths["status"], keep_default_na=False)
            for level, line in status_lines(counts):
                console.print(line, style="yellow" if level >= logging.WARNING else None,
                              markup=False, highlight=False)
            console.print(f"predictions -> {paths['csv']} {paths['zarr']}")

        guarded(run, debug=debug, stage="predict")

    @app.command("explain", epilog="""Example:

  gpp explain runs/lstm/run --out results/ --repeats 10

  gpp explain runs/lstm/run --out results/ --importance-scope pooled
""", help="Permutation feature importance per site (each feature's whole sequences shuffled "
          "among test samples); writes OUT/fi_<MODEL>.csv.")
    def explain_cmd(
        runs: list[Path] = RunsArgument,
        out: Path = OutOption,
        repeats: int = typer.Option(10, "--repeats", min=1, help="Shuffles per feature."),
        importance_scope: ImportanceScope | None = typer.Option(
            None, "--importance-scope", show_default=False,
            help="site: shuffle within each site's test samples (a feature keeps the values "
                 "that tell sites apart, e.g. latitude in clear-sky radiation); pooled: "
                 "shuffle across the test samples of all sites. The paper does not say. "
                 "Default: the run's protocol (holdout: site; paper: pooled). Recorded in "
                 "fi_<MODEL>.csv (columns scope, scope_source)."),
        seed: int = SeedOption,
        features: Path | None = typer.Option(None, "--features"),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process(debug)
            from gpp_models.explain import explain_run, median_importance, summarize_importance
            from gpp_models.train import load_run

            out.mkdir(parents=True, exist_ok=True)
            with progress_bar() as bar:
                task = bar.add_task("runs", total=len(runs))
                for r in runs:
                    fi = explain_run(load_run(r, features, recorded_scaling=features is not None),
                                     n_repeats=repeats, seed=seed,
                                     scope=importance_scope)
                    label = fi["model"].iloc[0]
                    fi.to_csv(out / f"fi_{label}.csv", index=False)
                    top = median_importance(summarize_importance(fi)).head(5)
                    bar.console.print(
                        f"{label} ({fi['scope'].iloc[0]} scope; {fi['scope_source'].iloc[0]}): "
                        + ", ".join(f"{k} {v:.4f}" for k, v in top.items()))
                    bar.advance(task)

        guarded(run, debug=debug, stage="explain")

    @app.command("figures", epilog="""Example:

  gpp figures results/            # writes results/figures/fig{1,2,3}_*.{png,svg}
""", help="The paper's Figures 1-3 (NRMSE box plots, feature importance, example sites) "
          "as PNG and SVG.")
    def figures_cmd(
        results: Path = ResultsArgument,
        out: Path | None = typer.Option(None, "--out", help="Default RESULTS/figures."),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process()
            from gpp_models.figures import all_figures

            if not (results / "nrmse.csv").exists():
                raise FileNotFoundError(f"{results}: no nrmse.csv; run `gpp evaluate` first")
            for name, files in all_figures(results, out).items():
                console.print(f"{name}: {files['png']} {files['svg']}")

        guarded(run, debug=debug, stage="figures")

    @app.command("report", epilog="""Example:

  gpp report results/ --out results/report.html
""", help="One self-contained HTML page: tables, figures, run configs and provenance.")
    def report_cmd(
        results: Path = ResultsArgument,
        out: Path | None = typer.Option(None, "--out", help="Default RESULTS/report.html."),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        def run() -> None:
            _configure_process()
            from gpp_models.report import write_report

            console.print(f"report -> {write_report(results, out)}")

        guarded(run, debug=debug, stage="report")
