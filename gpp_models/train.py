"""Training: pure jitted steps (masked MAE, optax Adam), an epoch loop with orbax checkpoints.

``train_step`` and ``predict_step`` are module-level ``jax.jit`` functions that take the model
configuration as a static argument, so they compile once per architecture and shape (the
learning rate lives in the optimiser state through ``optax.inject_hyperparams``, so tuning
trials of one architecture share one compiled step). Every state carries a leading ensemble
axis K: ``ensemble=K`` trains K seeds at once. How the members and the batch are laid on the
devices is :func:`gpp_models.parallel.ensemble_plan`'s choice (on CPU whole members per core,
run one after another; on GPU vmapped); each member is the model a run of that seed alone
gives, up to float summation order. The layer implementation of ``impl="auto"`` is chosen
for the device by :func:`choose_impl` and recorded in ``config.json`` (``impl_choice``).

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
Kingma, D. P. & Ba, J. (2015). Adam: a method for stochastic optimization. ICLR.
"""

from __future__ import annotations

import collections
import functools
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
import optax
import orbax.checkpoint as ocp
import pandas as pd
from jax.sharding import Mesh

from gpp_cubes.errors import ConfigError
from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import Cube, Prepared, gather_windows_time_major, open_cube, prepare_for
from gpp_models.models import IMPLS, build_model, init_params
from gpp_models.parallel import (
    BATCH_AXIS,
    MEMBER_AXIS,
    batch_mesh,
    ensemble_plan,
    place_members,
    replicate,
    split_batch,
    split_members,
)

logger = logging.getLogger("gpp_models")

# Number of times each jitted function was traced (a trace precedes every compilation).
TRACE_COUNTS: collections.Counter[str] = collections.Counter()

PREDICT_BATCH = 512


