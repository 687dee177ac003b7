"""The paper's site-selection rules as code (Montero et al., 2024, section 2.1).

A site passes when all four criteria hold (thresholds: :class:`SelectionRules`, whose
defaults are the paper's, :mod:`gpp_cubes.paper`):

1. **europe** - the tower lies inside Europe (:func:`gpp_cubes.sites.catalog.in_europe`);
2. **forest** - at least 70 % of the CORINE 2018 pixels within 1 km of the tower are forest
   (classes 311, 312, 313);
3. **artificial** - no artificial-surface pixel (CLC 1xx) lies within that 1 km buffer;
4. **valid_gpp** - at least 60 % of the days 2016-2020 have a valid daily GPP
   (:func:`gpp_cubes.targets.fluxnet.gpp_targets`).

The buffer is evaluated on the site grid (UTM, 10 m by default; CORINE's 100 m pixels are
resampled to it by nearest neighbour): a grid pixel belongs to the buffer when its centre lies
within ``buffer_m`` of the tower. The forest fraction is forest pixels / buffer pixels, CORINE
no-data pixels counting as not forest (their share is reported).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gpp_cubes import paper
from gpp_cubes.atomic import atomic_path
from gpp_cubes.errors import GppError, SiteError
from gpp_cubes.sites.catalog import Site, default_selection_path, in_europe


@dataclass(frozen=True)
class SelectionRules:
    """Thresholds of the site rules; the defaults are the paper's (section 2.1).

    Attributes
    ----------
    buffer_m : float
        Buffer radius around the tower [m]; default :data:`gpp_cubes.paper.RADIUS_M`.
    min_forest_fraction : float
        Minimum forest share of the buffer [0-1]; default
        :data:`gpp_cubes.paper.MIN_FOREST_FRACTION`.
    max_artificial_pixels : int
        Largest number of artificial (1xx) grid pixels tolerated in the buffer; default
        :data:`gpp_cubes.paper.MAX_ARTIFICIAL_PIXELS`.
    min_valid_fraction : float
        Minimum share of days with valid GPP over ``start``..``end`` [0-1]; default
        :data:`gpp_cubes.paper.MIN_VALID_GPP_FRACTION`.
    start, end : str
        Study period (inclusive); default :data:`gpp_cubes.paper.STUDY_START`,
        :data:`gpp_cubes.paper.STUDY_END`.
    qc_min : float
        Minimum daily ``NEE_VUT_REF_QC`` [0-1]; default :data:`gpp_cubes.paper.QC_MIN`.
    resolution : float
        Site-grid pixel size [m].
    """

    buffer_m: float = paper.RADIUS_M
    min_forest_fraction: float = paper.MIN_FOREST_FRACTION
    max_artificial_pixels: int = paper.MAX_ARTIFICIAL_PIXELS
    min_valid_fraction: float = paper.MIN_VALID_GPP_FRACTION
    start: str = paper.STUDY_START
    end: str = paper.STUDY_END
    qc_min: float = paper.QC_MIN
    resolution: float = 10.0


COLUMNS = [
    "site_id", "name", "igbp", "latitude", "longitude",
    "in_europe", "forest_fraction", "artificial_pixels", "nodata_fraction", "valid_fraction",
    "pass_europe", "pass_forest", "pass_artificial", "pass_valid_gpp",
    "verdict", "reason", "fluxnet_file",
]


def buffer_stats(codes, grid, buffer_m: float = paper.RADIUS_M) -> dict[str, float]:
    """Forest share, artificial pixel count and no-data share within the tower buffer.

    Parameters
    ----------
    codes : xarray.DataArray or numpy.ndarray
        CLC codes on ``grid`` (:func:`gpp_cubes.sites.corine.read_corine`), 0 = no data.
    grid : SiteGrid
        The site grid.
    buffer_m : float, default :data:`gpp_cubes.paper.RADIUS_M`
        Buffer radius [m]; pixels whose centre is within it count.

    Returns
    -------
    dict
        ``forest_fraction`` [0-1], ``artificial_pixels`` [count], ``nodata_fraction`` [0-1],
        ``n_pixels`` [count].
    """
    from gpp_cubes.sites.corine import NODATA, artificial_mask, forest_mask

    values = np.asarray(codes)
    inside = grid.distance_to_tower() <= buffer_m
    n = int(inside.sum())
    if n == 0:
        raise ValueError(f"no grid pixel centre within {buffer_m} m of the tower")
    return {
        "forest_fraction": float(forest_mask(values)[inside].sum() / n),
        "artificial_pixels": int(artificial_mask(values)[inside].sum()),
        "nodata_fraction": float((values[inside] == NODATA).sum() / n),
        "n_pixels": n,
    }


def _corine_criteria(site: Site, corine_source, rules: SelectionRules) -> tuple[dict, list]:
    from gpp_cubes.sites.corine import read_corine
    from gpp_cubes.sites.grid import site_grid

    grid = site_grid(site.latitude, site.longitude, buffer_m=rules.buffer_m,
                     resolution=rules.resolution)
    try:
        codes = read_corine(corine_source, grid, site_id=site.id)
    except SiteError as err:
        return ({"forest_fraction": np.nan, "artificial_pixels": np.nan,
                 "nodata_fraction": np.nan}, [f"outside CORINE coverage ({err})"])
    stats = buffer_stats(codes, grid, rules.buffer_m)
    reasons = []
    if stats["forest_fraction"] < rules.min_forest_fraction:
        reasons.append(f"forest {stats['forest_fraction']:.1%} < "
                       f"{rules.min_forest_fraction:.0%} within {rules.buffer_m:g} m")
    if stats["artificial_pixels"] > rules.max_artificial_pixels:
        reasons.append(f"{stats['artificial_pixels']} artificial (CLC 1xx) pixel(s) within "
                       f"{rules.buffer_m:g} m")
    return stats, reasons


def _gpp_criterion(site: Site, fluxnet_dir, rules: SelectionRules
                   ) -> tuple[float, str | None, str | None]:
    from gpp_cubes.targets.fluxnet import (
        find_fluxnet_file,
        gpp_targets,
        read_fluxnet,
        valid_fraction,
    )

    path = find_fluxnet_file(fluxnet_dir, site.id)
    if path is None:
        return np.nan, None, "no FLUXNET file"
    try:
        gpp = gpp_targets(read_fluxnet(path), rules.start, rules.end, qc_min=rules.qc_min)
    except GppError as err:
        return np.nan, str(path), f"unreadable FLUXNET file: {err}"
    frac = valid_fraction(gpp)
    reason = None
    if frac < rules.min_valid_fraction:
        reason = (f"valid GPP {frac:.1%} < {rules.min_valid_fraction:.0%} "
                  f"in {rules.start[:4]}-{rules.end[:4]}")
    return frac, str(path), reason


def select_sites(sites: Iterable[Site], corine_source: str | Path, fluxnet_dir: str | Path,
                 rules: SelectionRules | None = None,
                 progress: Callable[[Site], None] | None = None) -> pd.DataFrame:
    """Apply the paper's site rules to every site.

    Parameters
    ----------
    sites : iterable of Site
        Sites to check (e.g. :func:`gpp_cubes.sites.catalog.load_sites`).
    corine_source : str or Path
        CORINE 2018 raster, local or URL (:func:`gpp_cubes.sites.corine.read_corine`).
    fluxnet_dir : str or Path
        Directory holding the FLUXNET2015-format daily files or per-site archives.
    rules : SelectionRules, optional
        Thresholds (default: the paper's).
    progress : callable, optional
        Called with each site after it was checked.

    Returns
    -------
    pandas.DataFrame
        One row per site with the columns :data:`COLUMNS`: each criterion's value
        (``forest_fraction`` [0-1], ``artificial_pixels`` [count], ``valid_fraction`` [0-1]),
        ``pass_*`` booleans, ``verdict`` ("pass"/"fail") and ``reason`` (every failed
        criterion, "; "-separated). A site without a FLUXNET file fails ``valid_gpp`` with
        reason "no FLUXNET file"; a site the raster does not cover fails ``forest`` and
        ``artificial`` with reason "outside CORINE coverage".

    References
    ----------
    Montero, D. et al. (2024). Recurrent neural networks for modelling gross primary
    production, section 2.1.
    """
    rules = rules or SelectionRules()
    if not Path(fluxnet_dir).is_dir():
        raise FileNotFoundError(f"FLUXNET directory not found: {fluxnet_dir}")
    rows = []
    for site in sites:
        europe = in_europe(site.latitude, site.longitude)
        stats, corine_reasons = _corine_criteria(site, corine_source, rules)
        covered = not np.isnan(stats["forest_fraction"])
        pass_forest = covered and stats["forest_fraction"] >= rules.min_forest_fraction
        pass_art = covered and stats["artificial_pixels"] <= rules.max_artificial_pixels
        frac, path, gpp_reason = _gpp_criterion(site, fluxnet_dir, rules)
        reasons = ([] if europe else ["outside Europe"]) + corine_reasons
        if gpp_reason:
            reasons.append(gpp_reason)
        passed = europe and pass_forest and pass_art and gpp_reason is None
        rows.append({
            "site_id": site.id, "name": site.name, "igbp": site.igbp,
            "latitude": site.latitude, "longitude": site.longitude,
            "in_europe": europe, "forest_fraction": stats["forest_fraction"],
            "artificial_pixels": stats["artificial_pixels"],
            "nodata_fraction": stats["nodata_fraction"], "valid_fraction": frac,
            "pass_europe": europe, "pass_forest": bool(pass_forest),
            "pass_artificial": bool(pass_art), "pass_valid_gpp": gpp_reason is None,
            "verdict": "pass" if passed else "fail", "reason": "; ".join(reasons),
            "fluxnet_file": path,
        })
        if progress is not None:
            progress(site)
    return pd.DataFrame(rows, columns=COLUMNS)


def save_selection(table: pd.DataFrame, path: str | Path | None = None) -> Path:
    """Write a selection table as CSV where :func:`gpp_cubes.sites.catalog.study_sites` reads it.

    The file is written atomically (:mod:`gpp_cubes.atomic`), so a crash never leaves a
    half-written study set.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`select_sites`.
    path : str or Path, optional
        Default :func:`gpp_cubes.sites.catalog.default_selection_path` (``$GPP_CUBES_SELECTION``);
        without either, a :class:`~gpp_cubes.errors.ConfigError`.
    """
    path = Path(path) if path else _named_selection_path()
    missing = {"site_id", "latitude", "longitude", "verdict"} - set(table.columns)
    if missing:
        raise ValueError(f"selection table lacks column(s) {', '.join(sorted(missing))}")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return path


def load_selection(path: str | Path | None = None) -> pd.DataFrame:
    """Read a selection table written by :func:`save_selection`."""
    path = Path(path) if path else _named_selection_path()
    return pd.read_csv(path)


def _named_selection_path() -> Path:
    path = default_selection_path()
    if path is None:
        from gpp_cubes.errors import ConfigError

        raise ConfigError("no path for the selection table: give one (gpp sites select "
                          "--output FILE, e.g. OUT/selection.csv of the build) or set "
                          "$GPP_CUBES_SELECTION")
    return path
