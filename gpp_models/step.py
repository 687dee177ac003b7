"""Pure training and prediction steps: masked MAE, optax Adam, jitted per-batch functions.

Held apart from the epoch loop of :mod:`gpp_models.train` (as in the flax examples) so that
what one batch does is read, tested and benchmarked on its own, without checkpoints or I/O.

``train_step`` and ``predict_step`` are module-level ``jax.jit`` functions that take the model
configuration as a static argument, so they compile once per architecture and shape (the
learning rate lives in the optimiser state through ``optax.inject_hyperparams``, so tuning
trials of one architecture share one compiled step). Every state carries a leading ensemble
axis K: ``ensemble=K`` trains K seeds at once. How the members and the batch are laid on the
devices is :func:`gpp_models.parallel.ensemble_plan`'s choice (on CPU whole members per core,
run one after another; on GPU vmapped); each member is the model a run of that seed alone
gives, up to float summation order. The ``mesh`` argument of the steps splits each batch
across the devices (one JAX CPU device per core after
:func:`gpp_models.runtime.configure_process`).

Importing this module changes nothing in the process.

References
----------
Montero, D. et al. (2024), section 2.2 (Adam, MAE loss).
Kingma, D. P. & Ba, J. (2015). Adam: a method for stochastic optimization. ICLR.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from gpp_models.config import ModelConfig, TrainConfig
from gpp_models.data import gather_windows_time_major
from gpp_models.models import build_model, init_params
from gpp_models.parallel import (
    BATCH_AXIS,
    MEMBER_AXIS,
    batch_mesh,
    replicate,
    split_batch,
    split_members,
)

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
