"""The resume plan: which complete stores a build must not reuse, and why.

Before a build starts, :func:`plan_resume` lists the complete stores whose recorded
fingerprint (:mod:`gpp_cubes.batch.fingerprint`) differs from the one this run would write
(or that have none: written by an older version), with what depends on them, in dependency
order; :class:`StaleStore` names the differing values (``corine_source=None ->
/data/clc.tif``), and :func:`stale_message` is the line that stops a build.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpp_cubes.batch.fingerprint import (
    PHASE1,
    Fingerprint,
    differences,
    pca_fingerprint,
    phase1_fingerprint,
    read_fingerprint,
    read_pca_sidecar,
    site_fingerprint,
)
from gpp_cubes.storage import Location, display, is_url


def _show(value: Any) -> str:
    """A value as the message shows it: text as is, None as None, others as JSON."""
    if value is None:
        text = "None"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class StaleStore:
    """A complete store this run must not reuse.

    Attributes
    ----------
    path : Path or ObjectPath
    old : Fingerprint or None
        What it was built with (None: no fingerprint, an older version wrote it).
    new : Fingerprint or None
        What this run would build it with (None when unknown before the build).
    reason : str, optional
        Why it is rebuilt when its own values are unchanged (an input store is rebuilt).
    """

    path: Location
    old: Fingerprint | None
    new: Fingerprint | None
    reason: str | None = None

    def describe(self) -> str:
        """One clause: the store and what differs (``X was built with a=1, this run has
        a=2``)."""
        name = _display(self.path)
        if self.old is None:
            return f"{name} has no fingerprint (built by an older version of gpp-cubes)"
        diffs = differences(self.old, self.new) if self.new is not None else []
        if diffs:
            shown = diffs[:4] + ([("...", "", "")] if len(diffs) > 4 else [])
            was = ", ".join(k if k == "..." else f"{k}={_show(o)}" for k, o, _ in shown)
            has = ", ".join(k if k == "..." else f"{k}={_show(n)}" for k, _, n in shown)
            return f"{name} was built with {was}, this run has {has}"
        if self.reason:
            return f"{name} is made from stores that change ({self.reason})"
        return (f"{name} was built with fingerprint {self.old.hash}, this run has "
                f"{self.new.hash if self.new else 'another'}")


def _display(path: Location) -> str:
    if is_url(path):
        return display(path)
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def stale_message(stale: Sequence[StaleStore]) -> str:
    """The one line that stops a build: the first stale store, and how to go on."""
    more = len(stale) - 1
    extra = f" (and {more} other store{'s' if more > 1 else ''})" if more else ""
    return (f"{stale[0].describe()}{extra}; rerun with --rebuild-changed to rebuild what "
            "changed (or --force to rebuild everything, or choose another --out)")


def plan_resume(cfg: Any, sites: Sequence[Any]) -> list[StaleStore]:
    """The complete stores of ``sites`` this run must rebuild, in dependency order.

    Phase-1 stores whose fingerprint differs; the PCA if its train years, version or the
    S2 stores of this run's sites it was fitted on differ (or are rebuilt); a site store if
    its own values or inputs differ, an input is rebuilt or the PCA is refitted. A site
    store whose PCA file is gone (``.work`` removed) is judged by the PCA ``--pca`` names
    (``cfg.pca_from``), else by the PCA it recorded.
    Stores without a fingerprint are stale. ``features.zarr`` is not listed: the build
    rewrites it whenever the site stores it combines change.

    Parameters
    ----------
    cfg : BuildConfig
    sites : sequence of gpp_cubes.sites.Site

    Returns
    -------
    list of StaleStore
        Empty when every complete store can be reused.
    """
    from gpp_cubes.cube.store import is_complete

    stale: list[StaleStore] = []
    planned: dict[tuple[str, str], Fingerprint] = {}
    rebuilt: set[tuple[str, str]] = set()
    for m in sites:
        for sensor in PHASE1:
            fp = planned[(m.id, sensor)] = phase1_fingerprint(cfg, m, sensor)
            path = cfg.phase1_store(m.id, sensor)
            if is_complete(path):
                old = read_fingerprint(path)
                if old is None or old.hash != fp.hash:
                    stale.append(StaleStore(path, old, fp))
                    rebuilt.add((m.id, sensor))

    pca_path = cfg.pca_path()
    pca: Fingerprint | None = None  # the PCA this run's site stores will be made with
    refit = False
    if pca_path.is_file():
        _, old = read_pca_sidecar(pca_path)
        if old is None:
            stale.append(StaleStore(pca_path, None, None))
            refit = True
        else:
            ids = {m.id for m in sites}
            fitted = sorted(k.removeprefix("input.s2/") for k in old.values
                            if k.startswith("input.s2/"))
            s2 = {s: planned[(s, "s2")] if s in ids else old.input(f"s2/{s}") for s in fitted}
            expected = pca_fingerprint(cfg, s2)
            again = [s for s in fitted if (s, "s2") in rebuilt]
            if expected.hash != old.hash or again:
                stale.append(StaleStore(pca_path, old, expected, reason=(
                    f"S2 store of {', '.join(again)} rebuilt" if again else None)))
                refit = True
            else:
                pca = old
    elif getattr(cfg, "pca_sha256", None):
        # --pca FROM with .work removed: the PCA the site stores will be made with is known
        # from FROM's content alone, so a store made with another PCA is stale.
        pca = pca_fingerprint(cfg, {})

    for m in sites:
        path = cfg.site_store(m.id)
        if not is_complete(path):
            continue
        old = read_fingerprint(path)
        if old is None:
            stale.append(StaleStore(path, None, None))
            continue
        if refit:
            stale.append(StaleStore(path, old, None, reason="the PCA is refitted"))
            continue
        inputs = {s: planned[(m.id, s)] for s in PHASE1}
        fp = site_fingerprint(cfg, m, {**inputs, "pca": pca or old.input("pca")})
        again = [s for s in PHASE1 if (m.id, s) in rebuilt]
        if fp.hash != old.hash or again:
            stale.append(StaleStore(path, old, fp, reason=(
                f"phase-1 {', '.join(again)} rebuilt" if again else None)))
    return stale
