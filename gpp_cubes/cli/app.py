"""The ``gpp`` command line: one entry point for the whole chain.

Each group of commands lives in its own module and registers itself here, so the cube
builders and the models can grow their commands without touching each other. This package
is the only code that imports both ``gpp_cubes`` and ``gpp_models``; the commands that train
or load models call :func:`gpp_models.runtime.configure_process` first (the process is ours).
"""

from __future__ import annotations

import importlib
import importlib.metadata

import typer

app = typer.Typer(
    name="gpp",
    help="Daily forest GPP from Sentinel-2, Sentinel-1 and MODIS feature cubes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that define commands; each exposes ``register(app)``. Missing ones are skipped so a
# partial install (or a module under development) never breaks the other commands.
_COMMAND_MODULES = (
    "gpp_cubes.cli.sites_cmd",
    "gpp_cubes.cli.demo_cmd",
    "gpp_cubes.cli.build_cmd",
    "gpp_cubes.cli.models_cmd",
)



def package_version() -> str:
    """The installed gpp-cubes version (package metadata; ``gpp_cubes.__version__`` when the
    package runs from a source tree that was never installed)."""
    try:
        return importlib.metadata.version("gpp-cubes")
    except importlib.metadata.PackageNotFoundError:
        import gpp_cubes

        return gpp_cubes.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gpp-cubes {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, expose_value=False, callback=_print_version,
        help="Print the gpp-cubes version and exit."),
) -> None:
    # the group's options only; each command does its work
    pass


for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _err:
        if _err.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    from gpp_cubes.secrets import install_redaction

    # credentials must never reach a log line, whatever module logs them
    install_redaction()
    app()
