"""Parallelism over the machine's cores: one JAX CPU device per core, batches or members split.

On CPU, XLA parallelises a recurrent step *inside* each operation (a (B, F+H) x (F+H, 4H)
matmul and the gate arithmetic, 90 times per layer and direction), and at these sizes the
threads spend much of each step waiting for each other. Splitting the batch instead, one
slice per core, lets every core run whole time steps on its own and meet the others once per
optimiser step, to sum the gradients; every cell trains faster so, the more at small
batches (benchmarks/bench_models.py measures it).

:func:`configure_cpu_devices`, called by :func:`gpp_models.runtime.configure_process` (never
on import), asks JAX for one CPU device per usable core (at most :data:`MAX_CPU_DEVICES`) if
the JAX backend has not started yet. ``GPP_MODELS_CPU_DEVICES=N`` overrides the count (``1``
turns the splitting off). On a GPU machine the default devices are the GPUs, and batches are
split across them when there are several.

Ensembles (K members trained together) are placed differently on CPU: each device trains
whole members, every member on the whole batch, one after another (:func:`member_mesh`,
``lax.map`` over a device's members in :func:`gpp_models.step.train_step`). A member then runs
exactly the single-model step on one core, with no gradient sum between devices, instead of
K-wide batched matmuls (``jax.vmap``), which cost 30-40 % more per sample on CPU
(benchmarks/README.md, "Ensembles"). On GPUs the members stay vmapped (one wide kernel per
step keeps the device busy; an expectation, not measured: no GPU on the development machine)
and the batch is split when there are several GPUs.
:func:`ensemble_plan` makes the choice.

References
----------
JAX documentation, "Manual parallelism with shard_map" and the ``jax_num_cpu_devices`` option.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger("gpp_models")

BATCH_AXIS = "batch"
MEMBER_AXIS = "member"
MAX_CPU_DEVICES = 8
MIN_SHARD = 16  # samples per device below which splitting a batch is not worth a device


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; all cores where that is unknown).

    The same count as :func:`gpp_cubes.batch.default_workers` (one Dask worker per core),
    kept here because :mod:`gpp_models` does not import the cube builder.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def configure_cpu_devices(count: int | None = None) -> int:
    """Ask JAX for ``count`` CPU devices before its backend starts.

    Parameters
    ----------
    count : int, optional
        Number of CPU devices. Default: ``GPP_MODELS_CPU_DEVICES`` if set, else the usable
        cores, at most :data:`MAX_CPU_DEVICES`.

    Returns
    -------
    int
        The number of CPU devices JAX will create (1 when the backend had already started
        with one device, or when the user configured the count through ``XLA_FLAGS`` or
        ``jax_num_cpu_devices``, which are left alone).
    """
    if count is None:
        env = os.environ.get("GPP_MODELS_CPU_DEVICES")
        # One device per core this process may use, as a batch build has one worker per core.
        count = int(env) if env else min(usable_cores(), MAX_CPU_DEVICES)
    configured = jax.config.jax_num_cpu_devices
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "") or (
            configured not in (-1, None) and configured != count):
        return int(configured) if configured not in (-1, None) else 1
    try:
        jax.config.update("jax_num_cpu_devices", max(1, int(count)))
    except RuntimeError:  # the backend already started: keep what it has
        logger.debug("JAX backend already initialised; CPU device count left as is")
        return len(jax.devices("cpu"))
    return max(1, int(count))


def batch_mesh(batch_size: int, devices: list[Any] | None = None) -> Mesh | None:
    """A 1-D mesh over as many devices as split ``batch_size`` evenly, or None for one.

    Parameters
    ----------
    batch_size : int
        Samples per step.
    devices : list of jax.Device, optional
        Default: ``jax.devices()`` (the default backend's devices).

    Returns
    -------
    Mesh or None
        None when fewer than two devices would each get at least :data:`MIN_SHARD` samples.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    while n > 1 and (batch_size % n or batch_size // n < MIN_SHARD):
        n -= 1
    if n < 2:
        return None
    return Mesh(np.array(devices[:n]), (BATCH_AXIS,))


def member_mesh(members: int, devices: list[Any] | None = None) -> Mesh | None:
    """A 1-D mesh (axis :data:`MEMBER_AXIS`) over as many devices as share ``members`` evenly.

    None when fewer than two devices would get members (one member, one device, or a member
    count that no device count > 1 divides, e.g. 3 members on 2 devices).
    """
    devices = list(jax.devices() if devices is None else devices)
    n = min(len(devices), members)
    while n > 1 and members % n:
        n -= 1
    if n < 2:
        return None
    return Mesh(np.array(devices[:n]), (MEMBER_AXIS,))


def ensemble_plan(members: int, batch_size: int, devices: list[Any] | None = None
                  ) -> tuple[Mesh | None, bool]:
    """How to train ``members`` ensemble members on ``devices``: (mesh, vmap_members).

    On CPU: whole members per device (:func:`member_mesh`) when the members share the devices
    evenly, else the batch split (:func:`batch_mesh`); a device's members run one after
    another (``vmap_members`` False). Elsewhere (GPU): the batch split with the members
    vmapped.

    Returns
    -------
    mesh : Mesh or None
        Axis :data:`MEMBER_AXIS` (members split) or :data:`BATCH_AXIS` (batch split); None
        for one device.
    vmap_members : bool
        True to ``jax.vmap`` a device's members, False to run them one after another.
    """
    devices = list(jax.devices() if devices is None else devices)
    if devices[0].platform != "cpu":
        return batch_mesh(batch_size, devices), True
    mesh = member_mesh(members, devices)
    return (mesh if mesh is not None else batch_mesh(batch_size, devices)), False


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Copy every array of ``tree`` to all devices of ``mesh`` (no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def place_members(tree: Any, mesh: Mesh | None) -> Any:
    """Place ``tree`` (leading ensemble axis) for ``mesh``: members split over a
    :data:`MEMBER_AXIS` mesh, copied to every device of a batch mesh (:func:`replicate`)."""
    if mesh is None or MEMBER_AXIS not in mesh.axis_names:
        return replicate(tree, mesh)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(MEMBER_AXIS)))


def split_batch(fn: Callable[..., Any], mesh: Mesh | None, batch_args: Sequence[bool],
                out_batch_dim: int | None) -> Callable[..., Any]:
    """Run ``fn`` on every device of ``mesh``, each on its slice of the batch.

    Parameters
    ----------
    fn : callable
        Works on one slice; arguments flagged in ``batch_args`` are split along their first
        axis, the others are seen whole. Cross-device sums (``jax.lax.psum`` over
        :data:`BATCH_AXIS`) are ``fn``'s business.
    mesh : Mesh or None
        From :func:`batch_mesh`; None returns ``fn`` unchanged.
    batch_args : sequence of bool
        One flag per positional argument of ``fn``.
    out_batch_dim : int or None
        Axis of the output along which the slices are joined; None when every device returns
        the same (summed) result.
    """
    if mesh is None:
        return fn
    in_specs = tuple(PartitionSpec(BATCH_AXIS) if split else PartitionSpec()
                     for split in batch_args)
    out_specs = (PartitionSpec() if out_batch_dim is None
                 else PartitionSpec(*([None] * out_batch_dim), BATCH_AXIS))
    # check_vma off: gradients of the replicated parameters are summed explicitly by fn.
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                         check_vma=False)


def split_members(fn: Callable[..., Any], mesh: Mesh, n_args: int) -> Callable[..., Any]:
    """Run ``fn`` on every device of a :data:`MEMBER_AXIS` ``mesh``, each on its members.

    The first of the ``n_args`` positional arguments (leading ensemble axis) is split along
    that axis, the others are seen whole; every output is joined along its first axis.
    """
    in_specs = (PartitionSpec(MEMBER_AXIS),) + (PartitionSpec(),) * (n_args - 1)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(MEMBER_AXIS),
                         check_vma=False)
