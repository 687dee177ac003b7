"""``gpp build``: build the daily feature cubes of many sites on Dask."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from gpp_cubes.batch.config import config_default, parse_years
from gpp_cubes.cli.common import (
    ConfigOption,
    DebugOption,
    UsageError,
    console,
    guarded,
    print_json,
    progress_bar,
)

EXAMPLES = """\
Examples:

  gpp build --demo --out cubes/          # the offline demo world, served for the build

  gpp build --sites DE-Hai,BE-Vie --out /data/cubes --corine /data/clc2018.tif
  --fluxnet /data/fluxnet --workers 2

  gpp build --sites all --out /shared/cubes --scheduler tcp://10.0.0.5:8786 ...

  gpp build --sites all --protocol paper --out cubes-paper/ ...   # the paper's data choices

  gpp build --at 50.95,13.57,XX-Thr --no-targets --pca cubes/ --out new/ ...  # no tower

  gpp build --sites all --out s3://bucket/cubes --scheduler tcp://10.0.0.5:8786 ...
"""


class CloudMask(StrEnum):
    """``--cloud-mask`` values (:data:`gpp_cubes.batch.config.CLOUD_MASKS`)."""

    scl = "scl"
    s2cloudless = "s2cloudless"
    cloudsen12 = "cloudsen12"


class ExtremesThreshold(StrEnum):
    """``--extremes-threshold`` values."""

    negative_tail = "negative-tail"
    all_anomalies = "all-anomalies"


class LstSource(StrEnum):
    """``--lst-source`` values."""

    stac = "stac"
    earthengine = "earthengine"


class Protocol(StrEnum):
    """``--protocol`` values (:data:`gpp_cubes.batch.config.PROTOCOLS`)."""

    ours = "ours"
    paper = "paper"


#: ``--extremes-threshold`` values -> ``BuildConfig.extremes_method``.
EXTREMES_READINGS = {"negative-tail": "negative_tail", "all-anomalies": "quantile"}
#: ``--lst-source`` values -> ``BuildConfig.lst_source``.
LST_READINGS = {"stac": "stac", "earthengine": "ee"}


def _s2_options(max_sun_zenith: float | None, cloud_mask: str | None,
                cloud_model: Path | None, index_list: str | None) -> dict[str, Any]:
    """The S2 options given on the command line (:func:`gpp_cubes.batch.BuildConfig.create`
    applies the protocol to those not given, completes and checks them)."""
    from gpp_cubes.paper import INDEX_LISTS

    opts: dict[str, Any] = {}
    if cloud_mask is not None:
        opts["cloud_mask"] = cloud_mask.lower()
    if max_sun_zenith is not None:
        opts["max_sun_zenith"] = max_sun_zenith
    if cloud_model is not None:
        opts["cloud_model"] = str(cloud_model)
    if index_list is not None:
        opts["index_list"] = index_list if index_list in INDEX_LISTS else Path(index_list)
    return opts


def parse_point(spec: str) -> Any:
    """``--at LAT,LON`` or ``LAT,LON,NAME`` -> an ad hoc :class:`gpp_cubes.sites.Site`
    (:func:`gpp_cubes.sites.catalog.point_site`, as :func:`~gpp_cubes.sites.as_site` makes
    of ``(lat, lon)``; NAME is its id, default ``XX-Pnt``).

    Raises
    ------
    UsageError
        Not two numbers [degrees], or a NAME that is not a site id (``XX-Abc``).
    """
    from gpp_cubes.errors import SiteError
    from gpp_cubes.sites.catalog import point_site

    parts = [p.strip() for p in spec.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--at {spec!r}: expected LAT,LON or LAT,LON,NAME in degrees, e.g. "
                         "--at 50.95,13.57,XX-Thr") from None
    try:
        return point_site(lat, lon, **({"site_id": parts[2]} if len(parts) == 3 else {}))
    except SiteError as err:
        raise UsageError(f"--at {spec!r}: {err}") from None


def _parse_sites(spec: str, *, out: Path | None = None,
                 selection: Path | None = None) -> list[str]:
    from gpp_cubes.sites.catalog import study_sites, validate_site_id

    if spec.strip().lower() == "all":
        sites, message = study_sites(selection, out_dir=out)
        if message:
            console.print(message)
        return [s.id for s in sites]
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids:
        raise UsageError("--sites is empty; give 'all' or ids like DE-Hai,BE-Vie")
    return [validate_site_id(s) for s in ids]


def demo_stac_identity(world: Any) -> str:
    """The demo world's STAC endpoint in fingerprints: the world, not the port it is served
    on this time (a fresh one every run), so a rerun reuses the stores it may reuse."""
    return f"demo world {world.root} ({world.config.digest()})"


@contextlib.contextmanager
def _demo_inputs() -> Iterator[dict[str, Any]]:
    """Generate (or reuse) the demo world and serve it for the duration of the build."""
    from gpp_cubes.demo import DemoConfig, default_world_dir, generate_world, serve_world

    world = generate_world(default_world_dir(), DemoConfig())
    with serve_world(world) as served:
        yield {"sites": [s.site_id for s in world.sites], "stac_url": served.stac_url,
               "stac_identity": demo_stac_identity(world),
               "provider": "custom", "corine_source": str(world.corine_path),
               "fluxnet_dir": str(world.fluxnet_dir), "start": world.config.start,
               "end": world.config.end}


class SiteProgress:
    """Rich progress: one bar per site, one step per build stage done (or skipped).

    ``progress`` is a started :func:`~gpp_cubes.cli.common.progress_bar`, or a function
    that opens one, called at the first event (see :func:`site_progress`).
    """

    def __init__(self, progress: Any | Callable[[], Any], site_ids: list[str]) -> None:
        from gpp_cubes.batch import STAGES

        lazy = callable(progress) and not hasattr(progress, "add_task")
        self._open = progress if lazy else None
        self._lock = threading.Lock()  # events arrive on the Dask client's thread too
        self.progress = None if lazy else progress
        self.stages = STAGES
        self.site_ids = site_ids
        self.done: dict[str, set[str]] = {s: set() for s in site_ids}
        self.tasks: dict[str, Any] = {}
        if self.progress is not None:
            self._add_tasks()

    def _add_tasks(self) -> None:
        self.tasks = {s: self.progress.add_task(f"{s}: waiting", total=len(self.stages))
                      for s in self.site_ids}

    def __call__(self, site: str, stage: str, state: str) -> None:
        with self._lock:
            if self.progress is None and self._open is not None:
                self.progress = self._open()
                self._add_tasks()
        task = self.tasks.get(site)
        if task is None:
            return
        if state == "start":
            self.progress.update(task, description=f"{site}: {stage}")
            return
        if state == "fail":
            self.progress.update(task, description=f"[red]{site}: failed in {stage}")
            return
        if state == "skip" and stage == "write":  # the whole site was complete
            self.done[site].update(self.stages)
        self.done[site].add(stage)
        n = len(self.done[site] & set(self.stages))
        label = "complete" if n == len(self.stages) else f"{stage} {state}"
        self.progress.update(task, completed=n, description=f"{site}: {label}")


@contextlib.contextmanager
def site_progress(site_ids: list[str]) -> Iterator[SiteProgress]:
    """A :class:`SiteProgress` whose display opens at the build's first event, so a build
    that stops before it starts (a changed store, a missing input) prints its error only."""
    with contextlib.ExitStack() as stack:
        yield SiteProgress(lambda: stack.enter_context(progress_bar()), site_ids)


def print_build_table(table: Any, out_dir: Path) -> None:
    first = table.iloc[0].to_dict() if len(table) else {}
    said = [f"{k} {first[k]}" for k in ("protocol", "targets")
            if isinstance(first.get(k), str)]
    t = Table(title=f"feature cubes in {out_dir}", caption=", ".join(said) or None)
    for col in ("site", "status", "S2 found/kept", "S1 found/kept", "LST found/kept",
                "clear", "GPP valid", "error"):
        t.add_column(col, overflow="fold")

    def fk(r: Any, a: str) -> str:
        f, k = r.get(f"{a}_found"), r.get(f"{a}_kept")
        return "" if f is None or f != f else f"{int(f)}/{int(k)}"

    def pct(v: Any) -> str:
        return "" if v is None or v != v else f"{100 * float(v):.0f} %"

    def qa(r: Any) -> str:  # S2 time steps and S1/LST/GHI values (gpp_cubes.qa)
        def n(k: str) -> int:
            v = r.get(k)
            return 0 if v is None or v != v else int(v)

        said = [f"{n(f's2_qa_{k}')} S2 scenes and {n(f'qa_values_{k}')} values {k}"
                for k in ("dropped", "flagged")
                if n(f"s2_qa_{k}") or n(f"qa_values_{k}")]
        return f"{r['site']}: feature QA {'; '.join(said)}" if said else ""

    for r in table.to_dict("records"):
        style = {"failed": "red", "built": "green", "skipped": "cyan"}.get(r["status"], "")
        t.add_row(r["site"], f"[{style}]{r['status']}[/]" if style else str(r["status"]),
                  fk(r, "s2"), fk(r, "s1"), fk(r, "lst"), pct(r.get("clear_fraction")),
                  pct(r.get("gpp_valid_fraction")), r.get("error") or "")
    Console().print(t)
    notes = [qa(r) for r in table.to_dict("records") if qa(r)]
    for note in notes:
        Console().print(note)
    if notes:
        Console().print(f"reasons: {out_dir}/logs/<SITE>.log and the stores' provenance 'qa'")


def register(app: typer.Typer) -> None:
    """Add ``gpp build`` to the CLI."""

    @app.command(
        "build",
        help="Build the daily feature cubes (S2 PCs, S1, LST, clear-sky GHI, GPP) of many "
             "sites on Dask; resumable, one log per site in OUT/logs/.",
        epilog=EXAMPLES,
    )
    def build_cmd(
        sites: str | None = typer.Option(
            None, "--sites", help="'all' (the study set) or ids: DE-Hai,BE-Vie."),
        demo: bool = typer.Option(
            False, "--demo", help="Build the demo world's sites (served on 127.0.0.1)."),
        out: str = typer.Option(..., "--out", help="Output directory (shared by all "
                                "workers when the cluster spans machines), or object storage: "
                                "s3://bucket/prefix (credentials from the environment)."),
        scheduler: str | None = typer.Option(
            None, "--scheduler", help="Existing Dask scheduler, e.g. tcp://host:8786 "
            "(default: a LocalCluster on this machine)."),
        workers: int | None = typer.Option(
            None, "--workers", min=1, help="LocalCluster workers (default: one per core)."),
        memory_limit: str | None = typer.Option(
            None, "--memory-limit", help="LocalCluster memory limit per worker, e.g. 3GiB."),
        force: bool = typer.Option(False, "--force", help="Rebuild complete stores too."),
        rebuild_changed: bool = typer.Option(
            False, "--rebuild-changed",
            help="Rebuild the complete stores built from other inputs or parameters than "
                 "this run's (and what depends on them); without it such a store stops the "
                 "build (exit code 2) before anything runs."),
        provider: str = typer.Option(
            config_default("provider"), "--provider",
            help="planetary-computer, earth-search or custom (with --stac)."),
        stac: str | None = typer.Option(None, "--stac", help="STAC API URL (any provider)."),
        corine: str | None = typer.Option(
            None, "--corine", help="CORINE 2018 raster (path or URL) for the forest mask."),
        fluxnet: str | None = typer.Option(
            None, "--fluxnet", help="Directory of FLUXNET2015-format daily files (or an "
            "object-storage prefix, s3://bucket/fluxnet)."),
        start: str | None = typer.Option(
            None, "--start",
            help=f"First day (default: {config_default('start')}, or the demo world's)."),
        end: str | None = typer.Option(
            None, "--end",
            help=f"Last day (default: {config_default('end')}, or the demo world's)."),
        engine: str = typer.Option(config_default("engine"), "--engine",
                                   help="Raster loader: odc or stackstac."),
        max_sun_zenith: float | None = typer.Option(
            None, "--max-sun-zenith", min=0.0, max=90.0,
            help="Exclude S2 scenes whose sun zenith at the tower exceeds this [degrees; "
                 "default 80]: the c-factor NBAR kernels diverge beyond ~80; ESA advises "
                 "against quantitative use of L2A above 70 (the stricter choice). Excluded "
                 "scenes are logged and listed in provenance."),
        qa: str = typer.Option(
            "drop", "--qa", help="Feature QA: drop implausible values and outliers (the "
            "reason is logged and kept in provenance 'qa'), flag them (kept), or off."),
        qa_outlier_sigma: float | None = typer.Option(
            None, "--qa-outlier-sigma", min=0.5,
            help="Outlier threshold of the feature QA [robust sigmas; default 5]."),
        cloud_mask: CloudMask | None = typer.Option(
            None, "--cloud-mask", case_sensitive=False, show_default=False,
            help="S2 cloud/shadow mask. scl (ours, default): Sen2Cor's scene classification, "
                 "free. s2cloudless: LightGBM model shipped in the s2cloudless package (~0.35 "
                 "s CPU per scene, ~5x the S2 stage of scl; clouds only, shadows from SCL; "
                 "L2A lacks its B10: misses the demo's clouds). cloudsen12 "
                 "(the paper's): a CloudSEN12-family CNN from local weights (--cloud-model; "
                 "~0.1-1 s per 512x512 tile on a CPU; --protocol paper picks it when "
                 "--cloud-model is given)."),
        cloud_model: Path | None = typer.Option(
            None, "--cloud-model", help="Local CloudSEN12-family weights for --cloud-mask "
            "cloudsen12: ONNX (.onnx, needs onnxruntime) or TorchScript (.pt, needs torch), "
            "taking (1, 12, H, W) reflectance and giving (1, 4, H, W) class scores (clear, "
            "thick, thin, shadow). Recorded by path, size and mtime."),
        radius: float = typer.Option(
            config_default("radius_m"), "--radius", min=10.0,
            help="Radius of the S2 circle and outer radius of the S1 annulus around the "
                 "tower, in m (paper and ours: 1000)."),
        train_years: str | None = typer.Option(
            None, "--train-years", help="Training years, e.g. 2016-2018 or 2016,2017 (the "
            "PCA is fitted on them; paper and ours: 2016-2018)."),
        test_years: str | None = typer.Option(
            None, "--test-years", help="Test years (paper and ours: 2019-2020)."),
        index_list: str | None = typer.Option(
            None, "--index-list", help="Spectral indices: 'default' (ours: the shipped list, "
            "132 indices of Awesome Spectral Indices computable from S2 L2A bands), "
            "'paper-122' (the paper used 122; this list reconstructs them with the rule in "
            "its header), or a file, one spyndex name per line (# comments)."),
        pcs: int | None = typer.Option(
            None, "--pcs", min=1, help="Keep exactly this many S2 principal components (the "
            "paper: 18) instead of the explained-variance rule of --pca-variance."),
        pca_variance: float | None = typer.Option(
            None, "--pca-variance", min=0.01, max=1.0, show_default=False,
            help="Keep the fewest S2 principal components that explain at least this share "
                 f"of the index variance (ours: {config_default('pca_variance')}, the default; "
                 "the paper fixed 18 PCs, see --pcs)."),
        pca: Path | None = typer.Option(
            None, "--pca", help="Project onto the PCA of a previous build instead of fitting "
            "one: its output directory, one of its stores (<SITE>.zarr, features.zarr) or "
            "its .work/pca.json, so new sites land in that build's feature space (ours and "
            "the paper: a PCA fitted on the training years of the sites built). Recorded by "
            "SHA-256; --index-list must hold its indices."),
        extremes_threshold: ExtremesThreshold | None = typer.Option(
            None, "--extremes-threshold", case_sensitive=False, show_default=False,
            help="Reading of the paper's extremes threshold: negative-tail (ours), the "
                 "default: the 10 % quantile of the negative GPP anomalies (about 5 % of days); "
                 "all-anomalies (the paper's reading under --protocol paper): the 10 % "
                 "quantile of all anomalies (about 10 % of days). Runs of >= 5 flagged days "
                 "are extremes either way."),
        protocol: Protocol = typer.Option(
            Protocol.ours, "--protocol", case_sensitive=False,
            help="Data choices of the options not given: ours (default) or paper: --pcs 18, "
                 "--extremes-threshold all-anomalies, --index-list paper-122, --cloud-mask "
                 "cloudsen12 when --cloud-model is given (else scl, with a warning: the "
                 "weights cannot be downloaded). An option given explicitly wins, with a "
                 "note; the LST source stays as given (the paper used Earth Engine). "
                 "Recorded in provenance and the summary; changing it rebuilds."),
        no_targets: bool = typer.Option(
            False, "--no-targets", help="Build without FLUXNET files (a site without a "
            "tower, or --at points): GPP all NaN and extreme all False, each with an "
            "attribute saying why; the stores say targets: none. For gpp predict."),
        at: list[str] | None = typer.Option(
            None, "--at", help="Build at a point instead of (or besides --sites) catalog "
            "sites: LAT,LON or LAT,LON,NAME [degrees WGS84; NAME is the store's site id, "
            "e.g. XX-Thr, default XX-Pnt]; repeat for several points. Must be in Europe, "
            "inside CORINE. With --demo: points of the demo world instead of its sites."),
        lst_source: LstSource = typer.Option(
            LstSource.stac, "--lst-source", case_sensitive=False,
            help="MODIS LST source: stac (ours: the STAC API of --provider/--stac) or "
                 "earthengine (the paper's: Google Earth Engine; pip install "
                 "gpp-cubes[ee] and an authenticated account)."),
        selection: Path | None = typer.Option(
            None, "--selection", help="Selection table of 'gpp sites select --output FILE' "
            "that '--sites all' reads (default: $GPP_CUBES_SELECTION if set, else "
            "OUT/selection.csv when present)."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the summary (one record per site, the columns of "
            "OUT/logs/build-summary.csv) as one JSON array on stdout instead of the table; "
            "progress and notes go to stderr."),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        from gpp_cubes.batch import any_failed, build_sites

        state: dict[str, Any] = {}

        def run() -> None:
            if (demo and sites is not None) or not (demo or sites is not None or at):
                raise UsageError("give exactly one of --sites and --demo (or --at LAT,LON "
                                 "for points)")
            points = [parse_point(a) for a in at or []]
            with contextlib.ExitStack() as stack:
                if demo:
                    inputs = stack.enter_context(_demo_inputs())
                    if points:
                        inputs["sites"] = points
                else:
                    inputs = {"sites": [*(_parse_sites(sites, out=out, selection=selection)
                                          if sites is not None else []), *points],
                              "stac_url": stac, "stac_identity": None, "provider": provider,
                              "corine_source": corine,
                              "fluxnet_dir": str(fluxnet) if fluxnet else None,
                              "start": config_default("start"),
                              "end": config_default("end")}
                if points:  # typed coordinates: checked before anything starts
                    from gpp_cubes.batch.build import check_points

                    check_points(points, inputs["corine_source"], radius)
                with site_progress(list(inputs["sites"])) as show:
                    table = build_sites(
                        inputs["sites"], out, start=start or inputs["start"],
                        end=end or inputs["end"],
                        provider=inputs["provider"], stac_url=inputs["stac_url"],
                        stac_identity=inputs["stac_identity"],
                        corine_source=inputs["corine_source"],
                        fluxnet_dir=inputs["fluxnet_dir"], scheduler=scheduler,
                        n_workers=workers, memory_limit=memory_limit, force=force,
                        rebuild_changed=rebuild_changed, progress=show, engine=engine,
                        qa={"action": qa, "outlier_sigma": qa_outlier_sigma},
                        s2_options=_s2_options(max_sun_zenith,
                                               cloud_mask.value if cloud_mask else None,
                                               cloud_model, index_list),
                        radius_m=radius, pca_variance=pca_variance, pca_components=pcs,
                        train_years=None if train_years is None
                        else parse_years(train_years, "--train-years"),
                        test_years=None if test_years is None
                        else parse_years(test_years, "--test-years"),
                        extremes_method=None if extremes_threshold is None
                        else EXTREMES_READINGS[extremes_threshold.value],
                        lst_source=LST_READINGS[lst_source.value],
                        protocol=protocol.value, targets=not no_targets, pca_from=pca)
            if as_json:
                print_json(table.to_json(orient="records", date_format="iso"))
            else:
                print_build_table(table, out)
            state["failed"] = any_failed(table)

        guarded(run, debug=debug, stage="build")
        if state.get("failed"):
            console.print(f"[bold red]some sites failed[/]; see {out}/logs/<SITE>.log")
            raise typer.Exit(code=1)
