"""Scenes that fail to read: dropped explicitly, named, counted, and the one rule that fails a site.

A read that still fails after its retries (:mod:`gpp_cubes.stac.readers`) must never become
nodata silently. :func:`compute_dropping` computes a block of time steps at once and, only
when that raises, each step on its own, so a bad scene costs its own time step and nothing
else. Every item it drops gets a reason from :func:`failure_reason`, ``"unreadable: ..."``
(the ``"<category>: <detail>"`` format of :func:`gpp_cubes.contract.reason_category`).
:func:`check_failed_fraction` is the rule every stage applies afterwards: a site fails when
more than ``max_failed_fraction`` of its scenes failed, or when none is left. S1, LST and
both Sentinel-2 paths (the lazy cube and the streamed features) use these three.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from gpp_cubes.errors import BuildError, GppError
from gpp_cubes.secrets import redact

log = logging.getLogger(__name__)

#: Default largest fraction of a site's scenes that may fail before the site fails [0-1].
MAX_FAILED_FRACTION = 0.2

S = TypeVar("S")
T = TypeVar("T")


def failure_reason(err: BaseException, what: str = "read failed") -> str:
    """Why an item was dropped: ``"unreadable: <what> (<error type>): <message>"``.

    The message is redacted (:func:`gpp_cubes.secrets.redact`) and cut to 200 characters.
    """
    return f"unreadable: {what} ({type(err).__name__}): {redact(str(err))[:200]}"


def compute_dropping(steps: Sequence[S], compute: Callable[[list[S]], T],
                     item_ids: Callable[[S], Sequence[str]], *, where: str
                     ) -> tuple[list[tuple[list[S], T]], dict[str, str]]:
    """``compute(steps)``; when it raises, ``compute([step])`` for each step, dropping failures.

    Parameters
    ----------
    steps : sequence
        Time steps (indices, item groups...) computed together.
    compute : callable
        Computes a list of steps. A :class:`~gpp_cubes.errors.GppError` it raises is ours
        (e.g. a site that failed), never a read failure, and propagates.
    item_ids : callable
        The item ids of one step, for the reasons and the log.
    where : str
        ``"site 'DE-Hai'"``, for the log.

    Returns
    -------
    (results, dropped) : (list of (steps, result), dict)
        One ``(steps, compute(steps))`` pair, or one per step that could be computed, in
        order; item id -> :func:`failure_reason` for the steps that could not.
    """
    steps = list(steps)
    try:
        return [(steps, compute(steps))], {}
    except GppError:
        raise
    except Exception as err:  # RasterioIOError, CPLE_*, ... after the retries
        first = err
    if len(steps) > 1:
        log.info("%s: a read failed (%s); computing its %d time steps one by one", where,
                 type(first).__name__, len(steps))
    done: list[tuple[list[S], T]] = []
    dropped: dict[str, str] = {}
    for step in steps:
        try:
            if len(steps) == 1:
                raise first
            done.append(([step], compute([step])))
        except GppError:
            raise
        except Exception as err:
            why = failure_reason(err)
            ids = list(item_ids(step))
            log.warning("%s: dropping time step of %s: %s", where, " ".join(ids), why)
            dropped.update(dict.fromkeys(ids, why))
    return done, dropped


def check_failed_fraction(dropped: Mapping[str, str], n_all: int, max_failed_fraction: float,
                          where: str, *, any_left: bool = True) -> None:
    """Raise when more than ``max_failed_fraction`` of ``n_all`` scenes failed, or none is left.

    Parameters
    ----------
    dropped : mapping
        Item id -> reason of every failed item counted against ``n_all``.
    n_all : int
        Items the fraction refers to.
    max_failed_fraction : float
        Largest tolerated fraction of failed items [0-1].
    where : str
        ``"site 'DE-Hai'"``, named in the error.
    any_left : bool, default True
        False when nothing readable is left (fails the site whatever the fraction).

    Raises
    ------
    BuildError
        Naming the site, the counts and the first three failures with their reasons.
    """
    if n_all and len(dropped) / n_all > max_failed_fraction:
        raise BuildError(
            f"{where}: {len(dropped)} of {n_all} scenes failed (more than "
            f"{max_failed_fraction:.0%}); first: "
            + "; ".join(f"{k}: {v}" for k, v in list(dropped.items())[:3]))
    if not any_left:
        raise BuildError(f"{where}: no readable STAC item among {n_all}")
