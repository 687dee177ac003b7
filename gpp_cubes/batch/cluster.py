"""The Dask side of a batch build: the client, the LocalCluster's size, a task's threads.

A site task is one sequential chain, so a worker stands for a core: the LocalCluster has one
single-threaded worker per core available to this process, and parallelism comes from
running tasks side by side. Any other Dask deployment works through its scheduler address.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any


def default_workers() -> int:
    """Workers of the default LocalCluster: one per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def default_memory_limit(n_workers: int) -> str:
    """Per-worker memory limit: 80 % of the machine's memory split evenly, at most 4 GiB."""
    try:
        import psutil

        total = psutil.virtual_memory().total
    except ImportError:  # pragma: no cover
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    per = min(int(0.8 * total / max(1, n_workers)), 4 * 2**30)
    return f"{per // 2**20}MiB"


#: Dask settings of the LocalCluster that :func:`dask_client` starts.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    # The scheduler hands a phase-1 task (one Dask task group, so queued on the scheduler)
    # to a worker only when the worker is free, so no task waits in a busy worker's queue
    # while another worker idles (the default 1.1 assigns two at a time).
    "distributed.scheduler.worker-saturation": 1.0,
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
    # adaptive mmap threshold: every array above 128 KiB then comes from fresh mmap pages
    # and is unmapped when freed, a page fault storm that slows the numeric stages (see
    # benchmarks/README.md). None removes the variable (glibc's defaults); a value in the
    # environment still wins.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None,
                memory_limit: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` if given, else a new LocalCluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``); any Dask deployment works
        (dask-gateway, dask-kubernetes, dask-jobqueue, Coiled: pass their scheduler address).
    n_workers : int, optional
        LocalCluster workers (default: one per core); each gets one thread, since a site
        task is one sequential chain and parallelism comes from running sites side by side.
    memory_limit : str, optional
        Per-worker memory limit of the LocalCluster (default :func:`default_memory_limit`).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    n = n_workers or default_workers()
    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               memory_limit=memory_limit or default_memory_limit(n),
                               dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@contextlib.contextmanager
def worker_threads() -> Iterator[int]:
    """Inner Dask computations of a task use as many threads as the worker has (one by
    default): a worker stands for a core, and parallelism comes from running tasks side by
    side on many workers. Yields that number of threads."""
    import dask

    n = 1
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        n = int(get_worker().state.nthreads)
    with dask.config.set(scheduler="threads" if n > 1 else "synchronous", num_workers=n):
        yield n
