"""Worker-side reporting of a batch build: one log file per site, progress events, failures.

A task runs on some Dask worker, maybe on another machine. It writes its site's log records
into ``<out>/logs/<SITE>.log`` (:func:`site_log`: a handler that only takes the records of
the task's own thread, since tasks of other sites may share the process) and reports each
stage to the client as a Dask event on :data:`PROGRESS_TOPIC` (:func:`stage`), which the
client turns into ``progress(site, stage, state)`` calls. A task never raises: a failure
becomes a summary row naming the stage (:func:`fail`), so one site cannot stop the others.

Object storage has no append, and the tasks of one site run side by side on different
workers, so for an output URL (:mod:`gpp_cubes.storage`) each task writes its records to a
local temporary file and uploads it when it ends as one object of its own,
``<out>/logs/<SITE>.log.d/<UTC time>-<id>.log`` (a task whose worker is killed loses its
part). :func:`read_site_log` gives a site's whole log, local file or parts, in time order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpp_cubes.storage import Location, ObjectPath, as_location, display

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


#: Suffix of the folder of a site's log parts in object storage.
PARTS_SUFFIX = ".d"


def log_parts_dir(path: ObjectPath) -> ObjectPath:
    """``<out>/logs/<SITE>.log.d``: the parts of a site log in object storage."""
    return path.with_name(path.name + PARTS_SUFFIX)


def read_site_log(path: str | Path | ObjectPath) -> str:
    """The whole log of a site: the file, or (object storage) its parts in time order.

    Parameters
    ----------
    path : str, Path or ObjectPath
        ``BuildConfig.log_path(site_id)``.

    Returns
    -------
    str
        The records; empty if the site has no log yet.
    """
    loc = as_location(path)
    if isinstance(loc, Path):
        return loc.read_text(encoding="utf-8") if loc.is_file() else ""
    parts_dir = log_parts_dir(loc)
    if not parts_dir.is_dir():
        return ""
    return "".join(p.read_text() for p in sorted(parts_dir.iterdir(), key=lambda p: p.name))


@contextlib.contextmanager
def site_log(path: Location) -> Iterator[logging.Logger]:
    """Route this thread's ``gpp_cubes`` log records to a per-site file while active (in
    object storage: to a part uploaded when the context ends, see the module docstring)."""
    if isinstance(path, ObjectPath):
        fd, local = tempfile.mkstemp(prefix="gpp-site-log-", suffix=".log")
        os.close(fd)
        try:
            with site_log(Path(local)) as logger:
                yield logger
        finally:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            part = log_parts_dir(path) / f"{stamp}-{uuid.uuid4().hex[:8]}.log"
            try:
                part.write_bytes(Path(local).read_bytes())
            except Exception as err:  # a log that cannot be kept must not fail the site
                log.warning("could not upload the log part %s: %s", display(part), err)
            finally:
                Path(local).unlink(missing_ok=True)
        return
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
