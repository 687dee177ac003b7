"""The phase schedule of a batch build: phase 2 starts as soon as it can, not after phase 1.

The S2 PCA needs every site's S2 store; a site's assembly needs its own four phase-1 stores
and the PCA. Waiting for all of phase 1 would leave workers idle while its last long tasks
run, so :class:`PhaseSchedule` reacts to each finished task instead:

* a phase-1 task ends -> merge its summary into the site's row; once no S2 task is left,
  submit the PCA (:meth:`PhaseSchedule.start_pca_when_s2_ended`); settle the site
  (:meth:`PhaseSchedule.advance`);
* the PCA ends -> every site whose phase 1 is over gets its assembly task, or fails with the
  PCA's error;
* an assembly ends -> the site's row is final.

Phase-2 tasks carry a priority above every phase-1 task: they are short, and the multi-site
store waits for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpp_cubes.batch import phase2, tasks
from gpp_cubes.batch.config import BuildConfig
from gpp_cubes.batch.logs import ProgressFn, error_text, log
from gpp_cubes.sites.catalog import Site

#: Dask priority of the PCA and the per-site assemblies: above every phase-1 task.
PHASE2_PRIORITY = 100


def task_result(fut: Any, site_id: str, stage: str) -> dict[str, Any]:
    """A task's summary, or a failure row when the task itself died (e.g. worker killed)."""
    try:
        return fut.result()
    except Exception as err:
        return {"site": site_id, "status": "failed", "error": error_text(stage, err)}


