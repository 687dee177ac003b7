"""Worker-side reporting of a batch build: one log file per site, progress events, failures.

A task runs on some Dask worker, maybe on another machine. It writes its site's log records
into ``<out>/logs/<SITE>.log`` (:func:`site_log`: a handler that only takes the records of
the task's own thread, since tasks of other sites may share the process) and reports each
stage to the client as a Dask event on :data:`PROGRESS_TOPIC` (:func:`stage`), which the
client turns into ``progress(site, stage, state)`` calls. A task never raises: a failure
becomes a summary row naming the stage (:func:`fail`), so one site cannot stop the others.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("gpp_cubes.batch")

#: Dask event topic of the progress events.
PROGRESS_TOPIC = "gpp-build"
#: Stages reported to the progress callback, in order.
STAGES = ("forest", "s2", "s1", "lst", "clearsky", "gpp", "pca", "assemble", "write")

#: Callback ``progress(site_id, stage, state)``; state is "start", "done", "skip" or "fail".
ProgressFn = Callable[[str, str, str], None]


def emit(site_id: str, stage: str, state: str) -> None:
    """Send a progress event to the client (no-op outside a Dask worker)."""
    try:
        from distributed import get_worker

        get_worker().log_event(PROGRESS_TOPIC, {"site": site_id, "stage": stage,
                                                "state": state})
    except (ImportError, ValueError):
        pass


class _ThreadFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


@contextlib.contextmanager
def site_log(path: Path) -> Iterator[logging.Logger]:
    """Route this thread's ``gpp_cubes`` log records to a per-site file while active."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger("gpp_cubes")
    old_level = root.level
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield root
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@contextlib.contextmanager
def stage(site_id: str, name: str, summary: dict[str, Any]) -> Iterator[None]:
    """One stage of a site: remembered in ``summary`` (for :func:`fail`), logged with its
    duration, reported as "start" and "done" events."""
    summary["stage"] = name
    emit(site_id, name, "start")
    t0 = time.perf_counter()
    log.info("%s: stage %s started", site_id, name)
    yield
    log.info("%s: stage %s done in %.1f s", site_id, name, time.perf_counter() - t0)
    emit(site_id, name, "done")


def error_text(stage_name: str, err: BaseException) -> str:
    """The ``error`` of a summary row: ``[stage] Type: message``, at most 500 characters."""
    return f"[{stage_name}] {type(err).__name__}: {err}"[:500]


def fail(summary: dict[str, Any], site_id: str, err: BaseException) -> dict[str, Any]:
    """Mark ``summary`` failed in its current stage; log the traceback; report "fail"."""
    summary["status"] = "failed"
    summary["error"] = error_text(summary.get("stage", "?"), err)
    log.error("%s: failed in stage %s: %s\n%s", site_id, summary.get("stage"), err,
              "".join(traceback.format_exception(err)))
    emit(site_id, summary.get("stage", "?"), "fail")
    return summary
