"""``gpp sites``: browse the site catalog and apply the paper's site rules.

The rules' thresholds in the help text are :mod:`gpp_cubes.paper`'s, the defaults of
:class:`gpp_cubes.sites.selection.SelectionRules`.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gpp_cubes import paper
from gpp_cubes.cli.common import (
    ConfigOption,
    DebugOption,
    UsageError,
    console,
    guarded,
    print_json,
    progress_bar,
)

sites_app = typer.Typer(
    name="sites",
    help="The flux-tower site catalog and the paper's site-selection rules.",
    no_args_is_help=True,
)

CatalogOption = typer.Option(
    None, "--catalog", help="Another GeoJSON site catalog (default: the packaged one).")


def _fmt(value, spec: str = "") -> str:
    """Format a table cell; unknown values stay empty, text is markup-escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return escape(format(value, spec))


@sites_app.command(
    "list",
    help="List the catalog stations (or the current study set with --study).",
    epilog="Example: gpp sites list --status candidate (as JSON for jq: gpp sites list --json)",
)
def list_cmd(
    status: str | None = typer.Option(
        None, "--status", help="Only stations with this status: candidate, excluded."),
    study: bool = typer.Option(
        False, "--study",
        help="List the study set of a selection table (--selection FILE or "
             "$GPP_CUBES_SELECTION)."),
    selection: Path | None = typer.Option(
        None, "--selection", help="Selection table of 'gpp sites select --output FILE' "
        "(with --study)."),
    catalog: Path | None = CatalogOption,
    as_json: bool = typer.Option(
        False, "--json",
        help="Print one JSON array of objects (every catalog field of each station; unknown "
             "values null) on stdout instead of the table; notes go to stderr."),
    config: Path | None = ConfigOption,
    debug: bool = DebugOption,
) -> None:
    from dataclasses import asdict

    from gpp_cubes.sites.catalog import STATUSES, load_sites, study_sites

    def run() -> None:
        if status is not None and status not in STATUSES:
            raise UsageError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
        message = None
        if study:
            sites, message = study_sites(selection)
        else:
            sites = load_sites(catalog)
        if status:
            sites = [s for s in sites if s.status == status]
        if as_json:
            print_json([asdict(s) for s in sites])
            if message:
                console.print(escape(message), soft_wrap=True)
            return
        table = Table(title=f"{len(sites)} site(s)")
        for col in ("site", "name", "country", "lat [°]", "lon [°]", "elev [m]", "IGBP",
                    "years", "status", "reason"):
            table.add_column(col, overflow="fold")
        for s in sites:
            years = f"{_fmt(s.year_start)}-{_fmt(s.year_end)}" if s.year_start else ""
            reason = s.status_reason if s.status == "excluded" else ""
            table.add_row(s.id, _fmt(s.name), _fmt(s.country), _fmt(s.latitude, ".4f"),
                          _fmt(s.longitude, ".4f"), _fmt(s.elevation_m, "g"), _fmt(s.igbp),
                          years, s.status, _fmt(reason))
        out = Console()
        out.print(table)
        if message:
            out.print(escape(message), soft_wrap=True)

    guarded(run, debug=debug, stage="sites list")


@sites_app.command(
    "show",
    help="Show every catalog field of one station, with its source.",
    epilog="Example: gpp sites show DE-Hai",
)
def show_cmd(
    site: str = typer.Argument(..., help="Station id, e.g. DE-Hai."),
    config: Path | None = ConfigOption,
    debug: bool = DebugOption,
) -> None:
    from dataclasses import asdict

    from gpp_cubes.sites.catalog import get_site

    def run() -> None:
        s = get_site(site)
        table = Table(title=s.id, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in asdict(s).items():
            table.add_row(key, "(unknown)" if value is None else _fmt(value))
        Console().print(table)

    guarded(run, debug=debug, stage="sites show")


@sites_app.command(
    "select",
    help=(
        f"Apply the paper's site rules (>= {paper.MIN_FOREST_FRACTION * 100:.0f} % forest and no "
        f"artificial CORINE class within {paper.RADIUS_M / 1000:g} km, inside Europe, "
        f">= {paper.MIN_VALID_GPP_FRACTION * 100:.0f} % valid daily GPP in "
        f"{paper.STUDY_START[:4]}-{paper.STUDY_END[:4]}) to every catalog station, "
        "print the per-site criteria and save the study set that '--sites all' then means."
    ),
    epilog=(
        "Example: gpp sites select --corine U2018_CLC2018_V2020_20u1.tif "
        "--fluxnet ww2020/ --output selection.csv"
    ),
)
def select_cmd(
    corine: str = typer.Option(
        ..., "--corine", help="CORINE 2018 raster: local path, URL or /vsicurl/ path."),
    fluxnet: Path = typer.Option(
        ..., "--fluxnet", help="Directory with the FLUXNET2015-format DD files or zips."),
    output: Path | None = typer.Option(
        None, "--output",
        help="Where to save the selection table, e.g. OUT/selection.csv, which 'gpp "
             "build --sites all --out OUT' reads (default: $GPP_CUBES_SELECTION; one of "
             "the two is required)."),
    site: list[str] = typer.Option(
        [], "--site", metavar="SITE", help="Check only these stations (repeatable); default all."),
    catalog: Path | None = CatalogOption,
    config: Path | None = ConfigOption,
    debug: bool = DebugOption,
) -> None:
    from gpp_cubes.sites.catalog import (
        default_selection_path,
        get_site,
        load_sites,
        validate_site_id,
    )
    from gpp_cubes.sites.selection import save_selection, select_sites

    def run() -> None:
        if output is None and default_selection_path() is None:
            raise UsageError("give --output FILE (e.g. OUT/selection.csv, which 'gpp build "
                             "--sites all --out OUT' reads) or set $GPP_CUBES_SELECTION")
        if site:
            if catalog is None:
                sites = [get_site(s) for s in site]
            else:
                wanted = {validate_site_id(s) for s in site}
                sites = [s for s in load_sites(catalog) if s.id in wanted]
        else:
            sites = load_sites(catalog)
        with progress_bar() as bar:
            task = bar.add_task("checking sites", total=len(sites))
            table = select_sites(sites, corine, fluxnet,
                                 progress=lambda s: bar.advance(task))
        path = save_selection(table, output)
        view = Table(title="Site selection (Montero et al. 2024, section 2.1)")
        for col in ("site", "IGBP", "Europe", "forest [%]", "artificial [px]",
                    "valid GPP [%]", "verdict", "reason"):
            view.add_column(col, overflow="fold")
        for r in table.itertuples():
            view.add_row(
                r.site_id, _fmt(r.igbp), "yes" if r.pass_europe else "no",
                _fmt(100 * r.forest_fraction, ".1f"), _fmt(r.artificial_pixels, ".0f"),
                _fmt(100 * r.valid_fraction, ".1f"),
                "[green]pass[/]" if r.verdict == "pass" else "[red]fail[/]", _fmt(r.reason),
            )
        out = Console()
        out.print(view)
        n_pass = int((table["verdict"] == "pass").sum())
        out.print(f"{n_pass} of {len(table)} sites pass; selection saved to {escape(str(path))}")

    guarded(run, debug=debug, stage="sites select")


def register(app: typer.Typer) -> None:
    """Add the ``sites`` command group to the ``gpp`` app."""
    app.add_typer(sites_app, name="sites")
