"""The layer implementation of ``impl="auto"``, chosen for the device training runs on.

Kept apart from the steps (:mod:`gpp_models.step`) and the epoch loop
(:mod:`gpp_models.train`): it is a per-device decision, taken once per process, that times
the steps rather than being one. The choice is recorded in a run's ``config.json``
(``impl_choice``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gpp_models.config import TrainConfig
from gpp_models.models import IMPLS
from gpp_models.parallel import ensemble_plan, place_members, replicate
from gpp_models.step import create_train_state, device_description, train_step

logger = logging.getLogger("gpp_models")

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