@functools.cache
def make_optimizer() -> optax.GradientTransformation:
    """Adam whose learning rate is a state leaf (one compiled step serves every rate)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)


class TrainState(flax.struct.PyTreeNode):
    """Training state; every leaf has a leading ensemble axis of size K."""

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


def create_train_state(config: TrainConfig, n_features: int) -> TrainState:
    """K independent initial states (K = ``config.ensemble``), seeds ``seed, seed+1, ...``.

    Parameters
    ----------
    config : TrainConfig
    n_features : int
        Number of predictors.
    """
    K = config.ensemble
    keys = jnp.stack([jax.random.PRNGKey(config.seed + k) for k in range(K)])
    init_keys, drop_keys = jax.vmap(lambda k: jax.random.split(k, 2))(keys).transpose(1, 0, 2)
    params = jax.vmap(lambda k: init_params(config.model, k, n_features, config.window))(
        init_keys
    )
    tx = make_optimizer()
    opt_state = jax.vmap(tx.init)(params)
    hyper = dict(opt_state.hyperparams)
    hyper["learning_rate"] = jnp.full((K,), config.learning_rate, jnp.float32)
    opt_state = opt_state._replace(hyperparams=hyper)
    return TrainState(step=jnp.zeros((K,), jnp.int32), params=params, opt_state=opt_state,
                      key=drop_keys)


def masked_mae(pred: jax.Array, y: jax.Array, weight: jax.Array,
               total_weight: jax.Array | None = None) -> jax.Array:
    """Mean absolute error over samples with weight > 0 [g C m-2 d-1].

    ``total_weight`` (default ``weight.sum()``) is the denominator; on a slice of a batch it
    is the whole batch's weight, so the slices' losses add up to the batch loss.
    """
    err = jnp.where(weight > 0, jnp.abs(pred - jnp.nan_to_num(y)), 0.0)
    total = jnp.sum(weight) if total_weight is None else total_weight
    return jnp.sum(err * weight) / jnp.maximum(total, 1e-12)


def _adam_step(state: TrainState, X: jax.Array, Y: jax.Array, site_idx: jax.Array,
               time_idx: jax.Array, weight: jax.Array, *, model_cfg: ModelConfig, window: int,
               axis: str | None, vmap_members: bool = True) -> tuple[TrainState, jax.Array]:
    """One Adam step of every member on (a slice of) a batch; ``axis`` names the devices
    whose slices make up the batch (their losses and gradients are summed), None for one.
    ``vmap_members`` False runs the members one after another (``lax.map``): each then runs
    the single-model step, which on CPU is faster per sample than K-wide batched matmuls."""
    model = build_model(model_cfg)
    tx = make_optimizer()
    xw = gather_windows_time_major(X, site_idx, time_idx, window)
    y = Y[site_idx, time_idx]
    total = jnp.sum(weight) if axis is None else jax.lax.psum(jnp.sum(weight), axis)

    def one(member: TrainState) -> tuple[TrainState, jax.Array]:
        dkey = jax.random.fold_in(member.key, member.step)
        if axis is not None:  # each slice draws its own dropout masks
            dkey = jax.random.fold_in(dkey, jax.lax.axis_index(axis))

        def loss_fn(params: Any) -> jax.Array:
            pred = model.apply({"params": params}, xw, train=True, rngs={"dropout": dkey})
            return masked_mae(pred, y, weight, total)

        loss, grads = jax.value_and_grad(loss_fn)(member.params)
        if axis is not None:
            loss, grads = jax.lax.psum((loss, grads), axis)
        updates, opt_state = tx.update(grads, member.opt_state, member.params)
        params = optax.apply_updates(member.params, updates)
        return member.replace(step=member.step + 1, params=params, opt_state=opt_state), loss

    if vmap_members or jax.tree_util.tree_leaves(state)[0].shape[0] == 1:
        return jax.vmap(one)(state)
    return jax.lax.map(one, state)


@functools.partial(jax.jit, static_argnames=("model_cfg", "window", "mesh", "vmap_members"),
                   donate_argnames=("state",))
def train_step(state: TrainState, X: jax.Array, Y: jax.Array, site_idx: jax.Array,
               time_idx: jax.Array, weight: jax.Array, *, model_cfg: ModelConfig,
               window: int, mesh: Mesh | None = None,
               vmap_members: bool = True) -> tuple[TrainState, jax.Array]:
    """One Adam step on a batch for all K ensemble members; returns (state, loss [K]).

    Parameters
    ----------
    state : TrainState
        Donated: its buffers are reused for the new state.
    X : array, shape (site, time, feature)
        Standardised predictors.
    Y : array, shape (site, time)
        GPP [g C m-2 d-1] (NaN where missing; such samples must have weight 0).
    site_idx, time_idx, weight : arrays, shape (batch,)
        Target samples and their loss weights (0 for padding).
    mesh : Mesh, optional
        Devices to run on. A :func:`gpp_models.parallel.batch_mesh` splits the batch over
        them (state, ``X`` and ``Y`` replicated: :func:`gpp_models.parallel.replicate`); a
        :func:`gpp_models.parallel.member_mesh` gives each device whole members, each on the
        whole batch (state split: :func:`gpp_models.parallel.place_members`). Either way
        :func:`gpp_models.parallel.ensemble_plan` picks it; unplaced arrays are placed.
    vmap_members : bool
        ``jax.vmap`` a device's members (True) or run them one after another (False).
    """
    TRACE_COUNTS["train_step"] += 1
    if mesh is not None and MEMBER_AXIS in mesh.axis_names:
        # Whole members per device: each device computes its members' steps alone.
        step = functools.partial(_adam_step, model_cfg=model_cfg, window=window, axis=None,
                                 vmap_members=vmap_members)
        return split_members(step, mesh, 6)(state, X, Y, site_idx, time_idx, weight)
    step = functools.partial(_adam_step, model_cfg=model_cfg, window=window,
                             axis=None if mesh is None else BATCH_AXIS,
                             vmap_members=vmap_members)
    step = split_batch(step, mesh, (False, False, False, True, True, True), out_batch_dim=None)
    return step(state, X, Y, site_idx, time_idx, weight)


@functools.partial(jax.jit, static_argnames=("model_cfg", "window", "mesh"))
def predict_step(params: Any, X: jax.Array, site_idx: jax.Array, time_idx: jax.Array, *,
                 model_cfg: ModelConfig, window: int, mesh: Mesh | None = None) -> jax.Array:
    """Predictions [g C m-2 d-1] of all K members, shape (K, batch), dropout off.

    ``mesh`` splits the batch over devices, as in :func:`train_step`.
    """
    TRACE_COUNTS["predict_step"] += 1
    model = build_model(model_cfg)

    def members(params: Any, X: jax.Array, s: jax.Array, t: jax.Array) -> jax.Array:
        xw = gather_windows_time_major(X, s, t, window)
        return jax.vmap(lambda p: model.apply({"params": p}, xw, train=False))(params)

    return split_batch(members, mesh, (False, False, True, True), out_batch_dim=1)(
        params, X, site_idx, time_idx)


def eval_step(params: Any, X: jax.Array, Y: jax.Array, site_idx: np.ndarray,
              time_idx: np.ndarray, *, model_cfg: ModelConfig, window: int) -> np.ndarray:
    """MAE per ensemble member on the given samples (in the units of ``Y``), shape (K,)."""
    pred = predict(params, X, site_idx, time_idx, model_cfg=model_cfg, window=window)
    y = np.asarray(Y)[site_idx, time_idx]
    return np.mean(np.abs(pred - y[None, :]), axis=1)


def predict(params: Any, X: jax.Array, site_idx: np.ndarray, time_idx: np.ndarray, *,
            model_cfg: ModelConfig, window: int, batch: int = PREDICT_BATCH) -> np.ndarray:
    """Predictions for any number of samples in fixed-size batches (one compilation), (K, n)."""
    n = len(site_idx)
    nb = max(1, math.ceil(n / batch))
    pad = nb * batch - n
    s = np.concatenate([site_idx, np.zeros(pad, np.int32)]).astype(np.int32)
    t = np.concatenate([time_idx, np.full(pad, window - 1, np.int32)]).astype(np.int32)
    mesh = batch_mesh(batch)
    params, X = replicate((params, X), mesh)
    out = [predict_step(params, X, s[i * batch:(i + 1) * batch], t[i * batch:(i + 1) * batch],
                        model_cfg=model_cfg, window=window, mesh=mesh) for i in range(nb)]
    return np.concatenate([np.asarray(o) for o in out], axis=1)[:, :n]


def device_description() -> str:
    """The JAX device training runs on, e.g. ``cpu:TFRT_CPU_0`` or ``gpu:NVIDIA A100``."""
    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', str(dev))}"


#: Seconds the timed steps of one candidate take: ``timer(impl, run)`` calls ``run`` (which
#: blocks until its result is ready) and returns its duration; tests inject their own.
Timer = Callable[[str, Callable[[], Any]], float]


def _wall_seconds(impl: str, run: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


_IMPL_CHOICES: dict[tuple[Any, ...], dict[str, Any]] = {}


def choose_impl(config: TrainConfig, n_features: int, *, measure: bool | None = None,
                steps: int = 3, timer: Timer | None = None,
                previous: dict[str, Any] | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """Resolve ``config.model.impl == "auto"`` to the layer implementation to train with.

    On CPU the fused layers (:mod:`gpp_models.recurrence`, tuned for XLA:CPU and measured
    faster there: benchmarks/README.md) are taken without timing. On other devices (GPU),
    where that tuning may not hold, each candidate of :data:`gpp_models.models.IMPLS` trains
    ``steps`` optimiser steps of the run's shapes (batch, window, features, ensemble and its
    device placement) on the actual devices after one compiling step, and the faster is
    taken. The choice is cached per process (tuning trials share it), logged, and returned
    as a record for the run's provenance (``config.json``, key ``impl_choice``).

    Parameters
    ----------
    config : TrainConfig
        ``config.model.impl`` other than ``auto`` is kept as given.
    n_features : int
        Number of predictors.
    measure : bool, optional
        Time the candidates; default: on every platform but CPU.
    steps : int
        Timed optimiser steps per candidate [1].
    timer : callable, optional
        ``timer(impl, run) -> seconds`` of one candidate's timed steps (:data:`Timer`);
        default the wall clock.
    previous : dict, optional
        The record of the run being resumed: its choice is kept (a different implementation
        has other parameters and could not resume the checkpoint).

    Returns
    -------
    config : TrainConfig
        With ``model.impl`` resolved.
    record : dict
        ``requested``, ``chosen``, ``how`` (``given``, ``platform``, ``timed``, ``resumed``),
        ``device`` and, when timed, ``seconds_per_step`` per candidate [s].
    """
    requested = config.model.impl
    device = device_description()
    record: dict[str, Any] = {"requested": requested, "device": device}
    if requested != "auto":
        return config, {**record, "chosen": requested, "how": "given"}
    if previous is not None and previous.get("chosen") in IMPLS:
        chosen = previous["chosen"]
        record.update(chosen=chosen, how="resumed",
                      seconds_per_step=previous.get("seconds_per_step"))
    else:
        platform = jax.devices()[0].platform
        measure = platform != "cpu" if measure is None else measure
        if not measure:
            record.update(chosen="fused", how="platform")
        else:
            key = (config.model, config.batch_size, config.window, config.ensemble, n_features,
                   device, steps, timer)
            if key not in _IMPL_CHOICES:
                seconds = {impl: _time_impl(config, impl, n_features, steps, timer or _wall_seconds)
                           for impl in IMPLS}
                _IMPL_CHOICES[key] = {"chosen": min(seconds, key=seconds.__getitem__),
                                      "how": "timed", "seconds_per_step": seconds}
            record.update(_IMPL_CHOICES[key])
    logger.info("layer implementation %s on %s (%s%s)", record["chosen"], device, record["how"],
                f": {record['seconds_per_step']} s/step" if record.get("seconds_per_step") else "")
    return config.replace(impl=record["chosen"]), record


def _time_impl(config: TrainConfig, impl: str, n_features: int, steps: int,
               timer: Timer) -> float:
    """Seconds per optimiser step of ``impl`` at the shapes of ``config`` (synthetic data)."""
    cfg = config.replace(impl=impl)
    K, B, W = cfg.ensemble, cfg.batch_size, cfg.window
    mesh, vmap_members = ensemble_plan(K, B)
    rng = np.random.default_rng(0)
    X, Y = replicate((jnp.asarray(rng.normal(size=(1, W + B, n_features)), jnp.float32),
                      jnp.asarray(rng.normal(size=(1, W + B)), jnp.float32)), mesh)
    s = np.zeros(B, np.int32)
    t = np.arange(W - 1, W - 1 + B, dtype=np.int32)
    w = np.ones(B, np.float32)
    box = [place_members(create_train_state(cfg, n_features), mesh)]

    def run(n: int) -> None:
        loss = None
        for _ in range(n):
            box[0], loss = train_step(box[0], X, Y, s, t, w, model_cfg=cfg.model, window=W,
                                      mesh=mesh, vmap_members=vmap_members)
        jax.block_until_ready(loss)

    run(1)  # compile
    return timer(impl, lambda: run(steps)) / steps


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


def load_run(workdir: str | Path, features: str | Path | Cube | None = None) -> TrainResult:
    """Rebuild a finished run from its directory (config.json and the orbax ``best/`` params).

    Parameters
    ----------
    workdir : path
        Run directory written by :func:`train_and_evaluate`.
    features : path or Cube, optional
        The feature cube; defaults to the path recorded in ``config.json``.

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
