"""Process-wide set-up for training: glibc's allocator, JAX's CPU devices, one warning filter.

Nothing in :mod:`gpp_models` changes the process on import; :func:`configure_process` is the
one explicit call that does, made by the programs that own their process (the ``gpp``
modelling commands and ``gpp demo``, the benchmarks). Importing this module is cheap: it
does not import JAX.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from dataclasses import dataclass

__all__ = ["DONATION_WARNING", "ProcessConfig", "configure_process", "tune_glibc_malloc"]

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8

# CPU backends may not use every donated buffer; that is harmless.
DONATION_WARNING = "Some donated buffers were not usable"


@dataclass(frozen=True)
class ProcessConfig:
    """What :func:`configure_process` set.

    Attributes
    ----------
    malloc_tuned : bool
        True when glibc's allocator was tuned (:func:`tune_glibc_malloc`).
    cpu_devices : int
        Number of CPU devices JAX creates (or already has).
    """

    malloc_tuned: bool
    cpu_devices: int


def tune_glibc_malloc() -> bool:
    """Keep freed memory in the process for reuse instead of returning it to the kernel.

    Sets glibc's ``M_MMAP_MAX=0`` (large buffers come from the heap, not fresh ``mmap``
    pages), ``M_TRIM_THRESHOLD=1 GiB`` (the heap is not shrunk after every step) and
    ``M_ARENA_MAX=1`` (XLA's worker threads share the main heap instead of per-thread heaps
    that glibc unmaps whenever they fall empty). With glibc's defaults every use of a large
    XLA buffer page-faults its fresh ``mmap`` pages in again; after this it does not
    (benchmarks/bench_models.py shows the effect on a training step). Must run before the
    JAX backend starts (its threads pick their heap on first use). The process keeps its
    peak heap until exit.

    Returns
    -------
    bool
        True when the settings were applied (glibc on Linux and ``GPP_MODELS_MALLOC`` is not
        ``system``).

    References
    ----------
    mallopt(3), The GNU C Library manual, section 3.2.3.8 "Malloc Tunable Parameters".
    """
    if os.environ.get("GPP_MODELS_MALLOC", "tuned") == "system" or sys.platform != "linux":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return all([mallopt(_M_MMAP_MAX, 0) == 1, mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1,
                mallopt(_M_ARENA_MAX, 1) == 1])


def configure_process(cpu_devices: int | None = None) -> ProcessConfig:
    """Set the process up for fast training: allocator, JAX CPU devices, donation warning.

    Three process-wide changes, none of which happens on import of any :mod:`gpp_models`
    module:

    1. glibc's allocator keeps freed memory (:func:`tune_glibc_malloc`;
       ``GPP_MODELS_MALLOC=system`` leaves it alone). With glibc's defaults a training step
       spends a large share of its time in page faults, because XLA's working buffers (tens
       of MB) are returned to the kernel after every step and faulted in again on the next.
    2. JAX gets one CPU device per usable core, at most
       :data:`gpp_models.parallel.MAX_CPU_DEVICES`
       (:func:`gpp_models.parallel.configure_cpu_devices`; ``GPP_MODELS_CPU_DEVICES=N``
       overrides, ``1`` opts out; a count set through ``XLA_FLAGS`` or
       ``jax_num_cpu_devices`` is left alone). Training and prediction split each batch
       across the devices, which on CPU is faster than XLA's threads inside each operation
       (2-core LSTM: 1 900 -> 2 220 samples/s).
    3. The warning "Some donated buffers were not usable" is ignored (global filter): CPU
       backends may not use every donated buffer, which is harmless.

    Call it once, early, before the JAX backend starts (before the first ``jax.devices()``,
    array or jitted call; importing ``jax`` or :mod:`gpp_models` modules is fine): the
    allocator's threads pick their heap and JAX fixes its device count when the backend
    starts. Afterwards the device count stays what the backend has. Notebook users may call
    it in their first cell to train as fast as the ``gpp`` command does.

    Parameters
    ----------
    cpu_devices : int, optional
        Number of JAX CPU devices. Default: ``GPP_MODELS_CPU_DEVICES`` if set, else the
        usable cores, at most :data:`gpp_models.parallel.MAX_CPU_DEVICES`.

    Returns
    -------
    ProcessConfig
        Whether the allocator was tuned and how many CPU devices JAX creates.
    """
    malloc_tuned = tune_glibc_malloc()  # first: before JAX's threads pick their heaps
    from gpp_models.parallel import configure_cpu_devices  # imports JAX, not its backend

    devices = configure_cpu_devices(cpu_devices)
    warnings.filterwarnings("ignore", message=DONATION_WARNING)
    return ProcessConfig(malloc_tuned=malloc_tuned, cpu_devices=devices)
