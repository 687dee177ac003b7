"""``gpp demo``: the whole chain, offline, on the embedded demo world."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from gpp_cubes.cli.build_cmd import SiteProgress, print_build_table
from gpp_cubes.cli.common import ConfigOption, DebugOption, console, guarded, progress_bar
from gpp_models.config import Protocol  # no JAX: the command's help stays fast

DemoProtocol = Literal["ours", "paper"]

DEMO_HELP = """Run the whole chain offline on the embedded demo world.

Generates (or reuses) a deterministic world of flux-tower sites with Sentinel-2, Sentinel-1,
MODIS and CORINE rasters and FLUXNET files, serves it through a real STAC API on 127.0.0.1,
builds every site's daily feature cube, tunes and trains RNN/GRU/LSTM, evaluates, explains,
draws the paper's figures and writes an HTML report.

Example:

    gpp demo --quick --out gpp-demo

    gpp demo --quick --protocol paper --out gpp-demo-paper
"""


#: ``gpp demo --protocol`` -> the models' protocol (:class:`gpp_models.config.TrainConfig`).
MODEL_PROTOCOL: dict[str, Protocol] = {"ours": "holdout", "paper": "paper"}


def _run_demo(out: Path, sites: int, seed: int, quick: bool, workers: int | None,
              force: bool, protocol: str = "ours") -> dict[str, Path]:
    from gpp_cubes.batch import CATALOG_DIR, any_failed, build_sites
    from gpp_cubes.cli.build_cmd import demo_stac_identity
    from gpp_cubes.demo import demo_world_config, generate_world, serve_world
    from gpp_cubes.errors import BuildError

    out = out.resolve()
    t0 = time.perf_counter()

    def elapsed() -> str:
        return f"[dim]({time.perf_counter() - t0:.0f} s)[/]"

    config = demo_world_config(sites, seed, quick)
    console.print(f"[bold]1/4[/] demo world: {', '.join(config.sites)} "
                  f"({config.start} .. {config.end}, seed {config.seed})")
    world = generate_world(out / "world", config)

    cubes = out / "cubes"
    console.print(f"[bold]2/4[/] serving the world on 127.0.0.1 and building the feature "
                  f"cubes {elapsed()}")
    site_ids = [s.site_id for s in world.sites]
    with serve_world(world) as served, progress_bar() as progress:
        console.print(f"    STAC API {served.stac_url}  files {served.files_url}")
        # The demo world mimics Planetary Computer: only the URL differs. The cubes follow
        # the world: a rerun with other options (a regenerated world) rebuilds what changed.
        table = build_sites(
            site_ids, cubes, start=config.start, end=config.end,
            stac_url=served.stac_url, stac_identity=demo_stac_identity(world),
            provider="planetary-computer",
            corine_source=str(world.corine_path), fluxnet_dir=str(world.fluxnet_dir),
            n_workers=workers, force=force, rebuild_changed=True,
            progress=SiteProgress(progress, site_ids), protocol=protocol,
        )
    print_build_table(table, cubes)
    if any_failed(table):
        raise BuildError("some demo sites failed to build; see the table above and "
                         f"the logs in {cubes / 'logs'}")

    console.print(f"[bold]3/4[/] models: tune, train, evaluate, explain (RNN, GRU, LSTM; "
                  f"protocol {MODEL_PROTOCOL[protocol]}) {elapsed()}")
    from gpp_models.runtime import configure_process

    # Allocator and JAX CPU devices, before the models start JAX's backend.
    configure_process()
    from gpp_models.pipeline import run_pipeline

    with progress_bar() as progress:
        task = progress.add_task("models", total=None)
        outputs = run_pipeline(cubes / "features.zarr", out / "models", quick=quick,
                               seed=seed, protocol=MODEL_PROTOCOL[protocol],
                               on_stage=lambda s: progress.update(task, description=s))
    console.print(f"[bold]4/4[/] done {elapsed()}")
    return {"world": world.root, "cubes": cubes, "catalog": cubes / CATALOG_DIR, **outputs}


def register(app: typer.Typer) -> None:
    @app.command(help=DEMO_HELP)
    def demo(
        out: Path = typer.Option(Path("gpp-demo"), help="Output directory."),
        quick: bool = typer.Option(False, "--quick", help="Small budget (about 3 minutes)."),
        sites: int = typer.Option(4, min=1, max=19, help="Number of demo sites."),
        seed: int = typer.Option(0, help="Seed of the world and of the models."),
        workers: int | None = typer.Option(None, help="Dask workers (default: one per core)."),
        force: bool = typer.Option(False, "--force", help="Rebuild cubes that are complete."),
        protocol: DemoProtocol = typer.Option(
            "ours", "--protocol",
            help="ours: our defaults (cubes as gpp build makes them; models selected on the "
                 "held-out last training year, NRMSE by each subset's range, importance "
                 "within each site). paper: the paper's protocol end to end (its cube "
                 "choices; checkpoint chosen on the test years, which leaks and is flagged; "
                 "NRMSE by the full test-period range; importance pooled over sites)."),
        config: Path | None = ConfigOption,
        debug: bool = DebugOption,
    ) -> None:
        outputs = guarded(lambda: _run_demo(out, sites, seed, quick, workers, force, protocol),
                          debug=debug, stage="demo")
        table = Table(title="Outputs")
        table.add_column("what")
        table.add_column("where")
        for name, path in outputs.items():
            table.add_row(name, str(path))
        console.print(table)
