"""A per-site summary of a served demo world, read back through the real code paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from gpp_cubes.paper import STUDY_END, STUDY_START

from .serve import ServedWorld
from .world import COLLECTIONS


def default_world_dir() -> Path:
    """Where ``gpp demo`` keeps the generated world: ``$GPP_DEMO_DIR`` or
    ``$XDG_CACHE_HOME/gpp-cubes/demo-world`` (``~/.cache/...``)."""
    if os.environ.get("GPP_DEMO_DIR"):
        return Path(os.environ["GPP_DEMO_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "gpp-cubes" / "demo-world"


def summary(served: ServedWorld, start: str = STUDY_START, end: str = STUDY_END
            ) -> pd.DataFrame:
    """Search every site of a served world and summarise what a user would get.

    For each site: the number of items the STAC API returns per collection for the site
    grid's bounding box over the world's dates (pystac-client, POST paging), the valid
    fraction of daily GPP over ``start``..``end`` after the FLUXNET filters
    (``gpp_cubes.targets.fluxnet``), and the climate-induced extreme events detected in it
    (``gpp_cubes.targets.extremes``), next to the planted droughts.

    Parameters
    ----------
    served : ServedWorld
        A world being served (:func:`gpp_cubes.demo.serve_world`).
    start, end : str
        Period of the GPP valid fraction (the paper's 2016-2020).

    Returns
    -------
    pandas.DataFrame
        One row per site: ``site``, ``igbp``, ``<collection>`` item counts,
        ``gpp_valid_fraction`` [0-1], ``extreme_events`` (detected, "start..end" list),
        ``planted_droughts``.
    """
    import pystac_client

    from gpp_cubes.sites.grid import site_grid
    from gpp_cubes.targets.extremes import detect_extremes
    from gpp_cubes.targets.fluxnet import gpp_targets, read_fluxnet, valid_fraction

    world = served.world
    client = pystac_client.Client.open(served.stac_url)
    dt = f"{world.config.start}/{world.config.end}"
    rows: list[dict[str, Any]] = []
    for site in world.sites:
        bbox = site_grid(site.latitude, site.longitude).bbox_wgs84()
        row: dict[str, Any] = {"site": site.site_id, "igbp": site.igbp}
        for cid in COLLECTIONS:
            search = client.search(collections=[cid], bbox=bbox, datetime=dt, limit=250)
            row[cid] = sum(1 for _ in search.items())
        gpp = gpp_targets(read_fluxnet(world.fluxnet_path(site.site_id)), start=start, end=end)
        row["gpp_valid_fraction"] = round(valid_fraction(gpp), 3)
        events = detect_extremes(gpp).events
        row["extreme_events"] = "; ".join(
            f"{pd.Timestamp(s):%Y-%m-%d}..{pd.Timestamp(e):%Y-%m-%d}"
            for s, e in zip(events["start"], events["end"], strict=True))
        planted = world.truth.extremes[world.truth.extremes["site"] == site.site_id]
        row["planted_droughts"] = "; ".join(
            f"{s}..{e}" for s, e in zip(planted["start"], planted["end"], strict=True))
        rows.append(row)
    return pd.DataFrame(rows)
