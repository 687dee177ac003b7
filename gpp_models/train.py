"""Training: the epoch loop with orbax checkpoints, best-epoch selection and run loading.

The per-batch steps (masked MAE, optax Adam, jitted ``train_step``/``predict_step`` with a
leading ensemble axis K) are in :mod:`gpp_models.step`; the layer implementation of
``impl="auto"`` is chosen for the device by :func:`gpp_models.impl_choice.choose_impl` and
recorded in ``config.json`` (``impl_choice``). How the members and the batch are laid on the
devices is :func:`gpp_models.parallel.ensemble_plan`'s choice.

A run directory holds ``config.json``, ``metrics.csv`` (one row per epoch),
``checkpoints/`` (orbax, the full training state every ``checkpoint_every`` epochs; a rerun
with the same config resumes from the latest one) and ``best/`` (orbax, best parameters).

Importing this module changes nothing in the process. Training is fastest after
:func:`gpp_models.runtime.configure_process` (glibc's allocator tuned, one JAX CPU device per
core so that training and prediction split each batch across the devices: ``mesh`` argument
of the steps), which the ``gpp`` modelling commands and the benchmarks call first.

References
----------
Montero, D. et al. (2024), section 2.2 (Adam, MAE loss, 300 epochs, best checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
from jax.sharding import Mesh

from gpp_cubes.errors import ConfigError
from gpp_models.config import TrainConfig
from gpp_models.data import Cube, Prepared, open_cube, prepare_for, with_recorded_scaling
from gpp_models.impl_choice import choose_impl
from gpp_models.parallel import MEMBER_AXIS, ensemble_plan, place_members, replicate
from gpp_models.step import (
    TrainState,
    create_train_state,
    device_description,
    eval_step,
    predict,
    train_step,
)

logger = logging.getLogger("gpp_models")


@dataclass
class TrainResult:
    """Outcome of :func:`train_and_evaluate`.

    Attributes
    ----------
    config : TrainConfig
    params : pytree
        Best parameters (leading ensemble axis K).
    best_epoch : ndarray of int, shape (K,)
        Epoch (0-based) each member was selected at.
    best_loss : ndarray, shape (K,)
        Selection MAE at that epoch [g C m-2 d-1].
    history : DataFrame
        Per-epoch metrics (as in ``metrics.csv``).
    prepared : Prepared
        Standardised arrays and split indices.
    workdir : Path or None
    device : str
    leaks_test : bool
        True under the ``paper`` protocol (the checkpoint was chosen on the test years).
    """

    config: TrainConfig
    params: Any
    best_epoch: np.ndarray
    best_loss: np.ndarray
    history: pd.DataFrame
    prepared: Prepared
    workdir: Path | None
    device: str
    leaks_test: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, split: str = "test") -> pd.DataFrame:
        """Observed and predicted GPP for a split ("fit", "select", "test").

        Returns
        -------
        DataFrame
            Columns ``site``, ``time``, ``obs``, ``pred`` (ensemble mean), ``pred_std``
            (ensemble standard deviation, 0 for K=1), ``pred_min``, ``pred_max``, ``extreme``
            [g C m-2 d-1 except flags].
        """
        s, t = self.prepared.splits[split]
        cube = self.prepared.cube
        P = predict(self.params, jnp.asarray(self.prepared.Z), s, t,
                    model_cfg=self.config.model, window=self.config.window)
        P = P * self.prepared.y_std + self.prepared.y_mean
        return pd.DataFrame({
            "site": np.asarray(cube.sites)[s], "time": cube.time[t], "obs": cube.y[s, t],
            "pred": P.mean(0), "pred_std": P.std(0), "pred_min": P.min(0),
            "pred_max": P.max(0), "extreme": cube.extreme[s, t],
        })


def _abstract(tree: Any) -> Any:
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


def _checkpoint_manager(workdir: Path) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=False),
    )


def _state_dict(state: TrainState) -> dict[str, Any]:
    return flax.serialization.to_state_dict(state)


PAPER_WARNING = (
    "protocol 'paper': the best checkpoint is chosen on the TEST years, as in Montero et al. "
    "(2024); this leaks the test set into model selection and the test scores are optimistic. "
    "Use protocol 'holdout' for an honest estimate."
)
_paper_warning_logged: list[bool] = []


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | Path | None,
    features: str | Path | Cube | Prepared,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``config`` on a feature cube; keep the best epoch on the selection years.

    Parameters
    ----------
    config : TrainConfig
    workdir : path or None
        Run directory (config, metrics, orbax checkpoints). A rerun with the same config
        resumes from the latest checkpoint. None keeps everything in memory (tuning trials).
    features : path, Cube or Prepared
        The feature cube (``features.zarr``, a per-site store or a directory of them). The
        split adapts to the years the cube holds (:func:`gpp_models.data.resolve_split`);
        a ``Prepared`` is used as given.
    on_epoch : callable, optional
        Called after each epoch with (epoch, metrics); may raise (e.g. ``optuna.TrialPruned``)
        to stop training. Metrics: ``train_mae``, ``select_mae`` [g C m-2 d-1], ``seconds``.

    Returns
    -------
    TrainResult

    Raises
    ------
    gpp_cubes.errors.ConfigError
        ``workdir`` holds a run with a different configuration.
    gpp_cubes.errors.InputFormatError
        The cube breaks the contract or lacks samples in a split.
    """
    device = device_description()
    logger.info("training %s on %s", config.model.cell, device)
    if config.protocol == "paper":
        warnings.warn(PAPER_WARNING, UserWarning, stacklevel=2)
        if not _paper_warning_logged:  # once per process, not once per tuning trial
            _paper_warning_logged.append(True)
            logger.warning(PAPER_WARNING)
    if isinstance(features, Prepared):
        prepared = features
    else:
        cube = features if isinstance(features, Cube) else open_cube(features)
        config, prepared = prepare_for(config, cube)
    n_features = prepared.Z.shape[-1]
    previous = None  # a resumed run keeps its layer implementation (and parameter layout)
    if workdir is not None and (Path(workdir) / "config.json").exists():
        previous = json.loads((Path(workdir) / "config.json").read_text()).get("impl_choice")
    config, impl_choice = choose_impl(config, n_features, previous=previous)
    X = jnp.asarray(prepared.Z)
    Y = jnp.asarray(prepared.y_scaled)
    y_std = prepared.y_std
    K, B = config.ensemble, config.batch_size
    cfg_m, W = config.model, config.window

    mesh, vmap_members = ensemble_plan(K, B)
    X, Y = replicate((X, Y), mesh)
    state = place_members(create_train_state(config, n_features), mesh)
    best = {"params": jax.tree_util.tree_map(jnp.copy, state.params),
            "loss": np.full(K, np.inf, np.float32), "epoch": np.full(K, -1, np.int32)}
    start, since_best, rows = 0, 0, []

    run_meta = {"train_config": config.to_dict(), "features": prepared.cube.source,
                "sites": list(prepared.cube.sites), "predictors": list(prepared.cube.predictors),
                "standardizer": prepared.scaler.to_dict(),  # with the target scaling, a
                "target_scaling": {"y_mean": prepared.y_mean,  # run predicts without its cube
                                   "y_std": prepared.y_std}}
    mngr = None
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = workdir / "config.json"
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            # Epoch budget, patience and checkpoint spacing may change: a rerun extends the run.
            free = ("epochs", "patience", "checkpoint_every")
            new = {k: v for k, v in json.loads(config.to_json()).items() if k not in free}
            if {k: v for k, v in old.get("train_config", {}).items() if k not in free} != new:
                raise ConfigError(
                    f"{workdir} holds a run with a different configuration; use a new workdir"
                )
        meta = {**run_meta, "device": device, "jax": jax.__version__,
                "leaks_test": config.protocol == "paper", "impl_choice": impl_choice,
                "ensemble_placement": _placement(mesh, vmap_members)}
        cfg_path.write_text(json.dumps(meta, indent=2, default=str))
        mngr = _checkpoint_manager(workdir)
        latest = mngr.latest_step()
        if latest is not None:
            target = {"state": _state_dict(state), "best": best,
                      "meta": {"since_best": np.zeros((), np.int32)}}
            restored = mngr.restore(latest, args=ocp.args.StandardRestore(_abstract(target)))
            state = flax.serialization.from_state_dict(state, restored["state"])
            best = {k: restored["best"][k] for k in best}
            best["loss"], best["epoch"] = np.asarray(best["loss"]), np.asarray(best["epoch"])
            since_best = int(restored["meta"]["since_best"])
            start = latest + 1
            logger.info("resuming %s from epoch %d", workdir, start)
        metrics_path = workdir / "metrics.csv"
        if metrics_path.exists() and start > 0:
            old_rows = pd.read_csv(metrics_path)
            rows = old_rows[old_rows["epoch"] < start].to_dict("records")

    s_fit, t_fit = prepared.splits["fit"]
    s_sel, t_sel = prepared.splits["select"]
    n = len(s_fit)
    nb = max(1, math.ceil(n / B))
    epoch = start - 1
    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        # Batch order from (seed, epoch) alone: a resumed run sees the same batches.
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        pad = nb * B - n
        order = np.concatenate([order, order[:pad] if pad <= n else np.zeros(pad, int)])
        weight = np.ones(nb * B, np.float32)
        weight[n:] = 0.0
        losses = []
        for b in range(nb):
            sl = order[b * B:(b + 1) * B]
            state, loss = train_step(state, X, Y, s_fit[sl], t_fit[sl], weight[b * B:(b + 1) * B],
                                     model_cfg=cfg_m, window=W, mesh=mesh,
                                     vmap_members=vmap_members)
            losses.append(loss)
        w_b = weight.reshape(nb, B).sum(1)
        train_mae = np.asarray(jnp.stack(losses)).T @ w_b / w_b.sum() * y_std  # (K,)
        sel_mae = y_std * eval_step(state.params, X, Y, s_sel, t_sel, model_cfg=cfg_m, window=W)
        improved = sel_mae < best["loss"]
        if improved.any():
            mask = jnp.asarray(improved)
            best["params"] = jax.tree_util.tree_map(
                lambda b_, p, mask=mask: jnp.where(mask.reshape((K,) + (1,) * (p.ndim - 1)), p, b_),
                best["params"], state.params)
            best["loss"] = np.where(improved, sel_mae, best["loss"]).astype(np.float32)
            best["epoch"] = np.where(improved, epoch, best["epoch"]).astype(np.int32)
            since_best = 0
        else:
            since_best += 1
        row = {"epoch": epoch, "train_mae": float(train_mae.mean()),
               "select_mae": float(sel_mae.mean()), "best_select_mae": float(best["loss"].mean()),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        stop = config.patience is not None and since_best >= config.patience
        last = epoch == config.epochs - 1 or stop
        if mngr is not None:
            pd.DataFrame(rows).to_csv(workdir / "metrics.csv", index=False)
            if (epoch + 1) % config.checkpoint_every == 0 or last:
                mngr.save(epoch, args=ocp.args.StandardSave(
                    {"state": _state_dict(state), "best": best,
                     "meta": {"since_best": np.asarray(since_best, np.int32)}}), force=True)
                mngr.wait_until_finished()
        if on_epoch is not None:
            on_epoch(epoch, row)
        if stop:
            logger.info("early stop at epoch %d (patience %s)", epoch, config.patience)
            break

    if workdir is not None:
        best_dir = (workdir / "best").absolute()
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(best_dir, best["params"], force=True)
        ckptr.wait_until_finished()
        (workdir / "best_epoch.json").write_text(json.dumps(
            {"best_epoch": best["epoch"].tolist(), "best_select_mae": best["loss"].tolist(),
             "select_years": list(config.select_years), "protocol": config.protocol,
             "leaks_test": config.protocol == "paper"}, indent=2))
    if mngr is not None:
        mngr.close()
    history = pd.DataFrame(rows, columns=["epoch", "train_mae", "select_mae",
                                          "best_select_mae", "seconds"])
    return TrainResult(config=config, params=best["params"], best_epoch=best["epoch"],
                       best_loss=best["loss"], history=history, prepared=prepared,
                       workdir=workdir, device=device, leaks_test=config.protocol == "paper",
                       extra={"impl_choice": impl_choice,
                              "ensemble_placement": _placement(mesh, vmap_members)})


def _placement(mesh: Mesh | None, vmap_members: bool) -> str:
    """How the members and the batch sit on the devices, for the run's provenance."""
    where = ("one device" if mesh is None else
             f"members split over {mesh.size} devices" if MEMBER_AXIS in mesh.axis_names
             else f"batch split over {mesh.size} devices")
    return f"{where}, members {'vmapped' if vmap_members else 'one after another'}"


def load_run(workdir: str | Path, features: str | Path | Cube | None = None, *,
             recorded_scaling: bool = False) -> TrainResult:
    """Rebuild a finished run from its directory (config.json and the orbax ``best/`` params).

    Parameters
    ----------
    workdir : path
        Run directory written by :func:`train_and_evaluate`.
    features : path or Cube, optional
        The feature cube; defaults to the path recorded in ``config.json``.
    recorded_scaling : bool, default False
        Scale the predictors and GPP of ``features`` with the statistics the run recorded
        (:func:`gpp_models.data.with_recorded_scaling`): to evaluate the run on another cube.
        False refits them on ``features``, the training cube (whose agreement with the
        record :mod:`gpp_models.run_io` checks).

    Raises
    ------
    gpp_cubes.errors.InputFormatError
        The directory is not a finished run.
    """
    from gpp_cubes.errors import InputFormatError

    workdir = Path(workdir)
    cfg_path, best_dir = workdir / "config.json", (workdir / "best").absolute()
    if not cfg_path.exists() or not best_dir.exists():
        raise InputFormatError(f"{workdir}: not a finished training run (config.json/best/)")
    meta = json.loads(cfg_path.read_text())
    config = TrainConfig.from_dict(meta["train_config"])
    cube = features if isinstance(features, Cube) else open_cube(features or meta["features"])
    config, prepared = prepare_for(config, cube)
    if recorded_scaling:
        prepared = with_recorded_scaling(prepared, meta, f"run {workdir}")
    template = create_train_state(config, prepared.Z.shape[-1]).params
    params = ocp.StandardCheckpointer().restore(best_dir, _abstract(template))
    best = json.loads((workdir / "best_epoch.json").read_text())
    metrics = workdir / "metrics.csv"
    history = pd.read_csv(metrics) if metrics.exists() else pd.DataFrame()
    return TrainResult(config=config, params=params,
                       best_epoch=np.asarray(best["best_epoch"]),
                       best_loss=np.asarray(best["best_select_mae"]), history=history,
                       prepared=prepared, workdir=workdir, device=meta.get("device", ""),
                       leaks_test=bool(meta.get("leaks_test", False)))