class PhaseSchedule:
    """Phase 1 and phase 2 of the ``todo`` sites on a Dask ``client``.

    Parameters
    ----------
    client : distributed.Client
    todo : list of Site
        The sites to build.
    sites : list of Site
        All sites of the build (those with a complete S2 store share the PCA).
    cfg : BuildConfig
    force : bool
        Refit the PCA.
    note : callable
        ``note(site, stage, state)``: progress on the client.
    stamp : int
        Unique per build: part of every Dask key.
    """

    def __init__(self, client: Any, todo: list[Site], sites: list[Site], cfg: BuildConfig,
                 *, force: bool, note: ProgressFn, stamp: int) -> None:
        self.client, self.sites, self.cfg = client, sites, cfg
        self.force, self.note, self.stamp = force, note, stamp
        self.by_id = {s.id: s for s in todo}
        self.rows: dict[str, dict[str, Any]] = {}
        self.phase1 = {s.id: {"site": s.id, "status": "ok", "error": None} for s in todo}
        self.pending: dict[str, set[str]] = {s.id: set() for s in todo}  # phase-1 running
        self.tasks: dict[Any, tuple[str, Site | None, str]] = {}  # future -> kind, site, task
        self.queue: Any = None
        self.pca_submitted = False
        self.pca_done = False
        self.pca_error: str | None = None
        self.assembling: set[str] = set()

    def run(self) -> dict[str, dict[str, Any]]:
        """Run both phases; the table rows of the ``todo`` sites by site id."""
        from distributed import as_completed

        self.submit_phase1()
        self.queue = as_completed(list(self.tasks))
        self.start_pca_when_s2_ended()  # no S2 task at all: every S2 intermediate is complete
        for fut in self.queue:
            kind, site, sensor = self.tasks[fut]
            if kind == "phase1":
                self.on_phase1(fut, site, sensor)
            elif kind == "pca":
                self.on_pca(fut)
            else:
                self.on_phase2(fut, site)
        return self.rows

    def submit_phase1(self) -> None:
        """Submit the phase-1 tasks whose store is not complete, longest first.

        Keys ``phase1-<stamp>-...``: Dask names task groups by the key's leading alphabetic
        words, so these make one group, which the scheduler queues and hands out by
        priority, one task per free worker thread (see
        :data:`gpp_cubes.batch.cluster.LOCAL_CLUSTER_CONFIG`).
        """
        from gpp_cubes.cube.store import is_complete

        for t in sorted(tasks.TASKS.values(), key=lambda t: -t.priority):
            chosen = []
            for s in self.by_id.values():
                if is_complete(self.cfg.phase1_store(s.id, t.name)):
                    for st in t.stages:
                        self.note(s.id, st, "skip")
                else:
                    chosen.append(s)
                    self.pending[s.id].add(t.name)
            if not chosen:
                continue
            futs = self.client.map(tasks.run_sensor, chosen, [self.cfg] * len(chosen),
                                   [t.name] * len(chosen), pure=False, priority=t.priority,
                                   key=[f"phase1-{self.stamp}-{t.name}-{s.id}"
                                        for s in chosen])
            self.tasks.update({f: ("phase1", s, t.name)
                               for f, s in zip(futs, chosen, strict=True)})

    def submit(self, kind: str, site: Site | None, fn: Callable[..., Any], *args: Any,
               **kw: Any) -> None:
        """Submit a phase-2 task (before the phase-1 tasks still queued)."""
        key = f"{kind}-{self.stamp}" + (f"-{site.id}" if site else "")
        fut = self.client.submit(fn, *args, pure=False, key=key, priority=PHASE2_PRIORITY,
                                 **kw)
        self.tasks[fut] = (kind, site, "")
        self.queue.add(fut)

    def _waiting(self) -> list[str]:
        """Sites whose phase 1 has not failed."""
        return [sid for sid in self.pending if self.phase1[sid]["status"] != "failed"]

    def start_pca_when_s2_ended(self) -> None:
        """Submit the PCA once no S2 task is left (unless every site already failed)."""
        if self.pca_submitted or any(kind == "phase1" and sensor == "s2" and not f.done()
                                     for f, (kind, _, sensor) in self.tasks.items()):
            return
        waiting = self._waiting()
        if not waiting:  # every site failed in phase 1: nothing to fit the PCA for
            return
        for sid in waiting:
            self.note(sid, "pca", "start")
        from gpp_cubes.cube.store import is_complete

        # every site with S2 results, already built ones included, shares one PCA
        with_s2 = [s.id for s in self.sites
                   if is_complete(self.cfg.phase1_store(s.id, "s2"))]
        self.pca_submitted = True
        self.submit("pca", None, phase2.run_fit_pca, with_s2, self.cfg, refit=self.force)

    def advance(self, sid: str) -> None:
        """Settle a site whose phase 1 has ended: a failure row, or its assembly task."""
        if sid in self.rows or sid in self.assembling or self.pending[sid]:
            return
        if self.phase1[sid]["status"] == "failed":
            self.rows[sid] = self.phase1[sid]
        elif self.pca_error is not None:
            self.rows[sid] = {**self.phase1[sid], "status": "failed", "error": self.pca_error}
            self.note(sid, "pca", "fail")
        elif self.pca_done:
            self.assembling.add(sid)
            site = self.by_id[sid]
            self.submit("phase2", site, phase2.run_phase2, site, self.cfg)

    def on_phase1(self, fut: Any, site: Site | None, sensor: str) -> None:
        assert site is not None
        s = task_result(fut, site.id, sensor)
        merged = self.phase1[site.id]
        if s["status"] == "failed" and merged["status"] != "failed":
            merged.update(status="failed", error=s["error"])
        merged.update({k: v for k, v in s.items() if k not in ("status", "error", "stage")})
        self.pending[site.id].discard(sensor)
        self.start_pca_when_s2_ended()
        self.advance(site.id)

    def on_pca(self, fut: Any) -> None:
        try:
            info = fut.result()
            how = ("reused" if info["reused"] else f"imported from {info['imported']}"
                   if info.get("imported") else "fitted")
            log.info("PCA %s, fitted on sites %s", how, info["sites"])
            self.pca_done = True
            for sid in self._waiting():
                self.note(sid, "pca", "done")
        except Exception as err:
            self.pca_error = error_text("pca", err)
        for sid in self.pending:
            self.advance(sid)

    def on_phase2(self, fut: Any, site: Site | None) -> None:
        assert site is not None
        s = {**self.phase1[site.id], **task_result(fut, site.id, "assemble")}
        if s["status"] == "ok":
            s["status"] = "built"
        self.rows[site.id] = s
